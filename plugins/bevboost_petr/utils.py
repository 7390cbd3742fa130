"""Box parameterisation shared by the head, the matcher and the decoder.

The regression target is the "normalized" 10-vector of PETR/DETR3D
``(cx, cy, log w, log l, cz, log h, sin yaw, cos yaw, vx, vy)``: logs keep
sizes positive and sin/cos avoid the yaw wrap-around, which is what makes a
plain L1 loss and L1 matching cost work.
"""
from __future__ import annotations

import torch
from torch import Tensor


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Logit with clamping so 0/1 inputs stay finite."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def normalize_bbox(bboxes: Tensor) -> Tensor:
    """``(x, y, z_center, w, l, h, yaw[, vx, vy])`` -> normalized 8/10-vector."""
    cx, cy, cz = bboxes[..., 0:1], bboxes[..., 1:2], bboxes[..., 2:3]
    w = bboxes[..., 3:4].clamp(min=1e-3).log()
    l = bboxes[..., 4:5].clamp(min=1e-3).log()  # noqa: E741
    h = bboxes[..., 5:6].clamp(min=1e-3).log()
    rot = bboxes[..., 6:7]
    parts = [cx, cy, w, l, cz, h, rot.sin(), rot.cos()]
    if bboxes.size(-1) > 7:
        parts.append(bboxes[..., 7:9])
    return torch.cat(parts, dim=-1)


def denormalize_bbox(normalized: Tensor) -> Tensor:
    """Inverse of :func:`normalize_bbox` (z stays the gravity center)."""
    rot = torch.atan2(normalized[..., 6:7], normalized[..., 7:8])
    cx, cy, cz = normalized[..., 0:1], normalized[..., 1:2], normalized[..., 4:5]
    w = normalized[..., 2:3].exp()
    l = normalized[..., 3:4].exp()  # noqa: E741
    h = normalized[..., 5:6].exp()
    parts = [cx, cy, cz, w, l, h, rot]
    if normalized.size(-1) > 8:
        parts.append(normalized[..., 8:10])
    return torch.cat(parts, dim=-1)


def pos2posemb3d(pos: Tensor, num_pos_feats: int = 128, temperature: int = 10000) -> Tensor:
    """Sine embedding of normalized 3D points: ``(..., 3)`` -> ``(..., 3*num_pos_feats)``."""
    scale = 2 * torch.pi
    pos = pos * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=pos.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode='floor') / num_pos_feats)
    embs = []
    for i in (1, 0, 2):  # y, x, z like DETR's (y, x) order
        p = pos[..., i, None] / dim_t
        embs.append(torch.stack((p[..., 0::2].sin(), p[..., 1::2].cos()), dim=-1).flatten(-2))
    return torch.cat(embs, dim=-1)
