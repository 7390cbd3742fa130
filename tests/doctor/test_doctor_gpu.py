"""The doctor's GPU forms on a CUDA device (``pytest -m gpu``; skipped without one).

Each GPU form must pass, or be skipped only for a missing optional dependency
(torchvision for nvJPEG, nvidia-dali, nvidia-ml-py); the CPU form run beside it
must not fail. Two mismatches injected on the device show the GPU forms can fail.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from bevboost.doctor import CHECKS, FAILED, OK, SKIPPED, run_checks
from tests.doctor.conftest import rows

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize('name', list(CHECKS))
def test_gpu_form_passes(doctor_ctx, name):
    report = run_checks('cuda', [name], doctor_ctx)
    got = rows(report, name)
    assert got['cpu'].status != FAILED, got['cpu'].reason
    if got['gpu'].status == SKIPPED and 'not installed' in got['gpu'].reason:
        pytest.skip(got['gpu'].reason)
    assert got['gpu'].status == OK, got['gpu'].reason
    assert got['gpu'].device.startswith('cuda:') and got['gpu'].figure


def test_cli_on_the_gpu_exits_0_with_every_gpu_form_run(tmp_path):
    from bevboost.cli.main import main
    out = tmp_path / 'doctor.json'
    assert main(['doctor', '--json', str(out)]) == 0
    report = json.loads(out.read_text())
    assert report['gpu_skip_reason'] is None and report['environment']['gpu']
    for r in report['results']:
        if r['form'] == 'gpu':
            assert r['status'] == OK or 'not installed' in r['reason'], r
    assert report['seconds'] < 120  # the budget on one GPU


def test_main_decode_on_the_gpu_fails_on_shifted_pixels(doctor_ctx, monkeypatch):
    from bevboost.doctor import decode_checks
    real = decode_checks.worker_and_shipped

    def shifted(ctx):
        ref, shipped = real(ctx)
        ref['img'] = [np.clip(im.astype(np.int16) + 6, 0, 255).astype(np.uint8)
                      for im in ref['img']]
        return ref, shipped
    monkeypatch.setattr(decode_checks, 'worker_and_shipped', shifted)
    got = rows(run_checks('cuda', ['main-decode'], doctor_ctx), 'main-decode')
    assert got['gpu'].status == FAILED and 'pixels differ' in got['gpu'].reason


def test_shm_ring_on_the_gpu_fails_on_a_corrupted_slot(doctor_ctx, monkeypatch):
    import bevboost.data.shm_loader as shm_loader
    real = shm_loader.unpack

    def corrupt(slot, layout):
        payload = real(slot, layout)
        payload.view(-1)[12345] ^= 1
        return payload
    monkeypatch.setattr(shm_loader, 'unpack', corrupt)
    got = rows(run_checks('cuda', ['shm-ring'], doctor_ctx), 'shm-ring')
    assert got['gpu'].status == FAILED and 'bytes differ' in got['gpu'].reason


def test_amp_on_the_gpu_fails_when_the_inf_is_not_skipped(doctor_ctx, monkeypatch):
    from bevboost.doctor import amp_check
    monkeypatch.setattr(amp_check, '_inject', lambda grad: grad)
    got = rows(run_checks('cuda', ['amp'], doctor_ctx), 'amp')
    assert got['gpu'].status == FAILED and '0 skipped' in got['gpu'].reason
