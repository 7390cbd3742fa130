"""The JSON that ``bevboost doctor --json`` wrote in CI (.ci/run), read back.

.ci/run runs the doctor after the test suite and this file with
``BEVBOOST_DOCTOR_JSON`` naming its output; elsewhere it is skipped.
"""
from __future__ import annotations

import json
import os

import pytest

REPORT = os.environ.get('BEVBOOST_DOCTOR_JSON')
pytestmark = pytest.mark.skipif(not REPORT, reason='reads the JSON of a `bevboost doctor '
                                '--json OUT` run named by BEVBOOST_DOCTOR_JSON (.ci/run sets it)')
#: CPU forms that need nothing optional: they must pass wherever the kit installs
CORE_CPU_FORMS = {'main-decode', 'amp', 'nvml', 'shm-ring', 'compile', 'fork-rule', 'ddp'}


@pytest.fixture(scope='module')
def report() -> dict:
    with open(REPORT) as f:
        return json.load(f)


def test_every_check_ran_in_both_forms(report):
    names = list(report['checks'])
    assert len(names) >= 8
    for part in ('decode', 'amp', 'nvml', 'compile', 'shm', 'fork', 'ddp'):
        assert any(part in n for n in names), (part, names)
    forms = {(r['check'], r['form']) for r in report['results']}
    assert forms == {(n, f) for n in names for f in ('gpu', 'cpu')}


def test_no_check_failed_and_cpu_forms_passed(report):
    failed = [(r['check'], r['form'], r['reason']) for r in report['results']
              if r['status'] == 'failed']
    assert not failed and report['exit_code'] == 0
    cpu = {r['check']: r for r in report['results'] if r['form'] == 'cpu'}
    on_gpu = report['gpu_skip_reason'] is None  # nvml's CPU form is the no-GPU fallback
    assert {n for n, r in cpu.items() if r['status'] == 'ok'} >= CORE_CPU_FORMS - (
        {'nvml'} if on_gpu else set())
    for r in cpu.values():  # a CPU form skips only for a missing optional dependency
        assert r['status'] == 'ok' or 'not installed' in r['reason'] or (
            on_gpu and r['check'] == 'nvml'), r
        if r['status'] == 'ok':
            assert r['figure'] and r['seconds'] >= 0


def test_gpu_forms_skipped_with_the_reason_without_cuda(report):
    gpu = [r for r in report['results'] if r['form'] == 'gpu']
    if report['gpu_skip_reason'] is None:
        pytest.skip(f'this report comes from a CUDA machine ({report["device"]})')
    assert all(r['status'] == 'skipped' and r['reason'] == report['gpu_skip_reason']
               for r in gpu)
    assert 'CUDA' in report['gpu_skip_reason'] or '--device cpu' in report['gpu_skip_reason']
