"""``fused-optim``: the optimizer's fused (else foreach) implementation, checked per param group.

PyTorch's Adam, AdamW and SGD (and a few more) take ``fused=True`` on CUDA and
on CPU: one kernel updates every parameter of a group instead of a loop of
small ops. The option goes into ``optim_wrapper.optimizer``, so mmengine's own
optimizer constructor builds it. Torch checks the parameters only at the
first ``step()``; :class:`FusedOptimizerCheckHook` runs torch's own check on
every param group before the first iteration and refuses naming the group.
"""
from __future__ import annotations

import inspect
import logging
from typing import Any, Literal

import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import HOOKS, OPTIMIZERS

from bevboost.boosts import Boost, BoostCard, BoostNotInEffect, add_custom_hook, register_boost
from bevboost.compute._common import log
from bevboost.seams.torch_compat import FUSED_CPU_MIN, fused_kernel_devices, fused_param_problem

Impl = Literal['auto', 'fused', 'foreach']
IMPLS = ('auto', 'fused', 'foreach')


def optimizer_class(optimizer_cfg: dict) -> type:
    """The class mmengine will build for ``optim_wrapper.optimizer``."""
    kind = optimizer_cfg.get('type')
    cls = kind if isinstance(kind, type) else OPTIMIZERS.get(kind) if kind else None
    if cls is None:
        raise ValueError(f'fused-optim: unknown optimizer type {kind!r}')
    return cls


def _takes(cls: type, option: str) -> bool:
    return option in inspect.signature(cls.__init__).parameters


def _fused_runs_here(name: str, impl: Impl) -> bool:
    """Whether this torch has fused optimizer kernels for the device training will use
    (mmengine's ``get_device()``); ``auto`` falls back to foreach with a log line,
    ``fused`` is refused naming the torch version that has them (CPU: 2.4)."""
    from mmengine.device import get_device
    device = get_device()
    if device in fused_kernel_devices():
        return True
    if impl == 'fused':
        minimum = '.'.join(map(str, FUSED_CPU_MIN)) if device == 'cpu' else None
        raise ValueError(f'fused-optim: torch {torch.__version__} has no fused {name} kernel '
                         f'on {device!r}'
                         + (f' (needs torch>={minimum})' if minimum else '')
                         + '; use fused-optim=foreach')
    log(f'fused-optim: torch {torch.__version__} has no fused {name} kernel on {device!r}; '
        'using its foreach implementation instead', logging.WARNING)
    return False


def apply_fused_optim(cfg: Config, impl: Impl = 'auto') -> None:
    """Set ``fused=True`` (``auto``/``fused``) or ``foreach=True`` on the optimizer config.

    ``auto`` falls back to ``foreach``, with a log line, when the optimizer
    class has no fused implementation in this torch.
    """
    if impl not in IMPLS:
        raise ValueError(f'fused-optim: impl must be one of {IMPLS}, got {impl!r}')
    wrapper = cfg.get('optim_wrapper')
    if not isinstance(wrapper, dict) or not isinstance(wrapper.get('optimizer'), dict):
        raise ValueError('fused-optim: the config has no optim_wrapper.optimizer to change '
                         '(several optimizers, or an optimizer object, are not supported)')
    opt = wrapper['optimizer']
    cls = optimizer_class(opt)
    name = cls.__name__
    if opt.get('differentiable'):
        raise ValueError(f'fused-optim: {name}(differentiable=True) has no fused or foreach '
                         'implementation')
    choice = impl
    if impl in ('auto', 'fused') and not _takes(cls, 'fused'):
        if impl == 'fused' or not _takes(cls, 'foreach'):
            raise ValueError(f'fused-optim: {name} has no fused implementation in torch '
                             f'{torch.__version__} (Adam, AdamW and SGD do)'
                             + ('' if impl == 'auto' else '; use fused-optim=foreach'))
        log(f'fused-optim: {name} has no fused implementation in torch {torch.__version__}; '
            'using its foreach implementation instead', logging.WARNING)
        choice = 'foreach'
    elif not _fused_runs_here(name, impl):
        choice = 'foreach'
    elif impl == 'auto':
        choice = 'fused'
    if choice == 'foreach' and not _takes(cls, 'foreach'):
        raise ValueError(f'fused-optim: {name} has no foreach implementation')
    other = 'foreach' if choice == 'fused' else 'fused'
    if opt.get(other):
        raise ValueError(f'fused-optim: the optimizer config sets {other}=True; torch rejects '
                         f'{other} and {choice} together. Remove {other} from the config.')
    opt[choice] = True
    add_custom_hook(cfg, dict(type='FusedOptimizerCheckHook'))


