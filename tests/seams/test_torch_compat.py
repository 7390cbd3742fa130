"""Pins every shim of bevboost/seams/torch_compat.py against the real torch in this venv.

Each test states what the shim relies on and checks it on torch's own classes, so a torch
that changes one of them fails here first. CI runs this file on the pinned torch and on
the oldest supported one (``.venv-torch21``, see ``scripts/setup_oldest_torch.sh``); the
branches taken differ by version, and each is named by the flag it depends on.
"""
from __future__ import annotations

import math
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MessageHub
from torch import nn
from torch.torch_version import TorchVersion

from bevboost.seams import torch_compat as tc
from bevboost.testing.toy import toy_config

ROOT = Path(__file__).resolve().parents[2]


# --- versions ------------------------------------------------------------------------------

@pytest.mark.parametrize('text, expected', [
    ('2.1.2+cu121', (2, 1, 2)), ('2.13.0+cpu', (2, 13, 0)), ('2.6.0a0+git1234', (2, 6, 0)),
    ('2.10', (2, 10, 0)), ('11.8', (11, 8, 0)),
])
def test_versions_are_parsed_into_numbers(text, expected):
    assert tc.parse_version(text) == expected
    assert tc.parse_version('2.10.0') > tc.parse_version('2.9.1')  # '2.10.0' < '2.9.1' as text
    with pytest.raises(ValueError, match='cannot parse'):
        tc.parse_version('nightly')


def test_flags_agree_with_torchs_own_version_comparison():
    ours = {(2, 2): tc.TORCH_GE_2_2, (2, 3): tc.TORCH_GE_2_3, (2, 4): tc.TORCH_GE_2_4,
            (2, 5): tc.TORCH_GE_2_5, (2, 6): tc.TORCH_GE_2_6}
    base = TorchVersion(re.match(r'[\d.]+', torch.__version__).group().rstrip('.'))
    for (major, minor), flag in ours.items():
        assert flag == (base >= f'{major}.{minor}'), (major, minor)
        assert flag == tc.torch_at_least(major, minor)


def test_pyproject_floor_is_the_seams_oldest_torch():
    text = (ROOT / 'pyproject.toml').read_text()
    floor = re.search(r'"torch>=([\d.]+)', text).group(1)
    assert tc.parse_version(floor)[:2] == tc.MIN_TORCH
    assert tc.TORCH_VERSION[:2] >= tc.MIN_TORCH


def test_refusal_names_the_feature_and_the_minimum():
    with pytest.raises(tc.TorchTooOldError, match=r'warp drive needs torch>=99\.1; this is '
                                                  r'torch .*\. try later'):
        tc.require_torch('warp drive', (99, 1), 'try later')
    tc.require_torch('anything', tc.MIN_TORCH)  # the floor itself is never refused
    assert issubclass(tc.TorchTooOldError, ValueError)


# --- import-time warnings ------------------------------------------------------------------

