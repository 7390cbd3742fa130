"""Run numerically sensitive modules in float32 under autocast.

fp16 NaNs in BEV detectors come from a few places: inverse-sigmoid of 3D
coordinates in position encoders, large-range matmuls in depth/BEV pooling,
attention logits. A guard disables autocast inside the chosen modules and
casts their floating inputs to float32; outputs stay float32, which the next
autocast region casts down again where it is safe.
"""
from __future__ import annotations

import fnmatch
import functools
import logging
from typing import Any, Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)

_GUARD_ATTR = '_bevboost_fp32_guard'


def _to_fp32(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.is_floating_point() and obj.dtype != torch.float64 else obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_fp32(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_fp32(v) for k, v in obj.items()}
    return obj


def module_matches(name: str, module: nn.Module, pattern: str) -> bool:
    """A pattern matches a module's class name exactly or its qualified name by glob."""
    return type(module).__name__ == pattern or fnmatch.fnmatchcase(name, pattern)


def install_fp32_guards(model: nn.Module, patterns: Sequence[str],
                        device_type: str) -> list[str]:
    """Wrap the forward of every module matching ``patterns`` to run in fp32.

    Args:
        model: the model (a DDP wrapper is looked through).
        patterns: class names (``'PositionEncoder3D'``) or globs over qualified
            module names (``'pts_bbox_head.position_encoder*'``).
        device_type: the autocast device type to switch off (``'cuda'``/``'cpu'``).

    Returns:
        The qualified names of the guarded modules.

    Raises:
        ValueError: a pattern matches no module (a typo would silently leave
            the module in half precision).
    """
    if isinstance(patterns, str):
        raise TypeError(f'fp32_modules must be a list of patterns, got the string {patterns!r}')
    model = getattr(model, 'module', model)
    guarded: list[str] = []
    unmatched = []
    for pattern in patterns:
        hits = [(n, m) for n, m in model.named_modules() if module_matches(n, m, pattern)]
        if not hits:
            unmatched.append(pattern)
        for name, module in hits:
            if getattr(module, _GUARD_ATTR, False):
                continue
            _guard(module, device_type)
            guarded.append(name or type(module).__name__)
    if unmatched:
        raise ValueError(f'fp32_modules patterns {unmatched} match no module of '
                         f'{type(model).__name__}')
    logger.info('fp32 guards on %d modules: %s', len(guarded), ', '.join(guarded[:8]) +
                (' ...' if len(guarded) > 8 else ''))
    return guarded


def _guard(module: nn.Module, device_type: str) -> None:
    original = module.forward

    @functools.wraps(original)
    def forward_fp32(*args, **kwargs):
        with torch.autocast(device_type=device_type, enabled=False):
            return original(*_to_fp32(args), **_to_fp32(kwargs))

    module.forward = forward_fp32
    setattr(module, _GUARD_ATTR, True)
