"""Whole pipelines folded in place: the same seed gives the stock chain's results, key for key.

The stock side is mmdet3d 1.4.0's own transforms from the wheel
(``LoadMultiViewImageFromFiles``, ``LoadPointsFromFile``,
``LoadPointsFromMultiSweeps``, ``LoadAnnotations3D``, ``ObjectRangeFilter``,
``ObjectNameFilter``) and PETR's / BEVFusion's ``projects/`` transforms
(``ResizeCropFlipImage``, ``BEVLoadMultiViewImageFromFiles``, ``ImageAug3D``)
from an mmdetection3d checkout when ``MMDET3D_ROOT`` is set, their step-for-step
stand-ins otherwise (``stock_aug``). The input is what mmdet3d's
``NuScenesDataset`` makes of a synthetic nuScenes info file with 10 LiDAR
sweeps per keyframe, so ``LoadPointsFromMultiSweeps(sweeps_num=9)`` draws from
``np.random`` between the loader and the folded transform, as on real nuScenes.
The fast side is the pipeline the ``fast-decode`` boost writes
(:func:`bevboost.data.fold.rewrite_pipeline`), built from the registry.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from bevboost.data.fold import rewrite_pipeline
from bevboost.synth import synthesize_nuscenes
from tests.data.stock_aug import VIEW_MEAN_TOL, VIEW_P99_TOL, stock_transform

pytestmark = pytest.mark.mmdet3d

PREFIX = dict(pts='samples/LIDAR_TOP', sweeps='sweeps/LIDAR_TOP', **{
    c: f'samples/{c}' for c in ('CAM_FRONT', 'CAM_FRONT_LEFT', 'CAM_FRONT_RIGHT', 'CAM_BACK',
                                'CAM_BACK_RIGHT', 'CAM_BACK_LEFT')})
RANGE = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
CLASSES = ['car', 'truck', 'construction_vehicle', 'bus', 'trailer', 'barrier', 'motorcycle',
           'bicycle', 'pedestrian', 'traffic_cone']
POINTS = dict(type='LoadPointsFromFile', coord_type='LIDAR', load_dim=5, use_dim=5)
SWEEPS = dict(type='LoadPointsFromMultiSweeps', sweeps_num=9, load_dim=5, use_dim=5,
              pad_empty_sweeps=True, remove_close=True)
ANNOS = dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True,
             with_attr_label=False)
PETR_CONF = dict(resize_lim=(0.47, 0.625), final_dim=(320, 800), bot_pct_lim=(0.0, 0.0),
                 rot_lim=(0.0, 0.0), H=900, W=1600, rand_flip=True)


def _bevfusion_aug(train: bool) -> dict:
    return dict(type='ImageAug3D', final_dim=[256, 704],
                resize_lim=[0.38, 0.55] if train else [0.48, 0.48], bot_pct_lim=[0.0, 0.0],
                rot_lim=[-5.4, 5.4] if train else [0.0, 0.0], rand_flip=train, is_train=train)


#: the v1.4.0 configs' camera pipelines up to the folded transform; PETR's with the sweeps
#: loader added between (it draws), BEVFusion's as they are
PIPELINES = {
    'petr-train': [dict(type='LoadMultiViewImageFromFiles', to_float32=True), POINTS, SWEEPS,
                   ANNOS, dict(type='ObjectRangeFilter', point_cloud_range=RANGE),
                   dict(type='ObjectNameFilter', classes=CLASSES),
                   dict(type='ResizeCropFlipImage', data_aug_conf=PETR_CONF, training=True)],
    'petr-test': [dict(type='LoadMultiViewImageFromFiles', to_float32=True),
                  dict(type='ResizeCropFlipImage', data_aug_conf=PETR_CONF, training=False)],
    'bevfusion-train': [dict(type='BEVLoadMultiViewImageFromFiles', to_float32=True,
                             color_type='color'), POINTS, SWEEPS, ANNOS, _bevfusion_aug(True)],
    'bevfusion-test': [dict(type='BEVLoadMultiViewImageFromFiles', to_float32=True,
                            color_type='color'), POINTS, SWEEPS, _bevfusion_aug(False)],
}


@pytest.fixture(scope='module')
def infos(tmp_path_factory) -> list[dict]:
    """Data infos as mmdet3d's NuScenesDataset parses them (10 LiDAR sweeps per keyframe)."""
    from mmdet3d.datasets import NuScenesDataset
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet3d')
    root = synthesize_nuscenes(tmp_path_factory.mktemp('nus_sweeps'), scenes=2,
                               samples_per_scene=2, lidar_sweeps=10)
    ds = NuScenesDataset(data_root=str(root), ann_file='nuscenes_infos_train.pkl',
                         data_prefix=PREFIX, pipeline=[], metainfo=dict(version='v1.0-mini'),
                         modality=dict(use_camera=True, use_lidar=True),
                         filter_empty_gt=False)
    out = [ds.get_data_info(i) for i in range(2)]
    assert len(out[1]['lidar_sweeps']) == 10  # > sweeps_num: LoadPointsFromMultiSweeps draws
    return out


def _build(cfg: dict):
    from mmdet3d.registry import TRANSFORMS as MMDET3D_TRANSFORMS
    from mmengine.registry import TRANSFORMS
    name = cfg['type']
    if name.startswith('Fast'):
        return TRANSFORMS.build(cfg)
    if name in ('ResizeCropFlipImage', 'ImageAug3D', 'BEVLoadMultiViewImageFromFiles'):
        return stock_transform(name)(**{k: v for k, v in cfg.items() if k != 'type'})
    return MMDET3D_TRANSFORMS.build(cfg)