def test_import_quietly_drops_only_the_listed_deprecation(tmp_path, monkeypatch, recwarn):
    (tmp_path / 'noisy_mod.py').write_text(
        'import warnings\n'
        'with warnings.catch_warnings():\n'  # forced through every filter, as torch 2.4 does
        '    warnings.simplefilter("always")\n'
        f'    warnings.warn({tc.IMPORT_DEPRECATIONS[0]!r} + " and more", DeprecationWarning)\n'
        'warnings.warn("something else", UserWarning)\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    shown = []
    monkeypatch.setattr(warnings, 'showwarning', lambda message, *a, **k: shown.append(
        str(message)))
    assert tc.import_quietly('noisy_mod').__name__ == 'noisy_mod'
    assert shown == ['something else']


def test_import_bevboost_prints_nothing_in_a_fresh_process():
    import subprocess
    import sys
    child = subprocess.run([sys.executable, '-c', 'import bevboost'], capture_output=True,
                           text=True, timeout=120, cwd=ROOT)
    assert child.returncode == 0 and child.stderr == '' and child.stdout == '', child.stderr


# --- checkpoints ---------------------------------------------------------------------------

def _hub_checkpoint(path: Path) -> None:
    hub = MessageHub('seam-ckpt')
    hub.update_scalar('train/loss', 1.5)
    torch.save({'message_hub': hub.state_dict(), 'weights': torch.ones(2),
                'array': np.arange(3.0)}, path)


def test_mmengine_checkpoint_loads_as_this_torch_allows(tmp_path):
    import bevboost.engine.checkpoint_safety as safety  # noqa: F401  (allow-lists on import)
    installed = tc.add_safe_globals(safety.mmengine_safe_globals())
    assert installed == tc.TORCH_GE_2_4
    _hub_checkpoint(tmp_path / 'hub.pth')
    if tc.TORCH_GE_2_4:
        state = torch.load(tmp_path / 'hub.pth', weights_only=True)
    else:  # no allow-list; torch's default (weights_only=False) loads it
        assert not hasattr(torch.serialization, 'add_safe_globals')
        state = torch.load(tmp_path / 'hub.pth')
    assert state['message_hub']['log_scalars']['train/loss'].mean() == 1.5
    assert list(state['array']) == [0.0, 1.0, 2.0]


def test_weights_only_loads_still_work_after_registering(tmp_path):
    """torch 2.4/2.5 crash on every later weights_only load once a (fn, name) pair is
    registered: the shim must not hand them over there."""
    multiarray = np.core.multiarray if hasattr(np, 'core') else np._core.multiarray
    fn = multiarray._reconstruct
    tc.add_safe_globals([(fn, 'numpy.core.multiarray._reconstruct')])
    torch.save({'w': torch.arange(4)}, tmp_path / 'plain.pth')
    assert torch.equal(torch.load(tmp_path / 'plain.pth', weights_only=True)['w'],
                       torch.arange(4))


# --- mixed precision -----------------------------------------------------------------------

def _overflow_found(scaler) -> bool:
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler.scale(model(torch.ones(1, 2)).sum() * math.inf).backward()
    scaler.unscale_(opt)
    return any(bool(v.item()) for v in scaler._found_inf_per_device(opt).values())


def test_cpu_loss_scaler_runs_or_is_refused_by_name():
    if tc.TORCH_GE_2_3:
        scaler = tc.grad_scaler('cpu', init_scale=512.0)
        assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()
        assert scaler.get_scale() == 512.0 and _overflow_found(scaler)
    else:
        assert not hasattr(torch.amp, 'GradScaler')
        with pytest.raises(tc.TorchTooOldError, match=r'torch>=2\.3'):
            tc.grad_scaler('cpu')
    assert not tc.grad_scaler('cpu', enabled=False).is_enabled()  # bf16/fp32: every torch
    assert not tc.grad_scaler('cuda', enabled=False).is_enabled()


def test_sharded_scaler_takes_a_static_scale_or_is_refused_by_name():
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler
    # the form torch 2.1 broke on: a device given positionally became init_scale
    off = tc.sharded_grad_scaler('cuda', enabled=False, init_scale=512.0)
    assert isinstance(off, ShardedGradScaler) and not off.is_enabled()
    if tc.TORCH_GE_2_3:
        scaler = tc.sharded_grad_scaler('cpu', init_scale=512.0, growth_interval=7)
        assert scaler.is_enabled() and scaler.get_scale() == 512.0
        assert scaler.get_growth_interval() == 7
    else:
        with pytest.raises(tc.TorchTooOldError, match=r'ShardedGradScaler.*torch>=2\.3'):
            tc.sharded_grad_scaler('cpu', init_scale=512.0)


def test_cpu_fp16_autocast_is_real_or_refused():
    """torch 2.1's CPU autocast warns, then fails entering the context (deep in a training
    step): the kit refuses when the wrapper is built instead."""
    layer = nn.Linear(4, 4)

    def fp16_output_dtype():
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            with torch.autocast('cpu', dtype=torch.float16):
                return layer(torch.ones(1, 4)).dtype

    if tc.torch_at_least(*tc.CPU_FP16_MIN):
        assert fp16_output_dtype() == torch.float16
        tc.check_autocast('cpu', torch.float16)
    else:
        with pytest.raises(RuntimeError, match='only support Bfloat16'):
            fp16_output_dtype()
        with pytest.raises(tc.TorchTooOldError, match=r'fp16 .* on CPU .*torch>=2\.3'):
            tc.check_autocast('cpu', torch.float16)
    tc.check_autocast('cpu', torch.bfloat16)  # bf16 on CPU: every supported torch
    tc.check_autocast('cuda', torch.float16)


def test_kit_amp_wrapper_refuses_cpu_fp16_by_name_below_its_floor():
    from bevboost.engine.amp import BoostAmpOptimWrapper
    opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
    if tc.torch_at_least(*tc.CPU_FP16_MIN):
        assert BoostAmpOptimWrapper(dtype='fp16', optimizer=opt).loss_scaler.is_enabled()
    else:
        with pytest.raises(ValueError, match=r'torch>=2\.3'):
            BoostAmpOptimWrapper(dtype='fp16', optimizer=opt)
    assert BoostAmpOptimWrapper(dtype='bf16', optimizer=opt).cast_dtype == torch.bfloat16


# --- fused optimizers ----------------------------------------------------------------------

def _torch_rejects_fused(param: torch.Tensor) -> bool:
    """torch's own answer: AdamW(fused=True) refuses at construction (2.1-2.4) or step."""
    try:
        opt = torch.optim.AdamW([param], lr=0.1, fused=True)
        param.grad = torch.ones_like(param)
        opt.step()
    except RuntimeError as exc:
        assert '`fused=True` requires' in str(exc)
        return True
    return False


@pytest.mark.parametrize('make', [
    lambda: nn.Parameter(torch.ones(3)),
    lambda: nn.Parameter(torch.ones(3, dtype=torch.float64)),
    lambda: torch.ones(3, dtype=torch.int32),
])
def test_fused_check_agrees_with_torchs_optimizer(make):
    param = make()
    problem = tc.fused_param_problem(param)
    if not param.is_floating_point():
        assert problem is not None  # torch's optimizer refuses it even before its own check
        return
    assert (problem is not None) == _torch_rejects_fused(make()), problem


def test_where_torch_refuses_an_unfusable_param():
    """torch >= 2.5 checks at the first step (so the kit's hook can name the parameter
    first); before, the optimizer's constructor refuses, while mmengine builds it."""
    param = nn.Parameter(torch.ones(2, dtype=torch.complex64))
    assert tc.fused_param_problem(param) is not None
    if tc.TORCH_GE_2_5:
        opt = torch.optim.AdamW([param], lr=0.1, fused=True)
        param.grad = torch.ones_like(param)
        with pytest.raises(RuntimeError, match='`fused=True` requires'):
            opt.step()
    else:
        with pytest.raises(RuntimeError, match='`fused=True` requires'):
            torch.optim.AdamW([param], lr=0.1, fused=True)


def test_cpu_fused_kernels_arrive_in_torch_2_4():
    assert ('cpu' in tc.fused_kernel_devices()) == tc.torch_at_least(*tc.FUSED_CPU_MIN)
    assert 'cuda' in tc.fused_kernel_devices()



def test_fused_optim_falls_back_or_refuses_by_name_without_cpu_kernels(tmp_path, mm_log):
    from bevboost.boosts import apply_boosts
    if torch.cuda.is_available():
        pytest.skip('the fallback concerns a CPU-only machine')
    adamw = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=0.01))
    cfg = Config(toy_config(str(tmp_path), optim_wrapper=adamw))
    boosted = apply_boosts(cfg.copy(), ['fused-optim'])
    if 'cpu' in tc.fused_kernel_devices():
        assert boosted.optim_wrapper.optimizer.fused is True
        assert not any('foreach' in m for m in mm_log)
    else:
        assert boosted.optim_wrapper.optimizer.foreach is True
        assert 'fused' not in boosted.optim_wrapper.optimizer
        assert any("no fused AdamW kernel on 'cpu'" in m and 'foreach' in m for m in mm_log)
        with pytest.raises(ValueError, match=r"no fused AdamW kernel on 'cpu' \(needs "
                                             r"torch>=2\.4\); use fused-optim=foreach"):
            apply_boosts(cfg.copy(), {'fused-optim': dict(impl='fused')})


