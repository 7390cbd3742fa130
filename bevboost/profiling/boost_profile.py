"""The ``profile`` boost: ``TorchProfilerHook`` (Chrome trace + TensorBoard) switched on by name.

Tooling like ``measure``: a hook in ``custom_hooks``, no change to training math.
"""
from __future__ import annotations

from typing import Any

from mmengine.config import Config

from bevboost.boosts import Boost, BoostCard, BoostNotInEffect, register_boost, require_hook
from bevboost.profiling.boost_measure import _add_hook, _int_option


def apply_profile(cfg: Config, active: int = 3, **hook_kwargs: Any) -> None:
    """Add ``TorchProfilerHook`` (Chrome trace + TensorBoard profiler run)."""
    _add_hook(cfg, dict(type='TorchProfilerHook', active=max(1, _int_option('active', active)),
                        **hook_kwargs))


@register_boost
class ProfileBoost(Boost):
    card = BoostCard(
        name='profile',
        contract_options=dict(active=1), tooling=True, fragment='profile.py',
        docs='docs/bench.md#1-measurement-hooks-any-mmengine--mmdet3d-config',
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
