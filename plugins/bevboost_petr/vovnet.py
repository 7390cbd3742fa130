"""VoVNetV2 (one-shot aggregation + effective squeeze-excitation) image backbone.

PETRv2's published numbers use V2-99 (``'V-99-eSE'``) at stride 16/32. Written
for mmdet3d 1.x from the VoVNetV2 paper (arXiv 1911.06667); ``with_cp``
trades compute for memory with activation checkpointing like the recipe's
"CP" variant. Published V2-99 checkpoints (DD3D / FCOS3D naming) load as they
are: :mod:`.vovnet_weights` renames their keys and checks the coverage.
"""
from __future__ import annotations

import logging
from typing import Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmdet3d.registry import MODELS

from .vovnet_weights import attach_published_key_loading

logger = logging.getLogger(__name__)

#: name -> (stem channels, stage conv channels, stage out channels, layers per block, blocks per stage)
VOVNET_SPECS: dict[str, tuple] = {
    'V-19-slim-eSE': ([64, 64, 128], [64, 80, 96, 112], [112, 256, 384, 512], 3, [1, 1, 1, 1]),
    'V-39-eSE': ([64, 64, 128], [128, 160, 192, 224], [256, 512, 768, 1024], 5, [1, 1, 2, 2]),
    'V-57-eSE': ([64, 64, 128], [128, 160, 192, 224], [256, 512, 768, 1024], 5, [1, 1, 4, 3]),
    'V-99-eSE': ([64, 64, 128], [128, 160, 192, 224], [256, 512, 768, 1024], 5, [1, 3, 9, 3]),
    # for tests and CPU smoke runs only
    'V-tiny-eSE': ([16, 16, 32], [16, 24, 32, 48], [32, 64, 96, 128], 2, [1, 1, 1, 1]),
}


def _conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class EffectiveSE(nn.Module):
    """One-FC channel attention: keeps channel count (no reduction loses information)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x * F.hardsigmoid(self.fc(x.mean((2, 3), keepdim=True)))


class OSABlock(nn.Module):
    """Convs in sequence, all outputs concatenated once, then a 1x1 aggregation."""

    def __init__(self, cin: int, conv_ch: int, cout: int, layers: int, identity: bool,
                 with_cp: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            _conv_bn_relu(cin if i == 0 else conv_ch, conv_ch) for i in range(layers))
        self.concat = _conv_bn_relu(cin + layers * conv_ch, cout, k=1)
        self.ese = EffectiveSE(cout)
        self.identity = identity
        self.with_cp = with_cp

    def _inner(self, x: Tensor) -> Tensor:
        outs = [x]
        for layer in self.layers:
            outs.append(layer(outs[-1]))
        y = self.ese(self.concat(torch.cat(outs, dim=1)))
        return y + x if self.identity else y

    def forward(self, x: Tensor) -> Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._inner, x, use_reentrant=False)
        return self._inner(x)


@MODELS.register_module()
class VoVNet(BaseModule):
    """VoVNetV2 returning the requested stages (``'stage2'`` .. ``'stage5'``).

    Args:
        spec_name: key of :data:`VOVNET_SPECS`.
        out_features: stage names to return, in order.
        frozen_stages: stages (0 = stem) whose weights are frozen; -1 for none.
        norm_eval: keep BatchNorm in eval mode while training (small batches).
        with_cp: activation checkpointing inside OSA blocks.
        allow_partial_weights: accept a checkpoint that covers only part of the
            backbone (default: loading one raises, so a wrong checkpoint or key
            prefix cannot leave the backbone silently random).
    """

    def __init__(self, spec_name: str = 'V-99-eSE', input_ch: int = 3,
                 out_features: Sequence[str] = ('stage4', 'stage5'), frozen_stages: int = -1,
                 norm_eval: bool = True, with_cp: bool = False, allow_partial_weights: bool = False,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if spec_name not in VOVNET_SPECS:
            raise ValueError(f'unknown VoVNet spec {spec_name!r}; known: {sorted(VOVNET_SPECS)}')
        stem_ch, conv_ch, out_ch, layers, blocks = VOVNET_SPECS[spec_name]
        bad = [f for f in out_features if f not in ('stage2', 'stage3', 'stage4', 'stage5')]
        if bad or not out_features:
            raise ValueError(f'out_features must name stage2..stage5, got {list(out_features)}')
        self.out_features = list(out_features)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.stem = nn.Sequential(_conv_bn_relu(input_ch, stem_ch[0], stride=2),
                                  _conv_bn_relu(stem_ch[0], stem_ch[1]),
                                  _conv_bn_relu(stem_ch[1], stem_ch[2], stride=2))
        self.stages = nn.ModuleList()
        cin = stem_ch[2]
        self.out_channels: dict[str, int] = {}
        for i in range(4):
            mods: list[nn.Module] = [] if i == 0 else [nn.MaxPool2d(3, 2, ceil_mode=True)]
            for b in range(blocks[i]):
                mods.append(OSABlock(cin, conv_ch[i], out_ch[i], layers, identity=b > 0,
                                     with_cp=with_cp))
                cin = out_ch[i]
            self.stages.append(nn.Sequential(*mods))
            self.out_channels[f'stage{i + 2}'] = out_ch[i]
        self._freeze()
        attach_published_key_loading(self, allow_partial=allow_partial_weights)

    def _freeze(self) -> None:
        modules = [self.stem] + list(self.stages)
        for m in modules[:self.frozen_stages + 1] if self.frozen_stages >= 0 else []:
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        x = self.stem(x)
        outs = {}
        for i, stage in enumerate(self.stages):
            x = stage(x)
            outs[f'stage{i + 2}'] = x
        return tuple(outs[name] for name in self.out_features)

    def train(self, mode: bool = True) -> 'VoVNet':
        super().train(mode)
        self._freeze()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self
