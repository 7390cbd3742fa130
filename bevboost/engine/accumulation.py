"""Gradient accumulation that is exactly the large batch.

mmengine's ``accumulative_counts`` already scales the loss, handles a short
last window (``_remainder_counts``) and skips the DDP all-reduce on all but
the last micro-batch (``optim_context`` -> ``no_sync``). What it gets wrong,
fixed here:

* :class:`OptimizerStepSchedulerHook` replaces ``ParamSchedulerHook``:
  iteration-based schedulers step once per *applied optimizer step*, not per
  micro-batch (open-mmlab/mmengine#1308) and not on skipped steps; schedulers
  are built in optimizer steps and windows close at epoch ends
  (:mod:`bevboost.engine.scheduler_steps`).
* :class:`AccumulationHook` saves the split and a partly accumulated window's
  gradients in the checkpoint so a resume continues exactly, re-splits or
  refuses (:mod:`bevboost.engine.accumulation_resume`), and reports
  BatchNorm layers, whose statistics accumulation cannot make large-batch.
"""
from __future__ import annotations

import logging
from typing import Iterator

import torch
from mmengine.hooks import Hook, ParamSchedulerHook
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.registry import HOOKS
from torch.nn.modules.batchnorm import _BatchNorm

from bevboost.boosts import Boost, BoostCard, add_custom_hook, config_entry, register_boost
from bevboost.engine.accumulation_resume import (CKPT_KEY, accumulation_state, plan_resume,
                                                 restore_grads)
from bevboost.engine.scheduler_steps import (accumulative_counts, build_in_optimizer_steps,
                                             check_schedulers_exact, is_epoch_based,
                                             start_epoch_window)

