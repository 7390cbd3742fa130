"""Fast loader: keys, geometry bookkeeping, decode backends, errors.

Equality with the stock load + resize chain (mmdet3d's loader from the wheel)
is in test_fold.py.
"""
from __future__ import annotations


import numpy as np
import pytest

from bevboost.data.decode import ImageLoadError, decode_cpu, reduction_for, resolve_backend
from bevboost.data.transforms import FastLoadMultiViewImageFromFiles
from tests.data.conftest import make_results

PETR = dict(final_dim=(320, 800), resize_lim=(0.47, 0.625), rand_flip=True)
STOCK_KEYS = {'filename', 'img', 'img_shape', 'ori_shape', 'pad_shape', 'cam2img',
              'ori_cam2img', 'lidar2cam', 'num_views', 'num_ref_frames', 'img_norm_cfg'}


def test_reduction_choice():
    assert reduction_for((900, 1600), (450, 800)) == 2
    assert reduction_for((900, 1600), (451, 800)) == 1
    assert reduction_for((900, 1600), (100, 200)) == 8


def test_intrinsics_follow_the_augmentation(nus_root):
    fast = FastLoadMultiViewImageFromFiles(seed=2, is_train=True, **PETR)
    out = fast(make_results(nus_root))
    aug = out['img_aug_matrix'][0]  # BEVFusion layout: rotation [:2, :2], translation [:2, 3]
    ida = np.eye(3)
    ida[:2, :2], ida[:2, 2] = aug[:2, :2], aug[:2, 3]
    np.testing.assert_allclose(out['cam2img'][0][:3, :3], ida @ out['ori_cam2img'][0][:3, :3])
    np.testing.assert_allclose(out['lidar2img'][0], out['cam2img'][0] @ out['lidar2cam'][0])
    # a point projected with the new cam2img lands where the ida moves its old pixel
    p_cam = np.array([1.5, -0.4, 12.0])
    old = out['ori_cam2img'][0][:3, :3] @ p_cam
    new = out['cam2img'][0][:3, :3] @ p_cam
    np.testing.assert_allclose(new[:2] / new[2], (ida @ (old / old[2]))[:2])


def test_full_size_drop_in_equals_stock_decode(nus_root):
    import cv2
    res = make_results(nus_root)
    out = FastLoadMultiViewImageFromFiles()(res)
    ref = cv2.imread(res['images']['CAM_BACK']['img_path'], cv2.IMREAD_UNCHANGED)
    assert np.abs(out['img'][3].astype(int) - ref).max() <= 1
    assert out['ori_shape'] == (900, 1600)


def test_previous_frame_appended(nus_root):
    fast = FastLoadMultiViewImageFromFiles(load_prev_frame=True, final_dim=(160, 400))
    out = fast(make_results(nus_root, 1))
    assert len(out['img']) == 12 and out['num_ref_frames'] == 1
    assert out['filename'][6] != out['filename'][0]
    first = fast(make_results(nus_root, 0))  # scene start: the current frame repeats
    assert first['filename'][6] == first['filename'][0]


