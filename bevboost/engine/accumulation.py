"""Gradient accumulation that is exactly the large batch.

mmengine's ``accumulative_counts`` already scales the loss, handles a short
last window (``_remainder_counts``) and skips the DDP all-reduce on all but
the last micro-batch (``optim_context`` -> ``no_sync``). What it gets wrong,
fixed here:

* :class:`OptimizerStepSchedulerHook` replaces ``ParamSchedulerHook``:
  iteration-based schedulers step once per *applied optimizer step*, not per
  micro-batch (open-mmlab/mmengine#1308) and not on fp16-overflow skips.
  Schedulers converted from epochs (``convert_to_iter_based``) are rescaled
  from micro-batches to optimizer steps before training starts.
* :class:`AccumulationHook` saves a partly accumulated window's gradients in
  the checkpoint so a resume mid-window continues exactly, and reports
  BatchNorm layers, whose statistics accumulation cannot make large-batch.
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Iterator

import torch
from mmengine.hooks import Hook, ParamSchedulerHook
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.registry import HOOKS
from torch.nn.modules.batchnorm import _BatchNorm

from bevboost.boosts import Boost, BoostCard, add_custom_hook, config_entry, register_boost

logger = logging.getLogger(__name__)

#: attributes that ``build_iter_from_epoch`` multiplies by the epoch length
_EPOCH_SCALED_ATTRS = ('begin', 'end', 'T_max', 'step_size', 'total_steps')
_CKPT_KEY = 'bevboost_accumulation'


def _wrapper_groups(runner) -> Iterator[tuple[OptimWrapper, list]]:
    """Pairs (optimizer wrapper, its schedulers) for single and multi-optimizer runs."""
    schedulers = runner.param_schedulers
    if schedulers is None:
        return
    wrapper = runner.optim_wrapper
    if isinstance(schedulers, dict):
        for name, group in schedulers.items():
            yield (wrapper[name] if isinstance(wrapper, OptimWrapperDict) else wrapper), group
    else:
        yield wrapper, schedulers


def _applied_steps(wrapper: OptimWrapper) -> int | None:
    return getattr(wrapper, 'applied_steps', None)


@HOOKS.register_module()
class OptimizerStepSchedulerHook(ParamSchedulerHook):
    """Step iteration-based schedulers once per applied optimizer step.

    Use it in place of mmengine's default:
    ``default_hooks = dict(param_scheduler=dict(type='OptimizerStepSchedulerHook'))``.
    """

    priority = 'LOW'

    def __init__(self) -> None:
        self._steps_before: dict[int, int | None] = {}

    def before_run(self, runner) -> None:
        # Runs after schedulers are built and before a resume loads their state.
        counts = getattr(runner.optim_wrapper, '_accumulative_counts', 1)
        cfg_list = runner.cfg.get('param_scheduler')
        if counts <= 1 or not isinstance(cfg_list, (list, tuple)) or \
                not isinstance(runner.param_schedulers, list):
            return
        for sched_cfg, scheduler in zip(cfg_list, runner.param_schedulers):
            if sched_cfg.get('convert_to_iter_based', False):
                rescale_scheduler(scheduler, 1.0 / counts)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._steps_before = {id(w): _applied_steps(w) for w, _ in _wrapper_groups(runner)}

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        for wrapper, schedulers in _wrapper_groups(runner):
            before = self._steps_before.get(id(wrapper))
            if before is not None:
                stepped = _applied_steps(wrapper) > before
            else:  # a plain OptimWrapper: it stepped if this micro-batch closed a window
                stepped = wrapper.should_update()
            if stepped:
                for scheduler in schedulers:
                    if not scheduler.by_epoch:
                        scheduler.step()


def rescale_scheduler(scheduler, factor: float) -> None:
    """Multiply a built scheduler's iteration bounds by ``factor`` (rounded)."""
    for attr in _EPOCH_SCALED_ATTRS:
        value = getattr(scheduler, attr, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 1e12:
            setattr(scheduler, attr, int(round(value * factor)))
    milestones = getattr(scheduler, 'milestones', None)
    if isinstance(milestones, Counter):
        scheduler.milestones = Counter({int(round(k * factor)): v for k, v in milestones.items()})
    periods = getattr(scheduler, 'periods', None)
    if isinstance(periods, list):
        scheduler.periods = [int(round(p * factor)) for p in periods]
        scheduler.cumulative_periods = [sum(scheduler.periods[:i + 1])
                                        for i in range(len(scheduler.periods))]


@HOOKS.register_module()
class AccumulationHook(Hook):
    """Checkpoint a partly accumulated window and report BatchNorm layers."""

    priority = 'NORMAL'

    def __init__(self) -> None:
        self._pending_grads: dict[str, torch.Tensor] | None = None
        self._bn_checked = False

    def before_train(self, runner) -> None:
        wrapper = runner.optim_wrapper
        counts = getattr(wrapper, '_accumulative_counts', 1)
        batch = runner.cfg.train_dataloader.get('batch_size')
        logger.info('gradient accumulation: %d micro-batches of %s per GPU x %d GPUs '
                    '= effective batch %s', counts, batch, runner.world_size,
                    batch * counts * runner.world_size if batch else '?')
        if self._pending_grads is not None:
            model = getattr(runner.model, 'module', runner.model)
            params = dict(model.named_parameters())
            for name, grad in self._pending_grads.items():
                params[name].grad = grad.to(params[name].device)
            logger.info('restored %d partly accumulated gradients from the checkpoint',
                        len(self._pending_grads))
            self._pending_grads = None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self._bn_checked:  # after the first iteration: model.train() has run
            self._bn_checked = True
            report_batch_norm(runner.model, getattr(runner.optim_wrapper, '_accumulative_counts', 1))

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        wrapper = runner.optim_wrapper
        counts = getattr(wrapper, '_accumulative_counts', 1)
        if counts <= 1 or wrapper._inner_count % counts == 0:
            return
        if runner.world_size > 1:
            logger.warning('checkpoint saved mid-accumulation under DDP: only rank 0 gradients '
                           'are kept; save on window boundaries (interval multiple of %d)', counts)
        model = getattr(runner.model, 'module', runner.model)
        checkpoint[_CKPT_KEY] = {
            'inner_count': wrapper._inner_count,
            'grads': {n: p.grad.detach().cpu().clone()
                      for n, p in model.named_parameters() if p.grad is not None},
        }

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get(_CKPT_KEY)
        if state:
            self._pending_grads = state['grads']


def report_batch_norm(model: torch.nn.Module, counts: int) -> list[str]:
    """Warn about BatchNorm layers in training mode when accumulating; return their names."""
    model = getattr(model, 'module', model)
    names = [n for n, m in model.named_modules() if isinstance(m, _BatchNorm) and m.training]
    if counts > 1 and names:
        logger.warning(
            'gradient accumulation (x%d) cannot reproduce large-batch BatchNorm statistics: '
            '%d BatchNorm layers in training mode (%s%s). Options: SyncBN across GPUs '
            "(sync_bn='torch' in the config), frozen BN (norm_eval=True in the backbone), or "
            'fewer accumulation steps with a larger per-GPU batch.', counts, len(names),
            ', '.join(names[:4]), ' ...' if len(names) > 4 else '')
    return names


def use_optimizer_step_scheduler_hook(cfg) -> None:
    """Make the config step iteration-based schedulers per applied optimizer step."""
    hooks = config_entry(cfg, 'default_hooks', {})
    current = (hooks.get('param_scheduler') or {}).get('type', 'ParamSchedulerHook')
    if current not in ('ParamSchedulerHook', 'OptimizerStepSchedulerHook'):
        raise ValueError(f'default_hooks.param_scheduler is a custom {current!r}; '
                         'cannot replace it with OptimizerStepSchedulerHook')
    hooks['param_scheduler'] = dict(type='OptimizerStepSchedulerHook')


def _is_iter_based(cfg) -> bool:
    train_cfg = cfg.get('train_cfg') or {}
    return train_cfg.get('type') == 'IterBasedTrainLoop' or train_cfg.get('by_epoch') is False


def scale_iteration_counts(cfg, factor: float) -> list[str]:
    """Multiply iteration-counted loop lengths and intervals by ``factor``.

    An iteration of mmengine's loops is one micro-batch; with ``factor`` times
    more micro-batches per optimizer step, iteration-based lengths and
    intervals grow by ``factor`` to cover the same samples. Returns what changed.
    """
    changed = []
    if factor == 1:
        return changed
    if _is_iter_based(cfg):
        for key in ('max_iters', 'val_interval'):
            if isinstance(cfg.train_cfg.get(key), int):
                cfg.train_cfg[key] = max(1, round(cfg.train_cfg[key] * factor))
                changed.append(f'train_cfg.{key}')
    for name in ('checkpoint', 'logger'):
        hook = (cfg.get('default_hooks') or {}).get(name)
        if hook and isinstance(hook.get('interval'), int) and \
                (name == 'logger' or hook.get('by_epoch', True) is False):
            hook['interval'] = max(1, round(hook['interval'] * factor))
            changed.append(f'default_hooks.{name}.interval')
    return changed


def apply_accumulation(cfg, counts: int | str, per_gpu_batch: int | None = None,
                       scale_loop: bool = True) -> None:
    """Accumulate ``counts`` micro-batches per optimizer step, same effective batch.

    Args:
        counts: micro-batches per optimizer step (>= 1).
        per_gpu_batch: the new per-GPU batch; default: the config's batch
            divided by ``counts``, which keeps the effective batch.
        scale_loop: scale iteration-counted loop lengths and intervals to
            cover the same samples (when the effective batch is kept).
    """
    try:
        counts = int(counts)
    except (TypeError, ValueError):
        raise ValueError(f'accumulative counts must be an integer >= 1, got {counts!r}') from None
    if counts < 1:
        raise ValueError(f'accumulative counts must be >= 1, got {counts}')
    wrapper = cfg.get('optim_wrapper')
    if not wrapper or 'optimizer' not in wrapper:
        raise ValueError('config has no optim_wrapper.optimizer to accumulate gradients for')
    old_counts = int(wrapper.get('accumulative_counts', 1))
    old_batch = int(cfg.train_dataloader.batch_size)
    if per_gpu_batch is None:
        if (old_batch * old_counts) % counts:
            raise ValueError(
                f'per-GPU batch {old_batch} x accumulation {old_counts} is not divisible by '
                f'accumulation {counts}; pass per_gpu_batch or use `bevboost plan`')
        per_gpu_batch = old_batch * old_counts // counts
    wrapper['accumulative_counts'] = counts
    cfg.train_dataloader['batch_size'] = per_gpu_batch
    if scale_loop and old_batch * old_counts == per_gpu_batch * counts:
        scale_iteration_counts(cfg, counts / old_counts)
    use_optimizer_step_scheduler_hook(cfg)
    add_custom_hook(cfg, dict(type='AccumulationHook'))


@register_boost
class AccumulationBoost(Boost):
    card = BoostCard(
        name='accum',
        summary='Exact gradient accumulation: k micro-batches per optimizer step, schedulers '
                'count optimizer steps, mid-window resume, BatchNorm report.',
        changes=('optim_wrapper.accumulative_counts', 'train_dataloader.batch_size',
                 'default_hooks.param_scheduler', 'custom_hooks', 'train_cfg.max_iters'),
        expected_effect='Same effective batch with k times less activation memory per GPU; '
                        'slightly lower throughput (smaller kernels).',
        exact=True,
        order=10,
    )
    primary_option = 'counts'

    def apply(self, cfg, **options) -> None:
        if 'counts' not in options:
            raise ValueError("boost 'accum' needs the number of micro-batches per step: accum=4")
        apply_accumulation(cfg, **options)

    def verify(self, runner, counts=None, per_gpu_batch=None, **options) -> str:
        from bevboost.boosts import BoostNotInEffect, require_hook
        actual = getattr(runner.optim_wrapper, '_accumulative_counts', None)
        if counts is not None and actual != int(counts):
            raise BoostNotInEffect(f'optimizer wrapper accumulates {actual}, asked {counts}')
        batch = getattr(runner.train_dataloader, 'batch_size', None)
        if per_gpu_batch is not None and batch != int(per_gpu_batch):
            raise BoostNotInEffect(f'train dataloader batch is {batch}, asked {per_gpu_batch}')
        require_hook(runner, 'OptimizerStepSchedulerHook')
        require_hook(runner, 'AccumulationHook')
        return (f'accumulative_counts={actual} x per-GPU batch {batch}, '
                'OptimizerStepSchedulerHook + AccumulationHook')