# --- torch.compile -------------------------------------------------------------------------

def test_compile_model_with_sgd_momentum_refused_by_name_only_below_2_2(tmp_path):
    from bevboost.boosts import apply_boosts
    sgd = Config(toy_config(str(tmp_path)))  # SGD, momentum 0.9
    assert sgd.optim_wrapper.optimizer.momentum
    no_momentum = Config(toy_config(str(tmp_path), optim_wrapper=dict(
        type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1))))
    assert apply_boosts(no_momentum, ['compile=model']).compile is True
    if tc.TORCH_GE_2_2:
        assert apply_boosts(sgd, ['compile=model']).compile is True
    else:
        with pytest.raises(tc.TorchTooOldError, match=r'compile=model .*SGD momentum needs '
                                                      r'torch>=2\.2.*compile=backbone'):
            apply_boosts(sgd, ['compile=model'])


@pytest.mark.skipif(tc.TORCH_GE_2_2, reason='the dynamo crash is torch<2.2 only')
def test_torch_2_1_dynamo_really_fails_on_the_whole_train_step_with_sgd_momentum(tmp_path):
    """Why the refusal exists: mmengine's own compile route, no bevboost boost applied."""
    from mmengine.runner import Runner
    cfg = Config(toy_config(tempfile.mkdtemp(dir=tmp_path), max_iters=2))
    cfg.compile = dict(backend='eager')
    with pytest.raises(Exception, match='list index out of range'):
        Runner.from_cfg(cfg).train()


