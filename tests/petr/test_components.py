"""PETRv2 building blocks on random tensors: shapes, geometry, precision, input checks."""
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


def _camera(yaw: float = 0.0, width: int = 256, height: int = 96) -> np.ndarray:
    """lidar2img of a forward-looking pinhole camera (x forward, z up in LiDAR)."""
    k = np.array([[100.0, 0, width / 2, 0], [0, 100.0, height / 2, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])  # lidar -> yawed lidar
    axes = np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]])  # lidar (x fwd) -> camera (z fwd)
    l2c = np.eye(4)
    l2c[:3, :3] = axes @ rot
    return k @ l2c


def test_normalize_roundtrip():
    from bevboost_petr.utils import denormalize_bbox, normalize_bbox
    boxes = torch.tensor([[1.0, -2.0, 0.5, 1.8, 4.2, 1.5, 2.9, 0.3, -0.1]])
    back = denormalize_bbox(normalize_bbox(boxes))
    torch.testing.assert_close(back, boxes, rtol=1e-5, atol=1e-5)


def test_vovnet_shapes_and_bad_spec():
    from bevboost_petr.vovnet import VoVNet
    net = VoVNet('V-tiny-eSE', out_features=('stage4', 'stage5'), frozen_stages=0)
    outs = net(torch.randn(2, 3, 64, 128))
    assert [tuple(o.shape) for o in outs] == [(2, 96, 4, 8), (2, 128, 2, 4)]
    assert not any(p.requires_grad for p in net.stem.parameters())
    with pytest.raises(ValueError, match='unknown VoVNet spec'):
        VoVNet('V-1000')
    with pytest.raises(ValueError, match='out_features'):
        VoVNet('V-tiny-eSE', out_features=('stage9',))


def test_grid_mask_is_device_agnostic_and_train_only():
    from bevboost_petr.grid_mask import GridMask
    gm = GridMask(prob=1.0)
    x = torch.ones(2, 3, 32, 48)
    masked = gm.train()(x)
    assert masked.device == x.device and 0 < masked.mean() < 1
    assert torch.equal(gm.eval()(x), x)
    with pytest.raises(ValueError):
        GridMask(ratio=1.5)


def test_position_encoder_backprojects_through_lidar2img():
    from bevboost_petr.position_encoding import PositionEncoder3D
    enc = PositionEncoder3D(16, [-60, -60, -10, 60, 60, 10], depth_num=4, lid=False)
    l2i = torch.tensor(_camera(), dtype=torch.float32)[None, None]
    coords, outside = enc.coords3d(l2i, (6, 16), (96, 256))
    xyz = torch.sigmoid(coords.view(1, 4, 3, 6, 16))  # (BN, D, 3, H, W), normalized
    r = enc.position_range
    xyz = xyz * (r[3:] - r[:3]).view(1, 1, 3, 1, 1) + r[:3].view(1, 1, 3, 1, 1)
    depths = enc.depth_bins(torch.device('cpu'))
    # a forward camera: LiDAR x equals depth for every pixel
    torch.testing.assert_close(xyz[0, :, 0], depths.view(4, 1, 1).expand(4, 6, 16),
                               atol=1e-3, rtol=1e-4)
    assert outside.shape == (1, 6, 16) and not outside.any()


def test_position_encoder_geometry_stays_fp32_under_autocast():
    from bevboost_petr.position_encoding import PositionEncoder3D
    enc = PositionEncoder3D(16, [-60, -60, -10, 60, 60, 10], depth_num=8)
    feat = torch.randn(1, 16, 6, 16)
    l2i = torch.tensor(_camera(), dtype=torch.float32)[None, None]
    ref, _ = enc(feat, l2i, (96, 256))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        coords, _ = enc.coords3d(l2i, (6, 16), (96, 256))
        out, _ = enc(feat, l2i, (96, 256))
    assert coords.dtype == torch.float32
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.05)


def _head(num_query: int = 16):
    from mmdet3d.registry import MODELS
    from mmengine.config import Config
    cfg = Config.fromfile('configs/_base_/models/petrv2_tiny.py', import_custom_modules=False)
    head = dict(cfg.model.pts_bbox_head, num_query=num_query, train_cfg=cfg.model.train_cfg)
    model = MODELS.build(head)
    model.init_weights()
    return model


def _metas(b: int, n: int) -> list[dict]:
    from mmdet3d.structures import LiDARInstance3DBoxes
    l2i = np.stack([_camera(yaw=2 * np.pi * i / n) for i in range(n)])
    return [dict(lidar2img=l2i, img_shape=(96, 256), pad_shape=(96, 256),
                 batch_input_shape=(96, 256), box_type_3d=LiDARInstance3DBoxes)
            for _ in range(b)]


