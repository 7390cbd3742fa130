"""``StallMonitorHook``: where does each training iteration's wall-clock time go?

An iteration runs from the start of its ``next()`` on the loader to the start
of the next ``next()`` (or to validation / the end of the epoch when one comes
first), so every hook's time is in it. Within it: **data wait** (the
``next()`` call), **train step** (``model.train_step``, CUDA-synchronised on
GPU) and **other** (hooks, logging); compute = iteration - data wait.
Samples/s divide samples by that wall clock.

CPU cost of the data path, which holds on any machine: CPU-seconds per sample
spent by the DataLoader workers (their process CPU time, see
:mod:`bevboost.profiling.stages`) and by the main process outside
``train_step``. Also per-transform timings inside the workers, peak memory
and NVML GPU use. Warm-up iterations are excluded. The summary is logged,
written as JSON to ``log_dir`` and kept on ``hook.summary``.

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
from typing import Any, Callable, Sequence

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from bevboost.compute.compile_model import is_compiled_function
from bevboost.profiling.gpu import GpuSampler
from bevboost.profiling.loop_timing import (TimedIterator, restart_workers, stop_workers,
                                            wrap_loop_batches, wrap_method)
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


def _live_workers(loop: Any) -> int:
    """Loader worker processes feeding the loop (0 when batches are replayed from memory)."""
    from bevboost.profiling.replay import ReplayIterator
    if isinstance(getattr(loop, 'dataloader_iterator', None), ReplayIterator) or \
            type(loop.dataloader).__name__ == '_ReplayLoader':
        return 0
    return int(getattr(loop.dataloader, 'num_workers', 0) or 0)


def _unwrapped(model: Any) -> Any:
    from mmengine.model import is_model_wrapper
    return model.module if is_model_wrapper(model) else model


def available_cores() -> int:
    """CPU cores this process may run on (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@HOOKS.register_module()
class StallMonitorHook(Hook):
    """Measure wall-clock iterations, data stall vs compute, data-path CPU, memory, GPU.

    Args:
        warmup_iters: iterations left out of every statistic.
        measure_iters: iterations measured after warm-up (None: all); later
            iterations (a profiled tail, say) are left out.
        stage_timing: time each pipeline transform, collate and H2D copy, and
            the workers' CPU time (needed for the workers' CPU per sample).
        gpu_sampling: sample NVML in a background thread (reports the
            ``'no-gpu'`` state on machines without one).
        nvml_interval: seconds between NVML samples.
        sync_cuda: synchronise CUDA at the end of ``train_step``, so
            asynchronous kernels are not counted as the next data wait.
        out_file: JSON summary path (relative: under the run's log_dir;
            None: do not write).
    """

    priority = 'NORMAL'

    def __init__(self, warmup_iters: int = 5, measure_iters: int | None = None,
                 stage_timing: bool = True, gpu_sampling: bool = True,
                 nvml_interval: float = 0.1, sync_cuda: bool = True,
                 out_file: str | None = SUMMARY_FILE) -> None:
        if not isinstance(warmup_iters, int) or isinstance(warmup_iters, bool) \
                or warmup_iters < 0:
            raise ValueError(f'warmup_iters must be an int >= 0, got {warmup_iters!r}')
        if measure_iters is not None and (not isinstance(measure_iters, int)
                                          or isinstance(measure_iters, bool)
                                          or measure_iters < 1):
            raise ValueError(f'measure_iters must be None or an int >= 1, got {measure_iters!r}')
        self.warmup_iters = warmup_iters
        self.measure_iters = measure_iters
        self.stage_timing = bool(stage_timing)
        self.gpu_sampling = bool(gpu_sampling)
        self.sync_cuda = bool(sync_cuda)
        self.out_file = out_file
        self.sampler = GpuSampler(interval=nvml_interval)
        self.recorder: StageRecorder | None = None
        self.summary: dict[str, Any] | None = None
        self._cuda = False
        self._undo: list[Callable[[], None]] = []
        self._last_wait = 0.0
        self._loader_workers = 0
        self._fetch: tuple[float, float] | None = None  # (perf, process CPU) at next()
        self._current: dict[str, float] | None = None
        self._closed = 0
        self._iters: dict[str, list[float]] = {k: [] for k in (
            'iter', 'wait', 'step', 'step_cpu', 'pre', 'pre_cpu', 'cpu', 'samples')}
        self._curves: dict[str, list] = {'iter': [], 'loss': [], 'lr': []}

    # -- set-up ------------------------------------------------------------
    def before_train(self, runner) -> None:
        from bevboost._optional import cuda_available
        self._cuda = cuda_available()
        loop = runner.train_loop
        self._loader_workers = _live_workers(loop)
        # mmengine's `compile` key compiled train_step before this hook: timers inside it
        # would be traced, and dynamo specialises on their float clock readings and
        # recompiles every step. Only the whole step is timed then.
        inside_compiled_step = is_compiled_function(runner.model.train_step)
        if inside_compiled_step:
            logger.info('measure: train_step is compiled as a whole; the data preprocessor '
                        'and the host-to-device copy run inside it and are timed with it, '
                        'not apart')
        if self.stage_timing:
            self.recorder = StageRecorder()
            instrument_dataloader(loop.dataloader, self.recorder)
            if not inside_compiled_step:
                self._time_h2d(runner)
            restart_workers(loop)
        wrap_loop_batches(loop, lambda it: TimedIterator(it, self._on_fetch, self._on_batch))
        self._undo = [wrap_method(runner.model, 'train_step', self._on_step,
                                  self._cuda and self.sync_cuda)]
        pre = getattr(_unwrapped(runner.model), 'data_preprocessor', None)
        if pre is not None and hasattr(pre, 'forward') and not inside_compiled_step:
            self._undo.append(wrap_method(pre, 'forward', self._on_preprocess))
        if self.gpu_sampling:
            self.sampler.start()

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
    def _measuring(self) -> bool:
        measured = self._closed - self.warmup_iters
        return measured >= 0 and (self.measure_iters is None or measured < self.measure_iters)

    def _on_fetch(self, now: float) -> None:
        """Start of a ``next()``: the previous iteration ends, a new one begins."""
        self._close(now)
        if self._closed == self.warmup_iters:
            self._end_warmup()
        self._fetch = (now, time.process_time())

    def _on_batch(self, wait: float) -> None:
        self._last_wait = wait

    def _on_step(self, wall: float, cpu: float) -> None:
        if self._current is not None:
            self._current['step'] += wall
            self._current['step_cpu'] += cpu

    def _on_preprocess(self, wall: float, cpu: float) -> None:
        if self._current is not None:
            self._current['pre'] += wall
            self._current['pre_cpu'] += cpu

    def before_train_iter(self, runner, batch_idx: int, data_batch: Any = None) -> None:
        now = time.perf_counter()
        start, cpu = self._fetch or (now, time.process_time())
        wait = self._last_wait if self._fetch else 0.0
        self._fetch, self._last_wait = None, 0.0
        self._current = dict(start=start, cpu=cpu, wait=wait, step=0.0, step_cpu=0.0, pre=0.0,
                             pre_cpu=0.0, samples=infer_batch_size(data_batch))

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        self._record_curves(runner, outputs)
        if self.recorder is not None and self._closed % 16 == 0:
            self.recorder.drain()

    def before_val(self, runner) -> None:
        self._close(time.perf_counter())  # validation is not part of an iteration

    def after_train_epoch(self, runner) -> None:
        self._close(time.perf_counter())

    def _close(self, now: float) -> None:
        cur, self._current = self._current, None
        if cur is None:
            return
        if self._measuring():
            rec = self._iters
            rec['iter'].append(now - cur['start'])
            rec['cpu'].append(time.process_time() - cur['cpu'])
            for key in ('wait', 'step', 'step_cpu', 'pre', 'pre_cpu', 'samples'):
                rec[key].append(cur[key])
        self._closed += 1
        if self.measure_iters is not None and \
                self._closed == self.warmup_iters + self.measure_iters:
            self._finish()  # freeze the figures before later (profiled) iterations

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
    def _finish(self) -> None:
        if self.summary is None:
            self.summary = self.compute_summary()
            self.summary['gpu'] = self.sampler.stop()

    def after_train(self, runner) -> None:
        self._close(time.perf_counter())
        while self._undo:
            self._undo.pop()()
        if self.recorder is not None and self.summary is None:
            stop_workers(runner.train_loop)  # their last timings arrive on exit
        self._finish()
        self.summary['curves'] = {k: list(v) for k, v in self._curves.items()}
        if self.recorder is not None:
            self.recorder.close()
        s = self.summary
        runner.logger.info(
            'bevboost measure: %d iters, %.1f samples/s, iter %.1f ms (data wait %.1f ms, '
            'compute %.1f ms, train_step %.1f ms), stall share %.1f%%, data path CPU %s ms/sample, '
            'GPU %s', s['iters_measured'], s['samples_per_s'] or 0.0,
            s['iter_time_ms']['median'] or 0.0, s['data_wait_ms']['median'] or 0.0,
            s['compute_ms']['median'] or 0.0, s['train_step_ms']['median'] or 0.0,
            100 * (s['stall_share'] or 0.0),
            'n/a' if s['cpu']['data_s_per_sample'] is None
            else f"{1e3 * s['cpu']['data_s_per_sample']:.1f}", s['gpu']['state'])
        if self.out_file:
            path = self.out_file if os.path.isabs(self.out_file) else os.path.join(
                runner.log_dir, self.out_file)
            with open(path, 'w') as f:
                json.dump(self.summary, f, indent=1)

    def _cpu_summary(self, pipeline: dict | None) -> dict[str, Any]:
        rec = self._iters
        samples = sum(rec['samples'])
        # the data preprocessor (normalize, pad, H2D, a main-process decode) runs inside
        # train_step but is data path work
        pre_cpu = sum(rec['pre_cpu'])
        step_wall = sum(rec['step']) - sum(rec['pre'])
        step_cpu = sum(rec['step_cpu']) - pre_cpu
        main_outside = sum(rec['cpu']) - step_cpu
        worker = (pipeline or {}).get('worker_cpu_s_per_sample')
        main_per_sample = main_outside / samples if samples else None
        data = None
        if main_per_sample is not None and (worker is not None or not self._loader_workers):
            data = main_per_sample + (worker or 0.0)
        elif self._loader_workers and worker is None:
            logger.warning('data path CPU unknown: the loader has %d workers but they reported '
                           'no timings (a loader that starts its workers before the hook, or '
                           'stage_timing=False)', self._loader_workers)
        import torch
        return {
            'main_outside_step_s_per_sample': main_per_sample,
            'preprocess_s_per_sample': pre_cpu / samples if samples else None,
            'main_step_s_per_sample': step_cpu / samples if samples else None,
            'worker_s_per_sample': worker,
            # CPU-seconds the data path costs per sample (workers + main outside the step)
            'data_s_per_sample': data,
            # cores the train step keeps busy (CPU training: its threads)
            'step_cores': step_cpu / step_wall if step_wall > 0 else None,
            'cores_available': available_cores(),
            'torch_threads': torch.get_num_threads(),
            'device': 'cuda' if self._cuda else 'cpu',
        }

    def compute_summary(self) -> dict[str, Any]:
        """Statistics over the measured iterations (callable mid-run)."""
        rec = self._iters
        iters, waits, steps = rec['iter'], rec['wait'], rec['step']
        computes = [i - w for i, w in zip(iters, waits)]
        total = sum(iters)
        peak: dict[str, float | None] = {
            'host_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            'cuda_alloc_mb': None}
        if self._cuda:
            import torch
            peak['cuda_alloc_mb'] = torch.cuda.max_memory_allocated() / 2 ** 20
        pipeline = self.recorder.summary() if self.recorder is not None else None
        return {
            'iters_measured': len(iters),
            'warmup_iters': self.warmup_iters,
            'batch_size': statistics.median(rec['samples']) if rec['samples'] else None,
            'iter_time_ms': _stats_ms(iters),
            'data_wait_ms': _stats_ms(waits),
            'compute_ms': _stats_ms(computes),
            'train_step_ms': _stats_ms(steps),
            'preprocess_ms': _stats_ms(rec['pre']),
            'other_ms': _stats_ms([c - s for c, s in zip(computes, steps)]),
            'stall_share': sum(waits) / total if total > 0 else None,
            'samples_per_s': sum(rec['samples']) / total if total > 0 else None,
            'cpu': self._cpu_summary(pipeline),
            'peak_mem': peak,
            'gpu': self.sampler.summary(),
            'data_pipeline': pipeline,
            'curves': {k: list(v) for k, v in self._curves.items()},
            'iter_times_s': list(iters),
        }