# --- in-place compile and dynamo's graph counter ----------------------------------------

def _container():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))


def test_dynamo_graph_count_counts_a_fresh_capture_not_a_cached_one():
    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return torch.tanh(self.fc(x))

    torch.compiler.reset()
    fn = torch.compile(Custom(), backend='eager')
    before = tc.dynamo_graph_count()
    fn(torch.ones(2, 4))
    assert tc.dynamo_graph_count() == before + 1
    fn(torch.ones(2, 4))  # same shapes: dynamo's cache, no new graph
    assert tc.dynamo_graph_count() == before + 1


#: graphs torch's own ``nn.Module.compile`` captures of an ``nn.Sequential``, by the torch
#: versions it was checked on (2.13 traces none: why :func:`compile_in_place` exists)
CONTAINER_GRAPHS = {(2, 1): 1, (2, 13): 0, (2, 14): 1}


def test_nn_module_compile_leaves_a_torch_container_untraced_on_2_13():
    """Why :func:`compile_in_place` exists: torch's own ``nn.Module.compile`` marks an
    ``nn.Sequential`` compiled and captures no graph of it on torch 2.13 (2.1 and 2.14.1
    capture one). The shim is right either way; a torch not in the table is skipped until
    checked."""
    version = tc.TORCH_VERSION[:2]
    if version not in CONTAINER_GRAPHS:
        pytest.skip(f'container tracing checked on torch {sorted(CONTAINER_GRAPHS)} only')
    torch.compiler.reset()
    model = _container()
    model.compile(backend='eager')
    before = tc.dynamo_graph_count()
    model(torch.ones(2, 4))
    assert tc.is_compiled_in_place(model)
    captured = tc.dynamo_graph_count() - before
    assert captured == CONTAINER_GRAPHS[version]


