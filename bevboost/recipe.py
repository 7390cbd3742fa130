"""Batch recipes and LR rules: map a reference recipe onto other hardware.

Pure arithmetic, no torch: ``8x4`` is 8 GPUs x 4 samples per GPU (effective
batch 32); ``4x3x8`` adds 8 accumulation steps (effective batch 96). The LR
follows the effective batch by a rule: ``linear`` (Goyal et al.; mmdetection's
8 GPUs lr 0.02 -> 4 GPUs 0.01), ``sqrt`` (common for Adam-family optimizers)
or ``keep``.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Literal

LRRule = Literal['linear', 'sqrt', 'keep']
LR_RULES: tuple[str, ...] = ('linear', 'sqrt', 'keep')
_RECIPE_RE = re.compile(r'^\s*(\d+)\s*[xX*]\s*(\d+)\s*(?:[xX*]\s*(\d+)\s*)?$')


@dataclasses.dataclass(frozen=True)
class Recipe:
    """``gpus`` x ``per_gpu`` samples x ``accum`` micro-batches per optimizer step."""
    gpus: int
    per_gpu: int
    accum: int = 1

    def __post_init__(self):
        for name in ('gpus', 'per_gpu', 'accum'):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f'recipe {name} must be an integer >= 1, got {value!r}')

    @property
    def effective_batch(self) -> int:
        return self.gpus * self.per_gpu * self.accum

    def __str__(self) -> str:
        return f'{self.gpus}x{self.per_gpu}x{self.accum}'

    @classmethod
    def parse(cls, text: str, what: str = 'recipe') -> 'Recipe':
        """Parse ``'8x4'`` or ``'4x3x8'``; bad strings name the argument and value."""
        match = _RECIPE_RE.match(text) if isinstance(text, str) else None
        if not match:
            raise ValueError(f'{what} must look like GPUSxPER_GPU or GPUSxPER_GPUxACCUM '
                             f'(e.g. 8x4), got {text!r}')
        gpus, per_gpu, accum = (int(g) if g else 1 for g in match.groups())
        for name, value in (('GPU count', gpus), ('per-GPU batch', per_gpu),
                            ('accumulation', accum)):
            if value < 1:
                raise ValueError(f'{what} {text!r}: {name} must be >= 1, got {value}')
        return cls(gpus, per_gpu, accum)


def check_lr(lr: float, what: str = 'lr') -> float:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f'{what} must be a positive number, got {lr!r}')
    return float(lr)


def check_rule(rule: str) -> str:
    if rule not in LR_RULES:
        raise ValueError(f'LR rule must be one of {", ".join(LR_RULES)}, got {rule!r}')
    return rule


def scale_lr(lr: float, reference_batch: int, effective_batch: int, rule: str = 'linear') -> float:
    """The LR for ``effective_batch`` given ``lr`` at ``reference_batch``."""
    check_lr(lr)
    check_rule(rule)
    for name, value in (('reference batch', reference_batch), ('effective batch', effective_batch)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f'{name} must be an integer >= 1, got {value!r}')
    ratio = effective_batch / reference_batch
    if rule == 'linear':
        return lr * ratio
    if rule == 'sqrt':
        return lr * math.sqrt(ratio)
    return lr


@dataclasses.dataclass(frozen=True)
class Plan:
    """A recipe for the user's hardware and how it relates to the reference."""
    reference_batch: int
    reference_lr: float | None
    recipe: Recipe
    rule: str
    lr: float | None

    @property
    def exact(self) -> bool:
        return self.recipe.effective_batch == self.reference_batch

    @property
    def step_ratio(self) -> float:
        """Optimizer steps per reference step to see the same samples."""
        return self.reference_batch / self.recipe.effective_batch

    def to_dict(self) -> dict:
        return dict(reference_batch=self.reference_batch, reference_lr=self.reference_lr,
                    gpus=self.recipe.gpus, per_gpu_batch=self.recipe.per_gpu,
                    accumulative_counts=self.recipe.accum,
                    effective_batch=self.recipe.effective_batch, lr=self.lr, rule=self.rule,
                    exact=self.exact, step_ratio=self.step_ratio)


def plan_recipe(reference_batch: int, gpus: int, max_per_gpu: int, lr: float | None = None,
                rule: str = 'linear', tolerance: float = 0.1) -> Plan:
    """Largest per-GPU batch <= ``max_per_gpu`` with accumulation reaching the reference.

    When no combination hits the reference batch exactly, the largest per-GPU
    batch whose effective batch is within ``tolerance`` (relative) is taken,
    else the closest, and the LR follows ``rule``.
    """
    check_rule(rule)
    if lr is not None:
        check_lr(lr)
    Recipe(gpus, max_per_gpu)  # validates both
    if not isinstance(reference_batch, int) or reference_batch < 1:
        raise ValueError(f'reference batch must be an integer >= 1, got {reference_batch!r}')
    candidates = []
    for per_gpu in range(max_per_gpu, 0, -1):
        accum = max(1, round(reference_batch / (gpus * per_gpu)))
        candidates.append(Recipe(gpus, per_gpu, accum))

    def rel_error(r: Recipe) -> float:
        return abs(r.effective_batch - reference_batch) / reference_batch

    # Exact if possible; else the largest per-GPU batch within the tolerance
    # (bigger micro-batches run faster); else the closest effective batch.
    exact = [r for r in candidates if rel_error(r) == 0]
    close = [r for r in candidates if rel_error(r) <= tolerance]
    recipe = (exact or close or [min(candidates, key=rel_error)])[0]
    new_lr = None if lr is None else scale_lr(lr, reference_batch, recipe.effective_batch, rule)
    return Plan(reference_batch, lr, recipe, rule, new_lr)


def equivalent_recipes(reference_batch: int, gpus: int) -> list[Recipe]:
    """Every ``gpus x per_gpu x accum`` whose effective batch is the reference, largest per-GPU first."""
    if reference_batch % gpus:
        return []
    per_rank = reference_batch // gpus
    return [Recipe(gpus, per_gpu, per_rank // per_gpu)
            for per_gpu in range(per_rank, 0, -1) if per_rank % per_gpu == 0]


def check_proposal(reference_batch: int, proposal: Recipe) -> str | None:
    """None when ``proposal`` matches the reference batch, else a message with fixes."""
    eff = proposal.effective_batch
    if eff == reference_batch:
        return None
    alternatives = equivalent_recipes(reference_batch, proposal.gpus)
    msg = (f'{proposal} is an effective batch of {eff}, not the reference {reference_batch} '
           f'({eff / reference_batch:.3g}x): the LR, warmup and schedule of the reference no '
           f'longer fit.')
    if alternatives:
        fitting = [str(r) for r in alternatives if r.per_gpu <= proposal.per_gpu]
        msg += (f' Equivalent recipes on {proposal.gpus} GPUs: '
                f'{", ".join(str(r) for r in alternatives)}')
        if fitting:
            msg += f' (per-GPU batch <= {proposal.per_gpu}: {", ".join(fitting)})'
        msg += '.'
    else:
        msg += (f' No recipe on {proposal.gpus} GPUs reaches exactly {reference_batch}; '
                f'use `bevboost plan --max-per-gpu` to get the closest with a scaled LR.')
    return msg
