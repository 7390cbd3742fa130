"""Recipe arithmetic, LR rules and the runtime LR-scaling constructor."""
import math

import pytest
from mmengine.config import Config

from bevboost.recipe import (Recipe, check_proposal, equivalent_recipes, plan_recipe,
                             scale_lr)
from bevboost.testing.runner_helpers import run_toy


@pytest.mark.parametrize('gpus, expected', [(8, 0.02), (4, 0.01), (2, 0.005)])
def test_faster_rcnn_linear_rule(gpus, expected):
    # mmdetection: 8 GPUs x 2 images at lr 0.02; 4 GPUs 0.01; 2 GPUs 0.005
    assert scale_lr(0.02, 16, Recipe(gpus, 2).effective_batch, 'linear') == pytest.approx(expected)


def test_sqrt_and_keep_rules():
    assert scale_lr(2e-4, 32, 8, 'sqrt') == pytest.approx(1e-4)
    assert scale_lr(2e-4, 32, 8, 'keep') == 2e-4


@pytest.mark.parametrize('text', ['8x', '0x4', 'x4', '8x0', '8x4x0', 'eight', '', '8 x 4 x 2 x 1'])
def test_bad_recipe_strings(text):
    with pytest.raises(ValueError, match='--reference'):
        Recipe.parse(text, '--reference')


def test_recipe_parse_and_accumulation_counted():
    assert Recipe.parse('8x4').effective_batch == 32
    assert Recipe.parse('4x3x8').effective_batch == 96


@pytest.mark.parametrize('lr', [-1.0, 0.0, math.nan, math.inf])
def test_bad_lr(lr):
    with pytest.raises(ValueError, match='lr must be a positive number'):
        scale_lr(lr, 32, 16)


def test_unknown_rule():
    with pytest.raises(ValueError, match='LR rule must be one of'):
        scale_lr(1e-3, 32, 16, 'cubic')


def test_plan_exact_and_closest():
    plan = plan_recipe(32, gpus=4, max_per_gpu=3, lr=2e-4)
    assert (plan.recipe.per_gpu, plan.recipe.accum, plan.recipe.effective_batch) == (2, 4, 32)
    assert plan.exact and plan.lr == 2e-4
    plan = plan_recipe(32, gpus=3, max_per_gpu=3, lr=2e-4, rule='linear')
    assert not plan.exact
    assert plan.lr == pytest.approx(2e-4 * plan.recipe.effective_batch / 32)
    assert abs(plan.recipe.effective_batch - 32) / 32 <= 0.1


def test_check_proposal_names_the_mistake_and_fixes():
    assert check_proposal(32, Recipe(4, 4, 2)) is None
    msg = check_proposal(32, Recipe(4, 3, 8))
    assert 'effective batch of 96' in msg and 'reference 32' in msg
    assert '4x4x2' in msg and '4x2x4' in msg
    assert [str(r) for r in equivalent_recipes(32, 4)] == ['4x8x1', '4x4x2', '4x2x4', '4x1x8']


def test_runtime_lr_scaling_counts_accumulation(tmp_path):
    # reference batch 16 at lr 0.08; here 1 process x 2 per GPU x accumulate 2 = 4 -> lr 0.02
    runner, rec = run_toy(tmp_path, boosts={'accum': dict(counts=2), 'lr-scale':
                                            dict(rule='linear', reference_batch=16)},
                          batch_size=4, max_iters=2, lr=0.08)
    info = runner.optim_wrapper.lr_scaling_info
    assert info['effective_batch'] == 4
    assert rec.lrs == [pytest.approx(0.02)] * 2  # max_iters 2 -> 4 micro-batches = 2 steps
    assert runner.cfg.auto_scale_lr.enable is False  # mmengine's would scale again


def test_mmengine_auto_scale_lr_ignores_accumulation(tmp_path):
    """The bug the kit fixes: mmengine scales by world x batch only."""
    runner, rec = run_toy(tmp_path, batch_size=2, max_iters=2, lr=0.08,
                          optim_wrapper=dict(type='OptimWrapper', accumulative_counts=2,
                                             optimizer=dict(type='SGD', lr=0.08)),
                          auto_scale_lr=dict(enable=True, base_batch_size=16))
    assert rec.lrs == [pytest.approx(0.01)]  # 0.08 * 2 / 16, accumulation ignored


def test_lr_scale_needs_a_reference():
    from bevboost.engine.lr_scaling import apply_lr_scaling
    from bevboost.testing.toy import toy_config
    with pytest.raises(ValueError, match='reference batch'):
        apply_lr_scaling(Config(toy_config('/tmp/x')))
