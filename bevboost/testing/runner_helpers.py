"""Shared helpers for the engine tests: run the toy task through mmengine's Runner."""
from __future__ import annotations

import math

import torch
from mmengine.config import Config
from mmengine.hooks import Hook

from bevboost.boosts import apply_boosts
from bevboost.runner_utils import runner_from_cfg
from bevboost.testing.toy import toy_config


class StepRecorder(Hook):
    """Records the LR at every real ``optimizer.step`` call."""

    priority = 'VERY_LOW'

    def __init__(self):
        self.lrs: list[float] = []

    def before_train(self, runner):
        optimizer = runner.optim_wrapper.optimizer
        original = optimizer.step

        def step(*args, **kwargs):
            self.lrs.append(optimizer.param_groups[0]['lr'])
            return original(*args, **kwargs)

        optimizer.step = step


def run_toy(work_dir, boosts=(), resume=False, after_boosts=None, **cfg_kwargs):
    """Train the toy task; returns (runner, step recorder).

    ``after_boosts`` is merged into the config after the boosts are applied.
    """
    cfg = apply_boosts(Config(toy_config(str(work_dir), **cfg_kwargs)), boosts)
    if after_boosts:
        cfg.merge_from_dict(after_boosts)
    cfg.resume = resume
    runner = runner_from_cfg(cfg)
    recorder = StepRecorder()
    runner.register_hook(recorder)
    runner.train()
    return runner, recorder


def params_of(runner) -> dict[str, torch.Tensor]:
    model = getattr(runner.model, 'module', runner.model)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_params_close(a: dict, b: dict, rtol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for name in a:
        diff = (a[name] - b[name]).abs().max().item()
        scale = a[name].abs().max().item() + 1e-12
        assert diff / scale < rtol, f'{name}: relative difference {diff / scale:.3g}'


class InjectInfGrad(Hook):
    """Makes the gradients of the given iterations infinite."""

    priority = 'HIGHEST'

    def __init__(self, iters):
        self.iters = set(iters)
        self.handle = None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter in self.iters:
            param = next(runner.model.parameters())
            self.handle = param.register_hook(lambda g: g * math.inf)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if self.handle is not None:
            self.handle.remove()
            self.handle = None
