"""Scheduler cases shared by the single-process and DDP registry tests.

Each case is one mmengine scheduler, declared in iterations or in epochs
(``convert_to_iter_based``), run two ways on the BN-free toy task:

* reference: plain mmengine (no kit), batch ``2 k`` per GPU, no accumulation;
* kit: the same config through the ``accum=k`` boost: batch 2 x accumulate k.

26 samples per rank make 13 micro-batches an epoch, not a multiple of 2, 3
or 4: every epoch ends in a short window, as the reference's epoch ends in a
short batch.
"""
from __future__ import annotations

import copy

import torch
from mmengine.config import Config
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.registry import METRICS, PARAM_SCHEDULERS

from bevboost.boosts import apply_boosts
from bevboost.runner_utils import runner_from_cfg
from bevboost.testing.toy import toy_config

MICRO_BATCH = 2
SAMPLES_PER_RANK = 26
EPOCHS = 2
PLATEAU_EPOCHS = 3
#: scheduler families (name without LR/Momentum/ParamScheduler) -> kwargs per declaration
FAMILIES = {
    'Linear': dict(iter=dict(start_factor=0.2, begin=0, end=5),
                   epoch=dict(start_factor=0.2, begin=0, end=1.5)),
    'Constant': dict(iter=dict(factor=0.5, begin=1, end=4),
                     epoch=dict(factor=0.5, begin=0, end=1)),
    'CosineAnnealing': dict(iter=dict(eta_min=1e-3, begin=1),  # T_max and end default
                            epoch=dict(T_max=2, eta_min=1e-3, begin=0, end=2)),
    'CosineRestart': dict(iter=dict(periods=[3, 4], restart_weights=[1, 0.5], eta_min=1e-3),
                          epoch=dict(periods=[1, 1], restart_weights=[1, 0.5], eta_min=1e-3)),
    'Exponential': dict(iter=dict(gamma=0.9, begin=2),
                        epoch=dict(gamma=0.9, begin=0.5)),
    'MultiStep': dict(iter=dict(milestones=[2, 5], gamma=0.5),
                      epoch=dict(milestones=[1, 1.5], gamma=0.5)),
    'Step': dict(iter=dict(step_size=3, gamma=0.5),
                 epoch=dict(step_size=1, gamma=0.5)),
    'Poly': dict(iter=dict(power=2.0, eta_min=1e-3),  # end defaults to the run's steps
                 epoch=dict(power=2.0, eta_min=1e-3, begin=0.5, end=2)),
    'OneCycle': dict(iter=dict(eta_max=0.05, pct_start=0.4),
                     epoch=dict(eta_max=0.05, pct_start=0.3, total_steps=2)),
    # 'greater': the falling training-set MSE counts as a plateau, so the LR does drop
    'ReduceOnPlateau': dict(epoch_plain=dict(monitor='mse', rule='greater', patience=0,
                                             factor=0.5)),
}
MOMENTUM_VALUES = {'eta_min': 0.5, 'eta_max': 0.95, 'start_factor': 0.5}
SUFFIXES = ('LR', 'Momentum', 'ParamScheduler')


def family_of(name: str) -> tuple[str, str] | None:
    """``'CosineRestartMomentum'`` -> ``('CosineRestart', 'Momentum')``."""
    for suffix in SUFFIXES:
        if name.endswith(suffix) and name[:-len(suffix)] in FAMILIES:
            return name[:-len(suffix)], suffix
    return None


def declarations(name: str) -> tuple[str, ...]:
    family, _ = family_of(name)
    return tuple(FAMILIES[family])


def scheduler_cfg(name: str, declaration: str) -> dict:
    family, suffix = family_of(name)
    kwargs = copy.deepcopy(FAMILIES[family][declaration])
    if suffix == 'Momentum':
        kwargs.update({k: v for k, v in MOMENTUM_VALUES.items() if k in kwargs})
    if suffix == 'ParamScheduler':
        kwargs['param_name'] = 'lr'
    if declaration == 'iter':
        kwargs['by_epoch'] = False
    elif declaration == 'epoch':
        kwargs.update(by_epoch=True, convert_to_iter_based=True)
    else:  # 'epoch_plain': stepped per epoch (ReduceOnPlateau supports nothing else)
        kwargs['by_epoch'] = True
    return dict(type=name, **kwargs)