def _run(cfgs: list, info: dict, seed: int) -> dict:
    transforms = [_build(c) for c in cfgs]
    np.random.seed(seed)
    results = copy.deepcopy(info)
    for t in transforms:
        results = t(results)
    return results


def _fast_pipeline(case: str, decode: str = 'worker') -> list:
    pipe = copy.deepcopy(PIPELINES[case])
    assert rewrite_pipeline(pipe, dict(backend='cpu', decode=decode)) != ['']
    return pipe


def _assert_same(a, b, where: str) -> None:
    """Equal values; floats to float32 precision: the stock transforms compute the ida in
    float32 torch maths on pixel coordinates up to 1600 (eps32 x 1600 = 1.9e-4 pixels)."""
    if hasattr(a, 'tensor') and hasattr(b, 'tensor'):  # LiDARPoints, LiDARInstance3DBoxes
        a, b = a.tensor, b.tensor
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        a, b = torch.as_tensor(a).numpy(), torch.as_tensor(b).numpy()
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, set(a) ^ set(b))
        for k in a:
            _assert_same(a[k], b[k], f'{where}.{k}')
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert type(a) is type(b), (where, type(a), type(b))
        assert a.dtype == b.dtype and a.shape == b.shape, (where, a.dtype, b.dtype)
        if a.dtype.kind == 'f':
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=2e-4, err_msg=where)
        else:
            np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), (where, type(a), type(b))
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f'{where}[{i}]')
    elif isinstance(a, float):
        assert isinstance(b, float) and a == pytest.approx(b, rel=1e-6), (where, a, b)
    else:
        assert type(a) is type(b) and a == b, (where, a, b)


def _per_view(fast_imgs, stock_imgs) -> list[tuple[float, float]]:
    out = []
    for a, b in zip(fast_imgs, stock_imgs):
        assert a.shape == b.shape, (a.shape, b.shape)
        diff = np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))
        out.append((float(diff.mean()), float(np.percentile(diff, 99))))
    return out


CASES = sorted(PIPELINES)


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('seed', [0, 5])
def test_same_seed_same_results_as_the_stock_chain(infos, case, seed):
    """Every key the stock chain sets, with its values; geometry to float32 precision;
    pixels within tolerance in every view."""
    stock = _run(PIPELINES[case], infos[1], seed)
    fast = _run(_fast_pipeline(case), infos[1], seed)
    assert set(fast) == set(stock), set(fast) ^ set(stock)
    _assert_same({k: v for k, v in fast.items() if k != 'img'},
                 {k: v for k, v in stock.items() if k != 'img'}, case)
    assert all(im.dtype == np.uint8 for im in fast['img'])  # uint8, not the stock float32
    views = _per_view(fast['img'], stock['img'])
    bad = [(i, m, p) for i, (m, p) in enumerate(views)
           if m > VIEW_MEAN_TOL or p > VIEW_P99_TOL]
    assert not bad, f'{case} seed {seed}: views out of tolerance (view, mean, p99): {bad}'


@pytest.mark.parametrize('case', ['petr-train', 'bevfusion-train'])
def test_main_process_decode_same_draws_and_keys(infos, case):
    """decode='main': the workers' side draws and writes keys exactly as the worker decode;
    its CPU form decodes every view within tolerance of the stock chain."""
    from bevboost.data.main_decode import BatchDecoder
    stock = _run(PIPELINES[case], infos[1], 3)
    shipped = _run(_fast_pipeline(case, decode='main'), infos[1], 3)
    assert set(shipped) == set(stock) - {'img'} | {'img_jpeg'}
    _assert_same({k: v for k, v in shipped.items() if k != 'img_jpeg'},
                 {k: v for k, v in stock.items() if k != 'img'}, case)
    job = shipped['img_jpeg']
    imgs = BatchDecoder('cpu')(job['blobs'], job['plans'], torch.device('cpu'),
                               job['channel_order'], job['max_upsample'])
    views = _per_view([im.permute(1, 2, 0).numpy() for im in imgs], stock['img'])
    bad = [(i, m, p) for i, (m, p) in enumerate(views)
           if m > VIEW_MEAN_TOL or p > VIEW_P99_TOL]
    assert not bad, f'{case}: views out of tolerance (view, mean, p99): {bad}'


def test_the_fold_decodes_where_the_folded_transform_stood():
    """With transforms between, the decode step takes the folded transform's position."""
    pipe = _fast_pipeline('bevfusion-train')
    assert [p['type'] for p in pipe] == [
        'FastLoadMultiViewImageFromFiles', 'LoadPointsFromFile', 'LoadPointsFromMultiSweeps',
        'LoadAnnotations3D', 'FastDecodeMultiViewImages']
    assert pipe[0]['defer'] is True and pipe[0]['replaces'] == 'BEVLoadMultiViewImageFromFiles'
    assert [p['type'] for p in _fast_pipeline('petr-test')] == ['FastLoadMultiViewImageFromFiles']


def test_decode_step_without_a_deferred_loader_is_an_error():
    from bevboost.data.transforms import FastDecodeMultiViewImages
    with pytest.raises(RuntimeError, match='defer=True'):
        FastDecodeMultiViewImages('ImageAug3D')({})
