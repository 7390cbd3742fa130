"""Shared by the compute-boost tests: train the toy through mmengine's Runner, toy models."""
from __future__ import annotations

from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import MODELS

from bevboost.boosts import apply_boosts
from bevboost.runner_utils import runner_from_cfg
from bevboost.testing.toy import toy_config

ADAMW = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=0.01, weight_decay=0.01))


class LossRecorder(Hook):
    """The loss of every iteration, as the model returned it."""

    def __init__(self):
        self.losses: list[torch.Tensor] = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses.append(outputs['loss'].detach().clone())


def train_toy(work_dir, boosts=(), max_iters=4, **cfg_kwargs):
    cfg = apply_boosts(Config(toy_config(str(work_dir), max_iters=max_iters, **cfg_kwargs)),
                       boosts)
    runner = runner_from_cfg(cfg)
    losses = LossRecorder()
    runner.register_hook(losses)
    runner.train()
    return runner, torch.stack(losses.losses)


def log_text(runner) -> str:
    # the logger's own file: two runners built in one second share one MMLogger instance
    return Path(runner.logger.log_file).read_text()


def stacked(x):
    return torch.stack(x) if isinstance(x, (list, tuple)) else x


@MODELS.register_module(force=True)
class ToyWithComplexParam(BaseModel):
    """A toy regressor with a complex gain (as in spectral filters): torch's fused Adam
    kernels take floating-point parameters only; its for-loop Adam takes complex ones."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(8, 1)
        self.gain = torch.nn.Parameter(torch.ones(1, dtype=torch.complex64))

    def forward(self, inputs, targets=None, mode='tensor', **unused):
        pred = (self.net(stacked(inputs)).squeeze(-1) * self.gain).real
        return {'loss': ((pred - stacked(targets)) ** 2).mean()}


@MODELS.register_module(force=True)
class ToyConvRegressor(BaseModel):
    """Conv + BN backbone on 2x8x8 'images' made of the toy's 8 features, linear head.

    No conv bias before BN (as in ResNet): its true gradient is zero, and Adam would
    turn the rounding noise there into full-size steps.
    """

    def __init__(self):
        super().__init__()
        self.img_backbone = torch.nn.Sequential(
            torch.nn.Conv2d(2, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, 8, 3, stride=2, padding=1))
        self.head = torch.nn.Linear(8 * 4 * 4, 1)

    def forward(self, inputs, targets=None, mode='tensor', **unused):
        x = stacked(inputs)
        rows, cols = x[:, None, :, None], x[:, None, None, :]
        images = torch.cat([rows * cols, rows + cols], dim=1)  # (B, 2, 8, 8), NCHW
        feats = self.img_backbone(images)
        loss = ((self.head(feats.flatten(1)).squeeze(-1) - stacked(targets)) ** 2).mean()
        return {'loss': loss}
