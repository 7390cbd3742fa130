"""Shared fixture: a small synthetic nuScenes tree (full-size JPEGs, 1 scene pair)."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from bevboost.synth import synthesize_nuscenes


@pytest.fixture(scope='session')
def nus_root(tmp_path_factory) -> Path:
    return synthesize_nuscenes(tmp_path_factory.mktemp('nus_full'), scenes=2,
                               samples_per_scene=2, lidar_sweeps=0)


def make_results(root: Path, index: int = 1) -> dict:
    """A NuScenesDataset-style results dict with absolute image paths."""
    with open(root / 'nuscenes_infos_train.pkl', 'rb') as f:
        info = pickle.load(f)['data_list'][index]
    images = {c: dict(v, img_path=str(root / 'samples' / c / v['img_path']))
              for c, v in info['images'].items()}
    return dict(images=images, token=info['token'], cam_sweeps=info['cam_sweeps'])
