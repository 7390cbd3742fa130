"""``measure`` and ``profile``: measurement switched on like any other boost.

Both only add a hook to ``custom_hooks``; they change no training math
(``exact``) and the bench harness never counts them as optimizations.
"""
from __future__ import annotations

from typing import Any

from mmengine.config import Config

from bevboost.boosts import Boost, BoostCard, BoostNotInEffect, register_boost, require_hook

#: boosts that measure rather than optimize (left out of ``bench --variants all``)
TOOLING_BOOSTS = frozenset({'measure', 'profile'})


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


def apply_profile(cfg: Config, active: int = 3, **hook_kwargs: Any) -> None:
    """Add ``TorchProfilerHook`` (Chrome trace + TensorBoard profiler run)."""
    _add_hook(cfg, dict(type='TorchProfilerHook', active=max(1, _int_option('active', active)),
                        **hook_kwargs))


@register_boost
class MeasureBoost(Boost):
    card = BoostCard(
        name='measure',
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


@register_boost
class ProfileBoost(Boost):
    card = BoostCard(
        name='profile',
        summary='torch.profiler over a wait/warmup/active window: Chrome trace, '
                'TensorBoard profiler run, NVTX ranges on GPU',
        changes=('custom_hooks',),
        expected_effect='slower during the active window only',
        exact=True, order=91, strategies=('*',))
    primary_option = 'active'

    def apply(self, cfg: Config, **options: Any) -> None:
        apply_profile(cfg, **options)

    def verify(self, runner: Any, **options: Any) -> str:
        hook = require_hook(runner, 'TorchProfilerHook')
        wanted = options.get('active')
        if wanted is not None and hook.window['active'] != max(1, _int_option('active', wanted)):
            raise BoostNotInEffect(f"TorchProfilerHook profiles {hook.window['active']} "
                                   f'iterations, asked {wanted}')
        window = ', '.join(f'{k}={v}' for k, v in hook.window.items())
        return f'TorchProfilerHook ({window})'
