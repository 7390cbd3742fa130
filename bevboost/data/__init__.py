"""Fast multi-view camera data path (synthetic nuScenes data: :mod:`bevboost.synth`).

Importing registers ``FastLoadMultiViewImageFromFiles`` (mmengine root
TRANSFORMS), ``MainProcessDecodePreprocessor`` (root MODELS), ``ShmRingRunner``
(root RUNNERS), ``SkippedSamplesHook`` (root HOOKS)
and the boosts ``fast-decode``,
``dali`` and ``shm``. Nothing here imports mmdet3d or DALI at import time.
"""
from bevboost.data import (boost_dali, boost_fast_decode, boost_shm,  # noqa: F401
                           main_decode, runner, skip_counts, transforms)  # (registration)
from bevboost.data.decode import ImageLoadError
from bevboost.data.main_decode import MainProcessDecodePreprocessor
from bevboost.data.preprocess import UInt8Normalizer
from bevboost.data.shm_loader import ShmRingLoader
from bevboost.data.transforms import FastLoadMultiViewImageFromFiles

__all__ = ['FastLoadMultiViewImageFromFiles', 'ImageLoadError', 'MainProcessDecodePreprocessor',
           'ShmRingLoader',
           'UInt8Normalizer']
