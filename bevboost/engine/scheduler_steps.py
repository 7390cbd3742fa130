"""Parameter schedulers counted in optimizer steps under gradient accumulation.

With ``accumulative_counts = k`` one iteration of mmengine's loops is one
micro-batch, but a schedule written for the large batch counts optimizer
steps. mmengine builds the schedulers with ``epoch_length =
len(train_dataloader)`` and a default ``end`` of ``max_iters``, both in
micro-batches, and ``LinearLR``, ``ConstantLR``, ``PolyLR`` and
``OneCycleLR`` fix their spans from these in ``__init__``: no patch of the
built objects can repair them. So the schedulers are built again from the
config with what the large-batch run builds them with: ``epoch_length`` =
optimizer steps per epoch and ``end`` = optimizer steps of the run. Windows
close at every epoch end (:func:`start_epoch_window`), so an epoch has
``ceil(micro-batches / k)`` steps, exactly the large batch's
``ceil(samples / batch)``, its last window short like the last large batch.

Only schedulers whose semantics were checked against the large-batch run
(``tests/engine/test_scheduler_registry.py``) are rebuilt; any other type is
refused at start with its name rather than run wrong.
"""
from __future__ import annotations

import copy
import logging
import math
from typing import Iterable

from mmengine.optim import OptimWrapperDict
from mmengine.registry import PARAM_SCHEDULERS
from mmengine.runner import EpochBasedTrainLoop

from bevboost.seams.mmengine_optim import accumulative_counts as seam_counts

logger = logging.getLogger(__name__)

#: mmengine's schedulers that build exactly in optimizer steps (one test case each)
VERIFIED_SCHEDULERS = frozenset({
    'ConstantLR', 'ConstantMomentum', 'ConstantParamScheduler',
    'CosineAnnealingLR', 'CosineAnnealingMomentum', 'CosineAnnealingParamScheduler',
    'CosineRestartLR', 'CosineRestartMomentum', 'CosineRestartParamScheduler',
    'ExponentialLR', 'ExponentialMomentum', 'ExponentialParamScheduler',
    'LinearLR', 'LinearMomentum', 'LinearParamScheduler',
    'MultiStepLR', 'MultiStepMomentum', 'MultiStepParamScheduler',
    'OneCycleLR', 'OneCycleParamScheduler',
    'PolyLR', 'PolyMomentum', 'PolyParamScheduler',
    'ReduceOnPlateauLR', 'ReduceOnPlateauMomentum', 'ReduceOnPlateauParamScheduler',
    'StepLR', 'StepMomentum', 'StepParamScheduler',
})


def _verified_classes() -> set:
    import mmengine.optim  # noqa: F401  (registers mmengine's schedulers)
    from mmengine.registry import PARAM_SCHEDULERS as root
    return {root.module_dict[name] for name in VERIFIED_SCHEDULERS if name in root.module_dict}


def scheduler_configs(param_scheduler) -> list:
    """The config's ``param_scheduler`` as a flat list (a dict, a list, per-optimizer lists)."""
    if param_scheduler is None:
        return []
    if isinstance(param_scheduler, dict) and 'type' not in param_scheduler:
        return [c for group in param_scheduler.values() for c in scheduler_configs(group)]
    if isinstance(param_scheduler, (list, tuple)):
        return list(param_scheduler)
    return [param_scheduler]


def check_schedulers_exact(param_scheduler, trusted: Iterable[str] = (),
                           resolve: bool = False) -> None:
    """Refuse schedulers that accumulation cannot keep exact, naming them.

    Args:
        param_scheduler: the config's ``param_scheduler``.
        trusted: further type names the user vouches for.
        resolve: also resolve string types through the current registry
            scope and require mmengine's own class (at run time).

    Raises:
        ValueError: a built scheduler object (it cannot be rebuilt in optimizer
            steps) or a type outside :data:`VERIFIED_SCHEDULERS` and ``trusted``.
    """
    trusted = set(trusted)
    verified = _verified_classes()
    refused = []
    for cfg in scheduler_configs(param_scheduler):
        if not isinstance(cfg, dict):
            refused.append(f'{type(cfg).__name__} (a built object; declare it as a config dict)')
            continue
        kind = cfg.get('type')
        name = kind if isinstance(kind, str) else getattr(kind, '__name__', repr(kind))
        if name in trusted:
            continue
        if isinstance(kind, str):
            ok = kind in VERIFIED_SCHEDULERS
            if ok and resolve:
                ok = PARAM_SCHEDULERS.get(kind) in verified
        else:
            ok = kind in verified
        if not ok:
            refused.append(name)
    if refused:
        raise ValueError(
            f'gradient accumulation cannot keep these parameter schedulers exact: '
            f'{", ".join(refused)}. The kit rebuilds schedulers in optimizer steps only for '
            f'the mmengine types it has checked ({", ".join(sorted(VERIFIED_SCHEDULERS))}). '
            'Use one of those, or, if yours counts only begin/end/epoch_length like them, '
            "list it in default_hooks.param_scheduler.trusted_schedulers.")


