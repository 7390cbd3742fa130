"""NVML sampler: 'no GPU' state on CPU machines, mocked NVML handle, GPU test."""
from __future__ import annotations

import types

import numpy as np
import pytest

from bevboost.profiling import gpu
from bevboost.profiling.gpu import NO_GPU, RUNNING, GpuSampler, wait_for_samples


class FakeNVMLError(Exception):
    pass


def fake_nvml(util=(40, 60), used_mb=(1000, 3000), count=1, fail_init=False):
    """pynvml stand-in that returns ``util[i]`` and ``used_mb[i]`` at the i-th sample."""
    state = {'i': -1, 'index': None, 'shutdown': False}

    def init():
        if fail_init:
            raise FakeNVMLError('NVML Shared Library Not Found')

    def handle(index):
        state['index'] = index
        return 'h'

    def utilization(h):
        state['i'] += 1
        return types.SimpleNamespace(gpu=util[state['i'] % len(util)])

    def memory(h):
        return types.SimpleNamespace(used=used_mb[max(state['i'], 0) % len(used_mb)] * 2 ** 20,
                                     total=16000 * 2 ** 20)

    mod = types.SimpleNamespace(
        nvmlInit=init, nvmlDeviceGetCount=lambda: count, nvmlDeviceGetHandleByIndex=handle,
        nvmlDeviceGetName=lambda h: b'Fake GPU', nvmlDeviceGetUtilizationRates=utilization,
        nvmlDeviceGetMemoryInfo=memory,
        nvmlShutdown=lambda: state.__setitem__('shutdown', True))
    return mod, state


def test_aggregates_match_numpy_on_a_varying_sequence():
    rng = np.random.default_rng(0)
    util = rng.integers(0, 101, size=37).tolist()
    used = rng.uniform(500, 15000, size=37).tolist()
    nvml, _ = fake_nvml(util=util, used_mb=used)
    sampler = GpuSampler(device_index=0, interval=60, nvml=nvml).start()  # thread stays idle
    for _ in range(37):
        sampler.sample_once()
    s = sampler.stop()
    assert s['samples'] == 37
    assert s['util_mean_pct'] == pytest.approx(np.mean(util))
    assert s['util_median_pct'] == pytest.approx(np.median(util))
    assert s['util_p10_pct'] == pytest.approx(np.percentile(util, 10))
    assert s['util_p90_pct'] == pytest.approx(np.percentile(util, 90))
    assert s['util_max_pct'] == max(util)
    assert s['mem_mean_mb'] == pytest.approx(np.mean(used))
    assert s['mem_peak_mb'] == pytest.approx(max(used))


def test_reset_drops_earlier_samples():
    nvml, _ = fake_nvml(util=[100, 100, 10, 30, 20], used_mb=[9000, 9000, 1, 2, 3])
    sampler = GpuSampler(device_index=0, interval=60, nvml=nvml).start()
    sampler.sample_once()
    sampler.sample_once()
    sampler.reset()  # warm-up over
    for _ in range(3):
        sampler.sample_once()
    s = sampler.stop()
    assert s['samples'] == 3 and s['util_mean_pct'] == pytest.approx(20.0)
    assert s['util_max_pct'] == 30 and s['mem_peak_mb'] == pytest.approx(3.0)


def test_mocked_handle_samples_in_background():
    nvml, state = fake_nvml(util=(40, 60), used_mb=(1000, 3000))
    sampler = GpuSampler(device_index=0, interval=0.005, nvml=nvml).start()
    assert sampler.state == RUNNING
    assert wait_for_samples(sampler, 4)
    s = sampler.stop()
    assert state['shutdown']
    assert s['device'] == 'Fake GPU' and s['samples'] >= 4
    assert s['mem_total_mb'] == pytest.approx(16000)


def test_init_failure_is_no_gpu_state():
    nvml, _ = fake_nvml(fail_init=True)
    s = GpuSampler(device_index=0, nvml=nvml).start().stop()
    assert s['state'] == NO_GPU and 'Library Not Found' in s['reason']
    assert s['util_mean_pct'] is None and s['samples'] == 0


def test_zero_devices_is_no_gpu_state():
    nvml, _ = fake_nvml(count=0)
    assert GpuSampler(device_index=0, nvml=nvml).start().state == NO_GPU


def test_real_nvml_without_gpu_reports_state():
    pytest.importorskip('pynvml')
    import torch
    if torch.cuda.is_available():
        pytest.skip('machine has a GPU')
    s = GpuSampler().start().stop()
    assert s['state'] == NO_GPU and s['reason']


def test_cuda_visible_devices_mapping(monkeypatch):
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '3,1')
    assert gpu._nvml_index(0) == 3 and gpu._nvml_index(1) == 1
    nvml, state = fake_nvml()
    GpuSampler(device_index=1, interval=1, nvml=nvml).start().stop()
    assert state['index'] == 1
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES')
    assert gpu._nvml_index(2) == 2


def test_bad_interval():
    with pytest.raises(ValueError, match='interval'):
        GpuSampler(interval=0)


@pytest.mark.gpu
def test_real_gpu_sampling():
    import torch
    sampler = GpuSampler(interval=0.01).start()
    assert sampler.state == RUNNING
    x = torch.randn(4096, 4096, device='cuda')
    for _ in range(50):
        x = x @ x / 4096
    torch.cuda.synchronize()
    assert wait_for_samples(sampler, 3)
    s = sampler.stop()
    assert s['mem_peak_mb'] > 0 and s['util_mean_pct'] is not None
