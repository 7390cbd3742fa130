"""StallMonitorHook against costs injected into a toy run (bevboost/testing/injected.py).

Each test puts a known sleep or CPU burn into the data path, the train step or
a late hook and checks that the hook puts it where it belongs, within a
tolerance that absorbs a loaded 2-core machine (sleeps never end early; CPU
burns are counted in CPU time, which contention does not stretch).
"""
from __future__ import annotations

import json
import os

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import HOOKS
from mmengine.runner import Runner

import bevboost.testing.injected  # noqa: F401  (registers the injected costs)
from bevboost.profiling.stall_hook import SUMMARY_FILE, StallMonitorHook, infer_batch_size
from bevboost.runner_utils import build_runner
from tests.profiling.conftest import find_hook
from bevboost.testing.injected import injected_config

#: an injected wall time may stretch by this factor (+10 ms) on a loaded machine: half the
#: way to the figure a broken split gives (a wait counted as compute doubles it, say)
WALL_STRETCH = 1.5
#: slack on top of injected CPU per sample (collate, hooks, Python overhead)
CPU_SLACK_S = 0.006


def _train(cfg: dict) -> dict:
    runner = Runner.from_cfg(Config(cfg))
    runner.train()
    return runner, find_hook(runner, 'StallMonitorHook').summary


def _within(measured_ms: float, injected_s: float) -> bool:
    return injected_s <= measured_ms / 1e3 <= WALL_STRETCH * injected_s + 0.010


def test_registered_in_root_hooks():
    assert HOOKS.get('StallMonitorHook') is StallMonitorHook


def test_wall_clock_split_matches_injected_sleeps(toy_cfg):
    # per iteration: data 2 x 60 ms, train step 60 ms, a LOWEST-priority hook 60 ms
    cfg = injected_config(toy_cfg, data_sleep=0.060, step_sleep=0.060, hook_sleep=0.060)
    runner, s = _train(cfg)
    assert s['iters_measured'] == 8 and s['batch_size'] == 2
    assert _within(s['data_wait_ms']['median'], 0.120), s['data_wait_ms']
    assert _within(s['train_step_ms']['median'], 0.060), s['train_step_ms']
    # the late hook runs after StallMonitorHook's own after_train_iter: still compute
    assert _within(s['compute_ms']['median'], 0.120), s['compute_ms']
    assert _within(s['iter_time_ms']['median'], 0.240), s['iter_time_ms']
    assert 2 / (WALL_STRETCH * 0.240 + 0.010) <= s['samples_per_s'] <= 2 / 0.240
    assert 0.120 / (WALL_STRETCH * 0.240) <= s['stall_share'] <= WALL_STRETCH * 0.120 / 0.240
    written = json.loads(open(os.path.join(runner.log_dir, SUMMARY_FILE)).read())
    assert written['iters_measured'] == 8


def test_epoch_loop_split(toy_cfg):
    cfg = injected_config(toy_cfg, data_sleep=0.060, step_sleep=0.040, hook_sleep=0.040)
    cfg['train_cfg'] = dict(by_epoch=True, max_epochs=2, val_interval=100)
    cfg['train_dataloader']['sampler'] = dict(type='DefaultSampler', shuffle=False)
    cfg['train_dataloader']['dataset']['num_samples'] = 12  # 6 iterations per epoch
    _, s = _train(cfg)
    assert s['iters_measured'] == 10
    assert _within(s['data_wait_ms']['median'], 0.120), s['data_wait_ms']
    assert _within(s['compute_ms']['median'], 0.080), s['compute_ms']
    assert _within(s['iter_time_ms']['median'], 0.200), s['iter_time_ms']


def test_main_process_cpu_split(toy_cfg):
    # no workers: the data path's 15 ms/sample CPU is the main process's, outside the step
    cfg = injected_config(toy_cfg, data_cpu=0.015, step_cpu=0.030)
    _, s = _train(cfg)
    cpu = s['cpu']
    assert 0.015 <= cpu['main_outside_step_s_per_sample'] <= 0.015 + CPU_SLACK_S, cpu
    assert 0.015 <= cpu['main_step_s_per_sample'] <= 0.015 + CPU_SLACK_S, cpu  # 30 ms / 2
    assert cpu['worker_s_per_sample'] is None
    assert cpu['data_s_per_sample'] == cpu['main_outside_step_s_per_sample']


