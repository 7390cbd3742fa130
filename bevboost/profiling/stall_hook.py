"""``StallMonitorHook``: where does each training iteration's time go?

Per iteration: time spent waiting for the next batch (stall) vs time in
``train_step`` (compute; CUDA-synchronised on GPU), samples/s, peak memory,
GPU utilization/memory from NVML (background thread), DataLoader worker CPU
use and the time of every pipeline stage inside the workers (see
:mod:`bevboost.profiling.stages`). Warm-up iterations are excluded. The
summary is logged, written as JSON to ``log_dir`` and kept on ``hook.summary``.

Use from any mmengine/mmdet3d config::

    custom_imports = dict(imports=['bevboost'])
    custom_hooks = [dict(type='StallMonitorHook', warmup_iters=5)]
"""
from __future__ import annotations

import json
import logging
import os
import resource
import statistics
import time
from typing import Any, Sequence

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from bevboost.profiling.gpu import GpuSampler
from bevboost.profiling.stages import StageRecorder, TimedStage, instrument_dataloader

logger = logging.getLogger(__name__)

SUMMARY_FILE = 'bevboost_measure.json'


def infer_batch_size(data_batch: Any, default: int = 1) -> int:
    """Samples in a batch from mmengine's ``{'inputs', 'data_samples'}`` layouts."""
    if isinstance(data_batch, dict):
        for key in ('data_samples', 'inputs'):
            value = data_batch.get(key)
            if isinstance(value, dict) and value:
                value = next(iter(value.values()))
            if isinstance(value, (list, tuple)) and value:
                return len(value)
            if hasattr(value, 'shape') and len(value.shape) > 0:
                return int(value.shape[0])
    if isinstance(data_batch, (list, tuple)) and data_batch:
        return len(data_batch)
    return default


def _stats_ms(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {'median': None, 'mean': None, 'p90': None}
    ordered = sorted(values)
    return {'median': 1e3 * statistics.median(ordered),
            'mean': 1e3 * statistics.fmean(ordered),
            'p90': 1e3 * ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]}


class TimedIterator:
    """Proxy around the loop's batch iterator that times each ``next``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.last_wait = 0.0

    def __iter__(self) -> 'TimedIterator':
        return self

    def __next__(self) -> Any:
        start = time.perf_counter()
        batch = next(self.inner)
        self.last_wait = time.perf_counter() - start
        return batch

    def __getattr__(self, item: str) -> Any:
        if item == 'inner':
            raise AttributeError(item)
        return getattr(self.inner, item)


def _restart_iterator(loop: Any) -> None:
    """Restart IterBasedTrainLoop's workers so they fork with the timed pipeline."""
    from mmengine.runner.loops import _InfiniteDataloaderIterator
    dataloader = loop.dataloader
    old = getattr(loop.dataloader_iterator, '_iterator', None)
    if getattr(dataloader, 'num_workers', 0) > 0:
        if hasattr(old, '_shutdown_workers'):
            old._shutdown_workers()
        if getattr(dataloader, '_iterator', None) is not None:  # persistent workers
            dataloader._iterator = None
    # InfiniteSampler keeps one index generator; the old worker iterator closes
    # it when collected. A fresh one restarts the same seeded order.
    sampler = getattr(dataloader, 'sampler', None)
    if hasattr(sampler, '_indices_of_rank'):
        sampler.indices = sampler._indices_of_rank()
    loop.dataloader_iterator = _InfiniteDataloaderIterator(dataloader)


def _stop_workers(loop: Any) -> None:
    """Shut the train loader's workers down (training is over) so they flush."""
    proxy = getattr(loop, 'dataloader_iterator', None)
    inner = getattr(proxy, 'inner', proxy)
    for it in (getattr(inner, '_iterator', None), getattr(loop.dataloader, '_iterator', None)):
        if hasattr(it, '_shutdown_workers'):
            it._shutdown_workers()


