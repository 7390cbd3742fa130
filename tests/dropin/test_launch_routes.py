"""The two mmengine touches of the drop-in, each pinned by a test that fails if mmengine changes.

* ``Runner.from_cfg`` is wrapped so ``bevboost_boosts`` applies on every
  launch route (``RUNNERS.build`` dispatches to ``<runner class>.from_cfg``);
* the kit's log records are handed to mmengine's current ``MMLogger``, so they
  reach the console and the work-dir log file of a real Runner run.
"""
from __future__ import annotations

import inspect
from pathlib import Path
import logging

import pytest
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import RUNNERS, build_runner_from_cfg
from mmengine.runner import Runner

from bevboost import current_mmlogger
from bevboost.boosts import apply_boosts
from bevboost.runner_utils import install_config_boosts_route, runner_from_cfg
from bevboost.seams.torch_compat import CPU_FP16_MIN
from bevboost.testing.toy import toy_config


def test_from_cfg_wrapper_is_installed_and_mmengine_still_dispatches_through_it():
    assert install_config_boosts_route() is True  # shape of Runner.from_cfg still fits
    assert Runner.from_cfg.__func__._bevboost_wrapped
    # tools/train.py's RUNNERS.build route ends in runner_cls.from_cfg(args)
    assert RUNNERS.build_func is build_runner_from_cfg
    assert '.from_cfg(args)' in inspect.getsource(build_runner_from_cfg)


@pytest.mark.parametrize('route', ['RUNNERS.build', 'Runner.from_cfg'])
def test_bevboost_boosts_in_a_config_dict_take_effect(tmp_path, route):
    cfg = Config(toy_config(str(tmp_path), bevboost_boosts=dict(amp=dict(dtype='bf16'))))
    if route == 'RUNNERS.build':
        cfg.runner_type = 'Runner'
        runner = RUNNERS.build(cfg)
    else:
        runner = Runner.from_cfg(cfg)
    assert runner.cfg.bevboost_applied == ['amp'] and 'bevboost_boosts' not in runner.cfg
    assert any(type(h).__name__ == 'BoostReportHook' for h in runner.hooks)
    runner.train()
    assert type(runner.optim_wrapper).__name__ == 'BoostAmpOptimWrapper'
    report = next(h for h in runner.hooks if type(h).__name__ == 'BoostReportHook')
    assert report.verdicts[0].startswith('amp: BoostAmpOptimWrapper bfloat16')


@RUNNERS.register_module(force=True)
class RunnerWithItsOwnFromCfg(Runner):
    """A project's runner that builds itself without calling Runner.from_cfg."""

    @classmethod
    def from_cfg(cls, cfg):
        return cls(model=cfg['model'], work_dir=cfg['work_dir'],
                   train_dataloader=cfg['train_dataloader'], optim_wrapper=cfg['optim_wrapper'],
                   train_cfg=cfg['train_cfg'], default_scope=cfg.get('default_scope', 'mmengine'),
                   cfg=cfg)


@pytest.mark.parametrize('route', ['RUNNERS.build', 'Runner(cfg=...)'])
def test_runners_built_past_from_cfg_refuse_unapplied_boosts(tmp_path, route):
    """Routes the from_cfg wrapper cannot reach stop with the named error, never train plain."""
    cfg = Config(toy_config(str(tmp_path), bevboost_boosts=dict(amp=dict(dtype='bf16'))))
    name = 'RunnerWithItsOwnFromCfg' if route == 'RUNNERS.build' else 'Runner'
    with pytest.raises(ValueError, match=rf"bevboost_boosts = \{{'amp'.*reached "
                                         rf"{name}.__init__ unapplied.*"
                                         r"bevboost boost CONFIG --out"):
        if route == 'RUNNERS.build':  # tools/train.py with runner_type set
            cfg.runner_type = name
            RUNNERS.build(cfg)
        else:
            Runner(model=cfg['model'], work_dir=cfg['work_dir'], cfg=cfg)
    # the same runner class with the boosts applied first builds and trains boosted
    runner = RunnerWithItsOwnFromCfg.from_cfg(apply_boosts(cfg))
    runner.train()
    assert type(runner.optim_wrapper).__name__ == 'BoostAmpOptimWrapper'


def test_a_boost_not_in_effect_stops_before_the_first_iteration(tmp_path):
    from bevboost.boosts import BoostNotInEffect
    cfg = apply_boosts(Config(toy_config(str(tmp_path))), ['accum=2'])
    cfg.optim_wrapper.accumulative_counts = 1  # the config was edited after boosting
    runner = runner_from_cfg(cfg)
    with pytest.raises(BoostNotInEffect, match='accum: optimizer wrapper accumulates 1, asked 2'):
        runner.train()
    assert runner.iter == 0


def _work_dir_log(runner) -> str:
    return next(Path(runner.log_dir).glob('*.log')).read_text()


@pytest.mark.torch_min(CPU_FP16_MIN, 'fp16 on CPU')
def test_kit_records_reach_the_work_dir_log_of_a_real_runner(tmp_path):
    """fp16 overflow that persists (an absurd static-size start scale) and BatchNorm under
    accumulation: both reports must be in the run's own log file, at their level."""
    cfg = apply_boosts(Config(toy_config(str(tmp_path), max_iters=6, use_bn=True,
                                         log_level='WARNING')),
                       {'accum': dict(counts=2),
                        'amp': dict(dtype='fp16', loss_scale=dict(init_scale=1e38))})
    cfg.optim_wrapper.overflow_warn_after = 2
    cfg.experiment_name = f'overflow_{tmp_path.name}'  # mmengine reuses a logger by name
    runner = runner_from_cfg(cfg)
    assert current_mmlogger() is runner.logger
    runner.train()
    log = _work_dir_log(runner)
    overflow = [ln for ln in log.splitlines() if 'fp16 overflow persists' in ln]
    batch_norm = [ln for ln in log.splitlines()
                  if 'cannot reproduce large-batch BatchNorm statistics' in ln]
    assert overflow and 'ERROR' in overflow[0]
    assert batch_norm and 'WARNING' in batch_norm[0]
    # below the run's log_level (WARNING), the accumulation summary stays out of the file
    assert 'gradient accumulation: 2 micro-batches' not in log


def test_records_at_info_reach_a_run_at_info(tmp_path):
    cfg = apply_boosts(Config(toy_config(str(tmp_path), max_iters=2, log_level='INFO')),
                       ['accum=2'])
    cfg.experiment_name = f'info_{tmp_path.name}'
    runner = runner_from_cfg(cfg)
    runner.train()
    log = _work_dir_log(runner)
    assert 'gradient accumulation: 2 micro-batches' in log
    assert 'bevboost boosts in effect: accum: accumulative_counts=2' in log


def test_no_mmlogger_is_created_by_the_kit(monkeypatch):
    # mmengine internal the forwarder reads: the registry of MMLogger instances
    assert isinstance(MMLogger._instance_dict, dict)
    monkeypatch.setattr(MMLogger, '_instance_dict', type(MMLogger._instance_dict)())
    logging.getLogger('bevboost.test').warning('no runner yet')
    assert current_mmlogger() is None and not MMLogger._instance_dict