def test_preprocessor_cpu_counts_as_data_path(toy_cfg):
    # 20 ms per batch of 2 in the data preprocessor (inside train_step): data path, not step
    cfg = injected_config(toy_cfg, data_cpu=0.005, step_cpu=0.020)
    cfg['model']['data_preprocessor'] = dict(type='InjectedPreprocessor', cpu_s=0.020)
    _, s = _train(cfg)
    cpu = s['cpu']
    assert 0.010 <= cpu['preprocess_s_per_sample'] <= 0.010 + CPU_SLACK_S, cpu
    assert 0.015 <= cpu['main_outside_step_s_per_sample'] <= 0.015 + CPU_SLACK_S, cpu
    assert 0.010 <= cpu['main_step_s_per_sample'] <= 0.010 + CPU_SLACK_S, cpu
    assert s['preprocess_ms']['median'] >= 20.0


def test_worker_cpu_per_sample(toy_cfg):
    cfg = injected_config(toy_cfg, data_cpu=0.015, step_cpu=0.010, num_workers=1)
    _, s = _train(cfg)
    cpu = s['cpu']
    assert s['data_pipeline']['workers_seen'] == 1
    assert 0.015 <= cpu['worker_s_per_sample'] <= 0.015 + CPU_SLACK_S, cpu
    # the data work happened in the worker, not in the main process
    assert cpu['main_outside_step_s_per_sample'] < 0.005, cpu
    assert 0.015 <= cpu['data_s_per_sample'] <= 0.020 + CPU_SLACK_S


def test_unreported_workers_leave_data_cpu_unknown(toy_cfg):
    # workers whose CPU is not measured must not make the data path look free
    cfg = injected_config(toy_cfg, data_cpu=0.010, num_workers=1, iters=3, warmup=1)
    cfg['custom_hooks'][0]['stage_timing'] = False
    _, s = _train(cfg)
    assert s['cpu']['worker_s_per_sample'] is None and s['cpu']['data_s_per_sample'] is None


def test_measure_iters_leaves_later_iterations_out(toy_cfg):
    cfg = injected_config(toy_cfg, step_sleep=0.010, hook_sleep=0.0, iters=6)
    cfg['custom_hooks'][0]['measure_iters'] = 3
    cfg['custom_hooks'][1]['sleep_s'] = 0.0
    runner = Runner.from_cfg(Config(cfg))
    late = find_hook(runner, 'InjectedLateHook')
    original = late.after_train_iter

    def slow_after_measured(runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter >= 2 + 3:  # the iterations after the measured window
            late.sleep_s = 0.2
        original(runner, batch_idx, data_batch, outputs)
    late.after_train_iter = slow_after_measured
    runner.train()
    s = find_hook(runner, 'StallMonitorHook').summary
    assert s['iters_measured'] == 3
    assert max(s['iter_times_s']) < 0.2
    assert len(s['curves']['loss']) == 8


def test_train_step_wrapper_removed_after_training(toy_cfg):
    runner, _ = _train(injected_config(toy_cfg, iters=2, warmup=0))
    assert 'train_step' not in vars(runner.model)
    assert 'forward' not in vars(runner.model.data_preprocessor)


@pytest.mark.parametrize('workers', [0, 2])
def test_stage_timings_and_fields(toy_cfg, workers):
    cfg = toy_cfg(num_workers=workers, max_iters=12)
    cfg['custom_hooks'] = [dict(type='StallMonitorHook', warmup_iters=4)]
    _, s = _train(cfg)
    assert s['iters_measured'] == 8 and s['batch_size'] == 4
    stages = s['data_pipeline']['stages']
    assert {'ToyDecode', 'collate', 'h2d'} <= set(stages)
    assert stages['h2d']['calls'] == 8  # once per batch, not per nested cast
    if workers:
        assert s['data_pipeline']['workers_seen'] == workers
    assert len(s['curves']['loss']) == 12 and all(v > 0 for v in s['curves']['loss'])
    assert s['curves']['lr'][0] == pytest.approx(0.01)
    expected_state = 'running' if torch.cuda.is_available() else 'no-gpu'
    assert s['gpu']['state'] in (expected_state, 'nvml-missing')


def test_measure_boost_adds_hook_once(toy_cfg):
    runner = build_runner(toy_cfg(max_iters=3), ['measure=1'])
    hooks = [h for h in runner.hooks if isinstance(h, StallMonitorHook)]
    assert len(hooks) == 1 and hooks[0].warmup_iters == 1


@pytest.mark.parametrize('kwargs,match', [(dict(warmup_iters=-1), 'warmup_iters'),
                                          (dict(measure_iters=0), 'measure_iters')])
def test_bad_arguments_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StallMonitorHook(**kwargs)


@pytest.mark.parametrize('batch,expected', [
    (dict(inputs=[1, 2, 3], data_samples=None), 3),
    (dict(inputs=torch.zeros(5, 2)), 5),
    (dict(inputs=dict(imgs=[1, 2])), 2),
    ([1, 2, 3, 4], 4),
    (object(), 1),
])
def test_infer_batch_size(batch, expected):
    assert infer_batch_size(batch) == expected
