"""TorchProfilerHook: Chrome trace, TensorBoard plugin files, window checks."""
from __future__ import annotations

import glob
import json
import os

import pytest
from mmengine.config import Config
from mmengine.runner import Runner

from bevboost.profiling.profiler_hook import TorchProfilerHook
from bevboost.runner_utils import build_runner
from tests.profiling.conftest import find_hook


def test_trace_and_tensorboard_files(toy_cfg, tmp_work_dir):
    runner = build_runner(toy_cfg(max_iters=8), ['profile=2'])
    runner.train()
    hook = find_hook(runner, 'TorchProfilerHook')
    assert hook.profile_times == 4 and hook._closed
    trace = os.path.join(runner.log_dir, 'trace.json')
    events = json.load(open(trace))['traceEvents']
    names = [e.get('name') for e in events]
    # one data-loading and one train-step range per active step (2)
    assert names.count('train_step') == 2 and names.count('data_loading') == 2
    # torch-tb-profiler treats a directory with *.pt.trace.json files as a run
    runs = glob.glob(str(tmp_work_dir / 'tb_profiler' / '*' / '*.pt.trace.json'))
    assert len(runs) == 1


def test_short_training_raises_clear_error(toy_cfg):
    cfg = toy_cfg(max_iters=2)
    cfg['custom_hooks'] = [dict(type='TorchProfilerHook', wait=1, warmup=1, active=3)]
    runner = Runner.from_cfg(Config(cfg))
    with pytest.raises(ValueError, match='needs 5 iterations'):
        runner.train()


@pytest.mark.parametrize('kwargs,match', [
    (dict(active=0), 'active'), (dict(wait=-1), 'wait'), (dict(repeat=1.5), 'repeat'),
    (dict(by_epoch=True), 'by_epoch'), (dict(schedule={}), 'schedule')])
def test_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        TorchProfilerHook(**kwargs)


def test_cpu_defaults_have_no_cuda_activity():
    import torch
    hook = TorchProfilerHook()
    if not torch.cuda.is_available():
        assert hook.activities == [torch.profiler.ProfilerActivity.CPU] and not hook.nvtx


@pytest.mark.gpu
def test_cuda_activity_on_gpu(toy_cfg):
    import torch
    cfg = toy_cfg(max_iters=6)
    cfg['model']['data_preprocessor'] = None
    runner = build_runner(cfg, ['profile=2'])
    runner.model.cuda()
    runner.train()
    hook = find_hook(runner, 'TorchProfilerHook')
    assert torch.profiler.ProfilerActivity.CUDA in hook.activities and hook.nvtx
    events = json.load(open(os.path.join(runner.log_dir, 'trace.json')))['traceEvents']
    assert any(e.get('cat') == 'kernel' for e in events)
