"""NVML through the kit's :class:`~bevboost.profiling.gpu.GpuSampler`.

GPU form: utilization and memory are readable for the device under test, and
the memory NVML sees grow when the process allocates agrees in magnitude with
``torch.cuda.memory_allocated``. CPU form (no CUDA device): the sampler does
not fail, it reports why it is off.
"""
from __future__ import annotations

from bevboost.doctor.core import CheckFailed, Context, Outcome, Skip, register

#: bytes allocated on the device between two NVML readings
PROBE_BYTES = 512 * 2 ** 20
#: NVML's growth / torch's allocation must lie in this range (same magnitude: the caching
#: allocator rounds blocks; another process on the GPU may move NVML's figure a little)
RATIO_RANGE = (0.5, 2.0)


def _read(sampler) -> tuple[float, float]:
    """(used MiB, utilization %) from one NVML reading now."""
    sampler.reset()
    sampler.sample_once()
    summary = sampler.summary()
    return summary['mem_peak_mb'], summary['util_max_pct']


@register('nvml', 'GpuSampler (NVML) on the device: utilization and memory readable; its '
          f'memory growth over a {PROBE_BYTES >> 20} MiB allocation vs '
          'torch.cuda.memory_allocated. CPU form: without a GPU the sampler reports why it '
          'is off instead of failing',
          f'utilization in [0, 100] %; NVML growth / torch growth in {list(RATIO_RANGE)}')
def check_nvml(ctx: Context, device) -> Outcome:
    from bevboost._optional import cuda_available, require
    from bevboost.profiling.gpu import NO_GPU, NVML_MISSING, RUNNING, GpuSampler
    if device.type != 'cuda':
        if cuda_available():
            raise Skip('a CUDA device is present: the no-GPU fallback runs only without one')
        sampler = GpuSampler(device_index=0, interval=60.0).start()
        summary = sampler.stop()
        if sampler.state not in (NO_GPU, NVML_MISSING) or not sampler.reason:
            raise CheckFailed(f'without a GPU the sampler is {sampler.state!r} '
                              f'(reason {sampler.reason!r}); expected no-gpu/nvml-missing '
                              'with a reason')
        if summary['samples']:
            raise CheckFailed(f'{summary["samples"]} samples taken without a GPU')
        return Outcome(f'sampler off: {sampler.state}', dict(state=sampler.state,
                                                             reason=sampler.reason))
    import torch
    require('pynvml', 'NVML sampling')
    sampler = GpuSampler(device_index=device.index, interval=60.0).start()
    try:
        if sampler.state != RUNNING:
            raise CheckFailed(f'NVML sampler is {sampler.state!r}: {sampler.reason}')
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()  # a cached free block would hide the allocation from NVML
        used_before, util = _read(sampler)
        allocated_before = torch.cuda.memory_allocated(device)
        block = torch.ones(PROBE_BYTES // 4, dtype=torch.float32, device=device)
        torch.cuda.synchronize(device)
        used_after, _ = _read(sampler)
        grown = (torch.cuda.memory_allocated(device) - allocated_before) / 2 ** 20
        del block
    finally:
        summary = sampler.stop()
    if util is None or not 0 <= util <= 100:
        raise CheckFailed(f'utilization reading {util!r} is not a percentage')
    ratio = (used_after - used_before) / grown if grown else float('nan')
    if not RATIO_RANGE[0] <= ratio <= RATIO_RANGE[1]:
        raise CheckFailed(f'NVML memory grew {used_after - used_before:.0f} MiB while torch '
                          f'allocated {grown:.0f} MiB (ratio {ratio:.2f})')
    return Outcome(f'{summary["device"]}: util {util:.0f} %, +{used_after - used_before:.0f} '
                   f'MiB NVML vs +{grown:.0f} MiB torch',
                   dict(device=summary['device'], util_pct=util, nvml_growth_mib=used_after -
                        used_before, torch_growth_mib=grown, ratio=ratio,
                        mem_total_mib=summary['mem_total_mb']))
