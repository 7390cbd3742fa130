"""``TorchProfilerHook``: mmengine's ProfilerHook with the defaults fixed.

Stock ``ProfilerHook`` problems this subclass fixes (it still builds the
``torch.profiler.profile`` and steps it the same way):

* CUDA activity is off by default -> on whenever CUDA is available.
* ``profile_times`` is independent of the ``schedule``: when it ends the
  profiler before the first ``active`` window completes, ``tb_trace`` writes
  nothing and TensorBoard shows "no dashboards" (open-mmlab/mmengine#1614).
  Here the stop iteration is derived from ``skip_first + (wait + warmup +
  active) * repeat`` and counted from the hook's own steps (resume-safe).
* ``by_epoch=True`` by default profiles a whole epoch -> iteration based.
* traces go to ``log_dir/tf_tracing_logs`` which TensorBoard sees as a run
  only by accident -> ``work_dir/tb_profiler/<timestamp>/`` (point
  ``tensorboard --logdir work_dir/tb_profiler`` at it), and a copy of the
  Chrome trace lands at ``log_dir/trace.json`` (chrome://tracing, Perfetto).
* no iteration markers -> every profiled step is a ``train_step``
  ``record_function`` range, and an NVTX range on GPU (for Nsight Systems);
  every ``next()`` on the train loader is a ``data_loading`` range, so the
  trace shows the main process waiting for batches next to the step.
"""
from __future__ import annotations

import glob
import logging
import os
import shutil
from typing import Any

import torch
from mmengine.hooks import ProfilerHook
from mmengine.registry import HOOKS

from bevboost.profiling.loop_timing import wrap_loop_batches

logger = logging.getLogger(__name__)

#: ``record_function`` range names in the trace
STEP_RANGE, DATA_RANGE = 'train_step', 'data_loading'


class RangedIterator:
    """Proxy around a batch iterator: each ``next`` is a ``record_function`` range."""

    def __init__(self, inner: Any, name: str = DATA_RANGE) -> None:
        self.inner = inner
        self.name = name

    def __iter__(self) -> 'RangedIterator':
        return self

    def __next__(self) -> Any:
        with torch.profiler.record_function(self.name):
            return next(self.inner)

    def __getattr__(self, item: str) -> Any:
        if item in ('inner', 'name'):
            raise AttributeError(item)
        return getattr(self.inner, item)


def _positive_int(name: str, value: Any, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f'{name} must be an int >= {minimum}, got {value!r}')
    return value


@HOOKS.register_module()
class TorchProfilerHook(ProfilerHook):
    """torch.profiler over a wait/warmup/active window with TensorBoard output.

    Args:
        wait, warmup, active, repeat, skip_first: ``torch.profiler.schedule``.
        activity_with_cuda: record CUDA kernels; None = when CUDA is there.
        tb_dir: TensorBoard log dir (relative: under work_dir); a run
            sub-directory named after the run's timestamp is added.
        json_trace: Chrome trace copy (relative: under log_dir); None = none.
        nvtx: push NVTX ranges per step on GPU; None = when CUDA is there.
        **kwargs: passed to ``ProfilerHook`` (record_shapes, profile_memory,
            with_stack, with_flops).
    """

    def __init__(self, *, wait: int = 1, warmup: int = 1, active: int = 3, repeat: int = 1,
                 skip_first: int = 0, activity_with_cuda: bool | None = None,
                 tb_dir: str = 'tb_profiler', json_trace: str | None = 'trace.json',
                 nvtx: bool | None = None, **kwargs: Any) -> None:
        for key in ('by_epoch', 'profile_times', 'schedule', 'on_trace_ready',
                    'json_trace_path'):
            if key in kwargs:
                raise TypeError(f'TorchProfilerHook sets {key!r} itself; use wait/warmup/'
                                f'active/repeat/tb_dir/json_trace instead')
        self.window = dict(wait=_positive_int('wait', wait),
                           warmup=_positive_int('warmup', warmup),
                           active=_positive_int('active', active, 1),
                           repeat=_positive_int('repeat', repeat, 1),
                           skip_first=_positive_int('skip_first', skip_first))
        cuda = torch.cuda.is_available()
        steps = skip_first + (wait + warmup + active) * repeat
        super().__init__(by_epoch=False, profile_times=steps,
                         activity_with_cuda=cuda if activity_with_cuda is None
                         else bool(activity_with_cuda),
                         schedule=dict(self.window), on_trace_ready=self._on_ready, **kwargs)
        self.tb_dir = tb_dir
        self.json_trace = json_trace
        self.nvtx = cuda if nvtx is None else bool(nvtx)
        self.trace_files: list[str] = []
        self._steps = 0
        self._range: Any = None
        self._run_dir = ''
        self.run_dir = ''  # the TensorBoard run directory, once training started
        self._log_dir = ''

    def before_run(self, runner) -> None:
        if runner.max_iters < self.profile_times:
            raise ValueError(
                f'TorchProfilerHook needs {self.profile_times} iterations '
                f'(skip_first + (wait + warmup + active) * repeat) but training has only '
                f'{runner.max_iters}; shrink the window or train longer')
        base = self.tb_dir if os.path.isabs(self.tb_dir) else os.path.join(
            runner.work_dir, self.tb_dir)
        self._run_dir = os.path.join(base, runner.timestamp)
        self.run_dir = self._run_dir
        self._log_dir = runner.log_dir
        os.makedirs(self._run_dir, exist_ok=True)
        self._handler = torch.profiler.tensorboard_trace_handler(self._run_dir)
        super().before_run(runner)
        runner.logger.info(f'torch.profiler window {self.window}; TensorBoard: '
                           f'tensorboard --logdir {base}')

    def _on_ready(self, prof: Any) -> None:
        before = set(glob.glob(os.path.join(self._run_dir, '*.pt.trace.json*')))
        self._handler(prof)
        new = sorted(set(glob.glob(os.path.join(self._run_dir, '*.pt.trace.json*'))) - before)
        self.trace_files.extend(new)
        if self.json_trace and new and not new[-1].endswith('.gz'):
            dest = self.json_trace if os.path.isabs(self.json_trace) else os.path.join(
                self._log_dir, self.json_trace)
            shutil.copyfile(new[-1], dest)
            self.trace_files.append(dest)
        logger.info('profiler trace written: %s', ', '.join(new) or '(nothing)')

    def before_train(self, runner) -> None:
        # VERY_LOW priority: runs after hooks that replace the loop's batches (replay)
        wrap_loop_batches(runner.train_loop, RangedIterator)

    def before_train_iter(self, runner, batch_idx: int, data_batch: Any = None) -> None:
        if self._closed:
            return
        self._range = torch.profiler.record_function(STEP_RANGE)
        self._range.__enter__()
        if self.nvtx:
            torch.cuda.nvtx.range_push(f'train_step {runner.iter}')

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        if self._closed:
            return
        if self._range is not None:
            self._range.__exit__(None, None, None)
            self._range = None
        if self.nvtx:
            torch.cuda.nvtx.range_pop()
        self.profiler.step()
        self._steps += 1
        if self._steps >= self.profile_times:
            self._export_chrome_trace(runner)

    def after_train(self, runner) -> None:
        """Training shorter than the window: still close and flush the trace."""
        if not self._closed and hasattr(self, 'profiler'):
            self._export_chrome_trace(runner)
