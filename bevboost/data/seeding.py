"""Augmentation randomness that follows mmengine's seeding in every loader process.

mmengine's ``worker_init_fn`` seeds numpy, ``random`` and torch in each
DataLoader worker with ``seed + num_workers * rank + worker_id``; mmdet3d's
transforms draw from ``np.random`` and so differ per worker and per rank. A
transform that keeps its own ``np.random.Generator`` misses both: built in the
main process, its state is copied into every forked worker, which then all draw
the same augmentations. And with non-persistent workers mmengine's seed repeats
every epoch.

:class:`WorkerRng` draws where a stock transform would, with the per-epoch
term added:

* outside loader workers (``num_workers=0``, tests) from ``np.random`` itself,
  as mmdet3d's transforms do, so it makes the same draws they make;
* in a worker (torch's DataLoader or the shm ring) from a generator built on
  first use in that worker, seeded from numpy's global state (mmengine's
  per-worker, per-rank seed) and torch's per-worker seed
  (``get_worker_info().seed``: drawn by the main process from its torch
  generator for every iterator, so new each epoch and fixed by the config's
  ``randomness.seed``), and built again when a new worker uses it.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch


def _process_key() -> tuple[int, int | None]:
    info = torch.utils.data.get_worker_info()
    return os.getpid(), None if info is None else int(info.seed)


class WorkerRng:
    """Draws ``uniform``/``choice``/``random``/... from this process's stream (see above).

    Args:
        seed: None (default) follows mmengine's seeding as above. An int fixes
            the stream (``np.random.default_rng(seed)``) in the process that built
            the object outside any worker (tests, debugging); in workers it is
            mixed with the worker's seeds.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._owner = _process_key()
        self._key: tuple | None = None
        self._stream: Any = None

    def stream(self) -> Any:
        """``np.random`` (global state) or this worker's ``np.random.Generator``."""
        key = _process_key()
        if key != self._key:
            self._stream = self._build(key)
            self._key = key
        return self._stream

    def _build(self, key: tuple[int, int | None]) -> Any:
        if key == self._owner and self.seed is not None:
            return np.random.default_rng(self.seed)
        if key[1] is None and self.seed is None:
            return np.random  # not in a loader worker: the stock transforms' stream
        entropy = np.random.randint(0, 2 ** 32, size=2, dtype=np.uint64).tolist()
        entropy += [x for x in (key[1], self.seed) if x is not None]
        return np.random.default_rng(entropy)

    def __getstate__(self) -> dict:
        return {'seed': self.seed, '_owner': self._owner}  # the stream is rebuilt where used

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _key=None, _stream=None)

    def __getattr__(self, name: str) -> Any:
        if name.startswith('_'):  # pickling/copy probes, unset attributes
            raise AttributeError(name)
        return getattr(self.stream(), name)

    def __repr__(self) -> str:
        return f'WorkerRng(seed={self.seed!r})'
