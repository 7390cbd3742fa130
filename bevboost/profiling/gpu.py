"""GPU utilization and memory sampled through NVML in a background thread.

``torch.cuda`` only knows the memory *this process* allocated; NVML reports
what the device is doing (SM busy %, all memory in use). Sampling runs in a
daemon thread so the training loop pays nothing but the GIL switches. On a
machine without a GPU or NVML the sampler does not fail: it reports the
state ``'no-gpu'`` (or ``'nvml-missing'``) with the reason.
"""
from __future__ import annotations

import logging
import os
import statistics
import threading
import time
from typing import Any

logger = logging.getLogger(__name__)

#: sampler states
RUNNING, NO_GPU, NVML_MISSING, IDLE = 'running', 'no-gpu', 'nvml-missing', 'idle'


def _nvml_index(cuda_index: int) -> int:
    """Map a CUDA device index to NVML's (NVML ignores CUDA_VISIBLE_DEVICES)."""
    visible = os.environ.get('CUDA_VISIBLE_DEVICES', '').strip()
    if not visible:
        return cuda_index
    ids = [v.strip() for v in visible.split(',') if v.strip()]
    if cuda_index < len(ids) and ids[cuda_index].isdigit():
        return int(ids[cuda_index])
    return cuda_index


class GpuSampler:
    """Background NVML sampler for one device.

    Args:
        device_index: CUDA device index (mapped to NVML's through
            ``CUDA_VISIBLE_DEVICES``); None = ``torch.cuda.current_device()``
            when CUDA is there, else 0.
        interval: seconds between samples.
        nvml: an object with pynvml's API (for tests); default imports pynvml.
    """

    def __init__(self, device_index: int | None = None, interval: float = 0.1,
                 nvml: Any = None) -> None:
        if interval <= 0:
            raise ValueError(f'interval must be > 0, got {interval!r}')
        self.device_index = device_index
        self.interval = float(interval)
        self._nvml = nvml
        self.state = IDLE
        self.reason: str | None = None
        self.device_name: str | None = None
        self._util: list[float] = []
        self._mem: list[float] = []
        self._total_mem: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handle: Any = None

    def _resolve_nvml(self) -> Any:
        if self._nvml is not None:
            return self._nvml
        from bevboost._optional import is_available
        if not is_available('pynvml'):
            self.state, self.reason = NVML_MISSING, (
                "nvidia-ml-py is not installed: pip install 'bevboost[bench]'")
            return None
        import pynvml
        return pynvml

    def start(self) -> 'GpuSampler':
        """Open NVML and start sampling; never raises for a missing GPU."""
        nvml = self._resolve_nvml()
        if nvml is None:
            logger.info('GPU sampling off: %s', self.reason)
            return self
        try:
            nvml.nvmlInit()
            index = self.device_index
            if index is None:
                from bevboost._optional import cuda_available
                import torch
                index = torch.cuda.current_device() if cuda_available() else 0
            if nvml.nvmlDeviceGetCount() <= 0:
                raise RuntimeError('NVML sees no GPU')
            self._handle = nvml.nvmlDeviceGetHandleByIndex(_nvml_index(index))
            name = nvml.nvmlDeviceGetName(self._handle)
            self.device_name = name.decode() if isinstance(name, bytes) else str(name)
            self._total_mem = float(nvml.nvmlDeviceGetMemoryInfo(self._handle).total)
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            self.state, self.reason = NO_GPU, f'{type(exc).__name__}: {exc}'
            logger.info('GPU sampling off (no GPU): %s', self.reason)
            return self
        self._nvml = nvml
        self.state = RUNNING
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name='bevboost-nvml', daemon=True)
        self._thread.start()
        return self

    def sample_once(self) -> None:
        """Take one sample now (the thread calls this every ``interval``)."""
        if self._handle is None:
            return
        util = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
        mem = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
        self._util.append(float(util.gpu))
        self._mem.append(float(mem.used))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample_once()
            except Exception as exc:  # device lost mid-run: keep what we have
                logger.warning('NVML sampling stopped: %s', exc)
                return

    def reset(self) -> None:
        """Drop samples so far (warm-up)."""
        self._util.clear()
        self._mem.clear()

    def stop(self) -> dict[str, Any]:
        """Stop the thread, shut NVML down and return :meth:`summary`."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5 * self.interval + 1)
            self._thread = None
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # pragma: no cover - already shut down
                pass
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """Aggregates over the samples since the last :meth:`reset`."""
        util, mem = list(self._util), list(self._mem)
        return {
            'state': self.state,
            'reason': self.reason,
            'device': self.device_name,
            'samples': len(util),
            'util_mean_pct': statistics.fmean(util) if util else None,
            'util_median_pct': statistics.median(util) if util else None,
            'util_p10_pct': _percentile(util, 10),
            'util_p90_pct': _percentile(util, 90),
            'util_max_pct': max(util) if util else None,
            'mem_mean_mb': statistics.fmean(mem) / 2 ** 20 if mem else None,
            'mem_peak_mb': max(mem) / 2 ** 20 if mem else None,
            'mem_total_mb': self._total_mem / 2 ** 20 if self._total_mem else None,
        }


def _percentile(values: list[float], pct: float) -> float | None:
    """Linear-interpolation percentile (numpy's default method), None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * pct / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def wait_for_samples(sampler: GpuSampler, count: int, timeout: float = 5.0) -> bool:
    """Block until ``count`` samples exist (tests); False on timeout."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if len(sampler._util) >= count:
            return True
        time.sleep(sampler.interval / 2)
    return False