def accumulative_counts(wrapper) -> int:
    """Micro-batches per optimizer step of a built wrapper (1 for several optimizers)."""
    if isinstance(wrapper, OptimWrapperDict):
        counts = {seam_counts(w) for w in wrapper.values()}
        if counts - {1}:
            raise ValueError('gradient accumulation with several optimizers (OptimWrapperDict) '
                             'is not supported by the kit; use one optimizer wrapper')
        return 1
    return seam_counts(wrapper)


def is_epoch_based(runner) -> bool:
    return isinstance(runner.train_loop, EpochBasedTrainLoop)


def optimizer_steps(runner, counts: int) -> tuple[int, int]:
    """(optimizer steps per epoch, optimizer steps of the whole run)."""
    per_epoch = math.ceil(len(runner.train_dataloader) / counts)
    if is_epoch_based(runner):
        return per_epoch, runner.max_epochs * per_epoch
    return per_epoch, math.ceil(runner.max_iters / counts)


def _restore_initial_values(optimizer, schedulers) -> None:
    """Undo what building ``schedulers`` did to the param groups.

    Each scheduler records the values it started from in ``base_values``;
    the first one per parameter name saw the optimizer's own values.
    """
    originals: dict[str, list] = {}
    for scheduler in schedulers:
        base = getattr(scheduler, 'base_values', None)
        if base is not None:
            originals.setdefault(scheduler.param_name, list(base))
    for name, values in originals.items():
        for group, value in zip(optimizer.param_groups, values):
            group[name] = value
            group[f'initial_{name}'] = value
            if name == 'momentum' and 'betas' in group:
                group['betas'] = (value, *group['betas'][1:])


def build_in_optimizer_steps(runner, trusted: Iterable[str] = ()) -> bool:
    """Rebuild the runner's schedulers counted in optimizer steps; True if it did.

    Call after mmengine built them and before a resume loads their state
    (``before_run``). No-op without accumulation.
    """
    counts = accumulative_counts(runner.optim_wrapper)
    cfgs = runner.cfg.get('param_scheduler')
    if counts <= 1 or runner.param_schedulers is None or not cfgs:
        return False
    check_schedulers_exact(cfgs, trusted, resolve=True)
    if isinstance(cfgs, dict) and 'type' not in cfgs:
        raise ValueError('per-optimizer param_scheduler dicts need several optimizers, '
                         'which the kit does not accumulate')
    cfgs = scheduler_configs(cfgs)
    per_epoch, total = optimizer_steps(runner, counts)
    wrapper = runner.optim_wrapper
    _restore_initial_values(wrapper, runner.param_schedulers)
    rebuilt = []
    for cfg in cfgs:
        cfg = copy.deepcopy(cfg)
        cfg.setdefault('end', runner.max_epochs if cfg.get('by_epoch', True) else total)
        rebuilt.append(PARAM_SCHEDULERS.build(
            cfg, default_args=dict(optimizer=wrapper, epoch_length=per_epoch)))
    runner.param_schedulers = rebuilt
    logger.info('parameter schedulers built in optimizer steps: %d per epoch, %d in the run '
                '(accumulation x%d)', per_epoch, total, counts)
    return True


def start_epoch_window(wrapper, epoch_length: int) -> None:
    """Make accumulation windows close at this epoch's end, as large batches do.

    mmengine counts windows over the whole run, so with an epoch length that is
    not a multiple of ``k`` a window would mix two epochs. Its own counters
    (``_inner_count``, ``_max_counts``, ``_remainder_counts``) are set per
    epoch instead; its ``scale_loss``/``should_update``/``should_sync`` then
    give the epoch's last window its own, shorter, count.
    """
    from bevboost.seams.mmengine_optim import restart_windows
    restart_windows(wrapper, epoch_length)
