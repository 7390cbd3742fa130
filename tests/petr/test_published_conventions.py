"""The published PETRv2's conventions, pinned as facts (no published code needed).

Each expected value here is read off the published head
(``projects/mmdet3d_plugin/models/dense_heads/petrv2_head.py``): the frustum
grid ``arange(W) * pad_w / W``, the padding mask resized nearest
(``F.interpolate(masks, size=x.shape[-2:])``), ``np.linalg.inv`` of the
float64 ``lidar2img``, and ``with_time``'s division of the velocity codes by
the mean frame gap.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.mmdet3d


@pytest.fixture(scope='module', autouse=True)
def _registered():
    import bevboost_petr  # noqa: F401
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet3d')


def _image_points(frustum_pixel: str, feat_hw=(2, 4), pad_hw=(32, 64)) -> torch.Tensor:
    """Image (u, v) of each feature pixel's ray: identity lidar2img, depth 1."""
    from bevboost_petr.position_encoding import PositionEncoder3D
    enc = PositionEncoder3D(8, [-1000, -1000, -1000, 1000, 1000, 1000], depth_num=1,
                            depth_start=1.0, lid=False, frustum_pixel=frustum_pixel)
    coords, _ = enc.coords3d(torch.eye(4)[None, None], feat_hw, pad_hw)
    xyz = torch.sigmoid(coords[0].double()) * 2000 - 1000  # (3, H, W): (u*d, v*d, d), d = 1
    return xyz


def test_frustum_rays_pass_through_the_feature_pixel_corner_by_default():
    xyz = _image_points('corner')
    # stride 16: feature column j looks through image column 16*j, row i through 16*i
    torch.testing.assert_close(xyz[0], torch.tensor([[0., 16, 32, 48]] * 2, dtype=torch.double),
                               atol=2e-3, rtol=0)
    torch.testing.assert_close(xyz[1], torch.tensor([[0.] * 4, [16.] * 4], dtype=torch.double),
                               atol=2e-3, rtol=0)
    torch.testing.assert_close(xyz[2], torch.ones(2, 4, dtype=torch.double), atol=2e-3, rtol=0)


def test_pixel_centre_frustum_is_an_option_half_a_feature_pixel_further():
    xyz = _image_points('center')
    torch.testing.assert_close(xyz[0], torch.tensor([[8., 24, 40, 56]] * 2, dtype=torch.double),
                               atol=2e-3, rtol=0)
    torch.testing.assert_close(xyz[1], torch.tensor([[8.] * 4, [24.] * 4], dtype=torch.double),
                               atol=2e-3, rtol=0)
    from bevboost_petr.position_encoding import PositionEncoder3D
    with pytest.raises(ValueError, match='frustum_pixel'):
        PositionEncoder3D(8, [-1, -1, -1, 1, 1, 1], frustum_pixel='centre')


def _masked(img_shapes, hw=(20, 50), pad=(320, 800)):
    from bevboost_petr.petrv2_head import PETRv2Head
    mask = PETRv2Head._padding_mask([dict(img_shape=img_shapes)], 1, len(img_shapes), hw, pad,
                                    torch.device('cpu'))[0]
    rows = [sorted(set(torch.nonzero(m.all(1)).flatten().tolist())) for m in mask]
    cols = [sorted(set(torch.nonzero(m.all(0)).flatten().tolist())) for m in mask]
    return rows, cols, mask


def test_padding_mask_is_the_image_mask_resized_nearest():
    # 320x800 pad, stride 16 (20x50 keys): feature row i samples image row 16*i
    rows, cols, mask = _masked([(296, 800), (280, 776), (320, 800)])
    assert rows == [[19], [18, 19], []]  # 296: row 18 (image row 288) is image, row 19 padding
    assert cols == [[], [49], []]  # 776: column 49 (image column 784) is padding, 48 is not
    assert int(mask.sum()) == 50 + (2 * 50 + 20 - 2) + 0


def test_lidar2img_is_inverted_in_float64():
    from bevboost_petr.position_encoding import img2lidar_matrices
    cam = np.array([[1266.4, 0, 816.3, 0], [0, 1266.4, 491.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    ext = np.eye(4)
    ext[:3, :3] = [[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]
    ext[:3, 3] = [0.3, 1.6, -412.7]
    lidar2img = cam @ ext
    published = torch.tensor(np.linalg.inv(lidar2img), dtype=torch.float32)  # float64, rounded
    got = img2lidar_matrices(torch.tensor(lidar2img)[None])[0]
    torch.testing.assert_close(got, published, rtol=1e-6, atol=1e-9)
    # an fp32 inverse misses that tolerance, so the check above can fail
    fp32 = torch.linalg.inv(torch.tensor(lidar2img, dtype=torch.float32))
    assert not torch.allclose(fp32, published, rtol=1e-6, atol=1e-9)


def _tiny_head(**kw):
    from mmdet3d.registry import MODELS
    from mmengine.config import Config
    cfg = Config.fromfile('configs/_base_/models/petrv2_tiny.py', import_custom_modules=False)
    torch.manual_seed(0)
    head = MODELS.build(dict(cfg.model.pts_bbox_head, num_query=8, **kw))
    head.init_weights()
    return head.eval()


def _metas(gap=None, n=12):
    ang = [2 * np.pi * i / 6 for i in range(n)]
    mats = []
    for a in ang:
        ext = np.eye(4)
        c, s = np.cos(a), np.sin(a)
        ext[:3, :3] = [[-s, c, 0], [0, 0, -1], [c, s, 0]]
        cam = np.array([[100., 0, 128, 0], [0, 100, 48, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
        mats.append(cam @ ext)
    meta = dict(lidar2img=np.stack(mats), img_shape=(96, 256), pad_shape=(96, 256),
                batch_input_shape=(96, 256))
    if gap is not None:
        meta['prev_time_gap'] = gap
    return [meta]


def test_velocity_codes_are_displacements_over_the_frame_gap():
    head = _tiny_head(with_time=True)
    feats = [torch.randn(1, 12, 64, 6, 16)]
    with torch.no_grad():
        half = head(feats, _metas(0.5))['bbox_preds']
        quarter = head(feats, _metas(0.25))['bbox_preds']
        head.with_time = False
        raw = head(feats, _metas())['bbox_preds']
    torch.testing.assert_close(half[..., :8], raw[..., :8], rtol=0, atol=0)
    torch.testing.assert_close(half[..., 8:10], raw[..., 8:10] / 0.5)  # m/s = m / s
    torch.testing.assert_close(quarter[..., 8:10], 2 * half[..., 8:10])
    head.with_time = True
    with pytest.raises(ValueError, match='prev_time_gap'):
        head(feats, _metas())
    with pytest.raises(ValueError, match='> 0'):
        head(feats, _metas(0.0))
