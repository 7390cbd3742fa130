"""The training recipe, reconciled on every launch route and checked on the built runner.

Users reach a kit-written config by routes the kit does not own: MMDetection3D's
``tools/train.py`` with ``--auto-scale-lr`` (which sets ``auto_scale_lr.enable``),
``--cfg-options train_dataloader.batch_size=...``, ``--amp``, a ``FlexibleRunner``.
Each can change the effective batch or the LR after the kit wrote the config.
Two pieces keep the recipe:

* :func:`reconcile_launch` rewrites the config on the routes that pass through
  the kit (``Runner.from_cfg``, ``FlexibleRunner.from_cfg``, ``bevboost train``):
  mmengine's ``auto_scale_lr`` never compounds with the kit's scaling (the kit
  does the one scaling, counting accumulation, and switches mmengine's off), and
  ``lr-scale`` scales from the per-GPU batch the run will build, not the one the
  config was written with. Every change is one visible line.
* :func:`check_built_recipe` runs before iteration 1 (``BoostReportHook``) on
  the built runner, from facts only: world size x the built train dataloader's
  batch x the wrapper's accumulation = effective batch; the LR of every param
  group as the run uses it (``initial_lr``, set before any scheduler moves it;
  ``lr_mult`` included), against what the recorded reference recipe implies
  under its rule. The reference per-group LRs come from the config's own optimizer
  constructor (mmengine's) built at the reference LR. A mismatch stops the run
  naming the key that caused it, both numbers and the fix.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
from typing import Any

from bevboost.recipe import scale_lr
from bevboost.seams.mmengine_optim import accumulative_counts

logger = logging.getLogger(__name__)

#: config key holding the lines a launch route wrote about the recipe (logged at start)
NOTES_KEY = 'bevboost_launch_notes'
#: config key: 'stop' (default) stops a run whose recipe differs from the reference before
#: iteration 1; 'warn' trains anyway and says so in one WARNING line (experiments, debugging)
CHECK_KEY = 'bevboost_recipe_check'
#: relative tolerance of an LR comparison (float32 optimizer state is not involved)
LR_RTOL = 1e-6


class RecipeMismatchError(RuntimeError):
    """The built runner trains another effective batch or LR than the reference implies."""


@dataclasses.dataclass(frozen=True)
class Reference:
    """The reference recipe a config records, and where it is recorded."""
    batch: int
    lr: float | None
    rule: str
    source: str
    #: what ``bevboost plan`` planned: gpus, per_gpu_batch, accumulative_counts
    planned: dict | None = None


def reference_of(cfg: Any) -> Reference | None:
    """The reference recipe of ``cfg``: ``lr-scale``'s, ``bevboost plan``'s, else an
    enabled ``auto_scale_lr`` (linear, mmengine's rule); None when it records none."""
    wrapper = cfg.get('optim_wrapper') or {}
    optimizer_lr = (wrapper.get('optimizer') or {}).get('lr')
    scaling = wrapper.get('lr_scaling')
    if scaling:
        return Reference(int(scaling['reference_batch']), optimizer_lr,
                         scaling.get('rule', 'linear'), 'optim_wrapper.lr_scaling')
    recipe = cfg.get('bevboost_recipe')
    if recipe and recipe.get('reference_batch'):
        # the hardware split it was written for: `bevboost plan`'s, or a bundled config's
        # published one (gpus x per-GPU batch, no accumulation unless it says so)
        planned = None
        if recipe.get('gpus') and recipe.get('per_gpu_batch'):
            planned = dict(gpus=int(recipe['gpus']), per_gpu_batch=int(recipe['per_gpu_batch']),
                           accumulative_counts=int(recipe.get('accumulative_counts') or 1))
        lr = recipe.get('reference_lr')
        return Reference(int(recipe['reference_batch']), optimizer_lr if lr is None else lr,
                         recipe.get('rule', 'linear') if lr is not None else 'keep',
                         'bevboost_recipe', planned)
    auto = cfg.get('auto_scale_lr') or {}
    if auto.get('enable') and auto.get('base_batch_size'):
        return Reference(int(auto['base_batch_size']), optimizer_lr, 'linear', 'auto_scale_lr')
    return None


def _note(cfg: Any, text: str, level: int = logging.WARNING) -> None:
    """A line the user sees now (console) and again in the work-dir log at start."""
    from mmengine.logging import print_log
    notes = list(cfg.get(NOTES_KEY) or [])
    if text in notes:  # reconciled again on the way to the build: said once
        return
    print_log(f'bevboost: {text}', logger='current', level=level)
    cfg[NOTES_KEY] = notes + [text]


def reconcile_launch(cfg: Any) -> None:
    """Rewrite ``cfg`` (in place) so the launch keeps the reference recipe.

    * ``auto_scale_lr.enable`` with a kit recipe (``lr-scale`` or ``bevboost plan``)
      or with accumulation: mmengine would scale by world size x per-GPU batch,
      blind to ``accumulative_counts``, on top of the kit. The kit does the one
      scaling: a recorded recipe already scales; accumulation without one is
      scaled by ``lr-scale`` from ``auto_scale_lr.base_batch_size`` (linear,
      mmengine's rule, accumulation counted). mmengine's is switched off.
    * ``lr-scale``'s per-GPU batch follows ``train_dataloader.batch_size`` as the
      run will build it (``--cfg-options`` after ``boost --out``), visibly.
    """
    wrapper = cfg.get('optim_wrapper') or {}
    auto = cfg.get('auto_scale_lr') or {}
    counts = int(wrapper.get('accumulative_counts', 1) or 1)
    if auto.get('enable'):
        if wrapper.get('lr_scaling') or cfg.get('bevboost_recipe'):
            ref = reference_of(cfg)
            what = ('lr-scale' if wrapper.get('lr_scaling') else 'the planned recipe '
                    '(bevboost_recipe)')
            cfg['auto_scale_lr'] = dict(auto, enable=False)
            _note(cfg, f'auto_scale_lr.enable=True (e.g. --auto-scale-lr) switched off: {what} '
                       f'already scales the LR from reference batch {ref.batch} to the '
                       'effective batch with accumulation counted; mmengine would scale again, '
                       'by world size x per-GPU batch only')
        elif counts > 1:
            from bevboost.engine.lr_scaling import apply_lr_scaling
            base = auto.get('base_batch_size')
            try:
                apply_lr_scaling(cfg, rule='linear', reference_batch=base)
            except ValueError as exc:
                raise ValueError(
                    f'auto_scale_lr.enable=True with accumulative_counts={counts}: mmengine '
                    f'scales by world size x per-GPU batch, blind to accumulation, and the kit '
                    f'cannot take the scaling over ({exc}). Fix: drop --auto-scale-lr '
                    '(auto_scale_lr.enable=False) and set the LR with `bevboost plan`') from None
            _note(cfg, f'auto_scale_lr.enable=True with accumulative_counts={counts}: the LR is '
                       f'scaled by the kit (lr-scale, linear, from base_batch_size {base} to '
                       'world size x per-GPU batch x accumulation); mmengine\'s scaling, blind '
                       'to accumulation, is switched off')
    if wrapper.get('type') == 'AmpOptimWrapper':
        _reconcile_amp_wrapper(cfg, wrapper)
    scaling = wrapper.get('lr_scaling')
    loader = cfg.get('train_dataloader') or {}
    batch = loader.get('batch_size')
    if scaling and isinstance(batch, int) and batch != scaling.get('per_gpu_batch'):
        _note(cfg, f'lr-scale: train_dataloader.batch_size is {batch}, not the '
                   f'{scaling.get("per_gpu_batch")} the config was written with (e.g. '
                   '--cfg-options): the LR is scaled for the per-GPU batch of this run')
        scaling['per_gpu_batch'] = batch


def _uses_step_scheduler_hook(cfg: Any) -> bool:
    hook = (cfg.get('default_hooks') or {}).get('param_scheduler') or {}
    return hook.get('type') == 'OptimizerStepSchedulerHook'


def _reconcile_amp_wrapper(cfg: Any, wrapper: Any) -> None:
    """mmengine's ``AmpOptimWrapper`` (mmdet3d's ``--amp``, or the user's own) in a boosted
    config. Where the kit counts optimizer steps (accumulation, amp, nan-guard install
    ``OptimizerStepSchedulerHook``), a skipped fp16 step must not move the schedulers: the
    kit's drop-in takes its place with the same dtype and loss scale. Elsewhere it stays,
    and the user is told that skipped steps are not counted."""
    dtype, scale = wrapper.get('dtype'), wrapper.get('loss_scale', 'dynamic')
    if _uses_step_scheduler_hook(cfg):
        from bevboost.engine.amp import apply_amp
        apply_amp(cfg)
        _note(cfg, f'optim_wrapper AmpOptimWrapper (e.g. --amp) -> BoostAmpOptimWrapper, same '
                   f'dtype {dtype!r} and loss_scale {scale!r}: skipped fp16 steps are counted '
                   'and do not move the schedulers', level=logging.INFO)
    else:
        _note(cfg, f"optim_wrapper is mmengine's AmpOptimWrapper (dtype {dtype!r}, loss_scale "
                   f'{scale!r}, e.g. --amp): skipped fp16 steps are not counted or logged by '
                   'the kit; use the amp boost (--with amp) for that')


# --- the check on the built runner --------------------------------------------------------

def loader_batch_size(loader: Any) -> int | None:
    """Per-GPU batch of a built train dataloader (its batch sampler's when it has one)."""
    batch = getattr(loader, 'batch_size', None)
    if batch is None:
        batch = getattr(getattr(loader, 'batch_sampler', None), 'batch_size', None)
    return batch


def built_group_lrs(wrapper: Any) -> list[float]:
    """Each param group's LR as the run uses it: ``initial_lr`` (what mmengine's schedulers
    start from, after ``auto_scale_lr``), else ``lr``."""
    return [float(g.get('initial_lr', g['lr'])) for g in wrapper.optimizer.param_groups]


def reference_group_lrs(runner: Any, lr: float) -> list[float]:
    """Per-group LRs the config's own optimizer constructor gives at ``lr`` (no scaling).

    Built with mmengine's constructor on the runner's model: ``paramwise_cfg``
    (``lr_mult``, ``custom_keys``) counts exactly as in the run.
    """
    from mmengine.model import is_model_wrapper
    from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
    wrapper_cfg = copy.deepcopy(dict(runner.cfg.optim_wrapper))
    constructor = wrapper_cfg.pop('constructor', 'DefaultOptimWrapperConstructor')
    if constructor == 'RecipeLRScalingConstructor':
        constructor = 'DefaultOptimWrapperConstructor'
    optimizer = dict(wrapper_cfg['optimizer'], lr=lr)
    for key in ('fused', 'foreach'):  # kernels do not change the LR; some need a device
        optimizer.pop(key, None)
    built = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
        type=constructor, optim_wrapper_cfg=dict(type='OptimWrapper', optimizer=optimizer),
        paramwise_cfg=wrapper_cfg.get('paramwise_cfg')))
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    return [float(g['lr']) for g in built(model).optimizer.param_groups]


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=LR_RTOL, abs_tol=0.0)