logger = logging.getLogger(__name__)


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
    Under accumulation it also rebuilds the schedulers in optimizer steps and
    closes accumulation windows at epoch ends
    (:mod:`bevboost.engine.scheduler_steps`).

    Args:
        trusted_schedulers: scheduler type names outside the kit's checked set
            that the user vouches for under accumulation.
    """

    priority = 'LOW'

    def __init__(self, trusted_schedulers: tuple[str, ...] = ()) -> None:
        self.trusted_schedulers = tuple(trusted_schedulers)
        self._steps_before: dict[int, int | None] = {}

    def before_run(self, runner) -> None:
        # Runs after schedulers are built and before a resume loads their state.
        build_in_optimizer_steps(runner, self.trusted_schedulers)

    def before_train_epoch(self, runner) -> None:
        if is_epoch_based(runner) and accumulative_counts(runner.optim_wrapper) > 1:
            start_epoch_window(runner.optim_wrapper, len(runner.train_dataloader))

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


@HOOKS.register_module()
class AccumulationHook(Hook):
    """Checkpoint the accumulation split and a partly accumulated window; report BatchNorm.

    Resume with the same split continues a window exactly; with another split
    it re-splits or refuses (:mod:`bevboost.engine.accumulation_resume`).
    """

    priority = 'NORMAL'

    def __init__(self) -> None:
        self._pending_grads: dict[str, torch.Tensor] | None = None
        self._bn_checked = False

    def before_run(self, runner) -> None:
        hook_types = [type(h).__name__ for h in runner.hooks]
        if accumulative_counts(runner.optim_wrapper) > 1 and \
                'OptimizerStepSchedulerHook' not in hook_types:
            raise ValueError('gradient accumulation needs default_hooks.param_scheduler = '
                             "dict(type='OptimizerStepSchedulerHook'); with mmengine's "
                             'ParamSchedulerHook schedulers advance per micro-batch')

    def before_train(self, runner) -> None:
        counts = accumulative_counts(runner.optim_wrapper)
        batch = runner.train_dataloader.batch_size
        logger.info('gradient accumulation: %d micro-batches of %s per GPU x %d GPUs '
                    '= effective batch %s', counts, batch, runner.world_size,
                    batch * counts * runner.world_size if batch else '?')
        report_short_micro_batch(runner, counts)
        if self._pending_grads is not None:
            restore_grads(runner, self._pending_grads)
            self._pending_grads = None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self._bn_checked:  # after the first iteration: model.train() has run
            self._bn_checked = True
            report_batch_norm(runner.model, accumulative_counts(runner.optim_wrapper))

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[CKPT_KEY] = accumulation_state(
            runner, accumulative_counts(runner.optim_wrapper), is_epoch_based(runner))

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not runner.cfg.get('resume', False):  # load_from: weights only
            return
        self._pending_grads = plan_resume(
            runner, checkpoint, accumulative_counts(runner.optim_wrapper), is_epoch_based(runner))


def report_short_micro_batch(runner, counts: int) -> bool:
    """Warn when an epoch ends in a partial micro-batch; True if it does.

    A window's loss is the mean of its micro-batch losses, which equals the
    large batch's mean only when the micro-batches are equally full.
    """
    loader = runner.train_dataloader
    if counts <= 1 or not is_epoch_based(runner) or loader.drop_last or not loader.batch_size:
        return False
    samples = len(loader.sampler)  # per rank
    if samples % loader.batch_size == 0:
        return False
    logger.warning('each epoch ends in a micro-batch of %d of %d samples (%d per GPU): its loss '
                   'gets the weight of a full micro-batch in the last window, so that window is '
                   'not exactly the large batch; make the per-GPU dataset length a multiple of '
                   'the per-GPU batch, or set drop_last=True', samples % loader.batch_size,
                   loader.batch_size, samples)
    return True


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
    trusted = (hooks.get('param_scheduler') or {}).get('trusted_schedulers')
    hooks['param_scheduler'] = dict(type='OptimizerStepSchedulerHook')
    if trusted:
        hooks['param_scheduler']['trusted_schedulers'] = list(trusted)


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
    if per_gpu_batch is not None:
        try:
            per_gpu_batch = int(per_gpu_batch)
        except (TypeError, ValueError):
            raise ValueError(f'per_gpu_batch must be an integer >= 1, got {per_gpu_batch!r}') \
                from None
        if per_gpu_batch < 1:
            raise ValueError(f'per_gpu_batch must be an integer >= 1, got {per_gpu_batch}')
    if per_gpu_batch is None:
        if (old_batch * old_counts) % counts:
            raise ValueError(
                f'per-GPU batch {old_batch} x accumulation {old_counts} is not divisible by '
                f'accumulation {counts}; pass per_gpu_batch or use `bevboost plan`')
        per_gpu_batch = old_batch * old_counts // counts
    if counts > 1:  # refuse at start, naming the scheduler, rather than run it wrong
        trusted = ((cfg.get('default_hooks') or {}).get('param_scheduler') or {}).get(
            'trusted_schedulers', ())
        check_schedulers_exact(cfg.get('param_scheduler'), trusted)
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
        contract_options=dict(counts=2), fragment='accum_plan.py',
        docs='docs/engine.md#gradient-accumulation-is-the-large-batch-accum-boost',
        summary='Exact gradient accumulation: k micro-batches per optimizer step, schedulers '
                'count optimizer steps, mid-window resume, BatchNorm report.',
        changes=('optim_wrapper.accumulative_counts', 'train_dataloader.batch_size',
                 'default_hooks.param_scheduler', 'custom_hooks', 'train_cfg.max_iters',
                 'train_cfg.val_interval', 'default_hooks.logger.interval',
                 'default_hooks.checkpoint.interval'),
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
        from bevboost.seams.mmengine_optim import accumulative_counts
        actual = accumulative_counts(runner.optim_wrapper)
        if counts is not None and actual != int(counts):
            raise BoostNotInEffect(f'optimizer wrapper accumulates {actual}, asked {counts}')
        batch = getattr(runner.train_dataloader, 'batch_size', None)
        if per_gpu_batch is not None and batch != int(per_gpu_batch):
            raise BoostNotInEffect(f'train dataloader batch is {batch}, asked {per_gpu_batch}')
        require_hook(runner, 'OptimizerStepSchedulerHook')
        require_hook(runner, 'AccumulationHook')
        return (f'accumulative_counts={actual} x per-GPU batch {batch}, '
                'OptimizerStepSchedulerHook + AccumulationHook')
