"""Where the measurement touches mmengine's training loops, in one place.

``StallMonitorHook`` needs three things the loops do not expose: the moment
each ``next()`` on the loader starts and how long it blocks (a proxy around
the loop's iterator, or around the DataLoader for epoch loops), the wall and
CPU time of ``model.train_step`` and of the data preprocessor inside it (an
instance attribute wrapping each, as mmengine's own ``compile`` option sets
one), and restarting / stopping the
loader's workers (private ``_InfiniteDataloaderIterator`` and DataLoader
iterator internals). ``tests/profiling/test_stall_hook.py`` fails loudly when
mmengine changes any of these.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterator


class TimedIterator:
    """Proxy around a batch iterator: reports when each ``next`` starts and how long it took.

    Args:
        inner: the iterator.
        on_fetch: called with ``perf_counter()`` at the start of every ``next``.
        on_batch: called with the seconds ``next`` blocked, once a batch came.
    """

    def __init__(self, inner: Any, on_fetch: Callable[[float], None],
                 on_batch: Callable[[float], None]) -> None:
        self.inner = inner
        self.on_fetch = on_fetch
        self.on_batch = on_batch

    def __iter__(self) -> 'TimedIterator':
        return self

    def __next__(self) -> Any:
        start = time.perf_counter()
        self.on_fetch(start)
        batch = next(self.inner)
        self.on_batch(time.perf_counter() - start)
        return batch

    def __getattr__(self, item: str) -> Any:
        if item in ('inner', 'on_fetch', 'on_batch'):
            raise AttributeError(item)
        return getattr(self.inner, item)


class WrappedLoader:
    """Stands in for an epoch loop's DataLoader: every ``iter()`` goes through ``wrap``."""

    def __init__(self, loader: Any, wrap: Callable[[Iterator], Iterator]) -> None:
        self.loader = loader
        self._wrap = wrap

    def __iter__(self) -> Iterator:
        return self._wrap(iter(self.loader))

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, item: str) -> Any:
        if item in ('loader', '_wrap'):
            raise AttributeError(item)
        return getattr(self.loader, item)


def wrap_loop_batches(loop: Any, wrap: Callable[[Iterator], Iterator]) -> None:
    """Route the loop's batches through ``wrap(iterator)`` (iteration- and epoch-based loops)."""
    if hasattr(loop, 'dataloader_iterator'):  # IterBasedTrainLoop keeps one iterator
        loop.dataloader_iterator = wrap(loop.dataloader_iterator)
    else:  # EpochBasedTrainLoop iterates loop.dataloader afresh every epoch
        loop.dataloader = WrappedLoader(loop.dataloader, wrap)


def restart_workers(loop: Any) -> None:
    """Restart IterBasedTrainLoop's workers so they fork with the timed pipeline."""
    from bevboost.seams.mmengine_loops import restart_infinite_iterator
    restart_infinite_iterator(loop)


def stop_workers(loop: Any) -> None:
    """Shut the train loader's workers down (training is over) so they flush."""
    from bevboost.seams.mmengine_loops import stop_loop_workers
    stop_loop_workers(loop)


def wrap_method(obj: Any, name: str, on_call: Callable[[float, float], None],
                sync_cuda: bool = False) -> Callable[[], None]:
    """Time ``obj.<name>`` calls (wall and process CPU seconds); returns the undo function.

    An instance attribute shadows the method: the loops call
    ``runner.model.train_step`` and ``nn.Module.__call__`` calls ``self.forward``
    through the instance (mmengine's ``compile`` option sets ``train_step`` the
    same way; a compiled one is wrapped as it is).
    """
    had_own = name in vars(obj)
    inner = getattr(obj, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        cpu0, t0 = time.process_time(), time.perf_counter()
        out = inner(*args, **kwargs)
        if sync_cuda:  # asynchronous kernels belong to this call, not the next data wait
            import torch
            torch.cuda.synchronize()
        on_call(time.perf_counter() - t0, time.process_time() - cpu0)
        return out

    timed.__wrapped__ = inner  # type: ignore[attr-defined]  # verdicts look through the timer
    setattr(obj, name, timed)

    def undo() -> None:
        if had_own:
            setattr(obj, name, inner)
        else:
            vars(obj).pop(name, None)
    return undo
