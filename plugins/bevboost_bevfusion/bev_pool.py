"""Pure-PyTorch BEV pooling: sum camera-frustum features into BEV voxels.

BEVFusion's ``bev_pool`` is a CUDA kernel, so its camera branch cannot run
(or be unit-tested) without CUDA. Summing with ``index_add_`` over a flat
voxel index gives the same result on any device, with autograd for free.
Features are accumulated in float32 whatever the autocast dtype: thousands
of frustum points land in one voxel, which overflows or rounds away in fp16.

The voxel layout follows the CUDA op: ``coords[:, (0, 1, 2, 3)]`` are
``(x, y, z, batch)``; the output is ``(B, C, D=z, H=x, W=y)``.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _flat_index(coords: Tensor, b: int, d: int, h: int, w: int) -> Tensor:
    coords = coords.long()
    return ((coords[:, 3] * d + coords[:, 2]) * h + coords[:, 0]) * w + coords[:, 1]


def _check(feats: Tensor, coords: Tensor, dims: tuple[int, ...]) -> None:
    if feats.dim() != 2 or coords.dim() != 2 or coords.size(1) != 4:
        raise ValueError(f'expected feats (N, C) and coords (N, 4), got {tuple(feats.shape)} '
                         f'and {tuple(coords.shape)}')
    if feats.size(0) != coords.size(0):
        raise ValueError(f'feats and coords disagree on N: {feats.size(0)} vs {coords.size(0)}')
    if min(dims) < 1:
        raise ValueError(f'B, D, H, W must be positive, got {dims}')


def bev_pool(feats: Tensor, coords: Tensor, B: int, D: int, H: int, W: int) -> Tensor:  # noqa: N803
    """Drop-in for ``projects.BEVFusion.bevfusion.ops.bev_pool``: ``(N, C)`` -> ``(B, C, D, H, W)``."""
    _check(feats, coords, (B, D, H, W))
    out = bev_pool_forward(feats, coords, B, D, H, W)
    return out.permute(0, 4, 1, 2, 3).contiguous()


def bev_pool_forward(feats: Tensor, coords: Tensor, B: int, D: int, H: int, W: int,  # noqa: N803
                     ) -> Tensor:
    """Sum ``feats`` per voxel: ``(N, C)`` -> ``(B, D, H, W, C)`` in float32 (float64 stays)."""
    acc = torch.float64 if feats.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=feats.device.type, enabled=False):
        out = feats.new_zeros(B * D * H * W, feats.size(1), dtype=acc)
        out.index_add_(0, _flat_index(coords, B, D, H, W), feats.to(acc))
    return out.view(B, D, H, W, feats.size(1))


def bev_pool_backward(out_grad: Tensor, coords: Tensor, B: int, D: int, H: int, W: int,  # noqa: N803
                      ) -> Tensor:
    """Gradient of :func:`bev_pool_forward`: each point gets its voxel's gradient."""
    flat = out_grad.reshape(B * D * H * W, -1)
    return flat.index_select(0, _flat_index(coords, B, D, H, W))


class CompiledExtShim:
    """Stands in for the compiled ``bev_pool_ext`` module (same two functions).

    The project's ``QuickCumsumCuda`` calls them with points sorted by voxel
    and interval bookkeeping that the index-add formulation does not need.
    """

    @staticmethod
    def bev_pool_forward(x: Tensor, geom_feats: Tensor, interval_lengths: Tensor,
                         interval_starts: Tensor, B: int, D: int, H: int, W: int) -> Tensor:  # noqa: N803
        return bev_pool_forward(x, geom_feats, B, D, H, W).to(x.dtype)

    @staticmethod
    def bev_pool_backward(out_grad: Tensor, geom_feats: Tensor, interval_lengths: Tensor,
                          interval_starts: Tensor, B: int, D: int, H: int, W: int) -> Tensor:  # noqa: N803
        return bev_pool_backward(out_grad, geom_feats, B, D, H, W)