def test_head_loss_backward_and_predict():
    from mmdet3d.structures import LiDARInstance3DBoxes
    from mmengine.structures import InstanceData
    head = _head()
    feats = [torch.randn(2, 12, 64, 6, 16, requires_grad=True)]
    gts = [InstanceData(bboxes_3d=LiDARInstance3DBoxes(torch.tensor(
        [[10.0, 2.0, -1.0, 4.0, 1.8, 1.5, 0.3, 1.0, 0.0]]), box_dim=9),
        labels_3d=torch.tensor([0])),
        InstanceData(bboxes_3d=LiDARInstance3DBoxes(torch.zeros(0, 9), box_dim=9),
                     labels_3d=torch.zeros(0, dtype=torch.long))]
    losses = head.loss(feats, _metas(2, 12), gts)
    assert {'loss_cls', 'loss_bbox', 'd0.loss_cls', 'd0.loss_bbox'} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert feats[0].grad is not None and feats[0].grad.abs().sum() > 0
    head.eval()
    with torch.no_grad():
        results = head.predict([f.detach() for f in feats], _metas(2, 12))
    assert len(results) == 2
    assert results[0].bboxes_3d.tensor.shape[1] == 9
    assert len(results[0].scores_3d) == len(results[0].labels_3d) <= 16 * 10


def test_head_rejects_wrong_number_of_matrices():
    head = _head()
    with pytest.raises(ValueError, match='lidar2img'):
        head([torch.randn(1, 12, 64, 6, 16)], _metas(1, 6))


def test_nms_free_coder_topk_and_range():
    from bevboost_petr.task_utils import NMSFreeBBoxCoder
    coder = NMSFreeBBoxCoder(pc_range=[-51.2, -51.2, -5, 51.2, 51.2, 3],
                             post_center_range=[-60, -60, -10, 60, 60, 10], max_num=5,
                             num_classes=3)
    cls = torch.full((4, 3), -10.0)
    cls[1, 2] = 5.0
    boxes = torch.zeros(4, 10)
    boxes[:, 7] = 1.0
    boxes[3, 0] = 100.0  # outside post_center_range
    cls[3, 0] = 6.0
    out = coder.decode_single(cls, boxes)
    assert out['labels'][0] == 2
    assert out['scores'][0] == pytest.approx(torch.sigmoid(torch.tensor(5.0)).item())
    assert (out['bboxes'][:, 0] < 60).all()
    with pytest.raises(ValueError):
        NMSFreeBBoxCoder(pc_range=[0, 0, 0])


def test_l1_cost_matches_manual():
    from mmengine.structures import InstanceData
    from bevboost_petr.task_utils import BBox3DL1Cost
    from bevboost_petr.utils import normalize_bbox
    gt = torch.tensor([[1.0, 2.0, 0.0, 2.0, 4.0, 1.5, 0.1]])
    pred = normalize_bbox(gt) + 0.5
    cost = BBox3DL1Cost(weight=2.0)(InstanceData(bboxes=pred), InstanceData(bboxes=gt))
    assert cost.shape == (1, 1) and cost.item() == pytest.approx(2.0 * 0.5 * 8, rel=1e-5)


def test_resize_crop_flip_keeps_projection_consistent():
    from bevboost_petr.transforms import MultiViewResizeCropFlip
    np.random.seed(0)
    k = _camera(width=400, height=200)  # used as cam2img with an identity lidar2cam
    img = np.zeros((200, 400, 3), np.float32)
    point = np.array([20.0, 3.0, 0.5, 1.0])  # LiDAR point in front of the camera
    uvd = k @ point
    img[int(uvd[1] / uvd[2]), int(uvd[0] / uvd[2])] = 255.0
    t = MultiViewResizeCropFlip(final_dim=(96, 160), resize_lim=(1.0, 1.2), rand_flip=True)
    checked = 0
    for _ in range(8):
        out = t(dict(img=[img.copy()], cam2img=[k], lidar2cam=[np.eye(4)]))
        uvd = out['lidar2img'][0] @ point
        u2, v2 = uvd[0] / uvd[2], uvd[1] / uvd[2]
        assert out['img'][0].shape == (96, 160, 3)
        if 2 <= u2 < 158 and 2 <= v2 < 94:
            # the bright pixel moved to where the new projection says
            ys, xs = np.nonzero(out['img'][0][..., 0] > 20)
            assert abs(xs.mean() - u2) < 2.5 and abs(ys.mean() - v2) < 2.5
            checked += 1
    assert checked > 0
    with pytest.raises(ValueError):
        MultiViewResizeCropFlip(final_dim=(0, 10))


def test_bev_rot_scale_moves_boxes_and_projection_together():
    from mmdet3d.structures import LiDARInstance3DBoxes
    from bevboost_petr.transforms import BEVRandomRotScale
    np.random.seed(1)
    l2i = _camera()
    boxes = LiDARInstance3DBoxes(torch.tensor([[15.0, 4.0, -1.0, 4.0, 2.0, 1.5, 0.2]]))
    before = l2i @ np.append(boxes.gravity_center[0].numpy(), 1.0)
    out = BEVRandomRotScale(rot_range=(0.2, 0.3), scale_ratio_range=(1.04, 1.05))(
        dict(gt_bboxes_3d=boxes, lidar2img=np.stack([l2i])))
    after = out['lidar2img'][0] @ np.append(out['gt_bboxes_3d'].gravity_center[0].numpy(), 1.0)
    np.testing.assert_allclose(before[:2] / before[2], after[:2] / after[2], atol=1e-3)
    assert not np.allclose(out['gt_bboxes_3d'].gravity_center[0].numpy(), [15.0, 4.0, -0.25])
