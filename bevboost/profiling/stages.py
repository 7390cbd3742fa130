"""Time each data-pipeline stage inside the DataLoader workers.

MMEngine only reports ``data_time`` (how long the main process waited), which
says *that* the loader is slow, not *which* transform is. Here every transform
of a dataset's ``pipeline`` and the ``collate_fn`` are wrapped in a timer;
each worker sums its timings locally and ships one small dict after a batch's
collate (at most every ``flush_interval``, 10 ms) through a multiprocessing
queue (or straight into the recorder when loading runs in the main process),
with the worker's process CPU time since the last one and the samples batched:
the workers' CPU-seconds per sample. Cost per stage: two ``perf_counter``
calls, a pid check and a dict update.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import multiprocessing.util as mp_util
import os
import queue as queue_mod
import time
from typing import Any, Callable

logger = logging.getLogger(__name__)

#: stage name used for the collate function
COLLATE = 'collate'


def _in_worker() -> bool:
    import torch.utils.data
    return torch.utils.data.get_worker_info() is not None


class StageRecorder:
    """Sum of seconds and call count per stage, merged over all workers.

    Args:
        flush_interval: least seconds between two messages a worker sends (it
            sends after a batch's collate).
        mp_context: multiprocessing context matching the DataLoader's
            (default: the platform default, as torch uses).
    """

    def __init__(self, flush_interval: float = 0.01, mp_context: Any = None) -> None:
        if flush_interval <= 0:
            raise ValueError(f'flush_interval must be > 0, got {flush_interval!r}')
        self.flush_interval = float(flush_interval)
        ctx = mp_context or mp.get_context()
        self._queue = ctx.Queue()
        self._local: dict[str, list[float]] = {}
        self._local_samples = 0
        self._merged: dict[str, list[float]] = {}
        self._worker_cpu: dict[int, list[float]] = {}  # pid -> [cpu_s, wall_s, samples]
        self._last_flush = time.perf_counter()
        self._cpu_mark = time.process_time()
        self._owner_pid = self._mark_pid = os.getpid()

    # -- worker side -------------------------------------------------------
    def begin(self) -> None:
        """Called before each timed stage: a new worker starts its own clocks here, so the
        CPU time of its first stage is counted too."""
        if self._mark_pid != os.getpid():
            self._mark_pid = os.getpid()
            self._last_flush, self._cpu_mark = time.perf_counter(), time.process_time()
            # send the last partial interval when the worker exits
            mp_util.Finalize(self, self.flush, exitpriority=10)

    def record(self, stage: str, seconds: float, samples: int = 0) -> None:
        """Add one timing (``samples``: how many samples a collate call batched)."""
        self.begin()
        self._local_samples += samples
        slot = self._local.get(stage)
        if slot is None:
            self._local[stage] = [seconds, 1.0]
        else:
            slot[0] += seconds
            slot[1] += 1.0
        if stage != COLLATE:
            return
        now = time.perf_counter()
        # flush at batch boundaries only (at most every 10 ms), so each message holds whole
        # batches: their samples with all the CPU time they cost, never split by the warm-up
        # reset; short runs still report before their workers exit
        if now - self._last_flush >= self.flush_interval:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        """Send (worker) or merge (main process) what was recorded so far."""
        now = time.perf_counter() if now is None else now
        cpu = time.process_time()
        msg = (os.getpid(), self._local, cpu - self._cpu_mark, now - self._last_flush,
               self._local_samples)
        self._local, self._local_samples = {}, 0
        self._last_flush, self._cpu_mark = now, cpu
        if os.getpid() == self._owner_pid:
            self._merge(msg, count_cpu=False)
            return
        try:
            self._queue.put_nowait(msg)
        except queue_mod.Full:  # pragma: no cover - unbounded queue
            pass

    # -- main side ---------------------------------------------------------
    def _merge(self, msg: tuple, count_cpu: bool = True) -> None:
        pid, stages, cpu_s, wall_s, samples = msg
        for name, (total, count) in stages.items():
            slot = self._merged.setdefault(name, [0.0, 0.0])
            slot[0] += total
            slot[1] += count
        if count_cpu:
            slot = self._worker_cpu.setdefault(pid, [0.0, 0.0, 0])
            slot[0] += cpu_s
            slot[1] += wall_s
            slot[2] += samples

    def drain(self) -> None:
        """Collect pending worker messages without blocking."""
        while True:
            try:
                msg = self._queue.get_nowait()
            except (queue_mod.Empty, OSError, EOFError):
                break
            self._merge(msg)

    def reset(self) -> None:
        """Forget everything (used to drop the warm-up iterations)."""
        self.drain()
        if os.getpid() == self._owner_pid:
            self._local, self._local_samples = {}, 0
        self._merged = {}
        self._worker_cpu = {}

    def summary(self) -> dict[str, Any]:
        """Mean milliseconds per call and share of the pipeline per stage."""
        self.drain()
        if os.getpid() == self._owner_pid and self._local:
            self.flush()
        total = sum(v[0] for k, v in self._merged.items()) or 1.0
        stages = {
            name: {'mean_ms': 1e3 * s / max(n, 1.0), 'calls': int(n),
                   'total_s': s, 'share': s / total}
            for name, (s, n) in self._merged.items()}
        cpu = sum(v[0] for v in self._worker_cpu.values())
        wall = max((v[1] for v in self._worker_cpu.values()), default=0.0)
        samples = sum(v[2] for v in self._worker_cpu.values())
        return {
            'stages': stages,
            'workers_seen': len(self._worker_cpu),
            # CPU seconds of all workers per second of wall time: 2.0 = two busy cores
            'worker_cpu_cores': cpu / wall if wall > 0 else None,
            # the workers' process CPU time per sample they batched (prefetched ones too)
            'worker_cpu_s': cpu,
            'worker_samples': samples,
            'worker_cpu_s_per_sample': cpu / samples if samples else None,
        }

    def close(self) -> None:
        self.drain()
        self._queue.close()
        self._queue.join_thread()

    def __getstate__(self) -> dict:  # spawned workers get the queue, not stale sums
        state = dict(self.__dict__)
        state['_local'], state['_local_samples'] = {}, 0
        return state


class TimedStage:
    """Callable wrapper that times ``fn`` as stage ``name``."""

    def __init__(self, fn: Callable, name: str, recorder: StageRecorder) -> None:
        self.fn = fn
        self.__wrapped__ = fn  # the functools convention: checks of what a pipeline holds unwrap
        self.name = name
        self.recorder = recorder

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.recorder.begin()
        start = time.perf_counter()
        out = self.fn(*args, **kwargs)
        samples = len(args[0]) if self.name == COLLATE and args and hasattr(
            args[0], '__len__') else 0
        self.recorder.record(self.name, time.perf_counter() - start, samples)
        return out

    def __getattr__(self, item: str) -> Any:  # keep the transform's attributes reachable
        if item == 'fn':
            raise AttributeError(item)
        return getattr(self.fn, item)

    def __repr__(self) -> str:
        return f'TimedStage({self.fn!r})'


def _stage_name(transform: Any, index: int, seen: set[str]) -> str:
    name = type(transform).__name__
    if name in ('function', 'partial'):
        name = getattr(transform, '__name__', None) or getattr(
            getattr(transform, 'func', None), '__name__', 'fn')
    if name in seen:
        name = f'{name}#{index}'
    seen.add(name)
    return name


def _leaf_datasets(dataset: Any, depth: int = 0) -> list[Any]:
    """Datasets that own a pipeline, looking through wrappers (Repeat, CBGS, Concat)."""
    if depth > 8:
        return []
    if hasattr(dataset, 'pipeline') and hasattr(dataset.pipeline, 'transforms'):
        return [dataset]
    out = []
    for attr in ('dataset', 'datasets'):
        inner = getattr(dataset, attr, None)
        if inner is None:
            continue
        for d in inner if isinstance(inner, (list, tuple)) else [inner]:
            out.extend(_leaf_datasets(d, depth + 1))
    return out


def instrument_dataloader(dataloader: Any, recorder: StageRecorder) -> list[str]:
    """Wrap every pipeline transform and the collate_fn of ``dataloader``.

    Must run before the loader's workers start (they copy the dataset).
    Returns the stage names; calling it twice does not double-wrap.
    """
    names: list[str] = []
    for dataset in _leaf_datasets(dataloader.dataset):
        transforms = dataset.pipeline.transforms
        seen: set[str] = set()
        for i, t in enumerate(transforms):
            if isinstance(t, TimedStage):
                t.recorder = recorder
                names.append(t.name)
                continue
            name = _stage_name(t, i, seen)
            transforms[i] = TimedStage(t, name, recorder)
            names.append(name)
    collate = dataloader.collate_fn
    if isinstance(collate, TimedStage):
        collate.recorder = recorder
    elif collate is not None:
        dataloader.collate_fn = TimedStage(collate, COLLATE, recorder)
    names.append(COLLATE)
    if not names[:-1]:
        logger.info('no dataset pipeline found to time; timing collate only')
    return names
