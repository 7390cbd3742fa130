"""Apply a :class:`~bevboost.recipe.Plan` to an mmengine config, and lint schedules.

The config as given is taken to be the reference recipe: its optimizer LR is
the reference LR, its iteration-based loop lengths and scheduler bounds are in
reference optimizer steps. The plan rewrites the per-GPU batch, accumulation
and LR; when the effective batch differs from the reference, iteration-counted
bounds are rescaled so every phase covers the same number of samples.
"""
from __future__ import annotations

import ast
import logging
import os
from pathlib import Path
from typing import Any

from mmengine.config import Config

from bevboost.boosts import apply_boosts
from bevboost.engine.accumulation import scale_iteration_counts
from bevboost.recipe import Plan

logger = logging.getLogger(__name__)

_ITER_BOUNDS = ('begin', 'end', 'T_max', 'step_size', 'total_steps')


#: where a config's reference batch / LR is read, first match wins
BATCH_KEYS = ('bevboost_recipe.reference_batch', 'auto_scale_lr.base_batch_size')
LR_KEYS = ('bevboost_recipe.reference_lr', 'optim_wrapper.optimizer.lr')


def reference_lr(cfg: Config) -> float:
    wrapper = cfg.get('optim_wrapper') or {}
    optimizer = wrapper.get('optimizer') or {}
    if 'lr' not in optimizer:
        raise ValueError('config has no optim_wrapper.optimizer.lr: is there an optimizer?')
    return float(optimizer['lr'])


def reference_batch(cfg: Config) -> int | None:
    """The reference total batch a config carries (``bevboost_recipe``, else ``auto_scale_lr``)."""
    value = reference_with_source(cfg, BATCH_KEYS)[0]
    return int(value) if value is not None else None


def _lookup(cfg: Config, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split('.'):
        if not hasattr(node, 'get') or node.get(part) is None:
            return None
        node = node[part]
    return node


def _sets_key(value: ast.AST, parts: list[str]) -> bool:
    """Whether the expression ``value`` (``dict(...)`` or ``{...}``) sets the nested key."""
    if not parts:
        return True
    if isinstance(value, ast.Call) and getattr(value.func, 'id', None) == 'dict':
        items = [(kw.arg, kw.value) for kw in value.keywords]
    elif isinstance(value, ast.Dict):
        items = [(getattr(k, 'value', None), v) for k, v in zip(value.keys, value.values)]
    else:
        return False
    return any(k == parts[0] and _sets_key(v, parts[1:]) for k, v in items)


def _base_files(path: Path, tree: ast.Module) -> list[Path]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, 'id', None) == '_base_'
                                                for t in node.targets):
            try:
                bases = ast.literal_eval(node.value)
            except ValueError:
                return []
            bases = [bases] if isinstance(bases, str) else list(bases)
            return [p for p in (_resolve_base(path, b) for b in bases) if p is not None]
    return []


def _resolve_base(path: Path, base: str) -> Path | None:
    if '::' in base:  # 'mmdet3d::...': a config shipped inside an installed package
        try:
            from mmengine.utils import get_installed_path
            package, rel = base.split('::', 1)
            return Path(get_installed_path(package)) / '.mim' / 'configs' / rel
        except Exception:  # package not installed: the config would not load either
            return None
    return Path(os.path.normpath(path.parent / base))


def setting_file(path: str | Path, dotted: str) -> Path | None:
    """The file of a config's ``_base_`` chain whose own text sets ``dotted``.

    The config itself wins over its bases (mmengine's merge order); None when
    no file in the chain assigns the key literally.
    """
    path = Path(path)
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError, ValueError):
        return None
    top, *rest = dotted.split('.')
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, 'id', None) == top
                                                for t in node.targets):
            if _sets_key(node.value, rest):
                return path
    for base in _base_files(path, tree):
        found = setting_file(base, dotted)
        if found is not None:
            return found
    return None


def reference_with_source(cfg: Config, keys: tuple[str, ...]) -> tuple[Any, str, str | None]:
    """``(value, key, warning)`` of the reference the config carries under the first of ``keys``.

    ``warning`` is set when the value was not set by the config file itself or
    its ``bevboost_recipe`` but inherited from a ``_base_`` file (e.g. a LiDAR
    schedule's ``auto_scale_lr``), which may not be this model's recipe.
    """
    for key in keys:
        value = _lookup(cfg, key)
        if value is None:
            continue
        if not cfg.filename:
            return value, f'{key} (config in memory)', None
        found = setting_file(cfg.filename, key)
        where = f'{key} in {found or cfg.filename}'
        warning = None
        if not key.startswith('bevboost_recipe.') and found is not None and \
                found.resolve() != Path(cfg.filename).resolve():
            warning = (f'the reference {key.rsplit(".", 1)[-1]} {value} is inherited from '
                       f'{found}, not set by {cfg.filename} itself or its bevboost_recipe: '
                       'check it is this model\'s published recipe, or pass it on the command '
                       'line (--reference GPUSxPER_GPU, --lr)')
        return value, where, warning
    return None, 'unset', None


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
    old_counts = int(cfg.optim_wrapper.get('accumulative_counts', 1))
    recipe = plan.recipe
    # micro-batches per reference optimizer step go from old_counts to accum x step_ratio:
    # the accumulation itself is the accum boost's (its card, hooks, verify)
    cfg = apply_boosts(cfg, {'accum': dict(counts=recipe.accum, per_gpu_batch=recipe.per_gpu,
                                           scale_loop=False)}, from_config=False)
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
