"""Synthetic nuScenes-format data: the main job and the tests train on it with no dataset.

:func:`synthesize_nuscenes` writes a small nuScenes-format dataset (6 or 12 camera JPEGs
per sample, LiDAR sweeps, boxes, info pickles) from a procedural world
(:mod:`~bevboost.synth.world`) rendered by :mod:`~bevboost.synth.render`. A tool, not part
of the training-time data path (:mod:`bevboost.data`).
"""
from bevboost.synth.nuscenes import synthesize_nuscenes

__all__ = ['synthesize_nuscenes']
