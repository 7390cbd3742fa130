"""Small helpers the compute boosts share: option parsing, submodule lookup, logging."""
from __future__ import annotations

import logging
from typing import Any, Sequence

from mmengine.logging import print_log
from torch import nn


def log(message: str, level: int = logging.INFO) -> None:
    """Log through mmengine's current logger: the Runner's console and work-dir log."""
    print_log(message, logger='current', level=level)


def module_names(value: Any, *, option: str, boost: str) -> tuple[str, ...]:
    """``'a/b'``, ``'a'`` or ``['a', 'b']`` -> ``('a', 'b')``; ValueError otherwise."""
    if isinstance(value, str):
        names = [n.strip() for n in value.split('/')]
    elif isinstance(value, (list, tuple)) and all(isinstance(n, str) for n in value):
        names = [n.strip() for n in value]
    else:
        raise TypeError(f'{boost}: {option} must be a module name or a list of names, '
                        f'got {value!r}')
    if not names or not all(names):
        raise ValueError(f'{boost}: {option} must name at least one submodule, got {value!r}')
    return tuple(dict.fromkeys(names))


def check_model_config_has(cfg: Any, names: Sequence[str], *, boost: str) -> None:
    """Refuse early when the model config has no entry for a named submodule's top level."""
    model = cfg.get('model')
    if not isinstance(model, dict):
        return  # a model object or an unusual config: checked on the built model
    missing = [n for n in names if n.split('.')[0] not in model]
    if missing:
        keys = sorted(k for k, v in model.items() if isinstance(v, dict) and 'type' in v)
        raise ValueError(f'{boost}: the model config has no {missing} (its submodule entries: '
                         f'{keys}); pass modules=[...] naming submodules of this model')


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP/FSDP-style wrapper, as mmengine's hooks see it."""
    from mmengine.model import is_model_wrapper
    return model.module if is_model_wrapper(model) else model


def submodules(model: nn.Module, names: Sequence[str], *, boost: str) -> dict[str, nn.Module]:
    """Named submodules of the (unwrapped) model; ValueError naming what exists."""
    model = unwrap(model)
    found = {}
    for name in names:
        try:
            found[name] = model.get_submodule(name)
        except AttributeError:
            children = [n for n, _ in model.named_children()]
            raise ValueError(f'{boost}: {type(model).__name__} has no submodule {name!r} '
                             f'(its children: {children})') from None
    return found
