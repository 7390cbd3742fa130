"""StallMonitorHook: summary fields, worker stage timings, config use."""
from __future__ import annotations

import json
import os

import pytest
from mmengine.config import Config
from mmengine.registry import HOOKS
from mmengine.runner import Runner

from bevboost.profiling.stall_hook import SUMMARY_FILE, StallMonitorHook, infer_batch_size
from bevboost.runner_utils import build_runner
from tests.profiling.conftest import find_hook

import torch


def test_registered_in_root_hooks():
    assert HOOKS.get('StallMonitorHook') is StallMonitorHook


@pytest.mark.parametrize('workers', [0, 2])
def test_summary_fields(toy_cfg, workers):
    cfg = toy_cfg(num_workers=workers, max_iters=12)
    cfg['custom_hooks'] = [dict(type='StallMonitorHook', warmup_iters=4)]
    runner = Runner.from_cfg(Config(cfg))
    runner.train()
    s = find_hook(runner, 'StallMonitorHook').summary
    assert s['iters_measured'] == 8 and s['warmup_iters'] == 4
    assert s['batch_size'] == 4
    assert 0.0 <= s['stall_share'] <= 1.0
    assert s['samples_per_s'] > 0
    assert s['iter_time_ms']['mean'] == pytest.approx(
        s['data_wait_ms']['mean'] + s['compute_ms']['mean'], rel=1e-6)
    assert s['peak_mem']['host_rss_mb'] > 0
    stages = s['data_pipeline']['stages']
    assert {'ToyDecode', 'collate', 'h2d'} <= set(stages)
    assert stages['h2d']['calls'] == 8  # once per batch, not per nested cast
    if workers:
        assert s['data_pipeline']['workers_seen'] == workers
        assert s['data_pipeline']['worker_cpu_cores'] > 0
    assert len(s['curves']['loss']) == 12 and all(v > 0 for v in s['curves']['loss'])
    assert s['curves']['lr'][0] == pytest.approx(0.01)
    expected_state = 'running' if torch.cuda.is_available() else 'no-gpu'
    assert s['gpu']['state'] in (expected_state, 'nvml-missing')
    written = json.loads(open(os.path.join(runner.log_dir, SUMMARY_FILE)).read())
    assert written['iters_measured'] == 8


def test_measure_boost_adds_hook_once(toy_cfg):
    runner = build_runner(toy_cfg(max_iters=3), ['measure=1'])
    hooks = [h for h in runner.hooks if isinstance(h, StallMonitorHook)]
    assert len(hooks) == 1 and hooks[0].warmup_iters == 1


def test_bad_warmup_rejected():
    with pytest.raises(ValueError, match='warmup_iters'):
        StallMonitorHook(warmup_iters=-1)


@pytest.mark.parametrize('batch,expected', [
    (dict(inputs=[1, 2, 3], data_samples=None), 3),
    (dict(inputs=torch.zeros(5, 2)), 5),
    (dict(inputs=dict(imgs=[1, 2])), 2),
    ([1, 2, 3, 4], 4),
    (object(), 1),
])
def test_infer_batch_size(batch, expected):
    assert infer_batch_size(batch) == expected
