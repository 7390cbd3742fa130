"""Two-frame nuScenes samples: both sources of the previous frame agree."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

pytestmark = pytest.mark.mmdet3d

CAMS = ('CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK', 'CAM_BACK_LEFT',
        'CAM_BACK_RIGHT')


def _dataset(root, ann_file: str, **kwargs):
    import bevboost_petr  # noqa: F401
    from mmengine.registry import init_default_scope
    from mmdet3d.registry import DATASETS
    init_default_scope('mmdet3d')
    prefix = {cam: f'samples/{cam}' for cam in CAMS}
    return DATASETS.build(dict(
        type='PETRv2NuScenesDataset', data_root=str(root), ann_file=ann_file,
        data_prefix=dict(pts='samples/LIDAR_TOP', **prefix), pipeline=[],
        modality=dict(use_lidar=False, use_camera=True), test_mode=True,
        metainfo=dict(version='v1.0-mini'), serialize_data=False, **kwargs))


def test_previous_frame_from_cam_sweeps_matches_ego_pose_chain(synth_root, tmp_path):
    with_sweeps = _dataset(synth_root, 'nuscenes_infos_train.pkl')
    with open(synth_root / 'nuscenes_infos_train.pkl', 'rb') as f:
        raw = pickle.load(f)
    for info in raw['data_list']:
        info.pop('cam_sweeps', None)
    stripped = tmp_path / 'infos_no_sweeps.pkl'
    with open(stripped, 'wb') as f:
        pickle.dump(raw, f)
    from_poses = _dataset(synth_root, str(stripped))
    assert len(with_sweeps) == len(from_poses) > 1
    compared = 0
    for i in range(len(with_sweeps)):
        a, b = with_sweeps.get_data_info(i), from_poses.get_data_info(i)
        assert len(a['images']) == len(b['images']) == 12
        assert a['has_prev_frame'] == b['has_prev_frame']
        for cam in CAMS:
            pa, pb = a['images'][cam + '__prev'], b['images'][cam + '__prev']
            assert pa['img_path'] == pb['img_path']
            np.testing.assert_allclose(np.asarray(pa['lidar2cam']), np.asarray(pb['lidar2cam']),
                                       atol=1e-6)
        compared += a['has_prev_frame']
    assert compared == len(with_sweeps) - 1  # one scene: only its first sample lacks a past


def test_single_frame_mode_and_bad_args(synth_root):
    ds = _dataset(synth_root, 'nuscenes_infos_val.pkl', num_prev_frames=0)
    assert len(ds.get_data_info(0)['images']) == 6
    with pytest.raises(ValueError, match='num_prev_frames'):
        _dataset(synth_root, 'nuscenes_infos_val.pkl', num_prev_frames=3)


def test_frame_gap_is_the_camera_timestamp_difference(synth_root):
    ds = _dataset(synth_root, 'nuscenes_infos_train.pkl', empty_time_gap=1.245)
    gaps = [(ds.get_data_info(i)['has_prev_frame'], ds.get_data_info(i)['prev_time_gap'])
            for i in range(len(ds))]
    # the synthetic key frames are 0.5 s apart; a scene's first sample takes empty_time_gap
    assert gaps[0] == (False, 1.245)
    assert all(has and abs(gap - 0.5) < 1e-6 for has, gap in gaps[1:]), gaps
    with pytest.raises(ValueError, match='empty_time_gap'):
        _dataset(synth_root, 'nuscenes_infos_train.pkl', empty_time_gap=0)


def test_packed_samples_carry_the_frame_gap_to_the_head(synth_root, tmp_path, make_tiny_config):
    import bevboost_petr  # noqa: F401
    from mmengine.registry import init_default_scope
    from mmdet3d.registry import DATASETS
    init_default_scope('mmdet3d')
    cfg = make_tiny_config(synth_root, tmp_path, max_iters=1)
    ds = DATASETS.build(cfg.train_dataloader.dataset)
    metas = [ds[i]['data_samples'].metainfo for i in range(2)]
    assert len(metas) == 2 and all(abs(m['prev_time_gap'] - 0.5) < 1e-6 for m in metas)