@METRICS.register_module(force=True)
class ToyMSEMetric(BaseMetric):
    """Mean squared error of the toy regressor (for ReduceOnPlateau)."""

    def process(self, data_batch, data_samples) -> None:
        for target, sample in zip(data_batch['targets'], data_samples):
            self.results.append(float((sample['pred'] - target) ** 2))

    def compute_metrics(self, results) -> dict:
        return {'mse': sum(results) / len(results)}


class StepValues(Hook):
    """(lr, momentum) of the first param group at every real ``optimizer.step``."""

    priority = 'VERY_LOW'

    def __init__(self):
        self.values: list[tuple[float, float]] = []

    def before_train(self, runner):
        optimizer = runner.optim_wrapper.optimizer
        original = optimizer.step

        def step(*args, **kwargs):
            group = optimizer.param_groups[0]
            self.values.append((group['lr'], group['momentum']))
            return original(*args, **kwargs)

        optimizer.step = step


def case_config(work_dir: str, sched: dict, batch: int, world_size: int = 1,
                epochs: int = EPOCHS) -> Config:
    """An epoch-based toy config that never mentions the kit."""
    samples = SAMPLES_PER_RANK * world_size
    loader = dict(batch_size=batch, num_workers=0, collate_fn=dict(type='default_collate'),
                  sampler=dict(type='DefaultSampler', shuffle=True),
                  dataset=dict(type='ToyRegressionDataset', num_samples=samples))
    extra = {}
    if sched['type'].startswith('ReduceOnPlateau'):
        extra = dict(val_dataloader=dict(loader, batch_size=8),  # the training samples
                     val_cfg=dict(), val_evaluator=dict(type='ToyMSEMetric'))
        epochs = PLATEAU_EPOCHS
    if world_size > 1:
        extra.update(launcher='pytorch',
                     model_wrapper_cfg=dict(type='MMDistributedDataParallel', device_ids=None))
    cfg = toy_config(work_dir, batch_size=batch, num_samples=samples, param_scheduler=[sched],
                     lr=0.02,
                     train_dataloader=loader,
                     train_cfg=dict(by_epoch=True, max_epochs=epochs, val_interval=1),
                     **extra)
    cfg['default_hooks'] = dict(logger=dict(type='LoggerHook', interval=100),
                                checkpoint=dict(type='CheckpointHook', interval=10 ** 9,
                                                save_last=False))
    return Config(cfg)


def fast_config_text(config_cls=Config) -> None:
    """Skip yapf formatting of config dumps and log lines (most of a toy run's time)."""
    config_cls.pretty_text = property(lambda self: repr(self.to_dict()))


def train(cfg: Config) -> tuple[list, dict, object]:
    runner = runner_from_cfg(cfg)
    rec = StepValues()
    runner.register_hook(rec)
    runner.train()
    model = getattr(runner.model, 'module', runner.model)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    return rec.values, params, runner


def run_case(work_dir, name: str, declaration: str, counts: int, world_size: int = 1):
    """Returns (reference values, reference params, kit values, kit params, kit runner)."""
    sched = scheduler_cfg(name, declaration)
    big = MICRO_BATCH * counts
    ref_values, ref_params, _ = train(case_config(f'{work_dir}/ref', sched, big, world_size))
    kit_cfg = apply_boosts(case_config(f'{work_dir}/kit', sched, big, world_size),
                           [f'accum={counts}'])
    kit_values, kit_params, kit_runner = train(kit_cfg)
    return ref_values, ref_params, kit_values, kit_params, kit_runner


def max_relative_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(((a[n] - b[n]).abs().max() / (a[n].abs().max() + 1e-12)).item() for n in a)


def all_finite(params: dict) -> bool:
    return all(torch.isfinite(p).all() for p in params.values())


def registry_cases() -> list[tuple[str, str, int]]:
    """Every registered scheduler with a family here x its declarations x k in (2, 3, 4)."""
    import mmengine.optim  # noqa: F401  (registers mmengine's schedulers)
    return [(name, decl, k) for name in sorted(PARAM_SCHEDULERS.module_dict) if family_of(name)
            for decl in declarations(name) for k in (2, 3, 4)]
