"""``channels-last``: the convolutional backbone and its input images in NHWC memory format.

cuDNN's tensor-core convolutions (and oneDNN on CPU) run natively on
``torch.channels_last``; NCHW tensors are transposed around every
convolution. :class:`ChannelsLastHook` converts the named submodules'
4-D parameters in place (``Module.to(memory_format=...)`` keeps the Parameter
objects, so the optimizer built by mmengine still holds them) and adds a
forward pre-hook that converts 4-D tensor inputs. Values are unchanged; only
strides differ, so the math is the same up to the kernels' summation order.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from torch import nn

from bevboost.boosts import Boost, BoostCard, BoostNotInEffect, add_custom_hook, register_boost
from bevboost.compute._common import check_model_config_has, log, module_names, submodules

DEFAULT_MODULES = ('img_backbone',)
_HANDLE_ATTR = '_bevboost_channels_last_handle'


def _to_channels_last(value: Any) -> Any:
    if torch.is_tensor(value) and value.dim() == 4:
        return value.contiguous(memory_format=torch.channels_last)
    return value


def _inputs_to_channels_last(module: nn.Module, args: tuple) -> tuple:
    return tuple(_to_channels_last(a) for a in args)


def conv_weights(module: nn.Module) -> list[torch.Tensor]:
    """The 4-D parameters (2-D convolution weights) of ``module``."""
    return [p for p in module.parameters() if p.dim() == 4]


def convert_to_channels_last(module: nn.Module) -> int:
    """Convert ``module`` and its 4-D inputs to channels_last; returns the converted weights."""
    weights = conv_weights(module)
    if not weights:
        raise ValueError(f'channels-last: {type(module).__name__} has no 2-D convolution '
                         'weights; channels_last would change nothing')
    module.to(memory_format=torch.channels_last)
    if getattr(module, _HANDLE_ATTR, None) is None:
        setattr(module, _HANDLE_ATTR,
                module.register_forward_pre_hook(_inputs_to_channels_last))
    return len(weights)


def apply_channels_last(cfg: Config, modules: str | Sequence[str] | None = None) -> None:
    """Add :class:`ChannelsLastHook` for ``modules``.

    Default: ``img_backbone``, when the model config has that entry (as every
    mmdet3d camera detector's does); named modules are looked up on the built
    model at ``before_train``.
    """
    if modules is None:
        check_model_config_has(cfg, DEFAULT_MODULES, boost='channels-last')
        modules = DEFAULT_MODULES
    names = module_names(modules, option='modules', boost='channels-last')
    add_custom_hook(cfg, dict(type='ChannelsLastHook', modules=list(names)))


@HOOKS.register_module()
class ChannelsLastHook(Hook):
    """Puts the named convolutional submodules and their inputs in channels_last at before_train.

    Args:
        modules: submodule names (dotted paths allowed), e.g. ``['img_backbone']``.
    """

    priority = 'VERY_HIGH'

    def __init__(self, modules: Sequence[str] = DEFAULT_MODULES):
        self.modules = module_names(modules, option='modules', boost='channels-last')

    def before_train(self, runner) -> None:
        from mmengine.model import is_model_wrapper
        converted = {name: convert_to_channels_last(module) for name, module in
                     submodules(runner.model, self.modules, boost='channels-last').items()}
        log(f'channels-last: {converted} conv weights and their 4-D inputs in channels_last')
        if is_model_wrapper(runner.model):
            log('channels-last: the model was wrapped for distributed training before the '
                'conversion; DDP may warn that gradient strides differ from its buckets '
                '(correct, but slower gradient copies)', logging.WARNING)


@register_boost
class ChannelsLastBoost(Boost):
    card = BoostCard(
        name='channels-last',
        contract_options=dict(modules='conv'), contract_model='camera-own-loader',
        fragment='channels_last.py', docs='docs/compute.md#the-cards',
        summary='convolutional backbone weights and input images in channels_last (NHWC) '
                'memory format',
        changes=('custom_hooks',),
        expected_effect='faster convolutions where kernels prefer NHWC: tensor-core GPUs with '
                        'AMP (unmeasured here); on CPU see docs/compute.md',
        exact=True, order=55)
    primary_option = 'modules'

    def apply(self, cfg: Config, **options: Any) -> None:
        apply_channels_last(cfg, **options)

    def verify(self, runner: Any, **options: Any) -> str:
        names = module_names(options.get('modules') or DEFAULT_MODULES, option='modules',
                             boost='channels-last')
        for name, module in submodules(runner.model, names, boost='channels-last').items():
            weights = conv_weights(module)
            nchw = sum(not w.is_contiguous(memory_format=torch.channels_last) for w in weights)
            if not weights or nchw or getattr(module, _HANDLE_ATTR, None) is None:
                raise BoostNotInEffect(
                    f'channels-last: {name}: {nchw} of {len(weights)} conv weights not in '
                    'channels_last, or no input conversion (ChannelsLastHook converts them at '
                    'before_train)')
        return f'{list(names)} channels_last, inputs converted'
