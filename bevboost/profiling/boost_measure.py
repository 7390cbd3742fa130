"""The ``measure`` boost: ``StallMonitorHook`` switched on like any other boost.

It only adds a hook to ``custom_hooks``; it changes no training math (``exact``) and
is tooling: the bench harness never counts it as an optimization.
"""
from __future__ import annotations

from typing import Any

from mmengine.config import Config

from bevboost.boosts import Boost, BoostCard, BoostNotInEffect, register_boost, require_hook


def _add_hook(cfg: Config, hook: dict) -> None:
    hooks = [h for h in (cfg.get('custom_hooks') or []) if h.get('type') != hook['type']]
    hooks.append(hook)
    cfg.custom_hooks = hooks


def _int_option(name: str, value: Any) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise ValueError(f'{name} must be an integer, got {value!r}') from None
    if out < 0:
        raise ValueError(f'{name} must be >= 0, got {value!r}')
    return out


def apply_measure(cfg: Config, warmup_iters: int = 5, **hook_kwargs: Any) -> None:
    """Add ``StallMonitorHook`` (stall vs compute, samples/s, memory, GPU, stages)."""
    _add_hook(cfg, dict(type='StallMonitorHook',
                        warmup_iters=_int_option('warmup_iters', warmup_iters), **hook_kwargs))


@register_boost
class MeasureBoost(Boost):
    card = BoostCard(
        name='measure',
        contract_options=dict(warmup_iters=1), tooling=True, fragment='measure.py',
        docs='docs/bench.md#1-measurement-hooks-any-mmengine--mmdet3d-config',
        summary='per-iteration data stall vs compute, samples/s, memory, NVML GPU use, '
                'worker CPU and per-transform timings',
        changes=('custom_hooks',),
        expected_effect='no speed change (<1% overhead); adds a measurement summary',
        exact=True, order=90, strategies=('*',))
    primary_option = 'warmup_iters'

    def apply(self, cfg: Config, **options: Any) -> None:
        apply_measure(cfg, **options)

    def verify(self, runner: Any, **options: Any) -> str:
        hook = require_hook(runner, 'StallMonitorHook')
        wanted = options.get('warmup_iters')
        if wanted is not None and hook.warmup_iters != _int_option('warmup_iters', wanted):
            raise BoostNotInEffect(f'StallMonitorHook warms up {hook.warmup_iters} '
                                   f'iterations, asked {wanted}')
        return f'StallMonitorHook (warm-up {hook.warmup_iters} iterations)'
