"""Train step: the toy task and the tiny PETRv2 config, one optimizer step each.

Run: ``pytest benchmarks/test_bench_train.py`` (toy: seconds; tiny PETRv2:
about a minute on 2 CPU cores, needs mmdet3d). The batch is loaded once and
reused, so this times model + optimizer only (the data path is
``test_bench_data.py``).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import bevboost  # noqa: F401
from bevboost.runner_utils import build_runner, load_config

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / 'configs' / 'petrv2' / 'petrv2_tiny_synth.py'


def _step_fn(runner):
    runner.model.train()
    batch = next(iter(runner.build_dataloader(runner._train_dataloader)))
    optim = runner.build_optim_wrapper(runner.optim_wrapper)

    def step():
        runner.model.train_step(batch, optim_wrapper=optim)
    return step


def test_toy_train_step(benchmark, tmp_path):
    from bevboost.profiling.toy_bench import toy_bench_config
    torch.manual_seed(0)
    runner = build_runner(toy_bench_config(str(tmp_path), batch_size=32), [])
    benchmark(_step_fn(runner))


@pytest.mark.mmdet3d
@pytest.mark.slow
@pytest.mark.parametrize('boost', ['baseline', 'amp'])
def test_tiny_petrv2_train_step(benchmark, tmp_path_factory, boost):
    from bevboost.data.synth import synthesize_nuscenes
    root = synthesize_nuscenes(tmp_path_factory.mktemp('nus'), scenes=2, samples_per_scene=2,
                               image_size=(256, 704), lidar_sweeps=0)
    cfg = load_config(TINY)
    cfg.train_dataloader.dataset.data_root = str(root) + '/'
    cfg.train_dataloader.num_workers = 0
    cfg.train_dataloader.persistent_workers = False
    cfg.default_hooks.pop('visualization', None)
    torch.manual_seed(0)
    runner = build_runner(cfg, [] if boost == 'baseline' else [boost], tmp_path_factory.mktemp('w'))
    benchmark.pedantic(_step_fn(runner), rounds=3, iterations=1, warmup_rounds=1)
