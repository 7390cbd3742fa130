"""FPN that builds only the output levels the head reads.

mmdet's ``FPN`` gives every input level a 3x3 output conv. PETRv2 reads one
level (stride 16), so the other output convs never get a gradient and
``DistributedDataParallel(find_unused_parameters=False)`` stops at the second
iteration. The published recipe uses a trimmed FPN (``CPFPN``) for this
reason; this is the same computation on top of mmdet's ``FPN``, keeping its
lateral convs, top-down path and initialisation. With ``out_levels=(0,)`` the
state-dict keys match the published PETRv2 checkpoints
(``lateral_convs.{0,1}``, ``fpn_convs.0``).
"""
from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from mmdet.models.necks import FPN
from mmdet3d.registry import MODELS


@MODELS.register_module()
class UsedLevelsFPN(FPN):
    """Top-down FPN over all inputs whose outputs are only ``out_levels``.

    Args:
        in_channels: channels of each backbone level.
        out_channels: channels of every output.
        out_levels: indices (into ``in_channels``) of the levels to output; the
            first must be 0 (pass no backbone level finer than the finest output).
        **kwargs: mmdet ``FPN`` options except the extra-level ones.
    """

    def __init__(self, in_channels: list[int], out_channels: int,
                 out_levels: Sequence[int] = (0,), **kwargs) -> None:
        for key in ('num_outs', 'start_level', 'end_level', 'add_extra_convs'):
            if key in kwargs:
                raise ValueError(f'UsedLevelsFPN takes out_levels, not {key}={kwargs[key]!r}')
        levels = list(out_levels)
        # a level finer than the finest output would feed nothing: leave it out of the inputs
        if not levels or levels[0] != 0 or sorted(set(levels)) != levels or levels[-1] >= len(
                in_channels):
            raise ValueError(f'out_levels must start at 0 and increase within in_channels '
                             f'(0..{len(in_channels) - 1}), got {list(out_levels)}')
        super().__init__(list(in_channels), out_channels, num_outs=len(in_channels), **kwargs)
        self.out_levels = levels
        self.fpn_convs = nn.ModuleList(self.fpn_convs[i] for i in levels)

    def forward(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'expected {len(self.in_channels)} feature levels, got {len(inputs)}')
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        for i in range(len(laterals) - 1, 0, -1):
            if 'scale_factor' in self.upsample_cfg:
                up = F.interpolate(laterals[i], **self.upsample_cfg)
            else:
                up = F.interpolate(laterals[i], size=laterals[i - 1].shape[2:], **self.upsample_cfg)
            laterals[i - 1] = laterals[i - 1] + up
        return tuple(conv(laterals[i]) for conv, i in zip(self.fpn_convs, self.out_levels))
