"""``compile``: mmengine's own ``compile`` route for the whole model, an in-place compile
for a scope, both against the same config trained without it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from bevboost.boosts import BoostNotInEffect, apply_boosts, get_boost
from bevboost.compute.compile_model import STEADY_ITERS, CompileTimingHook, is_compiled_module
from bevboost.runner_utils import runner_from_cfg
from bevboost.seams.torch_compat import COMPILE_SGD_MOMENTUM_MIN, dynamo_graph_count, eager_runs
from bevboost.testing.toy import toy_config
from bevboost.testing.compute_helpers import ADAMW, log_text, train_toy
from bevboost.testing.runner_helpers import assert_params_close, params_of

ROOT = Path(__file__).resolve().parents[2]

#: compile=model on the toy (SGD momentum): torch 2.1's dynamo crashes on it
WHOLE_MODEL_SGD = pytest.mark.torch_min(COMPILE_SGD_MOMENTUM_MIN,
                                        'compile=model with SGD momentum')

if get_boost('compile').unavailable_reason():
    pytest.skip(get_boost('compile').unavailable_reason(), allow_module_level=True)


@pytest.mark.slow  # inductor compiles forward, backward and the optimizer step: ~1 min cold
@WHOLE_MODEL_SGD
def test_whole_model_compiled_by_mmengine_matches_eager(tmp_path):
    iters = STEADY_ITERS + 1
    base, base_loss = train_toy(tmp_path / 'base', max_iters=iters, log_level='INFO')
    boosted, loss = train_toy(tmp_path / 'compiled', ['compile'], max_iters=iters,
                              log_level='INFO')
    assert boosted.cfg.compile is True  # mmengine's key, mmengine's route
    assert 'train_step compiled by mmengine' in get_boost('compile').verify(boosted)
    with pytest.raises(BoostNotInEffect, match="neither mmengine's `compile` key"):
        get_boost('compile').verify(base)
    base.cfg.compile = True  # asked for, but mmengine did not compile this runner
    with pytest.raises(BoostNotInEffect, match='train_step is not compiled'):
        get_boost('compile').verify(base)
    # inductor fuses elementwise ops and reorders the reductions of the MSE mean and
    # the matmuls: float32 rounding, ~1e-7 relative per op, a few ulps over 6 steps
    torch.testing.assert_close(loss, base_loss, rtol=1e-5, atol=1e-6)
    assert_params_close(params_of(base), params_of(boosted), rtol=1e-5)
    info = boosted.message_hub.runtime_info
    assert info['compile/first_iter_s'] > info['compile/steady_iter_s']
    assert 'compile: first iteration' in log_text(boosted)


def test_scoped_compile_compiles_only_the_named_modules_in_place(tmp_path):
    """The toy's img_backbone is an ``nn.Sequential``: ``nn.Module.compile`` marks such a
    module compiled but dynamo traces nothing of it on torch 2.13 (eager vs eager). Dynamo's
    own graph counter shows the scoped compile captured its graphs."""
    model = dict(type='ToyConvRegressor')
    # aot_eager: dynamo's graph capture and AOTAutograd's joint graph with eager kernels
    # (what scoping changes); inductor's kernels are the whole-model test's subject
    spec = "compile=img_backbone:backend='aot_eager'"
    base, base_loss = train_toy(tmp_path / 'base', model=model, optim_wrapper=ADAMW)
    torch.compiler.reset()  # no graph from an earlier test's cache: this run captures its own
    graphs_before = dynamo_graph_count()
    boosted, loss = train_toy(tmp_path / 'compiled', [spec], model=model, optim_wrapper=ADAMW)
    assert not boosted.cfg.get('compile')  # mmengine's whole-model route stays off
    assert is_compiled_module(boosted.model.img_backbone)
    assert not is_compiled_module(boosted.model.head)
    hook = next(h for h in boosted.hooks if isinstance(h, CompileTimingHook))
    assert dynamo_graph_count() - graphs_before >= hook.first_iter_graphs >= 1
    assert eager_runs(boosted.model.img_backbone) == 0
    assert "compiled ['img_backbone'] in place: no eager call" in get_boost('compile').verify(
        boosted, modules='img_backbone')
    # parameter names (and so checkpoints) are unchanged: no '_orig_mod.' prefix
    assert boosted.model.state_dict().keys() == base.model.state_dict().keys()
    torch.testing.assert_close(loss, base_loss, rtol=1e-6, atol=1e-7)
    assert_params_close(params_of(base), params_of(boosted), rtol=1e-6)


#: a scoped compile run with dynamo disabled, in a process of its own: torch 2.1's dynamo marks
#: every frame it saw while disabled as skipped for the rest of the process
_DISABLED_RUN = """
import json, sys
from mmengine.config import Config
import bevboost.testing.compute_helpers  # registers ToyConvRegressor
from bevboost.boosts import BoostNotInEffect, apply_boosts, get_boost
from bevboost.compute.compile_model import is_compiled_module
from bevboost.runner_utils import runner_from_cfg
from bevboost.testing.toy import toy_config
cfg = apply_boosts(Config(toy_config(sys.argv[1], model=dict(type='ToyConvRegressor'),
                                     max_iters=3)), ["compile=img_backbone:backend='aot_eager'"])
runner, out = runner_from_cfg(cfg), {}
try:
    runner.train()