def unfusable_params(optimizer: torch.optim.Optimizer,
                     names: dict[int, str]) -> list[tuple[int, str, str]]:
    """``(group index, param name, reason)`` for every param torch's fused kernel rejects."""
    rejected = []
    for index, group in enumerate(optimizer.param_groups):
        if not group.get('fused'):
            continue
        for p in group['params']:
            problem = fused_param_problem(p)
            if problem is not None:
                rejected.append((index, names.get(id(p), '?'), problem))
    return rejected


def _param_names(runner) -> dict[int, str]:
    return {id(p): n for n, p in runner.model.named_parameters()}


def _optimizers(runner) -> dict[str, torch.optim.Optimizer]:
    from mmengine.optim import OptimWrapperDict
    wrapper = runner.optim_wrapper
    if isinstance(wrapper, OptimWrapperDict):
        return {k: w.optimizer for k, w in wrapper.items()}
    if not hasattr(wrapper, 'optimizer'):
        raise BoostNotInEffect('fused-optim: the optimizer is not built yet (mmengine builds '
                               'it in Runner.train)')
    return {'optimizer': wrapper.optimizer}


@HOOKS.register_module()
class FusedOptimizerCheckHook(Hook):
    """Refuses before the first iteration when the fused kernel would reject a param group."""

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        for key, optimizer in _optimizers(runner).items():
            rejected = unfusable_params(optimizer, _param_names(runner))
            if rejected:
                index, param, reason = rejected[0]
                raise ValueError(
                    f'fused-optim: {type(optimizer).__name__} param group {index} '
                    f'(parameter {param!r}, {len(rejected)} rejected in all) cannot use the '
                    f'fused kernel: {reason}. Use fused-optim=foreach, or move those '
                    'parameters out of training.')


@register_boost
class FusedOptimBoost(Boost):
    card = BoostCard(
        name='fused-optim',
        fragment='fused_optim.py', docs='docs/compute.md#the-cards',
        summary='the optimizer\'s fused kernel (fused=True: Adam, AdamW, SGD on CUDA and CPU), '
                'else its foreach implementation',
        changes=('optim_wrapper.optimizer.fused', 'optim_wrapper.optimizer.foreach',
                 'custom_hooks'),
        expected_effect='shorter optimizer step: large on GPU for models with many small '
                        'tensors (unmeasured here), small on CPU (docs/compute.md)',
        exact=True, order=40)
    primary_option = 'impl'

    def apply(self, cfg: Config, **options: Any) -> None:
        apply_fused_optim(cfg, **options)

    def verify(self, runner: Any, **options: Any) -> str:
        verdicts = []
        for key, optimizer in _optimizers(runner).items():
            groups = optimizer.param_groups
            impls = {'fused' if g.get('fused') else 'foreach' if g.get('foreach') else 'for-loop'
                     for g in groups}
            if 'for-loop' in impls:
                raise BoostNotInEffect(f'fused-optim: {type(optimizer).__name__} has param '
                                       'groups with neither fused nor foreach set')
            rejected = unfusable_params(optimizer, _param_names(runner))
            if rejected:
                raise BoostNotInEffect(f'fused-optim: fused kernel rejects {rejected[0][1]!r}: '
                                       f'{rejected[0][2]}')
            verdicts.append(f'{type(optimizer).__name__} {"+".join(sorted(impls))} '
                            f'({len(groups)} param groups)')
        return ', '.join(verdicts)
