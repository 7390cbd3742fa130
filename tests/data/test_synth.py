"""The synthetic nuScenes tree loads in mmdet3d and evaluates with the devkit."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from bevboost.synth import synthesize_nuscenes
from bevboost.synth.world import CAMERAS, CLASS_NAMES

SMALL = (226, 400)


@pytest.fixture(scope='module')
def small_root(tmp_path_factory) -> Path:
    return synthesize_nuscenes(tmp_path_factory.mktemp('nus'), scenes=3, samples_per_scene=3,
                               image_size=SMALL)


def _infos(root: Path, split: str) -> dict:
    with open(root / f'nuscenes_infos_{split}.pkl', 'rb') as f:
        return pickle.load(f)


def test_layout_and_info_keys(small_root):
    train, val = _infos(small_root, 'train'), _infos(small_root, 'val')
    assert len(train['data_list']) == 6 and len(val['data_list']) == 3
    assert train['metainfo']['version'] == 'v1.0-mini'
    info = train['data_list'][1]
    assert list(info['images']) == list(CAMERAS)
    for cam in info['images'].values():
        assert (small_root / 'samples' / Path(cam['img_path']).name.split('__')[1]
                / cam['img_path']).is_file()
    assert info['cam_sweeps'] and set(info['cam_sweeps'][0]) == set(CAMERAS)
    assert train['data_list'][0]['cam_sweeps'] == []
    assert info['prev'] == train['data_list'][0]['token']
    assert len(info['lidar_sweeps']) == 2
    pts = np.fromfile(small_root / 'samples/LIDAR_TOP' / info['lidar_points']['lidar_path'],
                      dtype=np.float32).reshape(-1, 5)
    assert len(pts) > 5000
    labels = {i['bbox_label_3d'] for s in train['data_list'] for i in s['instances']}
    assert labels <= set(range(len(CLASS_NAMES))) and len(labels) >= 3
    assert all(i['num_lidar_pts'] > 0 for s in train['data_list'] for i in s['instances'])


def test_boxes_are_seen_by_cameras(small_root):
    """Most annotated boxes project into at least one camera image."""
    h, w = SMALL
    seen = total = 0
    for info in _infos(small_root, 'train')['data_list']:
        for inst in info['instances']:
            centre = np.array([*inst['bbox_3d'][:3], 1.0])
            total += 1
            for cam in info['images'].values():
                p = np.asarray(cam['lidar2cam']) @ centre
                if p[2] <= 0.5:
                    continue
                uv = (np.asarray(cam['cam2img']) @ p[:3])[:2] / p[2]
                if 0 <= uv[0] < w and 0 <= uv[1] < h:
                    seen += 1
                    break
    assert total > 20 and seen / total > 0.9


def test_previous_frame_alignment(small_root):
    """cam_sweeps lidar2cam equals the chain current lidar -> global -> past camera."""
    info = _infos(small_root, 'train')['data_list'][2]
    sweep = info['cam_sweeps'][0]['CAM_FRONT']
    lidar2global = np.asarray(info['ego2global']) @ np.asarray(info['lidar_points']['lidar2ego'])
    cam2global = np.asarray(sweep['ego2global']) @ np.asarray(sweep['cam2ego'])
    np.testing.assert_allclose(np.asarray(sweep['lidar2cam']),
                               np.linalg.inv(cam2global) @ lidar2global, atol=1e-9)


def test_deterministic_and_realistic_size(tmp_path):
    a = synthesize_nuscenes(tmp_path / 'a', scenes=2, samples_per_scene=1, lidar_sweeps=0)
    b = synthesize_nuscenes(tmp_path / 'b', scenes=2, samples_per_scene=1, lidar_sweeps=0,
                            image_size=SMALL, seed=0)
    files = sorted((a / 'samples' / 'CAM_FRONT').iterdir())
    sizes = [f.stat().st_size for f in sorted(a.glob('samples/CAM_*/*.jpg'))]
    assert 150_000 < float(np.median(sizes)) < 300_000, sizes
    assert len(files) == 2
    assert json.loads((a / 'v1.0-mini/scene.json').read_text())[0]['name'] == 'scene-0061'
    assert ([r['token'] for r in json.loads((a / 'v1.0-mini/sample.json').read_text())]
            == [r['token'] for r in json.loads((b / 'v1.0-mini/sample.json').read_text())])


@pytest.mark.parametrize('kwargs', [dict(scenes=1), dict(scenes=11), dict(samples_per_scene=0),
                                    dict(version='v2'), dict(image_size=(31, 64))])
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        synthesize_nuscenes(tmp_path, **kwargs)


def test_cli(tmp_path):
    from bevboost.cli.main import main
    rc = main(['data', 'synth', str(tmp_path / 'cli'), '--scenes', '2', '--samples-per-scene',
               '1', '--image-size', '64', '128', '--no-progress'])
    assert rc == 0 and (tmp_path / 'cli/nuscenes_infos_val.pkl').is_file()
    assert main(['data', 'synth', str(tmp_path / 'bad'), '--scenes', '0']) == 2


def _dataset(root: Path, split: str, pipeline: list, test_mode: bool):
    from mmdet3d.datasets import NuScenesDataset
    prefix = {c: f'samples/{c}' for c in CAMERAS}
    return NuScenesDataset(
        data_root=str(root), ann_file=f'nuscenes_infos_{split}.pkl', pipeline=pipeline,
        data_prefix=dict(pts='samples/LIDAR_TOP', sweeps='sweeps/LIDAR_TOP', **prefix),
        modality=dict(use_lidar=True, use_camera=True), test_mode=test_mode,
        metainfo=dict(version='v1.0-mini'))


@pytest.mark.mmdet3d
def test_mmdet3d_dataset_with_stock_pipeline(small_root):
    import mmdet3d.datasets  # noqa: F401  registers the transforms
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet3d')
    pipeline = [
        dict(type='LoadPointsFromFile', coord_type='LIDAR', load_dim=5, use_dim=5),
        dict(type='LoadPointsFromMultiSweeps', sweeps_num=2, test_mode=True),
        dict(type='LoadMultiViewImageFromFiles', to_float32=True, num_views=6),
        dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True),
        dict(type='Pack3DDetInputs', keys=['points', 'img', 'gt_bboxes_3d', 'gt_labels_3d']),
    ]
    ds = _dataset(small_root, 'train', pipeline, test_mode=False)
    assert len(ds) == 6
    item = ds[1]
    assert tuple(item['inputs']['img'].shape) == (6, 3, *SMALL)
    assert item['inputs']['points'].shape[1] == 4  # x, y, z, time lag
    assert len(item['data_samples'].gt_instances_3d.bboxes_3d) > 0


@pytest.mark.mmdet3d
def test_nuscenes_metric_on_ground_truth(small_root, tmp_path):
    """Ground truth submitted as predictions scores a high mAP with the devkit."""
    import torch
    from mmdet3d.evaluation import NuScenesMetric
    from mmdet3d.structures import LiDARInstance3DBoxes
    ds = _dataset(small_root, 'val', [], test_mode=True)
    metric = NuScenesMetric(data_root=str(small_root),
                            ann_file=str(small_root / 'nuscenes_infos_val.pkl'),
                            metric='bbox', jsonfile_prefix=str(tmp_path / 'res'))
    metric.dataset_meta = ds.metainfo
    samples = []
    for idx, info in enumerate(_infos(small_root, 'val')['data_list']):
        boxes = np.array([[*i['bbox_3d'], *i['velocity']] for i in info['instances']],
                         dtype=np.float32).reshape(-1, 9)
        samples.append(dict(sample_idx=idx, pred_instances={}, pred_instances_3d=dict(
            bboxes_3d=LiDARInstance3DBoxes(torch.from_numpy(boxes), box_dim=9,
                                           origin=(0.5, 0.5, 0.5)),
            scores_3d=torch.ones(len(boxes)),
            labels_3d=torch.tensor([i['bbox_label_3d'] for i in info['instances']]))))
    metric.process({}, samples)
    result = metric.compute_metrics(metric.results)
    present = {CLASS_NAMES[i['bbox_label_3d']] for info in _infos(small_root, 'val')['data_list']
               for i in info['instances']}
    assert len(present) >= 3
    for name in present:  # classes absent from the split score 0 by definition
        assert result[f'pred_instances_3d_NuScenes/{name}_AP_dist_0.5'] > 0.99, (name, result)