def test_compile_in_place_traces_a_torch_container_like_eager():
    """The fix for the pin above: one graph, the same outputs and gradients as eager."""
    torch.compiler.reset()
    eager, compiled = _container(), _container()
    tc.compile_in_place(compiled, backend='aot_eager')
    # the module's own hooks run outside the graph, as with nn.Module.compile
    hits = []
    compiled.register_forward_pre_hook(lambda *args: hits.append('pre'))
    assert tc.is_compiled_in_place(compiled) and not tc.is_compiled_in_place(eager)
    assert tc.eager_runs(compiled) == 0 and tc.eager_runs(eager) is None
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    before = tc.dynamo_graph_count()
    for _ in range(2):
        out, ref = compiled(x), eager(x)
        out.square().sum().backward()
        ref.square().sum().backward()
    assert tc.dynamo_graph_count() == before + 1  # captured once, then from dynamo's cache
    assert tc.eager_runs(compiled) == 0
    torch.testing.assert_close(out, ref)
    for (name, a), (name_b, b) in zip(eager.named_parameters(), compiled.named_parameters()):
        assert name == name_b  # no '_orig_mod.' prefix: checkpoints unchanged
        torch.testing.assert_close(a.grad, b.grad)
    compiled.register_forward_hook(lambda *args: hits.append('post'))  # after the capture
    forward = compiled.forward
    tc.compile_in_place(compiled, backend='aot_eager')  # a second call leaves it as it is
    assert compiled.forward is forward
    compiled(x)
    assert hits == ['pre', 'pre', 'pre', 'post']
    assert tc.dynamo_graph_count() == before + 1 and tc.eager_runs(compiled) == 0


def _in_child(code: str, **env: str) -> str:
    """The last line ``code`` prints, run in a fresh process: torch 2.1's dynamo marks every
    frame it saw while disabled as skipped for the rest of the process, so runs with dynamo
    disabled stay out of this one."""
    import os
    import subprocess
    import sys
    child = subprocess.run([sys.executable, '-c', code], env={**os.environ, **env}, cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr[-2000:]
    return child.stdout.strip().splitlines()[-1]


_CONTAINER = ('import torch\nfrom torch import nn\nfrom bevboost.seams import torch_compat as tc\n'
              'def container():\n    return nn.Sequential(nn.Linear(4, 4), nn.Tanh())\n')


def test_compile_in_place_counts_the_calls_dynamo_did_not_compile():
    """``TORCHDYNAMO_DISABLE=1``: every call runs eagerly, and is counted."""
    code = _CONTAINER + ('model = container()\ntc.compile_in_place(model, backend="eager")\n'
                         'model(torch.ones(2, 4))\nmodel(torch.ones(2, 4))\n'
                         'print(tc.eager_runs(model))')
    assert _in_child(code, TORCHDYNAMO_DISABLE='1') == '2'


def test_compile_in_place_keeps_each_module_apart_in_dynamos_cache():
    """Dynamo's cache and skip marks are per code object: on torch 2.1 one frame run with
    dynamo disabled is marked skipped for good, and with one frame shared by all modules
    every module compiled later in the process would run eagerly."""
    code = _CONTAINER + '''
first, later = container(), container()
with torch._dynamo.config.patch(disable=True):
    tc.compile_in_place(first, backend='eager')
    first(torch.ones(2, 4))
torch.compiler.reset()
tc.compile_in_place(later, backend='eager')
later(torch.ones(2, 4))
apart = first.forward.__wrapped__.__code__ is not later.forward.__wrapped__.__code__
print(tc.eager_runs(first), tc.eager_runs(later), apart)
'''
    assert _in_child(code) == '1 0 True'
