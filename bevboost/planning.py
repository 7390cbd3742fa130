"""Apply a :class:`~bevboost.recipe.Plan` to an mmengine config, and lint schedules.

The config as given is taken to be the reference recipe: its optimizer LR is
the reference LR, its iteration-based loop lengths and scheduler bounds are in
reference optimizer steps. The plan rewrites the per-GPU batch, accumulation
and LR; when the effective batch differs from the reference, iteration-counted
bounds are rescaled so every phase covers the same number of samples.
"""
from __future__ import annotations

import copy
import logging
from typing import Any

from mmengine.config import Config

from bevboost.engine.accumulation import apply_accumulation, scale_iteration_counts
from bevboost.recipe import Plan

logger = logging.getLogger(__name__)

_ITER_BOUNDS = ('begin', 'end', 'T_max', 'step_size', 'total_steps')


def reference_lr(cfg: Config) -> float:
    wrapper = cfg.get('optim_wrapper') or {}
    optimizer = wrapper.get('optimizer') or {}
    if 'lr' not in optimizer:
        raise ValueError('config has no optim_wrapper.optimizer.lr: is there an optimizer?')
    return float(optimizer['lr'])


def reference_batch(cfg: Config) -> int | None:
    """The reference total batch a config carries (``auto_scale_lr.base_batch_size``)."""
    auto = cfg.get('auto_scale_lr') or {}
    value = auto.get('base_batch_size')
    return int(value) if value is not None else None


def _flatten(d: Any, prefix: str = '') -> dict[str, Any]:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flatten(v, f'{prefix}{k}.'))
        return out or {prefix[:-1]: {}}
    if isinstance(d, (list, tuple)) and any(isinstance(x, dict) for x in d):
        out = {}
        for i, v in enumerate(d):
            out.update(_flatten(v, f'{prefix}{i}.'))
        return out
    return {prefix[:-1]: d}


def config_diff(before: Config, after: Config) -> list[tuple[str, Any, Any]]:
    """Changed leaves as ``(key, old, new)``."""
    a, b = _flatten(before.to_dict()), _flatten(after.to_dict())
    return [(k, a.get(k, '<unset>'), b.get(k, '<unset>'))
            for k in sorted(set(a) | set(b)) if a.get(k, '<unset>') != b.get(k, '<unset>')]


def apply_plan(cfg: Config, plan: Plan) -> Config:
    """A copy of ``cfg`` rewritten to ``plan``; the reference is recorded in ``bevboost_recipe``."""
    reference_lr(cfg)  # fails clearly when there is no optimizer
    cfg = copy.deepcopy(cfg)
    old_counts = int(cfg.optim_wrapper.get('accumulative_counts', 1))
    recipe = plan.recipe
    # micro-batches per reference optimizer step go from old_counts to accum x step_ratio
    apply_accumulation(cfg, recipe.accum, per_gpu_batch=recipe.per_gpu, scale_loop=False)
    scale_iteration_counts(cfg, recipe.accum / old_counts * plan.step_ratio)
    if not plan.exact:
        _rescale_iter_schedulers(cfg, plan.step_ratio)
    if plan.lr is not None:
        cfg.optim_wrapper.optimizer['lr'] = plan.lr
    cfg['auto_scale_lr'] = dict(enable=False, base_batch_size=plan.reference_batch)
    cfg['bevboost_recipe'] = plan.to_dict()
    return cfg


def _rescale_iter_schedulers(cfg: Config, ratio: float) -> None:
    """Iteration-based scheduler bounds (optimizer steps) for a changed effective batch."""
    for sched in _schedulers(cfg):
        if sched.get('by_epoch', True):
            continue
        for key in _ITER_BOUNDS:
            if isinstance(sched.get(key), (int, float)) and sched[key] < 1e12:
                sched[key] = max(1, round(sched[key] * ratio)) if sched[key] else 0
        if isinstance(sched.get('milestones'), list):
            sched['milestones'] = [round(m * ratio) for m in sched['milestones']]


def _schedulers(cfg: Config) -> list:
    scheds = cfg.get('param_scheduler') or []
    return [scheds] if isinstance(scheds, dict) else list(scheds)


def lint_schedule(cfg: Config, samples: int | None = None, gpus: int = 1) -> list[str]:
    """Warnings where LR/momentum schedules no longer match the training length.

    Args:
        cfg: the config.
        samples: training-set size; needed to check iteration-based schedulers
            of an epoch-based loop.
        gpus: world size, with ``samples`` to count optimizer steps per epoch.
    """
    warnings: list[str] = []
    train_cfg = cfg.get('train_cfg') or {}
    counts = int((cfg.get('optim_wrapper') or {}).get('accumulative_counts', 1))
    epoch_loop = 'max_epochs' in train_cfg
    total_epochs = train_cfg.get('max_epochs')
    total_steps = None
    if not epoch_loop and train_cfg.get('max_iters'):
        total_steps = train_cfg['max_iters'] // counts
    elif epoch_loop and samples:
        per_step = gpus * int(cfg.train_dataloader.batch_size) * counts
        total_steps = total_epochs * (samples // per_step)
    for i, sched in enumerate(_schedulers(cfg)):
        by_epoch = sched.get('by_epoch', True)
        unit, total = ('epoch', total_epochs) if by_epoch else ('optimizer step', total_steps)
        if total is None:
            continue
        name = f"param_scheduler[{i}] ({sched.get('type')})"
        begin = sched.get('begin', 0)
        end = sched.get('end', total)
        end = total if end is None or end > 1e12 else end
        if end > total:
            warnings.append(f'{name} ends at {unit} {end} but training stops at {total}: '
                            f'its last {end - total} {unit}s never run')
        t_max = sched.get('T_max')
        if t_max is not None and 'Cosine' in str(sched.get('type')) and t_max < min(end, total) - begin:
            warnings.append(f'{name} has T_max={t_max} {unit}s but spans {min(end, total) - begin}: '
                            f'the cosine passes its minimum and the LR rises again after {unit} '
                            f'{begin + t_max}')
        for m in sched.get('milestones') or []:
            if m >= total:
                warnings.append(f'{name} milestone {m} is beyond the last {unit} ({total}): '
                                'that decay never happens')
    last_end = max((min(s.get('end', 10 ** 13), 10 ** 13) for s in _schedulers(cfg)
                    if 'lr' in str(s.get('type', '')).lower() or 'LR' in str(s.get('type', ''))),
                   default=None)
    if epoch_loop and last_end is not None and last_end < total_epochs and all(
            s.get('by_epoch', True) for s in _schedulers(cfg)):
        warnings.append(f'the LR schedule ends at epoch {last_end} but training runs '
                        f'{total_epochs} epochs: the rest trains at a constant LR')
    return warnings
