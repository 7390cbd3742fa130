"""PETRv2 detection head: 3D-position-aware queries decoded against multi-view features.

Keys are image features of all views of both frames plus their 3D position
embedding (:mod:`.position_encoding`); queries come from learnable 3D anchor
points. Each decoder layer predicts classes and normalized boxes relative to
the anchors; training matches predictions to ground truth one-to-one with
mmdet's ``HungarianAssigner`` and sums focal + L1 losses over all layers, so
inference needs no NMS.
"""
from __future__ import annotations

import copy
import functools
import logging
from typing import Literal, Sequence

import numpy as np
import torch
from mmengine.model import BaseModule, bias_init_with_prob
from mmengine.structures import InstanceData
import torch.nn.functional as F
from torch import Tensor, nn

from mmdet3d.registry import MODELS, TASK_UTILS
from mmdet3d.structures import LiDARInstance3DBoxes

from .decoder import CheckpointedDetrDecoder
from .petrv2_weights import attach_part_loading, published_head_key
from .position_encoding import MultiViewSinePE, PositionEncoder3D
from .utils import inverse_sigmoid, normalize_bbox, pos2posemb3d

logger = logging.getLogger(__name__)


def _mlp_branch(embed_dims: int, out: int, num_fcs: int, norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_fcs):
        layers.append(nn.Linear(embed_dims, embed_dims))
        if norm:
            layers.append(nn.LayerNorm(embed_dims))
        layers.append(nn.ReLU(inplace=True))
    layers.append(nn.Linear(embed_dims, out))
    return nn.Sequential(*layers)


@functools.lru_cache(maxsize=64)
def _nearest_valid(size: int, pad: int, out: int) -> Tensor:
    """Which of ``out`` cells sample an in-image pixel when ``pad`` pixels (``size`` real)
    are resized nearest to ``out``: torch's own nearest rule, one axis at a time."""
    valid = (torch.arange(pad) < size).float().view(1, 1, pad)
    return F.interpolate(valid, size=out, mode='nearest').view(out) > 0.5


class TaskRegBranch(nn.Module):
    """PETRv2's ``RegLayer``: shared FCs, then one small MLP per group of codes.

    The outputs are concatenated in ``group_dims`` order (the reference's
    ``(2, 1, 3, 2, 2)`` over the 10-code box vector).
    """

    def __init__(self, embed_dims: int, num_fcs: int, group_dims: Sequence[int]) -> None:
        super().__init__()
        shared: list[nn.Module] = []
        for _ in range(num_fcs):
            shared += [nn.Linear(embed_dims, embed_dims), nn.ReLU(inplace=True)]
        self.shared = nn.Sequential(*shared)
        self.task_heads = nn.ModuleList(
            nn.Sequential(nn.Linear(embed_dims, embed_dims), nn.ReLU(inplace=True),
                          nn.Linear(embed_dims, dim)) for dim in group_dims)

    def forward(self, x: Tensor) -> Tensor:
        feat = self.shared(x)
        return torch.cat([head(feat) for head in self.task_heads], dim=-1)


