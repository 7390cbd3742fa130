"""Measurement overhead: what the StallMonitorHook and stage timers cost per call.

Run: ``pytest benchmarks/test_bench_hooks.py`` (seconds). Goal: hook cost per
iteration and stage timer cost per transform well under 1% of a training step
(tens of microseconds against steps of 10 ms and more).
"""
from __future__ import annotations

import types

import pytest

import bevboost  # noqa: F401
from bevboost.profiling.stages import StageRecorder, TimedStage
from bevboost.profiling.stall_hook import StallMonitorHook

#: a fast GPU training step for the budget (the tiny CPU config's is ~100x longer)
STEP_S = 0.010


def _median_s(benchmark, fn, *args) -> float:
    """pytest-benchmark's median, or our own when run with --benchmark-disable."""
    benchmark(fn, *args)
    if benchmark.stats is not None:
        return benchmark.stats.stats.median
    import statistics
    import time
    times = []
    for _ in range(2000):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class _Hub:
    def get_scalar(self, key):
        return types.SimpleNamespace(current=lambda: 1e-3)


@pytest.fixture
def hook():
    h = StallMonitorHook(warmup_iters=0, gpu_sampling=False, out_file=None)
    h._cuda = False
    return h


def test_hook_cost_per_iteration(benchmark, hook):
    runner = types.SimpleNamespace(iter=0, message_hub=_Hub())
    batch = dict(inputs=[0] * 4, data_samples=[0] * 4)
    outputs = dict(loss=1.0)

    def one_iter():
        hook.before_train_iter(runner, 0, batch)
        hook.after_train_iter(runner, 0, batch, outputs)

    assert _median_s(benchmark, one_iter) < 0.01 * STEP_S


def test_stage_timer_cost_per_call(benchmark):
    rec = StageRecorder()
    stage = TimedStage(lambda x: x, 'Identity', rec)
    median = _median_s(benchmark, stage, 1)
    rec.close()
    assert median < 0.001 * STEP_S
