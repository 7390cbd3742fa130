"""Gradient accumulation must be exactly the large batch."""
import pytest
import torch
from mmengine.config import Config

from bevboost.engine.accumulation import apply_accumulation, report_batch_norm
from bevboost.testing.toy import ToyRegressor, toy_config
from bevboost.testing.runner_helpers import assert_params_close, params_of, run_toy

WARMUP_COSINE = [
    dict(type='LinearLR', start_factor=0.25, by_epoch=False, begin=0, end=3),
    dict(type='CosineAnnealingLR', T_max=3, by_epoch=False, begin=3, end=6, eta_min=1e-3),
]


def test_accumulation_equals_large_batch_iter_based(tmp_path):
    big, big_rec = run_toy(tmp_path / 'big', batch_size=8, max_iters=6,
                           param_scheduler=WARMUP_COSINE)
    acc, acc_rec = run_toy(tmp_path / 'acc', boosts=['accum=4'], batch_size=8, max_iters=6,
                           param_scheduler=WARMUP_COSINE)
    assert acc.cfg.train_dataloader.batch_size == 2
    assert acc.train_loop.max_iters == 24
    assert len(big_rec.lrs) == len(acc_rec.lrs) == 6
    assert big_rec.lrs == acc_rec.lrs  # identical LR at every optimizer step
    assert len(set(big_rec.lrs)) > 3  # the schedule really moved
    assert_params_close(params_of(big), params_of(acc), rtol=1e-5)


def test_accumulation_equals_large_batch_epoch_based_converted(tmp_path):
    sched = [dict(type='LinearLR', start_factor=0.25, by_epoch=False, begin=0, end=3),
             dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=3, T_max=2,
                  convert_to_iter_based=True)]
    common = dict(num_samples=32, param_scheduler=sched,
                  train_cfg=dict(by_epoch=True, max_epochs=3, val_interval=100))
    common_dl = dict(sampler=dict(type='DefaultSampler', shuffle=False), num_workers=0,
                     dataset=dict(type='ToyRegressionDataset', num_samples=32),
                     collate_fn=dict(type='default_collate'))
    big, big_rec = run_toy(tmp_path / 'big', train_dataloader=dict(batch_size=8, **common_dl),
                           **common)
    acc, acc_rec = run_toy(tmp_path / 'acc', boosts=['accum=4'],
                           train_dataloader=dict(batch_size=8, **common_dl), **common)
    assert len(big_rec.lrs) == len(acc_rec.lrs) == 12
    assert big_rec.lrs == pytest.approx(acc_rec.lrs, rel=1e-12)
    assert_params_close(params_of(big), params_of(acc), rtol=1e-5)


def test_default_mmengine_hook_gets_it_wrong(tmp_path):
    """Without the kit's scheduler hook the warmup ends 4x too early (mmengine#1308)."""
    cfg = Config(toy_config(str(tmp_path), batch_size=2, max_iters=24,
                            param_scheduler=WARMUP_COSINE))
    cfg.optim_wrapper.accumulative_counts = 4
    from mmengine.runner import Runner
    from bevboost.testing.runner_helpers import StepRecorder
    runner = Runner.from_cfg(cfg)
    rec = StepRecorder()
    runner.register_hook(rec)
    runner.train()
    big, big_rec = run_toy(tmp_path / 'big', batch_size=8, max_iters=6,
                           param_scheduler=WARMUP_COSINE)
    assert rec.lrs != big_rec.lrs


def test_short_last_window(tmp_path):
    """max_iters not divisible by counts: the last window averages what it has.

    12 samples as micro-batches of 2 with counts 4: one full window (samples
    0..7) and a short one (8..11), each must be the mean-loss step over it.
    """
    acc, acc_rec = run_toy(tmp_path / 'acc', batch_size=2, max_iters=6,
                           optim_wrapper=dict(type='OptimWrapper', accumulative_counts=4,
                                              optimizer=dict(type='SGD', lr=0.1)),
                           train_dataloader=dict(
                               batch_size=2, num_workers=0,
                               sampler=dict(type='InfiniteSampler', shuffle=False),
                               dataset=dict(type='ToyRegressionDataset', num_samples=12),
                               collate_fn=dict(type='default_collate')))
    assert len(acc_rec.lrs) == 2  # two optimizer steps: 4 + 2 micro-batches
    # reference by hand: SGD on mean loss over samples 0..7 then over 8..11
    from bevboost.testing.toy import ToyRegressionDataset
    torch.manual_seed(0)
    ref = ToyRegressor()
    ref.load_state_dict(_initial_state(tmp_path / 'acc'))
    data = ToyRegressionDataset(num_samples=12).load_data_list()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for window in (range(0, 8), range(8, 12)):
        x = torch.stack([data[i]['inputs'] for i in window])
        y = torch.stack([data[i]['targets'] for i in window])
        opt.zero_grad()
        ref(x, y, mode='loss')['loss'].backward()
        opt.step()
    assert_params_close({n: p.detach() for n, p in ref.named_parameters()},
                        params_of(acc))


