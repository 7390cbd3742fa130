"""Accumulation is the large batch for every scheduler in mmengine's registry.

Reference: plain mmengine at batch 2k. Kit: batch 2 x accumulate k. Over
every registered scheduler x declaration (iterations, epochs converted to
iterations; ReduceOnPlateau per epoch) x k in (2, 3, 4), with epochs of 13
micro-batches (a short last window each epoch): the LR and momentum of every
optimizer step are identical and the parameters agree within 1e-5 relative.
A scheduler mmengine adds later fails the coverage test until it has a case
here and is in the kit's verified set; one the kit has not verified is refused.
"""
import mmengine.optim  # noqa: F401  (registers mmengine's schedulers)
import pytest
from mmengine.config import Config
from mmengine.optim.scheduler import LinearParamScheduler
from mmengine.registry import PARAM_SCHEDULERS

from bevboost.boosts import apply_boosts
from bevboost.engine import scheduler_steps
from bevboost.engine.scheduler_steps import VERIFIED_SCHEDULERS
from bevboost.testing.toy import toy_config
from bevboost.testing.scheduler_cases import (all_finite, case_config, family_of,
                                          max_relative_difference, registry_cases, run_case,
                                          train)

REGISTERED = sorted(PARAM_SCHEDULERS.module_dict)
CASES = registry_cases()


def test_every_registered_scheduler_is_covered_or_refused():
    for name in REGISTERED:
        if name in VERIFIED_SCHEDULERS:
            assert family_of(name), f'{name} is verified by the kit but has no case here'
        else:
            cfg = Config(toy_config('/tmp/unused', param_scheduler=[dict(type=name)]))
            with pytest.raises(ValueError, match=name):
                apply_boosts(cfg, ['accum=2'])
    assert len(CASES) >= 29 * 3  # every registered scheduler has cases at k = 2, 3, 4


@pytest.mark.parametrize('name, declaration, counts', CASES,
                         ids=[f'{n}-{d}-k{k}' for n, d, k in CASES])
def test_accumulation_matches_large_batch(tmp_path, name, declaration, counts):
    ref_values, ref_params, kit_values, kit_params, kit = run_case(
        tmp_path, name, declaration, counts)
    assert kit.cfg.train_dataloader.batch_size == 2
    assert kit.optim_wrapper._accumulative_counts == counts
    assert len(set(ref_values)) > 1, 'the schedule never moved: the case tests nothing'
    assert kit_values == ref_values  # identical LR and momentum at every optimizer step
    assert all_finite(kit_params)
    assert max_relative_difference(ref_params, kit_params) < 1e-5


def test_without_building_in_steps_the_issue_schedule_is_wrong(tmp_path, monkeypatch):
    """1-epoch LinearLR warmup + cosine in epochs at 2 x 4: the kit's rebuild is what fixes it."""
    sched = [dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1,
                  convert_to_iter_based=True),
             dict(type='CosineAnnealingLR', T_max=1, by_epoch=True, begin=1, end=2,
                  convert_to_iter_based=True)]

    def both():
        ref = case_config(str(tmp_path / 'ref'), sched[0], 8)
        ref.param_scheduler = sched
        kit = apply_boosts(case_config(str(tmp_path / 'kit'), sched[0], 8), ['accum=4'])
        kit.param_scheduler = sched
        return train(ref), train(kit)

    (ref_values, ref_params, _), (kit_values, kit_params, _) = both()
    assert kit_values == ref_values
    assert max_relative_difference(ref_params, kit_params) < 1e-5
    monkeypatch.setattr(scheduler_steps, 'build_in_optimizer_steps', lambda *a, **k: False)
    monkeypatch.setattr('bevboost.engine.accumulation.build_in_optimizer_steps',
                        lambda *a, **k: False)
    (ref_values, _, _), (kit_values, _, _) = both()
    assert kit_values != ref_values


class UncheckedWarmupLR(LinearParamScheduler):
    """A scheduler the kit has not verified (stands in for one mmengine adds later)."""


@pytest.fixture
def unchecked_scheduler():
    PARAM_SCHEDULERS.register_module(module=UncheckedWarmupLR)
    yield 'UncheckedWarmupLR'
    PARAM_SCHEDULERS.module_dict.pop('UncheckedWarmupLR')


def test_unverified_scheduler_is_refused_with_its_name(tmp_path, unchecked_scheduler):
    sched = dict(type=unchecked_scheduler, param_name='lr', by_epoch=False, end=4)
    cfg = case_config(str(tmp_path), sched, 8)
    with pytest.raises(ValueError, match='UncheckedWarmupLR'):
        apply_boosts(cfg, ['accum=4'])
    # a hand-written config (no boost) is refused when training starts
    cfg.optim_wrapper.accumulative_counts = 4
    cfg.train_dataloader.batch_size = 2
    cfg.default_hooks.param_scheduler = dict(type='OptimizerStepSchedulerHook')
    with pytest.raises(ValueError, match='UncheckedWarmupLR'):
        train(cfg)
    # ... unless the user vouches for it
    cfg.default_hooks.param_scheduler.trusted_schedulers = [unchecked_scheduler]
    cfg.work_dir = str(tmp_path / 'trusted')
    values, _, _ = train(cfg)
    assert values


def test_accumulating_with_mmengine_scheduler_hook_is_refused(tmp_path):
    cfg = apply_boosts(case_config(str(tmp_path), dict(type='LinearLR', by_epoch=False, end=3),
                                   8), ['accum=4'])
    cfg.default_hooks.param_scheduler = dict(type='ParamSchedulerHook')
    with pytest.raises(ValueError, match='OptimizerStepSchedulerHook'):
        train(cfg)


@pytest.fixture(autouse=True)
def _fast_config_text(monkeypatch):
    monkeypatch.setattr(Config, 'pretty_text', property(lambda self: repr(self.to_dict())))
