"""The module tree of the published VoVNetV2 (names, shapes and forward), for tests.

Transcribed from DD3D's ``vovnet.py`` as kept by PETR
(github.com/megvii-research/PETR, ``projects/mmdet3d_plugin/models/backbones/vovnetcp.py``):
the ``conv3x3``/``conv1x1`` name patterns (``{module}_{postfix}/conv|norm|relu``),
``eSEModule``, ``_OSA_module``, ``_OSA_stage`` (a ``Pooling`` max-pool before
stages 3-5, blocks ``OSA{stage}_{i}``) and the ``stem``/``stage2..5`` children.
Its ``state_dict()`` has the key names and shapes of the published V2-99
checkpoints; nothing of the kit's VoVNet is used here.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

V99 = dict(stem=[64, 64, 128], stage_conv_ch=[128, 160, 192, 224],
           stage_out_ch=[256, 512, 768, 1024], layer_per_block=5, block_per_stage=[1, 3, 9, 3])
TINY = dict(stem=[16, 16, 32], stage_conv_ch=[16, 24, 32, 48], stage_out_ch=[32, 64, 96, 128],
            layer_per_block=2, block_per_stage=[1, 1, 1, 1])


def _conv(cin, cout, module_name, postfix, stride=1, k=3):
    return [(f'{module_name}_{postfix}/conv', nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)),
            (f'{module_name}_{postfix}/norm', nn.BatchNorm2d(cout)),
            (f'{module_name}_{postfix}/relu', nn.ReLU(inplace=True))]


class ESEModule(nn.Module):
    def __init__(self, channel):
        super().__init__()
        self.fc = nn.Conv2d(channel, channel, kernel_size=1, padding=0)

    def forward(self, x):
        return x * (F.relu6(self.fc(F.adaptive_avg_pool2d(x, 1)) + 3.0) / 6.0)


class OSAModule(nn.Module):
    def __init__(self, in_ch, stage_ch, concat_ch, layer_per_block, module_name, identity=False):
        super().__init__()
        self.identity = identity
        self.layers = nn.ModuleList()
        c = in_ch
        for i in range(layer_per_block):
            self.layers.append(nn.Sequential(OrderedDict(_conv(c, stage_ch, module_name, i))))
            c = stage_ch
        self.concat = nn.Sequential(OrderedDict(
            _conv(in_ch + layer_per_block * stage_ch, concat_ch, module_name, 'concat', k=1)))
        self.ese = ESEModule(concat_ch)

    def forward(self, x):
        outs = [x]
        for layer in self.layers:
            outs.append(layer(outs[-1]))
        xt = self.ese(self.concat(torch.cat(outs, dim=1)))
        return xt + x if self.identity else xt


class OSAStage(nn.Sequential):
    def __init__(self, in_ch, stage_ch, concat_ch, block_per_stage, layer_per_block, stage_num):
        super().__init__()
        if stage_num != 2:
            self.add_module('Pooling', nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True))
        name = f'OSA{stage_num}_1'
        self.add_module(name, OSAModule(in_ch, stage_ch, concat_ch, layer_per_block, name))
        for i in range(block_per_stage - 1):
            name = f'OSA{stage_num}_{i + 2}'
            self.add_module(name, OSAModule(concat_ch, stage_ch, concat_ch, layer_per_block, name,
                                            identity=True))


class PublishedVoVNet(nn.Module):
    """``VoVNetCP(spec_name=...)`` of the published code, returning stage4 and stage5."""

    def __init__(self, spec: dict):
        super().__init__()
        s = spec['stem']
        stem = _conv(3, s[0], 'stem', '1', 2) + _conv(s[0], s[1], 'stem', '2', 1) + _conv(
            s[1], s[2], 'stem', '3', 2)
        self.add_module('stem', nn.Sequential(OrderedDict(stem)))
        in_ch = [s[2]] + spec['stage_out_ch'][:-1]
        for i in range(4):
            self.add_module(f'stage{i + 2}', OSAStage(
                in_ch[i], spec['stage_conv_ch'][i], spec['stage_out_ch'][i],
                spec['block_per_stage'][i], spec['layer_per_block'], i + 2))

    def forward(self, x):
        x = self.stem(x)
        outs = []
        for i in range(4):
            x = getattr(self, f'stage{i + 2}')(x)
            if i >= 2:
                outs.append(x)
        return outs
