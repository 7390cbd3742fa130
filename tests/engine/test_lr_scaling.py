"""RecipeLRScalingConstructor scales once, however often it is called, and says when it cannot."""
import pytest
import torch
from mmengine.optim import DefaultOptimWrapperConstructor

from bevboost.engine.lr_scaling import RecipeLRScalingConstructor
from bevboost.testing.toy import ToyRegressor


def _cfg(**optimizer):
    return dict(type='OptimWrapper', accumulative_counts=2,
                lr_scaling=dict(reference_batch=16, rule='linear', per_gpu_batch=2),
                optimizer=dict(type='SGD', momentum=0.9, **optimizer))


def test_scaling_is_idempotent_and_matches_mmengines_constructor():
    torch.manual_seed(0)
    model = ToyRegressor()
    constructor = RecipeLRScalingConstructor(_cfg(lr=0.08))
    first = constructor(model)
    second = constructor(model)  # a second build must not scale the scaled LR again
    # reference: mmengine's own constructor given the LR a user would compute by hand
    # (1 process x 2 per GPU x accumulate 2 = 4 of the reference 16 -> 0.08 / 4)
    plain = _cfg(lr=0.02)
    plain.pop('lr_scaling')
    expected = DefaultOptimWrapperConstructor(plain)(model)
    for wrapper in (first, second):
        assert [g['lr'] for g in wrapper.param_groups] == \
            [g['lr'] for g in expected.param_groups]
    assert second.lr_scaling_info['base_lr'] == 0.08


def test_no_lr_to_scale_is_a_clear_error():
    cfg = _cfg()
    with pytest.raises(ValueError, match="optim_wrapper.optimizer.lr.*has no 'lr'"):
        RecipeLRScalingConstructor(cfg)
