"""A BN-free toy regression task that trains through mmengine's Runner on CPU.

Used by the tests and benchmarks of the training-recipe boosts (AMP,
accumulation, LR scaling, measurement hooks) where a real detector would only
add minutes. Registered in mmengine's root registries as ``ToyRegressor`` and
``ToyRegressionDataset``.
"""
from __future__ import annotations

import uuid

import torch
import torch.utils.checkpoint
from mmengine.dataset import BaseDataset
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, MODELS
from torch import nn


@MODELS.register_module()
class ToyRegressor(BaseModel):
    """Two-layer MLP, mean-squared error; optional BatchNorm for BN warnings."""

    def __init__(self, in_features: int = 8, hidden: int = 16, use_bn: bool = False,
                 data_preprocessor: dict | None = None):
        super().__init__(data_preprocessor=data_preprocessor)
        layers: list[nn.Module] = [nn.Linear(in_features, hidden)]
        if use_bn:
            layers.append(nn.BatchNorm1d(hidden))
        layers += [nn.Tanh(), nn.Linear(hidden, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, inputs, targets=None, mode: str = 'tensor', **unused):
        inputs = torch.stack(inputs) if isinstance(inputs, (list, tuple)) else inputs
        pred = self.net(inputs.float()).squeeze(-1)
        if mode == 'loss':
            targets = torch.stack(targets) if isinstance(targets, (list, tuple)) else targets
            return {'loss': ((pred.float() - targets.float()) ** 2).mean()}
        if mode == 'predict':
            return [{'pred': p} for p in pred]
        return pred


@MODELS.register_module()
class ToyMLPBackbone(nn.Module):
    """A stack of MLP blocks with an mmdet-style ``with_cp`` switch (activation
    checkpointing of each block while training), for the ``checkpoint`` boost."""

    def __init__(self, in_features: int = 8, hidden: int = 64, blocks: int = 3,
                 with_cp: bool = False):
        super().__init__()
        self.with_cp = with_cp
        self.stem = nn.Linear(in_features, hidden)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh())
                                    for _ in range(blocks))

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            if self.with_cp and self.training and x.requires_grad:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


@MODELS.register_module()
class ToyBackboneRegressor(ToyRegressor):
    """The toy regressor on an ``img_backbone`` built from config (``ToyMLPBackbone``)."""

    def __init__(self, img_backbone: dict | None = None, in_features: int = 8,
                 data_preprocessor: dict | None = None):
        super().__init__(in_features=in_features, data_preprocessor=data_preprocessor)
        self.img_backbone = MODELS.build(img_backbone or dict(type='ToyMLPBackbone'))
        self.net = nn.Sequential(self.img_backbone, nn.Linear(self.img_backbone.stem.out_features, 1))


@DATASETS.register_module()
class ToyRegressionDataset(BaseDataset):
    """Deterministic samples ``(x, y = w.x + noise)`` from a fixed seed."""

    def __init__(self, num_samples: int = 64, in_features: int = 8, seed: int = 0, **kwargs):
        self.num_samples = num_samples
        self.in_features = in_features
        self.seed = seed
        kwargs.setdefault('serialize_data', False)
        super().__init__(**kwargs)

    def load_data_list(self) -> list[dict]:
        gen = torch.Generator().manual_seed(self.seed)
        x = torch.randn(self.num_samples, self.in_features, generator=gen)
        w = torch.randn(self.in_features, generator=gen)
        y = x @ w + 0.1 * torch.randn(self.num_samples, generator=gen)
        return [dict(inputs=x[i], targets=y[i]) for i in range(self.num_samples)]


def toy_config(work_dir: str, *, batch_size: int = 8, num_samples: int = 64,
               max_iters: int = 8, lr: float = 0.1, optim_wrapper: dict | None = None,
               param_scheduler: list | None = None, use_bn: bool = False,
               shuffle: bool = False, **extra) -> dict:
    """An iteration-based mmengine config dict for the toy task."""
    cfg = dict(
        work_dir=work_dir,
        model=dict(type='ToyRegressor', use_bn=use_bn),
        train_dataloader=dict(
            batch_size=batch_size, num_workers=0,
            sampler=dict(type='InfiniteSampler', shuffle=shuffle),
            dataset=dict(type='ToyRegressionDataset', num_samples=num_samples),
            collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=10 ** 9),
        optim_wrapper=optim_wrapper or dict(type='OptimWrapper',
                                            optimizer=dict(type='SGD', lr=lr, momentum=0.9)),
        param_scheduler=param_scheduler,
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1),
                           checkpoint=dict(type='CheckpointHook', interval=10 ** 9)),
        randomness=dict(seed=0),
        # unique: runners built in one second would otherwise share mmengine's timestamp-named
        # MessageHub and MMLogger instances, and with them their history
        experiment_name=f'toy_{uuid.uuid4().hex[:12]}',
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        log_level='WARNING',
        default_scope='mmengine',
    )
    cfg.update(extra)
    return cfg
