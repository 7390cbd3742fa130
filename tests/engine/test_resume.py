"""Resume (torch.load weights_only=True) mid-accumulation reproduces the full run."""
import torch
from mmengine.hooks import Hook

from tests.engine.runner_helpers import assert_params_close, params_of, run_toy

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
