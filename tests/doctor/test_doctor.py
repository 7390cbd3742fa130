"""``bevboost doctor`` on this machine: the CPU forms pass, GPU forms are skipped with the
reason when there is no CUDA device, and every check fails when its path misbehaves."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bevboost._optional import cuda_available, is_available
from bevboost.cli.main import main
from bevboost.doctor import CHECKS, FAILED, OK, SKIPPED, run_checks
from bevboost.seams.torch_compat import CPU_FP16_MIN
from tests.doctor.conftest import rows

CPU_FP16 = pytest.mark.torch_min(CPU_FP16_MIN, 'fp16 on CPU')
needs_no_cuda = pytest.mark.skipif(cuda_available(), reason='checks the no-CUDA behaviour')
#: checks whose CPU form needs an optional dependency, and which
CPU_FORM_NEEDS = {'decode-nvjpeg': 'torchvision', 'decode-dali': 'nvidia.dali'}
#: compile's CPU form compiles with inductor (~10 s cold); CI's doctor run covers it
FAST_CHECKS = [pytest.param(n, marks=CPU_FP16) if n == 'amp' else n
               for n in CHECKS if n != 'compile']


def test_the_fixed_list_names_what_it_checks():
    assert list(CHECKS) == ['decode-nvjpeg', 'decode-dali', 'main-decode', 'amp', 'nvml',
                            'shm-ring', 'compile', 'fork-rule', 'ddp']
    assert all(c.what and c.tolerance for c in CHECKS.values())


@needs_no_cuda
@pytest.mark.parametrize('name', FAST_CHECKS)
def test_cpu_form_passes_and_gpu_form_is_skipped(doctor_ctx, name):
    report = run_checks(only=[name], ctx=doctor_ctx)
    got = rows(report, name)
    assert got['gpu'].status == SKIPPED and 'no CUDA device' in got['gpu'].reason
    need = CPU_FORM_NEEDS.get(name)
    if need and not is_available(need):
        assert got['cpu'].status == SKIPPED and 'not installed' in got['cpu'].reason
        return
    assert got['cpu'].status == OK, got['cpu'].reason
    assert got['cpu'].figure and report.exit_code == 0


def _failed(report, name, form='cpu'):
    result = rows(report, name)[form]
    assert result.status == FAILED and report.exit_code == 1, result
    return result.reason


def test_injected_pixel_mismatch_fails_and_exits_1(doctor_ctx, tmp_path, monkeypatch, capsys):
    """The issue's acceptance test: one check's reference input shifted -> failed, exit 1."""
    from bevboost.doctor import decode_checks
    real = decode_checks.worker_and_shipped

    def shifted(ctx):
        ref, shipped = real(ctx)
        ref['img'] = [np.clip(im.astype(np.int16) + 6, 0, 255).astype(np.uint8)
                      for im in ref['img']]
        return ref, shipped
    monkeypatch.setattr(decode_checks, 'worker_and_shipped', shifted)
    out = tmp_path / 'doctor.json'
    assert main(['doctor', '--only', 'main-decode,ddp', '--device', 'cpu',
                 '--json', str(out)]) == 1
    report = json.loads(out.read_text())
    status = {(r['check'], r['form']): r for r in report['results']}
    assert status['main-decode', 'cpu']['status'] == FAILED
    assert 'pixels differ' in status['main-decode', 'cpu']['reason']
    assert status['ddp', 'cpu']['status'] == OK  # one failure does not stop the others
    assert report['exit_code'] == 1 and report['counts'][FAILED] == 1
    table = capsys.readouterr().out
    assert 'main-decode' in table and 'failed' in table and '1 failed' in table


def test_geometry_mismatch_fails(doctor_ctx, monkeypatch):
    from bevboost.doctor import decode_checks
    real = decode_checks.worker_and_shipped

    def moved(ctx):
        ref, shipped = real(ctx)
        shipped['cam2img'] = [np.asarray(k) * 1.01 for k in shipped['cam2img']]
        return ref, shipped
    monkeypatch.setattr(decode_checks, 'worker_and_shipped', moved)
    reason = _failed(run_checks('cpu', ['main-decode'], doctor_ctx), 'main-decode')
    assert 'cam2img differs' in reason


@pytest.mark.dali
def test_dali_pixel_mismatch_fails(doctor_ctx, monkeypatch):
    from bevboost.doctor import decode_checks
    real = decode_checks.reference_decode
    monkeypatch.setattr(decode_checks, 'reference_decode',
                        lambda blobs: [255 - im for im in real(blobs)])
    assert 'pixels differ' in _failed(run_checks('cpu', ['decode-dali'], doctor_ctx),
                                      'decode-dali')


@CPU_FP16
def test_amp_fails_when_the_inf_is_not_skipped(doctor_ctx, monkeypatch):
    from bevboost.doctor import amp_check
    monkeypatch.setattr(amp_check, '_inject', lambda grad: grad)  # nothing to skip
    assert '0 skipped / 5 applied' in _failed(run_checks('cpu', ['amp'], doctor_ctx), 'amp')


@CPU_FP16
def test_amp_fails_when_the_scale_does_not_halve(doctor_ctx, monkeypatch):
    from bevboost.doctor import amp_check
    monkeypatch.setattr(amp_check, 'WRAPPER_KWARGS', dict(loss_scale=512.0, dtype='float16'))
    assert 'expected it to halve' in _failed(run_checks('cpu', ['amp'], doctor_ctx), 'amp')


@CPU_FP16
def test_amp_fails_with_mmengines_hook_stepping_on_skips(doctor_ctx, monkeypatch):
    """mmengine's stock ParamSchedulerHook steps the LR on the skipped step: caught."""
    from mmengine.hooks import ParamSchedulerHook

    import bevboost.engine.accumulation as accumulation
    monkeypatch.setattr(accumulation, 'OptimizerStepSchedulerHook', ParamSchedulerHook)
    assert 'scheduler at step 5' in _failed(run_checks('cpu', ['amp'], doctor_ctx), 'amp')


