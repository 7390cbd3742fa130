"""Matching cost and NMS-free decoder: the glue between the head and mmdet3d.

Registered in mmdet3d's ``TASK_UTILS`` so configs (``default_scope='mmdet3d'``)
can name them next to mmdet's ``HungarianAssigner`` and ``FocalLossCost``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from mmengine.structures import InstanceData
from torch import Tensor

from mmdet3d.registry import TASK_UTILS

from .utils import denormalize_bbox, normalize_bbox


@TASK_UTILS.register_module()
class BBox3DL1Cost:
    """L1 cost between predicted and ground-truth normalized boxes (first 8 codes).

    Velocity is left out on purpose: it is noisy early in training and PETR
    matches on geometry only. ``pred_instances.bboxes`` are normalized
    predictions; ``gt_instances.bboxes`` are raw ``(x, y, z_c, w, l, h, yaw, ...)``.
    """

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = float(weight)

    def __call__(self, pred_instances: InstanceData, gt_instances: InstanceData,
                 img_meta: dict | None = None, **kwargs) -> Tensor:
        pred = pred_instances.bboxes[:, :8].float()
        gt = normalize_bbox(gt_instances.bboxes.float())[:, :8]
        cost = torch.cdist(pred, gt, p=1)
        return torch.nan_to_num(cost, nan=1e4, posinf=1e4) * self.weight


@TASK_UTILS.register_module()
class NMSFreeBBoxCoder:
    """Top-k decoding of set predictions: no NMS is needed after Hungarian training.

    Args:
        pc_range: ``[x0, y0, z0, x1, y1, z1]`` the regression is scaled to.
        post_center_range: boxes whose centers fall outside are dropped.
        max_num: boxes kept per sample.
        score_threshold: optional minimum score.
        num_classes: number of classes of the classifier.
        voxel_size: accepted for compatibility with PETR configs; unused.
    """

    def __init__(self, pc_range: Sequence[float], post_center_range: Sequence[float] | None = None,
                 max_num: int = 300, score_threshold: float | None = None,
                 num_classes: int = 10, voxel_size: Sequence[float] | None = None) -> None:
        if len(pc_range) != 6:
            raise ValueError(f'pc_range must have 6 values, got {list(pc_range)}')
        if max_num <= 0:
            raise ValueError(f'max_num must be positive, got {max_num}')
        self.pc_range = list(pc_range)
        self.post_center_range = list(post_center_range) if post_center_range else None
        self.max_num = int(max_num)
        self.score_threshold = score_threshold
        self.num_classes = int(num_classes)

    def decode_single(self, cls_scores: Tensor, bbox_preds: Tensor) -> dict[str, Tensor]:
        """``cls_scores (Q, C)`` logits, ``bbox_preds (Q, code)`` -> boxes with z at gravity center."""
        cls_scores = cls_scores.float().sigmoid()
        k = min(self.max_num, cls_scores.numel())
        scores, index = cls_scores.view(-1).topk(k)
        labels = index % self.num_classes
        query = torch.div(index, self.num_classes, rounding_mode='floor')
        boxes = denormalize_bbox(bbox_preds.float()[query])
        keep = torch.ones_like(scores, dtype=torch.bool)
        if self.score_threshold is not None:
            keep &= scores > self.score_threshold
        if self.post_center_range is not None:
            r = boxes.new_tensor(self.post_center_range)
            keep &= ((boxes[:, :3] >= r[:3]) & (boxes[:, :3] <= r[3:])).all(1)
        return dict(bboxes=boxes[keep], scores=scores[keep], labels=labels[keep])