@HOOKS.register_module()
class StallMonitorHook(Hook):
    """Measure data stall vs compute, throughput, memory, GPU and worker use.

    Args:
        warmup_iters: iterations left out of every statistic.
        stage_timing: time each pipeline transform, collate and H2D copy.
        gpu_sampling: sample NVML in a background thread (reports the
            ``'no-gpu'`` state on machines without one).
        nvml_interval: seconds between NVML samples.
        sync_cuda: synchronise CUDA before reading the compute clock, so
            asynchronous kernels are not counted as the next data wait.
        out_file: JSON summary path (relative: under the run's log_dir;
            None: do not write).
    """

    priority = 'NORMAL'

    def __init__(self, warmup_iters: int = 5, stage_timing: bool = True,
                 gpu_sampling: bool = True, nvml_interval: float = 0.1,
                 sync_cuda: bool = True, out_file: str | None = SUMMARY_FILE) -> None:
        if not isinstance(warmup_iters, int) or warmup_iters < 0:
            raise ValueError(f'warmup_iters must be an int >= 0, got {warmup_iters!r}')
        self.warmup_iters = warmup_iters
        self.stage_timing = bool(stage_timing)
        self.gpu_sampling = bool(gpu_sampling)
        self.sync_cuda = bool(sync_cuda)
        self.out_file = out_file
        self.sampler = GpuSampler(interval=nvml_interval)
        self.recorder: StageRecorder | None = None
        self.summary: dict[str, Any] | None = None
        self._iter_proxy: TimedIterator | None = None
        self._cuda = False
        self._seen = 0
        self._waits: list[float] = []
        self._computes: list[float] = []
        self._samples: list[int] = []
        self._curves: dict[str, list] = {'iter': [], 'loss': [], 'lr': []}
        self._own = 0.0
        self._t_before = self._t_prev_end = 0.0

    # -- set-up ------------------------------------------------------------
    def before_train(self, runner) -> None:
        t0 = time.perf_counter()
        from bevboost._optional import cuda_available
        self._cuda = cuda_available()
        loop = runner.train_loop
        if self.stage_timing:
            self.recorder = StageRecorder()
            instrument_dataloader(loop.dataloader, self.recorder)
            self._time_h2d(runner)
            if hasattr(loop, 'dataloader_iterator') and type(
                    loop.dataloader_iterator).__name__ == '_InfiniteDataloaderIterator':
                _restart_iterator(loop)
        if hasattr(loop, 'dataloader_iterator'):
            self._iter_proxy = TimedIterator(loop.dataloader_iterator)
            loop.dataloader_iterator = self._iter_proxy
        if self.gpu_sampling:
            self.sampler.start()
        self._t_prev_end = time.perf_counter()
        logger.debug('StallMonitorHook set up in %.3fs', self._t_prev_end - t0)

    def _time_h2d(self, runner) -> None:
        from mmengine.model import is_model_wrapper
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        pre = getattr(model, 'data_preprocessor', None)
        cast = getattr(pre, 'cast_data', None)
        if cast is None or isinstance(cast, TimedStage):
            return
        sync = self._cuda and self.sync_cuda
        depth = [0]  # cast_data recurses into dicts/lists: time the outer call only

        def timed_cast(data: Any, _cast=cast) -> Any:
            if depth[0]:
                return _cast(data)
            depth[0] += 1
            start = time.perf_counter()
            try:
                out = _cast(data)
                if sync:
                    import torch
                    torch.cuda.synchronize()
            finally:
                depth[0] -= 1
            self.recorder.record('h2d', time.perf_counter() - start)
            return out

        pre.cast_data = timed_cast

    # -- per iteration -----------------------------------------------------
    def before_train_iter(self, runner, batch_idx: int, data_batch: Any = None) -> None:
        now = time.perf_counter()
        self._t_before = now
        if self._seen == self.warmup_iters:
            self._end_warmup()
        if self._seen >= self.warmup_iters:
            self._own += time.perf_counter() - now

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        if self._cuda and self.sync_cuda:
            import torch
            torch.cuda.synchronize()
        end = time.perf_counter()
        if self._iter_proxy is not None:
            wait = self._iter_proxy.last_wait
        else:  # epoch loops: the gap between two iterations
            wait = self._t_before - self._t_prev_end
        if self._seen >= self.warmup_iters:
            self._waits.append(wait)
            self._computes.append(end - self._t_before)
            self._samples.append(infer_batch_size(data_batch))
        self._seen += 1
        self._record_curves(runner, outputs)
        if self.recorder is not None and self._seen % 16 == 0:
            self.recorder.drain()
        self._t_prev_end = time.perf_counter()
        if self._seen > self.warmup_iters:
            self._own += self._t_prev_end - end

    def _record_curves(self, runner, outputs: Any) -> None:
        loss = outputs.get('loss') if isinstance(outputs, dict) else None
        lr = None
        try:  # RuntimeInfoHook (VERY_HIGH priority) already stored it this iteration
            lr = float(runner.message_hub.get_scalar('train/lr').current())
        except (KeyError, TypeError, ValueError):  # optimizer without an lr
            pass
        self._curves['iter'].append(runner.iter)
        self._curves['loss'].append(float(loss.detach()) if hasattr(loss, 'detach')
                                   else (float(loss) if loss is not None else None))
        self._curves['lr'].append(lr)

    def _end_warmup(self) -> None:
        if self.recorder is not None:
            self.recorder.reset()
        self.sampler.reset()
        if self._cuda:
            import torch
            torch.cuda.reset_peak_memory_stats()

    # -- results -----------------------------------------------------------
    def after_train(self, runner) -> None:
        if self.recorder is not None:
            _stop_workers(runner.train_loop)  # their last timings arrive on exit
        self.summary = self.compute_summary()
        self.sampler.stop()
        self.summary['gpu'] = self.sampler.summary()
        if self.recorder is not None:
            self.recorder.close()
        s = self.summary
        runner.logger.info(
            'bevboost measure: %d iters, %.1f samples/s, iter %.1f ms (data wait %.1f ms, '
            'compute %.1f ms), stall share %.1f%%, GPU %s', s['iters_measured'],
            s['samples_per_s'] or 0.0, s['iter_time_ms']['median'] or 0.0,
            s['data_wait_ms']['median'] or 0.0, s['compute_ms']['median'] or 0.0,
            100 * (s['stall_share'] or 0.0), s['gpu']['state'])
        if self.out_file:
            path = self.out_file if os.path.isabs(self.out_file) else os.path.join(
                runner.log_dir, self.out_file)
            with open(path, 'w') as f:
                json.dump(self.summary, f, indent=1)

    def compute_summary(self) -> dict[str, Any]:
        """Statistics over the iterations after warm-up (callable mid-run)."""
        waits, computes = self._waits, self._computes
        iter_times = [w + c for w, c in zip(waits, computes)]
        total = sum(iter_times)
        peak: dict[str, float | None] = {
            'host_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            'cuda_alloc_mb': None}
        if self._cuda:
            import torch
            peak['cuda_alloc_mb'] = torch.cuda.max_memory_allocated() / 2 ** 20
        pipeline = self.recorder.summary() if self.recorder is not None else None
        return {
            'iters_measured': len(iter_times),
            'warmup_iters': self.warmup_iters,
            'batch_size': statistics.median(self._samples) if self._samples else None,
            'iter_time_ms': _stats_ms(iter_times),
            'data_wait_ms': _stats_ms(waits),
            'compute_ms': _stats_ms(computes),
            'stall_share': sum(waits) / total if total > 0 else None,
            'samples_per_s': sum(self._samples) / total if total > 0 else None,
            'peak_mem': peak,
            'gpu': self.sampler.summary(),
            'data_pipeline': pipeline,
            'hook_overhead_share': self._own / total if total > 0 else None,
            'curves': {k: list(v) for k, v in self._curves.items()},
            'iter_times_s': iter_times,
        }
