"""3D position embedding of PETR/PETRv2: camera frustum -> 3D points -> embedding.

Every feature-map pixel is lifted to ``depth_num`` points along its camera ray
(linear-increasing depth bins), mapped into the current LiDAR frame with
``inv(lidar2img)`` (previous-frame views carry ego-motion-aligned matrices, so
both frames share one 3D space), normalized to ``position_range`` and embedded
by a 1x1-conv MLP. PETRv2's feature-guided encoder (FPE) gates the embedding
with a sigmoid of the image features. The geometry runs in fp32 even under
autocast: bf16/fp16 cannot resolve 60 m depths after a 4x4 inverse; the
inverse itself is taken in float64 and rounded to fp32, as published.

Frustum grid: feature pixel ``(i, j)`` of an ``H x W`` map over a padded
``pad_h x pad_w`` image looks along the ray through image pixel
``(j * pad_w / W, i * pad_h / H)`` (``frustum_pixel='corner'``, the published
convention: the top-left corner of the feature pixel's footprint). ``'center'``
uses ``((j + 0.5) * pad_w / W, (i + 0.5) * pad_h / H)``, the footprint's centre:
the rays move by half a feature pixel (8 image pixels at stride 16), which
changes the embedding a published head was trained on (docs/petrv2.md gives
the measured effect); it is only for models trained with it.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import Tensor, nn

from .utils import inverse_sigmoid


def img2lidar_matrices(lidar2img: Tensor) -> Tensor:
    """``(..., 4, 4)`` lidar2img -> fp32 img2lidar, inverted in float64 (as published).

    A camera matrix mixes focal lengths of ~1000 with unit rotations, so an fp32
    inverse loses about three digits; the float64 inverse rounded to fp32 does not.
    """
    return torch.linalg.inv(lidar2img.double()).float()


class FeatureGuidedPE(nn.Module):
    """``pe * sigmoid(MLP(feat))``: image features say which 3D hypotheses matter."""

    def __init__(self, embed_dims: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(embed_dims, embed_dims, 1)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(embed_dims, embed_dims, 1)

    def forward(self, pe: Tensor, feat: Tensor) -> Tensor:
        return pe * self.expand(self.act(self.reduce(feat))).sigmoid()


class PositionEncoder3D(nn.Module):
    """Builds the (B*N, C, H, W) 3D position embedding and the invalid-pixel mask.

    Args:
        embed_dims: channels of the embedding.
        position_range: ``[x0, y0, z0, x1, y1, z1]`` of the normalization box.
        depth_num: depth hypotheses per pixel.
        depth_start: nearest depth in meters.
        lid: linear-increasing depth bins (denser near the camera).
        with_fpe: feature-guided gating (PETRv2).
        frustum_pixel: ``'corner'`` (published) or ``'center'`` image position of
            each feature pixel's ray (see the module docstring).
    """

    def __init__(self, embed_dims: int, position_range: Sequence[float], depth_num: int = 64,
                 depth_start: float = 1.0, lid: bool = True, with_fpe: bool = True,
                 frustum_pixel: Literal['corner', 'center'] = 'corner') -> None:
        super().__init__()
        if frustum_pixel not in ('corner', 'center'):
            raise ValueError(f"frustum_pixel must be 'corner' or 'center', got {frustum_pixel!r}")
        self.pixel_offset = 0.5 if frustum_pixel == 'center' else 0.0
        if len(position_range) != 6:
            raise ValueError(f'position_range needs 6 values, got {list(position_range)}')
        if depth_num < 1:
            raise ValueError(f'depth_num must be >= 1, got {depth_num}')
        self.depth_num, self.depth_start, self.lid = depth_num, float(depth_start), lid
        self.register_buffer('position_range', torch.tensor(position_range, dtype=torch.float32),
                             persistent=False)
        self.mlp = nn.Sequential(nn.Conv2d(depth_num * 3, embed_dims * 4, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(embed_dims * 4, embed_dims, 1))
        self.fpe = FeatureGuidedPE(embed_dims) if with_fpe else None

    def depth_bins(self, device: torch.device) -> Tensor:
        idx = torch.arange(self.depth_num, device=device, dtype=torch.float32)
        max_depth = float(self.position_range[3])
        if self.lid:
            bin_size = (max_depth - self.depth_start) / (self.depth_num * (1 + self.depth_num))
            return self.depth_start + bin_size * idx * (idx + 1)
        bin_size = (max_depth - self.depth_start) / self.depth_num
        return self.depth_start + bin_size * idx

    def coords3d(self, lidar2img: Tensor, feat_hw: tuple[int, int],
                 pad_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Normalized 3D points ``(B*N, D*3, H, W)`` and out-of-range mask ``(B*N, H, W)``."""
        h, w = feat_hw
        device = lidar2img.device
        off = self.pixel_offset
        ys = (torch.arange(h, device=device, dtype=torch.float32) + off) * pad_hw[0] / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + off) * pad_hw[1] / w
        ds = self.depth_bins(device)
        v, u, d = torch.meshgrid(ys, xs, ds, indexing='ij')  # (H, W, D)
        pts = torch.stack([u * d, v * d, d, torch.ones_like(d)], dim=-1)  # (H, W, D, 4)
        img2lidar = img2lidar_matrices(lidar2img.flatten(0, 1))  # (BN, 4, 4)
        xyz = torch.einsum('bij,hwdj->bhwdi', img2lidar, pts)[..., :3]
        r = self.position_range
        xyz = (xyz - r[:3]) / (r[3:] - r[:3])
        outside = ((xyz < 0) | (xyz > 1)).any(-1).sum(-1) > self.depth_num * 0.5
        coords = inverse_sigmoid(xyz).flatten(3).permute(0, 3, 1, 2).contiguous()
        return coords, outside

    def forward(self, feat: Tensor, lidar2img: Tensor, pad_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """``feat (B*N, C, H, W)``, ``lidar2img (B, N, 4, 4)`` -> (embedding, outside mask)."""
        with torch.autocast(device_type=feat.device.type, enabled=False):
            coords, outside = self.coords3d(lidar2img, tuple(feat.shape[-2:]), pad_hw)
        pe = self.mlp(coords.to(feat.dtype))
        if self.fpe is not None:
            pe = self.fpe(pe, feat)
        return pe, outside


class MultiViewSinePE(nn.Module):
    """PETR's multi-view 2D sine encoding: (view, row, column) of every feature pixel.

    ``(B, N, H, W)`` padding mask -> ``(B, N, 3F, H, W)``: the view index, then
    the row and the column, each normalized over the valid pixels and encoded
    with ``F`` sines/cosines (PETR's ``SinePositionalEncoding3D``, which differs
    from mmdet's class of that name). Built on mmdet's 2D
    ``SinePositionalEncoding``: the (row, column) part is that encoding per
    view, the view part is its first axis applied along the views.
    """

    def __init__(self, num_feats: int) -> None:
        super().__init__()
        if num_feats < 2 or num_feats % 2:
            raise ValueError(f'num_feats must be even and >= 2, got {num_feats}')
        from mmdet.models.layers import SinePositionalEncoding
        self.num_feats = num_feats
        self.sine2d = SinePositionalEncoding(num_feats, normalize=True)

    def forward(self, mask: Tensor) -> Tensor:
        b, n, h, w = mask.shape
        yx = self.sine2d(mask.flatten(0, 1)).view(b, n, 2 * self.num_feats, h, w)
        # views play the role of rows: mask (B*W, N, H), keep the first (row) half
        along_views = self.sine2d(mask.permute(0, 3, 1, 2).flatten(0, 1))[:, :self.num_feats]
        views = along_views.view(b, w, self.num_feats, n, h).permute(0, 3, 2, 4, 1)
        out = torch.cat([views, yx], dim=2)
        # mmdet interleaves (sin0, cos0, sin1, ...); PETR's 5-D stack gives (sin0, sin1, ...,
        # cos0, ...) per axis. Keep PETR's order so published adapt_pos3d weights apply.
        out = out.view(b, n, 3, self.num_feats // 2, 2, h, w).transpose(3, 4)
        return out.reshape(b, n, 3 * self.num_feats, h, w)