def _fmt(values: list[float]) -> str:
    return '[' + ', '.join(f'{v:.4g}' for v in values) + ']'


def check_built_recipe(runner: Any) -> str | None:
    """Check the built runner's effective batch and per-group LRs against the reference.

    Returns the start-of-training line (None when the config records no
    reference recipe); raises :class:`RecipeMismatchError` naming the key, or with
    ``bevboost_recipe_check='warn'`` returns the mismatch as a ``WARNING:`` line.
    """
    mode = runner.cfg.get(CHECK_KEY, 'stop')
    if mode not in ('stop', 'warn'):
        raise ValueError(f"{CHECK_KEY} must be 'stop' or 'warn', got {mode!r}")
    try:
        return _check_built_recipe(runner)
    except RecipeMismatchError as exc:
        if mode == 'stop':
            raise
        return f"WARNING: recipe differs ({CHECK_KEY}='warn', training anyway): {exc}"


def _check_built_recipe(runner: Any) -> str | None:
    from mmengine.optim import OptimWrapperDict
    cfg = runner.cfg
    ref = reference_of(cfg)
    if ref is None:
        return None
    wrapper = runner.optim_wrapper
    if isinstance(wrapper, OptimWrapperDict):
        return (f'recipe: not checked (several optimizers); reference batch {ref.batch} from '
                f'{ref.source}')
    world = int(runner.world_size)
    batch = loader_batch_size(runner.train_dataloader)
    counts = accumulative_counts(wrapper)
    if batch is None:
        return f'recipe: not checked (the train dataloader has no batch size); {ref.source}'
    effective = world * batch * counts
    split = f'{world} GPU(s) x {batch} x accumulation {counts}'
    planned = ref.planned
    if planned:
        want = planned['gpus'] * planned['per_gpu_batch'] * planned['accumulative_counts']
        if effective != want:
            for key, built, asked in (('world size (GPUs launched)', world, planned['gpus']),
                                      ('train_dataloader.batch_size', batch,
                                       planned['per_gpu_batch']),
                                      ('optim_wrapper.accumulative_counts', counts,
                                       planned['accumulative_counts'])):
                if built != asked:
                    break
            raise RecipeMismatchError(
                f'the run trains effective batch {effective} ({split}), but the config was '
                f'planned for {want} ({planned["gpus"]} GPU(s) x {planned["per_gpu_batch"]} x '
                f'accumulation {planned["accumulative_counts"]}) from reference batch '
                f'{ref.batch}: {key} is {built}, the recipe has {asked}; its LR and schedule '
                f'fit that batch only. Fix: launch as the recipe says, or write this '
                f'hardware\'s config with `bevboost plan --config CONFIG --gpus {world} '
                f'--max-per-gpu {batch} --out planned.py` (LR and schedule rescaled), or set '
                f"{CHECK_KEY}='warn' to train anyway")
    actual = built_group_lrs(wrapper)
    if ref.lr is None:
        return (f'recipe: reference batch {ref.batch} ({ref.source}) -> effective batch '
                f'{effective} ({split}); LR per group {_fmt(actual)} (no reference LR recorded)')
    reference = reference_group_lrs(runner, ref.lr)
    factor = scale_lr(1.0, ref.batch, effective, ref.rule)
    expected = [lr * factor for lr in reference]
    if len(expected) != len(actual):
        raise RecipeMismatchError(
            f'the built optimizer has {len(actual)} param groups, the config\'s constructor '
            f'gives {len(expected)} at the reference LR: the LR per group cannot be checked. '
            'Fix: build the optimizer from the config alone')
    if not all(_close(a, e) for a, e in zip(actual, expected)):
        raise RecipeMismatchError(_lr_mismatch(cfg, ref, effective, split, actual, expected,
                                               batch))
    return (f'recipe: reference batch {ref.batch}, lr {ref.lr:.4g} ({ref.source}, {ref.rule} '
            f'rule) -> effective batch {effective} ({split}), LR per group {_fmt(actual)}')