@needs_no_cuda
def test_nvml_cpu_form_fails_when_the_sampler_raises(doctor_ctx, monkeypatch):
    from bevboost.profiling import gpu

    def boom(self):
        raise RuntimeError('NVML exploded')
    monkeypatch.setattr(gpu.GpuSampler, 'start', boom)
    assert 'NVML exploded' in _failed(run_checks('cpu', ['nvml'], doctor_ctx), 'nvml')


def test_shm_ring_fails_on_a_corrupted_slot(doctor_ctx, monkeypatch):
    import bevboost.data.shm_loader as shm_loader
    real = shm_loader.unpack

    def corrupt(slot, layout):
        payload = real(slot, layout)
        payload.view(-1)[12345] ^= 1  # one bit of one byte, in the ring itself
        return payload
    monkeypatch.setattr(shm_loader, 'unpack', corrupt)
    assert 'bytes differ' in _failed(run_checks('cpu', ['shm-ring'], doctor_ctx), 'shm-ring')


def test_compile_fails_when_nothing_is_compiled(doctor_ctx, monkeypatch):
    from bevboost.compute.compile_model import CompileTimingHook
    monkeypatch.setattr(CompileTimingHook, 'before_train', lambda self, runner: None)
    assert 'left the backbone uncompiled' in _failed(run_checks('cpu', ['compile'], doctor_ctx),
                                                     'compile')


def test_compile_fails_when_dynamo_captures_no_graph(doctor_ctx, monkeypatch):
    """Marked compiled, run eagerly (as torch 2.13 runs a compiled ``nn.Sequential``)."""
    from bevboost.doctor import compile_check
    real = compile_check._probe

    def opaque_backbone(device):
        model = real(device)
        model.backbone.forward = torch.compiler.disable(model.backbone.forward)
        return model
    monkeypatch.setattr(compile_check, '_probe', opaque_backbone)
    assert 'captured no graph' in _failed(run_checks('cpu', ['compile'], doctor_ctx), 'compile')


def test_fork_rule_fails_when_a_worker_calls_cuda(doctor_ctx, monkeypatch):
    from bevboost.doctor import fork_check
    real = fork_check.WorkerSamples.load

    def probing(self):
        torch.cuda.device_count()
        return real(self)
    monkeypatch.setattr(fork_check.WorkerSamples, 'load', probing)
    reason = _failed(run_checks('cpu', ['fork-rule'], doctor_ctx), 'fork-rule')
    assert fork_check.TRAP_MESSAGE in reason and 'torch.cuda.device_count()' in reason


@needs_no_cuda
def test_fork_rule_fails_when_the_trap_is_off(doctor_ctx, monkeypatch):
    from bevboost.doctor import fork_check
    monkeypatch.setattr(fork_check, 'forbid_cuda', lambda worker_id: None)
    assert 'trap did not catch' in _failed(run_checks('cpu', ['fork-rule'], doctor_ctx),
                                           'fork-rule')


def test_ddp_fails_on_a_wrong_all_reduce(doctor_ctx, monkeypatch):
    import torch.distributed as dist
    real = dist.all_reduce

    def doubled(tensor, *args, **kwargs):
        work = real(tensor, *args, **kwargs)
        tensor.mul_(2)
        return work
    monkeypatch.setattr(dist, 'all_reduce', doubled)
    assert 'all_reduce changed' in _failed(run_checks('cpu', ['ddp'], doctor_ctx), 'ddp')


def test_a_crash_in_a_path_is_a_failure_naming_it(doctor_ctx, monkeypatch):
    from bevboost.doctor import ddp_check
    monkeypatch.setattr(ddp_check, '_grads', lambda *a: 1 / 0)
    reason = _failed(run_checks('cpu', ['ddp'], doctor_ctx), 'ddp')
    assert reason.startswith('ZeroDivisionError') and '(test_doctor.py:' in reason  # where


def test_device_cpu_skips_gpu_forms_with_the_reason(doctor_ctx):
    got = rows(run_checks('cpu', ['ddp'], doctor_ctx), 'ddp')
    assert got['gpu'].status == SKIPPED and got['gpu'].reason.startswith('--device cpu')
    assert got['cpu'].status == OK


@pytest.mark.parametrize('argv, match', [
    (['--only', 'decode,amp'], "unknown check(s) ['decode']"),
    (['--device', 'tpu:0'], '--device'),
    (['--device', 'cuda:banana'], '--device'),
    (['--json', '/nonexistent-dir/doctor.json'], 'does not exist'),
])
def test_bad_input_is_one_line_exit_2(argv, match, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(['doctor', *argv]) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # refused before any work


@needs_no_cuda
def test_a_cuda_device_asked_for_without_cuda_is_skipped_not_an_error(doctor_ctx):
    got = rows(run_checks('cuda:0', ['ddp'], doctor_ctx), 'ddp')
    assert got['gpu'].status == SKIPPED and 'no CUDA device' in got['gpu'].reason