def _initial_state(work_dir):
    """The toy model's weights at seed 0, as the runner initialised them."""
    from mmengine.runner import Runner
    cfg = Config(toy_config(str(work_dir) + '_init', max_iters=0))
    runner = Runner.from_cfg(cfg)
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


def test_apply_accumulation_rejects_bad_input():
    cfg = Config(toy_config('/tmp/unused', batch_size=6))
    with pytest.raises(ValueError, match='>= 1'):
        apply_accumulation(cfg, 0)
    with pytest.raises(ValueError, match='integer'):
        apply_accumulation(cfg, 'four')
    with pytest.raises(ValueError, match='not divisible'):
        apply_accumulation(cfg, 4)
    no_opt = Config(toy_config('/tmp/unused'))
    no_opt.pop('optim_wrapper')
    with pytest.raises(ValueError, match='optim_wrapper'):
        apply_accumulation(no_opt, 2)


def test_batch_norm_is_reported(caplog):
    model = ToyRegressor(use_bn=True)
    with caplog.at_level('WARNING'):
        names = report_batch_norm(model, counts=4)
    assert names == ['net.1']
    assert 'SyncBN' in caplog.text and 'norm_eval' in caplog.text
    caplog.clear()
    model.eval()
    assert report_batch_norm(model, counts=4) == []


def test_partial_micro_batch_at_epoch_end_is_reported(tmp_path, caplog):
    """25 samples in micro-batches of 2: the last one holds 1 sample and cannot be exact."""
    loader = dict(batch_size=8, num_workers=0, collate_fn=dict(type='default_collate'),
                  sampler=dict(type='DefaultSampler', shuffle=False),
                  dataset=dict(type='ToyRegressionDataset', num_samples=25))
    with caplog.at_level('WARNING', logger='bevboost.engine.accumulation'):
        run_toy(tmp_path / 'odd', boosts=['accum=4'], train_dataloader=loader,
                train_cfg=dict(by_epoch=True, max_epochs=1, val_interval=100))
    assert 'micro-batch of 1 of 2 samples (25 per GPU)' in caplog.text
    caplog.clear()
    with caplog.at_level('WARNING', logger='bevboost.engine.accumulation'):
        run_toy(tmp_path / 'even', boosts=['accum=4'],
                train_dataloader=dict(loader, dataset=dict(loader['dataset'], num_samples=26)),
                train_cfg=dict(by_epoch=True, max_epochs=1, val_interval=100))
    assert 'micro-batch of' not in caplog.text


@pytest.mark.parametrize('sched', [
    dict(type='PolyLR', power=2.0, eta_min=1e-3, by_epoch=False),
    dict(type='CosineAnnealingLR', eta_min=1e-3, by_epoch=False, begin=1),
    dict(type='OneCycleLR', eta_max=0.2, by_epoch=False),
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, end=0.5, convert_to_iter_based=True),
], ids=lambda s: s['type'])
def test_iteration_loop_default_ends_count_optimizer_steps(tmp_path, sched):
    """In an iteration loop the default ``end`` is the run's optimizer steps, not micro-batches."""
    big, big_rec = run_toy(tmp_path / 'big', batch_size=8, max_iters=6, param_scheduler=[sched])
    acc, acc_rec = run_toy(tmp_path / 'acc', boosts=['accum=4'], batch_size=8, max_iters=6,
                           param_scheduler=[sched])
    assert acc.train_loop.max_iters == 24
    assert len(set(big_rec.lrs)) > 2
    assert acc_rec.lrs == big_rec.lrs
    # relative to the model's largest weight: the output bias ends near 0.007, where float32
    # rounding of a mean of 4 means vs a mean of 8 alone is 1e-5 of the tensor itself
    a, b = params_of(big), params_of(acc)
    scale = max(t.abs().max().item() for t in a.values())
    assert max((a[n] - b[n]).abs().max().item() for n in a) / scale < 1e-5