except BoostNotInEffect as exc:
    out['train'] = str(exc)
try:
    get_boost('compile').verify(runner, modules='img_backbone')
except BoostNotInEffect as exc:
    out['verify'] = str(exc)
out.update(iter=runner.iter, marked=is_compiled_module(runner.model.img_backbone))
print(json.dumps(out))
"""


def test_scoped_compile_run_eagerly_is_not_in_effect(tmp_path):
    """``TORCHDYNAMO_DISABLE=1``: the module is marked compiled but every call runs eagerly;
    the run stops after the first iteration, naming it, and verify says so."""
    env = {**os.environ, 'TORCHDYNAMO_DISABLE': '1', 'OMP_NUM_THREADS': '1'}
    child = subprocess.run([sys.executable, '-c', _DISABLED_RUN, str(tmp_path)], env=env,
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-2000:]
    out = json.loads(child.stdout.strip().splitlines()[-1])
    assert "{'img_backbone': 1} ran eagerly in the first iteration" in out['train']
    assert out['iter'] == 0  # stopped in the first iteration's after_train_iter
    assert out['marked']  # marked compiled all the same
    assert "{'img_backbone': 1} ran eagerly" in out['verify']


@pytest.mark.parametrize('cfg_extra, boost, match', [
    ({}, 'compile=backbone', "no 'img_backbone' for compile=backbone"),
    ({'compile': True}, 'compile=net', 'already compiles the whole train_step'),
    ({}, 'compile:fullgraph_please=True', 'unknown torch.compile option'),
])
def test_compile_refuses(tmp_path, cfg_extra, boost, match):
    with pytest.raises(ValueError, match=match):
        apply_boosts(Config(toy_config(str(tmp_path), **cfg_extra)), [boost])


@WHOLE_MODEL_SGD
def test_default_scope_is_model_or_the_camera_backbone(tmp_path, mm_log):
    toy = apply_boosts(Config(toy_config(str(tmp_path))), ['compile'])
    assert toy.compile is True  # no img_backbone: mmengine's whole-model route
    detector = Config(toy_config(str(tmp_path), model=dict(
        type='AnyDetector', img_backbone=dict(type='B'), img_neck=dict(type='N'),
        pts_bbox_head=dict(type='H'))))
    boosted = apply_boosts(detector, ['compile'])
    assert not boosted.get('compile')
    hook = next(h for h in boosted.custom_hooks if h['type'] == 'CompileTimingHook')
    assert hook['modules'] == ['img_backbone', 'img_neck']
    assert any('compiling its backbone and neck' in m for m in mm_log)
    assert apply_boosts(detector, ['compile=model']).compile is True


def test_scoped_compile_names_a_missing_module_before_training(tmp_path):
    cfg = apply_boosts(Config(toy_config(str(tmp_path))), ['compile=img_backbone'])
    runner = runner_from_cfg(cfg)
    with pytest.raises(ValueError, match=r"ToyRegressor has no submodule 'img_backbone' "
                                         r"\(its children: \['data_preprocessor', 'net'\]\)"):
        runner.train()
    assert runner.iter == 0


@WHOLE_MODEL_SGD
def test_bench_run_reports_compile_time_apart(tmp_path, monkeypatch):
    """``bevboost bench``'s worker: the compiling first iteration is reported on its own and
    sits in the warm-up, outside the measured samples/s.

    Checked on dynamo's own graph counter after each iteration, not on wall-clock times: on a
    loaded machine a steady step can take as long as the compile."""
    from torch._dynamo.utils import counters

    from bevboost.compute.compile_model import CompileTimingHook
    from bevboost.bench.harness import RUN_FIGURES
    from bevboost.bench.worker import run_variant
    from bevboost.bench.toy import write_toy_bench_config
    graphs_after_iter: list[int] = []
    timed_after_iter = CompileTimingHook.after_train_iter

    def count_graphs(self, runner, batch_idx, data_batch=None, outputs=None):
        timed_after_iter(self, runner, batch_idx, data_batch, outputs)
        graphs_after_iter.append(counters['stats']['unique_graphs'])

    monkeypatch.setattr(CompileTimingHook, 'after_train_iter', count_graphs)
    config = write_toy_bench_config(tmp_path / 'toy.py', decode_work=0, num_workers=0)
    warmup, iters = 2, 3
    plain = run_variant(str(config), [], iters=iters, warmup=warmup, seed=0, threads=1,
                        work_dir=str(tmp_path / 'plain'))
    graphs_before = counters['stats']['unique_graphs']
    compiled = run_variant(str(config), ["compile:backend='aot_eager'"], iters=iters,
                           warmup=warmup, seed=0, threads=1, work_dir=str(tmp_path / 'compiled'))
    assert plain['compile_first_iter_s'] is None
    assert RUN_FIGURES['compile_first_iter_s'](compiled) > 0
    assert len(graphs_after_iter) == warmup + iters  # the hook ran in the compiled run only
    assert graphs_after_iter[0] > graphs_before  # iteration 0 compiled the train_step
    # iteration 1 recompiles once (mmengine's optim_wrapper._inner_count leaves 0); nothing
    # compiles in the measured iterations: the kit's timers stay out of the compiled step
    assert graphs_after_iter[warmup:] == [graphs_after_iter[warmup - 1]] * iters
    assert compiled['iters_measured'] == iters and compiled['warmup_iters'] == warmup
