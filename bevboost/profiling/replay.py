"""``ReplayDataHook``: the data-free ceiling (DALI's "replay" mode).

Caches the first ``num_batches`` batches the real loader produces, then feeds
the training loop from memory in a cycle. The model, optimizer and batches
are the real ones; only the data path is gone, so the throughput measured is
what the run could reach with an infinitely fast loader. Compare it with the
real run to see how far the data path is from ideal.
"""
from __future__ import annotations

import itertools
import logging
from typing import Any

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

logger = logging.getLogger(__name__)


class ReplayIterator:
    """Endless cycle over cached batches."""

    def __init__(self, batches: list[Any]) -> None:
        if not batches:
            raise ValueError('ReplayIterator needs at least one batch')
        self.batches = batches
        self._cycle = itertools.cycle(batches)

    def __iter__(self) -> 'ReplayIterator':
        return self

    def __next__(self) -> Any:
        return next(self._cycle)


class _ReplayLoader:
    """Stands in for an epoch loop's DataLoader: same length, cached batches."""

    def __init__(self, loader: Any, batches: list[Any]) -> None:
        self._loader = loader
        self._batches = batches

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self):
        return itertools.islice(itertools.cycle(self._batches), len(self._loader))

    def __getattr__(self, item: str) -> Any:
        if item == '_loader':
            raise AttributeError(item)
        return getattr(self._loader, item)


@HOOKS.register_module()
class ReplayDataHook(Hook):
    """Replay ``num_batches`` cached batches instead of loading data.

    Args:
        num_batches: batches to cache (memory grows with it).
    """

    # before StallMonitorHook (NORMAL), so the monitor times the replay
    priority = 'ABOVE_NORMAL'

    def __init__(self, num_batches: int = 4) -> None:
        if not isinstance(num_batches, int) or num_batches < 1:
            raise ValueError(f'num_batches must be an int >= 1, got {num_batches!r}')
        self.num_batches = num_batches

    def before_train(self, runner) -> None:
        loop = runner.train_loop
        if hasattr(loop, 'dataloader_iterator'):
            source = loop.dataloader_iterator
            batches = [next(source) for _ in range(self.num_batches)]
            loop.dataloader_iterator = ReplayIterator(batches)
        else:
            source = iter(loop.dataloader)
            batches = list(itertools.islice(source, self.num_batches))
            loop.dataloader = _ReplayLoader(loop.dataloader, batches)
        from bevboost.seams.mmengine_loops import stop_iterator_workers
        stop_iterator_workers(source)  # the real workers are no longer needed
        logger.info('replaying %d cached batches: data-free ceiling run', len(batches))
