"""GridMask augmentation on device-agnostic tensors.

PETR's original draws a numpy mask and moves it with ``.cuda()``, which breaks
CPU training; here the mask is built with torch on the images' own device.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class GridMask(nn.Module):
    """Zero out a rotated grid of squares, with probability ``prob`` per batch.

    Args:
        ratio: fraction of each grid cell that is masked.
        rotate: maximum rotation in degrees of the grid.
        prob: probability of applying the mask at all (training only).
        d_range: the grid period in pixels is drawn from this range; ``None``
            uses ``(2, min(H, W))`` like the original.
    """

    def __init__(self, ratio: float = 0.5, rotate: float = 1.0, prob: float = 0.7,
                 d_range: tuple[int, int] | None = None) -> None:
        super().__init__()
        if not 0 <= ratio < 1:
            raise ValueError(f'ratio must be in [0, 1), got {ratio}')
        if not 0 <= prob <= 1:
            raise ValueError(f'prob must be in [0, 1], got {prob}')
        self.ratio, self.rotate, self.prob, self.d_range = ratio, rotate, prob, d_range

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or torch.rand(()) > self.prob:
            return x
        h, w = x.shape[-2:]
        lo, hi = self.d_range or (2, max(3, min(h, w)))
        d = int(torch.randint(lo, hi, ()))
        keep = max(1, int(d * (1 - self.ratio)))
        angle = math.radians(float(torch.empty(()).uniform_(-self.rotate, self.rotate)))
        ys, xs = torch.meshgrid(torch.arange(h, device=x.device, dtype=torch.float32),
                                torch.arange(w, device=x.device, dtype=torch.float32),
                                indexing='ij')
        # rotate the grid coordinates instead of rotating a mask image
        u = xs * math.cos(angle) - ys * math.sin(angle)
        v = xs * math.sin(angle) + ys * math.cos(angle)
        off = torch.randint(0, d, (2,), device=x.device)
        masked = (((u + off[0]) % d) >= keep) & (((v + off[1]) % d) >= keep)
        return x * (~masked).to(x.dtype)
