"""Resume (torch.load weights_only=True) mid-accumulation reproduces the full run."""
import pytest
import torch
from mmengine.hooks import Hook

from bevboost.testing.runner_helpers import assert_params_close, params_of, run_toy

SCHED = [dict(type='LinearLR', start_factor=0.25, by_epoch=False, begin=0, end=2),
         dict(type='CosineAnnealingLR', T_max=2, by_epoch=False, begin=2, end=4)]


class StopAfter(Hook):
    """Simulates an interruption right after the checkpoint of iteration ``n``."""

    priority = 'LOWEST'

    def __init__(self, n):
        self.n = n

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.n:
            raise KeyboardInterrupt


def test_resume_mid_accumulation_reproduces_uninterrupted_run(tmp_path, monkeypatch):
    kwargs = dict(boosts=['accum=4', 'amp=bf16'], batch_size=8, max_iters=4, param_scheduler=SCHED,
                  # a checkpoint every 6 micro-batches: mid-window with 4 per window
                  after_boosts={'default_hooks.checkpoint.interval': 6,
                                'default_hooks.checkpoint.by_epoch': False})
    full, full_rec = run_toy(tmp_path / 'full', **kwargs)
    assert full.train_loop.max_iters == 16

    from mmengine.runner import Runner
    original_train = Runner.train

    def train_with_stop(self):
        self.register_hook(StopAfter(6))
        return original_train(self)

    monkeypatch.setattr(Runner, 'train', train_with_stop)
    try:
        run_toy(tmp_path / 'cut', **kwargs)
    except KeyboardInterrupt:
        pass
    monkeypatch.setattr(Runner, 'train', original_train)
    ckpt = tmp_path / 'cut' / 'iter_6.pth'
    state = torch.load(ckpt)  # default weights_only=True must work
    assert state['bevboost_accumulation']['inner_count'] == 6  # mid-window (6 % 4)
    resumed, resumed_rec = run_toy(tmp_path / 'cut', resume=True, **kwargs)
    assert resumed.iter == 16
    # the cut came mid-way through window 2: windows 2, 3 and 4 step after the resume
    assert full_rec.lrs[1:] == resumed_rec.lrs
    assert_params_close(params_of(full), params_of(resumed), rtol=1e-5)


def _interrupted(tmp_path, monkeypatch, stop_at, **kwargs):
    """Train until iteration ``stop_at`` (a checkpoint is written there), then 'crash'."""
    from mmengine.runner import Runner
    original_train = Runner.train

    def train_with_stop(self):
        self.register_hook(StopAfter(stop_at))
        return original_train(self)

    monkeypatch.setattr(Runner, 'train', train_with_stop)
    try:
        run_toy(tmp_path, **kwargs)
    except KeyboardInterrupt:
        pass
    monkeypatch.setattr(Runner, 'train', original_train)


def _split(counts, interval, **extra):
    return dict(boosts=[f'accum={counts}'], batch_size=8, max_iters=4, param_scheduler=SCHED,
                after_boosts={'default_hooks.checkpoint.interval': interval,
                              'default_hooks.checkpoint.by_epoch': False}, **extra)


def test_resume_with_another_split_on_a_window_boundary_is_exact(tmp_path, monkeypatch):
    """Saved at 2 x 4 after optimizer step 2, resumed at 4 x 2: same samples, same schedule."""
    full, full_rec = run_toy(tmp_path / 'full', **_split(4, 10 ** 6))
    _interrupted(tmp_path / 'cut', monkeypatch, 8, **_split(4, 8))
    resumed, resumed_rec = run_toy(tmp_path / 'cut', resume=True, **_split(2, 10 ** 6))
    assert resumed.cfg.train_dataloader.batch_size == 4
    assert resumed.iter == 8  # 4 steps x 2 micro-batches
    assert resumed_rec.lrs == full_rec.lrs[2:]
    assert_params_close(params_of(full), params_of(resumed), rtol=1e-5)


def test_resume_with_another_split_mid_window_is_refused(tmp_path, monkeypatch):
    _interrupted(tmp_path, monkeypatch, 6, **_split(4, 6))
    with pytest.raises(ValueError, match='mid-way through an accumulation window.*2 of 4'):
        run_toy(tmp_path, resume=True, **_split(2, 10 ** 6))


def test_resume_with_another_effective_batch_is_refused(tmp_path, monkeypatch):
    _interrupted(tmp_path, monkeypatch, 8, **_split(4, 8))
    kwargs = _split(4, 10 ** 6)
    kwargs['after_boosts']['train_dataloader.batch_size'] = 3
    with pytest.raises(ValueError, match='effective batch 8 .* this run has 12'):
        run_toy(tmp_path, resume=True, **kwargs)