def _corrupt(nus_root, tmp_path, how: str) -> tuple[dict, str]:
    res = make_results(nus_root)
    src = res['images']['CAM_FRONT_LEFT']['img_path']
    bad = tmp_path / f'{how}.jpg'
    data = open(src, 'rb').read()
    if how == 'truncated':
        bad.write_bytes(data[:len(data) // 3])
    elif how == 'garbage':
        bad.write_bytes(data[:600] + bytes(range(256)) * 40)
    res['images']['CAM_FRONT_LEFT']['img_path'] = str(bad) if how != 'missing' else str(
        tmp_path / 'nope.jpg')
    return res, res['images']['CAM_FRONT_LEFT']['img_path']


@pytest.mark.parametrize('how', ['truncated', 'garbage', 'missing'])
def test_bad_file_error_names_file_and_sample(nus_root, tmp_path, how):
    res, path = _corrupt(nus_root, tmp_path, how)
    with pytest.raises(ImageLoadError) as err:
        FastLoadMultiViewImageFromFiles(final_dim=(320, 800))(res)
    assert path in str(err.value) and res['token'] in str(err.value)


def test_wrong_camera_count_and_skip_mode(nus_root, tmp_path):
    res = make_results(nus_root)
    res['images'].pop('CAM_BACK')
    with pytest.raises(ImageLoadError, match='expected 6 cameras, got 5'):
        FastLoadMultiViewImageFromFiles()(res)
    skipper = FastLoadMultiViewImageFromFiles(on_error='skip')
    assert skipper(res) is None
    bad, _ = _corrupt(nus_root, tmp_path, 'truncated')
    assert skipper(bad) is None and skipper.skipped == 2


def test_bad_arguments():
    with pytest.raises(ValueError, match='on_error'):
        FastLoadMultiViewImageFromFiles(on_error='ignore')
    with pytest.raises(ValueError, match='backend'):
        FastLoadMultiViewImageFromFiles(backend='gpu')
    with pytest.raises(TypeError, match='bogus'):
        FastLoadMultiViewImageFromFiles(bogus=1)


def test_workers_never_choose_a_gpu_decoder(monkeypatch):
    import bevboost.data.decode as decode

    def no_cuda():
        raise AssertionError('a worker-side backend choice asked CUDA')
    monkeypatch.setattr(decode, 'cuda_available', no_cuda)
    assert resolve_backend('auto', 'worker') == 'cpu'
    assert resolve_backend('dali', 'worker') == 'dali'  # CPU DALI
    with pytest.raises(ValueError, match="decode='main'"):
        resolve_backend('nvjpeg', 'worker')
    with pytest.raises(ValueError, match='decode'):
        FastLoadMultiViewImageFromFiles(decode='gpu')


def test_auto_backend_is_logged(caplog):
    import logging
    with caplog.at_level(logging.INFO, logger='bevboost.data.decode'):
        chosen = resolve_backend('auto')
    assert chosen in ('cpu', 'dali', 'nvjpeg') and f'auto -> {chosen}' in caplog.text


def test_registered_in_root_registry():
    from mmengine.registry import TRANSFORMS
    t = TRANSFORMS.build(dict(type='FastLoadMultiViewImageFromFiles', final_dim=(8, 16)))
    assert isinstance(t, FastLoadMultiViewImageFromFiles)


def test_decode_cpu_rgb_matches_bgr(nus_root):
    data = next((nus_root / 'samples/CAM_FRONT').iterdir()).read_bytes()
    bgr, d = decode_cpu(data, (450, 800))
    rgb, _ = decode_cpu(data, (450, 800), 'rgb')
    assert d == 2 and bgr.shape == (450, 800, 3)
    np.testing.assert_array_equal(bgr[..., ::-1], rgb)


@pytest.mark.dali
def test_dali_cpu_pipeline_matches_cpu_decode(nus_root):
    res = make_results(nus_root)
    fast = FastLoadMultiViewImageFromFiles(final_dim=(320, 800), seed=0)
    dali = FastLoadMultiViewImageFromFiles(final_dim=(320, 800), seed=0, backend='dali')
    a = np.stack(fast(make_results(nus_root))['img']).astype(np.float32)
    b = np.stack(dali(res)['img']).astype(np.float32)
    assert a.shape == b.shape and np.abs(a - b).mean() < 2.0


@pytest.mark.gpu
def test_nvjpeg_and_dali_mixed_on_gpu(nus_root):
    from bevboost.data.decode import DaliDecoder, decode_nvjpeg
    blobs = [p.read_bytes() for p in sorted((nus_root / 'samples/CAM_FRONT').iterdir())]
    gpu = decode_nvjpeg(blobs)
    assert tuple(gpu[0].shape) == (3, 900, 1600) and gpu[0].is_cuda
    full = decode_cpu(blobs[0], None)[0].astype(np.float32)
    assert np.abs(gpu[0].permute(1, 2, 0).cpu().numpy() - full).mean() < 2.0
    mixed = DaliDecoder('mixed', batch_size=len(blobs))(blobs, (450, 800))
    ref = decode_cpu(blobs[0], (450, 800))[0].astype(np.float32)
    assert np.abs(mixed[0].astype(np.float32) - ref).mean() < 2.0


@pytest.mark.parametrize('crop,flip,rotate', [
    ((40, 30, 240, 130), False, 4.7), ((40, 30, 240, 130), True, -5.3),
    ((-20, 50, 180, 170), True, 3.1), ((10, 10, 210, 110), True, 0.0),
    ((300, 10, 500, 110), False, 2.0)])  # the crop misses the image
@pytest.mark.parametrize('padded', [False, True])
def test_crop_flip_rotate_is_pils(crop, flip, rotate, padded):
    """Without a resize, crop (zeros outside), flip and rotation are PIL's pixel for pixel
    (nearest, about the crop's centre, zero fill), edges included; also from a frame decoded
    with a padding byte per pixel (whatever its value, the result has three channels)."""
    from PIL import Image

    from bevboost.data.augment import AugParams, apply_plan
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (150, 220, 3), dtype=np.uint8)
    plan = AugParams(1.0, (220, 150), crop, flip, rotate)
    pil = Image.fromarray(img).crop(crop)
    if flip:
        pil = pil.transpose(method=Image.Transpose.FLIP_LEFT_RIGHT)
    ref = np.asarray(pil.rotate(rotate))
    src = np.dstack([img, rng.integers(0, 256, (150, 220), dtype=np.uint8)]) if padded else img
    out = apply_plan(src, plan, padded)
    assert out.shape == ref.shape and out.flags.c_contiguous
    # nearest sampling on a 1/1024-pixel fixed-point grid: a tie may round the other way
    assert (out != ref).any(axis=-1).mean() < 5e-3  # measured <= 1.8e-3; bilinear: 0.75-0.87