def _lr_mismatch(cfg: Any, ref: Reference, effective: int, split: str, actual: list[float],
                 expected: list[float], batch: int) -> str:
    """The message naming the key that moved the LR, both numbers and the fix."""
    ratio = actual[0] / expected[0] if expected[0] else float('nan')
    auto = cfg.get('auto_scale_lr') or {}
    scaling = (cfg.get('optim_wrapper') or {}).get('lr_scaling') or {}
    if auto.get('enable') and ref.source != 'auto_scale_lr':
        key = ('auto_scale_lr.enable', 'mmengine scaled the LR again by world size x per-GPU '
               'batch, blind to accumulation', 'drop --auto-scale-lr / set '
               'auto_scale_lr.enable=False; the kit already scales')
    elif scaling and scaling.get('per_gpu_batch') != batch:
        key = ('train_dataloader.batch_size', f'the LR was scaled for per-GPU batch '
               f'{scaling.get("per_gpu_batch")}, the run builds {batch}',
               f'set optim_wrapper.lr_scaling.per_gpu_batch={batch}, or launch through '
               'Runner.from_cfg / tools/train.py, which rescale it')
    elif ref.source == 'auto_scale_lr':
        key = ('auto_scale_lr.enable', f'mmengine scales by world size x per-GPU batch, '
               f'blind to accumulation (here {split})', 'use `--with lr-scale` or '
               '`bevboost plan` instead of --auto-scale-lr with accumulation')
    else:
        key = ('optim_wrapper.optimizer.lr', 'the LR differs from what the recorded reference '
               'implies', 'drop the LR override, or rerun `bevboost plan` / `bevboost boost '
               f"--with lr-scale` with the new reference, or set {CHECK_KEY}='warn'")
    return (f'{key[0]}: the run would train at LR per group {_fmt(actual)}, but reference batch '
            f'{ref.batch} at lr {ref.lr:.4g} ({ref.source}, {ref.rule} rule) implies '
            f'{_fmt(expected)} at effective batch {effective} ({split}); {ratio:.4g}x off: '
            f'{key[1]}. Fix: {key[2]}')