@MODELS.register_module()
class PETRv2Head(BaseModule):
    """PETRv2 head (arXiv 2206.01256), written for mmdet3d 1.x.

    Args:
        num_classes: object classes.
        in_channels: channels of the neck feature used as keys.
        embed_dims: transformer width.
        num_query: number of object queries (900 in the paper).
        position_range: 3D box that normalizes frustum points.
        pc_range: box that the center regression is scaled to.
        depth_num, depth_start, lid, with_fpe: see :class:`PositionEncoder3D`.
        bbox_coder: ``NMSFreeBBoxCoder`` config.
        loss_cls, loss_bbox: mmdet losses (focal, L1).
        code_weights: per-code weight of the L1 loss (velocity down-weighted).
        with_multiview: add PETR's multi-view 2D sine encoding (view, row,
            column) through a 1x1-conv MLP to the 3D position embedding.
        group_reg_dims: per-task regression heads over these code groups
            (PETRv2's ``with_multi``, ``(2, 1, 3, 2, 2)``); ``None``: one MLP.
        mask_outside_keys: also hide from attention the pixels whose frustum
            leaves ``position_range`` (the reference masks padding only).
        frustum_pixel: ``'corner'`` (published) or ``'center'``; see
            :mod:`.position_encoding`.
        with_time: velocity codes are displacements over the frame gap, divided
            by ``meta['prev_time_gap']`` (seconds) to give m/s, as the published
            PETRv2 (``with_time=True``); ``False``: velocity regressed directly.
        allow_partial_weights: accept a checkpoint that covers the head partly
            (see :mod:`.petrv2_weights`).
        decoder: config of mmdet's ``DetrTransformerDecoder``, plus ``with_cp``
            to checkpoint every layer while training (the recipe's setting).
        train_cfg: ``dict(assigner=...)`` with mmdet's ``HungarianAssigner``.
    """

    def __init__(self, num_classes: int, in_channels: int, embed_dims: int = 256,
                 num_query: int = 900,
                 position_range: Sequence[float] = (-61.2, -61.2, -10.0, 61.2, 61.2, 10.0),
                 pc_range: Sequence[float] = (-51.2, -51.2, -5.0, 51.2, 51.2, 3.0),
                 depth_num: int = 64, depth_start: float = 1.0, lid: bool = True,
                 with_fpe: bool = True, num_reg_fcs: int = 2, code_size: int = 10,
                 code_weights: Sequence[float] | None = None, with_multiview: bool = False,
                 group_reg_dims: Sequence[int] | None = None, mask_outside_keys: bool = True,
                 frustum_pixel: Literal['corner', 'center'] = 'corner', with_time: bool = False,
                 allow_partial_weights: bool = False,
                 decoder: dict | None = None,
                 bbox_coder: dict | None = None,
                 loss_cls: dict = dict(type='mmdet.FocalLoss', use_sigmoid=True, gamma=2.0,
                                       alpha=0.25, loss_weight=2.0),
                 loss_bbox: dict = dict(type='mmdet.L1Loss', loss_weight=0.25),
                 train_cfg: dict | None = None, test_cfg: dict | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_query < 1 or num_classes < 1:
            raise ValueError(f'num_query and num_classes must be >= 1, got {num_query}, {num_classes}')
        if decoder is None:
            raise ValueError('PETRv2Head needs a decoder config')
        self.num_classes, self.num_query, self.embed_dims = num_classes, num_query, embed_dims
        self.code_size = code_size
        weights = list(code_weights) if code_weights is not None else [1.0] * 8 + [0.2, 0.2]
        if len(weights) != code_size:
            raise ValueError(f'code_weights needs {code_size} values, got {len(weights)}')
        self.register_buffer('code_weights', torch.tensor(weights), persistent=False)
        self.register_buffer('pc_range', torch.tensor(pc_range, dtype=torch.float32), persistent=False)
        self.input_proj = nn.Conv2d(in_channels, embed_dims, 1)
        self.position_encoder = PositionEncoder3D(embed_dims, position_range, depth_num,
                                                  depth_start, lid, with_fpe, frustum_pixel)
        self.with_time = with_time
        self.multiview_pe = MultiViewSinePE(embed_dims // 2) if with_multiview else None
        self.adapt_pos3d = nn.Sequential(
            nn.Conv2d(embed_dims * 3 // 2, embed_dims * 4, 1), nn.ReLU(inplace=True),
            nn.Conv2d(embed_dims * 4, embed_dims, 1)) if with_multiview else None
        self.mask_outside_keys = mask_outside_keys
        self.decoder = CheckpointedDetrDecoder(**copy.deepcopy(decoder))
        if self.decoder.embed_dims != embed_dims:
            raise ValueError(f'decoder width {self.decoder.embed_dims} != embed_dims {embed_dims}')
        self.num_layers = self.decoder.num_layers
        self.reference_points = nn.Embedding(num_query, 3)
        self.query_embedding = nn.Sequential(nn.Linear(embed_dims * 3 // 2, embed_dims),
                                             nn.ReLU(inplace=True), nn.Linear(embed_dims, embed_dims))
        self.cls_branches = nn.ModuleList(_mlp_branch(embed_dims, num_classes, num_reg_fcs, True)
                                          for _ in range(self.num_layers))
        if group_reg_dims is not None and sum(group_reg_dims) != code_size:
            raise ValueError(f'group_reg_dims {list(group_reg_dims)} must add up to code_size '
                             f'{code_size}')
        self.reg_branches = nn.ModuleList(
            TaskRegBranch(embed_dims, num_reg_fcs, group_reg_dims) if group_reg_dims
            else _mlp_branch(embed_dims, code_size, num_reg_fcs, False)
            for _ in range(self.num_layers))
        self.loss_cls = MODELS.build(loss_cls)
        self.loss_bbox = MODELS.build(loss_bbox)
        self.bbox_coder = TASK_UTILS.build(bbox_coder or dict(
            type='NMSFreeBBoxCoder', pc_range=pc_range, num_classes=num_classes))
        self.assigner = TASK_UTILS.build((train_cfg or {}).get('assigner', dict(
            type='mmdet.HungarianAssigner', match_costs=[
                dict(type='mmdet.FocalLossCost', weight=2.0),
                dict(type='BBox3DL1Cost', weight=0.25)])))
        self.test_cfg = test_cfg or {}
        self._register_load_state_dict_pre_hook(self._warn_published_velocity, with_module=False)
        attach_part_loading(self, 'pts_bbox_head', allow_partial_weights, published_head_key)

    def _warn_published_velocity(self, state_dict, prefix, *args) -> None:
        """A published PETRv2 head regresses displacement over the frame gap."""
        if not self.with_time and any(k.startswith(prefix + 'transformer.decoder.')
                                      for k in state_dict):
            logger.warning('%s: loading a published PETRv2 head with with_time=False: its '
                           'velocity codes are displacements over the frame gap, so velocities '
                           'come out multiplied by the gap (set with_time=True, as published)',
                           prefix.rstrip('.') or 'pts_bbox_head')

    def init_weights(self) -> None:
        super().init_weights()
        # like PETR's (and DETR's) transformer: Xavier-uniform matrices, zero biases
        for m in self.decoder.modules():
            if isinstance(getattr(m, 'weight', None), Tensor) and m.weight.dim() > 1:
                nn.init.xavier_uniform_(m.weight)
                if isinstance(getattr(m, 'bias', None), Tensor):
                    nn.init.zeros_(m.bias)
        nn.init.uniform_(self.reference_points.weight, 0, 1)
        bias = bias_init_with_prob(0.01)
        for branch in self.cls_branches:
            nn.init.constant_(branch[-1].bias, bias)

    # ------------------------------------------------------------------ forward
    def forward(self, feats: Sequence[Tensor], metas: Sequence[dict]) -> dict[str, Tensor]:
        """``feats[0] (B, N, C, H, W)`` -> per-layer ``cls_scores``/``bbox_preds`` (L, B, Q, *)."""
        x = feats[0]
        b, n = x.shape[:2]
        # float64 like the published head: the position encoder inverts it in float64
        lidar2img = torch.from_numpy(np.stack([np.asarray(m['lidar2img'], dtype=np.float64)
                                               for m in metas])).to(x.device)
        if lidar2img.shape[:2] != (b, n):
            raise ValueError(f'lidar2img has shape {tuple(lidar2img.shape)}, expected ({b}, {n}, 4, 4): '
                             'one matrix per view of every frame')
        pad_hw = tuple(metas[0].get('batch_input_shape') or metas[0]['pad_shape'][:2])
        feat = self.input_proj(x.flatten(0, 1))
        pos, outside = self.position_encoder(feat, lidar2img, pad_hw)
        hw = feat.shape[-2:]
        masks = self._padding_mask(metas, b, n, hw, pad_hw, x.device)
        if self.multiview_pe is not None:
            sine = self.multiview_pe(masks).flatten(0, 1).to(pos.dtype)
            pos = pos + self.adapt_pos3d(sine)
        if self.mask_outside_keys:
            masks = masks | outside.view(b, n, *hw)
        memory = feat.view(b, n, self.embed_dims, -1).permute(0, 1, 3, 2).flatten(1, 2)
        key_pos = pos.view(b, n, self.embed_dims, -1).permute(0, 1, 3, 2).flatten(1, 2)
        ref = self.reference_points.weight  # (Q, 3) in [0, 1]
        query_pos = self.query_embedding(pos2posemb3d(ref, self.embed_dims // 2)).to(memory.dtype)
        query_pos = query_pos.unsqueeze(0).expand(b, -1, -1)
        hidden = self.decoder(query=torch.zeros_like(query_pos), key=memory, value=memory,
                              query_pos=query_pos, key_pos=key_pos,
                              key_padding_mask=masks.flatten(1))
        gap = self._time_gaps(metas, x.device) if self.with_time else None
        cls_scores, bbox_preds = [], []
        ref_logit = inverse_sigmoid(ref.float())
        r = self.pc_range
        for lvl in range(self.num_layers):
            cls_scores.append(self.cls_branches[lvl](hidden[lvl]))
            tmp = self.reg_branches[lvl](hidden[lvl]).float()
            xy = (tmp[..., 0:2] + ref_logit[..., 0:2]).sigmoid() * (r[3:5] - r[0:2]) + r[0:2]
            z = (tmp[..., 4:5] + ref_logit[..., 2:3]).sigmoid() * (r[5:6] - r[2:3]) + r[2:3]
            rest = tmp[..., 5:]
            if gap is not None:  # displacement over the frame gap -> m/s
                rest = torch.cat([rest[..., :3], rest[..., 3:5] / gap, rest[..., 5:]], dim=-1)
            bbox_preds.append(torch.cat([xy, tmp[..., 2:4], z, rest], dim=-1))
        return dict(cls_scores=torch.stack(cls_scores), bbox_preds=torch.stack(bbox_preds))

    @staticmethod
    def _time_gaps(metas: Sequence[dict], device: torch.device) -> Tensor:
        """``(B, 1, 1)`` seconds between the current and the earlier frame."""
        gaps = []
        for meta in metas:
            if 'prev_time_gap' not in meta:
                raise ValueError("with_time=True needs meta['prev_time_gap'] (seconds between "
                                 'the frames; PETRv2NuScenesDataset writes it): add it to '
                                 "Pack3DDetInputs' meta_keys")
            gap = float(meta['prev_time_gap'])
            if not gap > 0:
                raise ValueError(f'prev_time_gap must be > 0 seconds, got {gap}')
            gaps.append(gap)
        return torch.tensor(gaps, dtype=torch.float32, device=device).view(-1, 1, 1)

    @staticmethod
    def _padding_mask(metas: Sequence[dict], b: int, n: int, hw: tuple[int, int],
                      pad_hw: tuple[int, int], device: torch.device) -> Tensor:
        """True on feature pixels that come from padding (per view when shapes differ).

        As published: the image-resolution mask (padding True) resized to the
        feature map by nearest-neighbour sampling, which keeps feature row ``i``
        iff image row ``floor(i * pad_h / H)`` is inside the image.
        """
        mask = torch.ones(b, n, *hw, dtype=torch.bool)
        for i, meta in enumerate(metas):
            shapes = meta.get('img_shape', pad_hw)
            if not isinstance(shapes[0], (list, tuple)):
                shapes = [shapes] * n
            for j, (h, w) in enumerate(s[:2] for s in shapes[:n]):
                rows = _nearest_valid(int(h), int(pad_hw[0]), hw[0])
                cols = _nearest_valid(int(w), int(pad_hw[1]), hw[1])
                mask[i, j] = ~(rows[:, None] & cols[None, :])
        return mask.to(device)

    # ------------------------------------------------------------------- losses
    def _targets_single(self, cls_score: Tensor, bbox_pred: Tensor, gt: InstanceData
                        ) -> tuple[Tensor, Tensor, Tensor, int]:
        pred = InstanceData(scores=cls_score.detach().float(), bboxes=bbox_pred.detach().float())
        gt_boxes = gt.bboxes_3d
        gt_raw = torch.cat([gt_boxes.gravity_center, gt_boxes.tensor[:, 3:]], dim=1).to(
            bbox_pred.device, torch.float32)
        gt_inst = InstanceData(bboxes=gt_raw, labels=gt.labels_3d.to(bbox_pred.device))
        result = self.assigner.assign(pred, gt_inst)
        q = cls_score.size(0)
        labels = torch.full((q,), self.num_classes, dtype=torch.long, device=bbox_pred.device)
        targets = torch.zeros(q, self.code_size, device=bbox_pred.device)
        weights = torch.zeros_like(targets)
        pos = torch.nonzero(result.gt_inds > 0, as_tuple=False).squeeze(-1)
        if pos.numel():
            matched = result.gt_inds[pos] - 1
            labels[pos] = gt_inst.labels[matched]
            norm = normalize_bbox(gt_raw[matched])
            targets[pos, :norm.size(1)] = norm
            weights[pos, :norm.size(1)] = 1.0
        return labels, targets, weights, int(pos.numel())

    def loss_by_feat(self, outs: dict[str, Tensor], gts: Sequence[InstanceData]) -> dict[str, Tensor]:
        """Focal + L1 for every decoder layer (``d{i}.`` prefix for the auxiliary ones)."""
        losses: dict[str, Tensor] = {}
        for lvl in range(self.num_layers):
            cls_scores = outs['cls_scores'][lvl].float()
            bbox_preds = outs['bbox_preds'][lvl].float()
            parts = [self._targets_single(c, p, g) for c, p, g in zip(cls_scores, bbox_preds, gts)]
            labels = torch.cat([p[0] for p in parts])
            targets = torch.cat([p[1] for p in parts])
            weights = torch.cat([p[2] for p in parts]) * self.code_weights
            num_pos = max(float(sum(p[3] for p in parts)), 1.0)
            loss_cls = self.loss_cls(cls_scores.flatten(0, 1), labels, avg_factor=num_pos)
            preds = bbox_preds.flatten(0, 1)
            finite = torch.isfinite(targets).all(-1)
            loss_bbox = self.loss_bbox(preds[finite], targets[finite], weights[finite],
                                       avg_factor=num_pos)
            prefix = '' if lvl == self.num_layers - 1 else f'd{lvl}.'
            losses[f'{prefix}loss_cls'] = loss_cls
            losses[f'{prefix}loss_bbox'] = loss_bbox
        return losses

    def loss(self, feats: Sequence[Tensor], metas: Sequence[dict],
             gts: Sequence[InstanceData]) -> dict[str, Tensor]:
        return self.loss_by_feat(self(feats, metas), gts)

    # ---------------------------------------------------------------- inference
    def predict_by_feat(self, outs: dict[str, Tensor], metas: Sequence[dict]) -> list[InstanceData]:
        """Last-layer predictions -> ``InstanceData(bboxes_3d, scores_3d, labels_3d)`` per sample."""
        results = []
        for i, meta in enumerate(metas):
            dec = self.bbox_coder.decode_single(outs['cls_scores'][-1, i], outs['bbox_preds'][-1, i])
            boxes = dec['bboxes'].clone()
            boxes[:, 2] = boxes[:, 2] - boxes[:, 5] * 0.5  # gravity center -> bottom center
            box_type = meta.get('box_type_3d', LiDARInstance3DBoxes)
            results.append(InstanceData(bboxes_3d=box_type(boxes, box_dim=boxes.size(-1)),
                                        scores_3d=dec['scores'], labels_3d=dec['labels']))
        return results

    def predict(self, feats: Sequence[Tensor], metas: Sequence[dict]) -> list[InstanceData]:
        return self.predict_by_feat(self(feats, metas), metas)
