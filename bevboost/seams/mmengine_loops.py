"""mmengine train-loop seams: the iteration loop's worker iterator.

Checked on mmengine 0.10.4-0.10.7 with torch 2.1-2.14 (``tests/seams/test_mmengine_seams.py``).
``IterBasedTrainLoop`` keeps one ``_InfiniteDataloaderIterator`` (private class) in its
public ``dataloader_iterator``; that holds torch's worker iterator as ``_iterator``;
a DataLoader with persistent workers keeps its own in ``_iterator``; mmengine's
``InfiniteSampler`` keeps one index generator made by ``_indices_of_rank()``.
"""
from __future__ import annotations

from typing import Any

from bevboost.seams.torch_internals import forget_loader_iterator, loader_iterator, shutdown_workers


def restart_infinite_iterator(loop: Any) -> bool:
    """Start ``IterBasedTrainLoop``'s workers afresh (so they fork with what the main process
    changed in the pipeline), on the same seeded order. False when the loop holds no
    mmengine infinite iterator (epoch loops start workers per epoch; a replaced iterator)."""
    from mmengine.runner.loops import _InfiniteDataloaderIterator
    if type(getattr(loop, 'dataloader_iterator', None)) is not _InfiniteDataloaderIterator:
        return False
    dataloader = loop.dataloader
    if getattr(dataloader, 'num_workers', 0) > 0:
        shutdown_workers(loader_iterator(loop.dataloader_iterator))
        forget_loader_iterator(dataloader)
    # InfiniteSampler keeps one index generator; the old worker iterator closes it when
    # collected. A fresh one restarts the same seeded order.
    sampler = getattr(dataloader, 'sampler', None)
    if hasattr(sampler, '_indices_of_rank'):
        sampler.indices = sampler._indices_of_rank()
    loop.dataloader_iterator = _InfiniteDataloaderIterator(dataloader)
    return True


def stop_loop_workers(loop: Any) -> None:
    """Shut the train loop's loader workers down (its iterator's and a persistent one's)."""
    proxy = getattr(loop, 'dataloader_iterator', None)
    inner = getattr(proxy, 'inner', proxy)
    loader = getattr(loop.dataloader, 'loader', loop.dataloader)
    for it in (loader_iterator(inner), loader_iterator(loader)):
        shutdown_workers(it)


def stop_iterator_workers(source: Any) -> None:
    """Shut down the workers behind ``source`` (mmengine's infinite iterator or torch's)."""
    shutdown_workers(loader_iterator(source) or source)
