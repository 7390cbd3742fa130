"""LR scaling from a reference recipe, with accumulation counted.

mmengine's ``auto_scale_lr`` multiplies the LR by ``world_size x batch_size /
base_batch_size``: linear only, and blind to ``accumulative_counts`` (so
``4 GPUs x 3 x accumulate 8`` is scaled as a batch of 12, not 96). The
optimizer wrapper constructor here scales by the true effective batch
``world_size x per_gpu_batch x accumulative_counts`` with a chosen rule, once,
when the optimizer is built, and logs it. Config::

    optim_wrapper = dict(
        constructor='RecipeLRScalingConstructor',
        lr_scaling=dict(reference_batch=32, rule='linear', per_gpu_batch=4),
        optimizer=dict(type='AdamW', lr=2e-4), ...)
"""
from __future__ import annotations

import copy
import logging

from mmengine.dist import get_world_size
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

from bevboost.boosts import Boost, BoostCard, register_boost
from bevboost.recipe import check_rule, scale_lr

logger = logging.getLogger(__name__)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class RecipeLRScalingConstructor(DefaultOptimWrapperConstructor):
    """Default constructor + LR scaled from ``lr_scaling.reference_batch``."""

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None):
        optim_wrapper_cfg = copy.deepcopy(optim_wrapper_cfg)
        scaling = dict(optim_wrapper_cfg.pop('lr_scaling', None) or {})
        unknown = set(scaling) - {'reference_batch', 'rule', 'per_gpu_batch'}
        if unknown:
            raise ValueError(f'unknown lr_scaling keys {sorted(unknown)}')
        for key in ('reference_batch', 'per_gpu_batch'):
            if not isinstance(scaling.get(key), int) or scaling[key] < 1:
                raise ValueError(f'lr_scaling.{key} must be an integer >= 1, '
                                 f'got {scaling.get(key)!r}')
        scaling['rule'] = check_rule(scaling.get('rule', 'linear'))
        self.lr_scaling = scaling
        optimizer_cfg = optim_wrapper_cfg.get('optimizer') or {}
        if 'lr' not in optimizer_cfg:
            raise ValueError(
                f"lr_scaling needs optim_wrapper.optimizer.lr to scale, but the optimizer config "
                f"({optimizer_cfg.get('type', '?')}) has no 'lr'; set it to the reference "
                "recipe's LR or drop lr_scaling")
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        #: the reference recipe's LR; every call scales from it, never from a scaled value
        self.reference_lr = self.optimizer_cfg['lr']

    def __call__(self, model):
        counts = int(self.optim_wrapper_cfg.get('accumulative_counts', 1))
        effective = get_world_size() * self.lr_scaling['per_gpu_batch'] * counts
        base_lr = self.reference_lr
        lr = scale_lr(base_lr, self.lr_scaling['reference_batch'], effective,
                      self.lr_scaling['rule'])
        self.optimizer_cfg['lr'] = lr
        self.base_lr = lr
        logger.info('LR scaled by the %s rule: %.4g at reference batch %d -> %.4g at effective '
                    'batch %d (%d GPUs x %d x accumulation %d)', self.lr_scaling['rule'], base_lr,
                    self.lr_scaling['reference_batch'], lr, effective, get_world_size(),
                    self.lr_scaling['per_gpu_batch'], counts)
        wrapper = super().__call__(model)
        wrapper.lr_scaling_info = dict(self.lr_scaling, base_lr=base_lr, lr=lr,
                                       effective_batch=effective)
        return wrapper


def apply_lr_scaling(cfg, rule: str = 'linear', reference_batch: int | None = None) -> None:
    """Scale the LR at build time from the reference batch (default: ``auto_scale_lr``)."""
    check_rule(rule)
    wrapper = cfg.get('optim_wrapper')
    if not wrapper or 'optimizer' not in wrapper or 'lr' not in wrapper['optimizer']:
        raise ValueError('config has no optim_wrapper.optimizer.lr to scale')
    if wrapper.get('constructor', 'DefaultOptimWrapperConstructor') not in (
            'DefaultOptimWrapperConstructor', 'RecipeLRScalingConstructor'):
        raise ValueError(f"optim_wrapper.constructor {wrapper['constructor']!r} is custom; "
                         'scale its LR with `bevboost plan --config` instead')
    auto = cfg.get('auto_scale_lr') or {}
    if reference_batch is None:
        reference_batch = auto.get('base_batch_size')
        if reference_batch is None:
            raise ValueError('no reference batch: pass reference_batch or set '
                             'auto_scale_lr.base_batch_size in the config')
    wrapper['constructor'] = 'RecipeLRScalingConstructor'
    wrapper['lr_scaling'] = dict(reference_batch=int(reference_batch), rule=rule,
                                 per_gpu_batch=int(cfg.train_dataloader.batch_size))
    # mmengine's own linear scaling would apply on top of ours
    cfg['auto_scale_lr'] = dict(enable=False, base_batch_size=int(reference_batch))


@register_boost
class LRScalingBoost(Boost):
    card = BoostCard(
        name='lr-scale',
        contract_options=dict(reference_batch=16),
        no_fragment_reason='needs the reference batch and LR of the recipe being moved',
        docs='docs/engine.md#lr-scaling-lr-scale-boost',
        summary='Scale the LR from the reference batch to world size x per-GPU batch x '
                'accumulation (linear, sqrt or keep), once, at optimizer build.',
        changes=('optim_wrapper.constructor', 'optim_wrapper.lr_scaling', 'auto_scale_lr'),
        expected_effect='Recovers the reference accuracy when the effective batch differs; '
                        'no speed effect.',
        exact=True,
        order=30,
    )
    primary_option = 'rule'

    def apply(self, cfg, **options) -> None:
        if 'reference_batch' in options:
            options['reference_batch'] = int(options['reference_batch'])
        apply_lr_scaling(cfg, **options)

    def verify(self, runner, **options) -> str:
        from bevboost.boosts import BoostNotInEffect
        wrapper = runner.optim_wrapper
        info = getattr(wrapper, 'lr_scaling_info', None)
        if info is None:
            raise BoostNotInEffect(f'{type(wrapper).__name__} was not built by '
                                   'RecipeLRScalingConstructor')
        from bevboost.engine.recipe_check import built_group_lrs
        # the LRs the run uses (after mmengine's auto_scale_lr, before any scheduler moved
        # them), never optimizer.defaults, which auto_scale_lr does not touch
        built = built_group_lrs(wrapper)
        return (f"lr {info['base_lr']:.4g} -> {info['lr']:.4g} ({info['rule']} rule, reference "
                f"batch {info['reference_batch']} -> effective {info['effective_batch']}); "
                f"built LR per group {', '.join(f'{lr:.4g}' for lr in built)}")
