"""A data loader whose workers write uint8 image batches into a shared-memory ring.

torch's DataLoader pickles every batch tensor through a queue (one shm file
per tensor, created and unlinked per batch). Here one segment of ``slots``
fixed-size batch slots is created once; workers write each batch's images
into a free slot in place and send back only the slot index plus the small
metadata; the main process wraps the slot as tensors without copying.

Leak safety: the segment (``/dev/shm/bevboost-<pid>-<hex>``, mode 0600) is
unlinked right after it is mapped; workers are forked and inherit the
mapping, so no name survives a normal exit, Ctrl-C or a killed worker (or
even a killed main process). Linux/fork only.

A yielded batch's image views stay valid until the next batch is requested;
``.clone()`` them to keep them longer. With ``device='cuda'`` the ring is
page-locked (``cudaHostRegister``) and copied to the GPU with
``non_blocking=True`` before yielding, so the views never escape.
"""
from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import os
import queue
import secrets
from multiprocessing import shared_memory
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

#: where a sample keeps its (uint8) multi-view image tensor
DEFAULT_IMAGE_KEY = ('inputs', 'img')


def _get(sample: Any, key: Sequence[str]) -> Any:
    for k in key:
        sample = sample[k]
    return sample


def _set(sample: Any, key: Sequence[str], value: Any) -> None:
    for k in key[:-1]:
        sample = sample[k]
    sample[key[-1]] = value


def _worker(dataset, ring: np.ndarray, tasks, results, collate: Callable, key: tuple,
            worker_id: int, seed: int) -> None:
    torch.set_num_threads(1)
    np.random.seed(seed + worker_id)
    torch.manual_seed(seed + worker_id)
    while True:
        task = tasks.get()
        if task is None:
            return
        task_id, slot, indices = task
        try:
            metas = []
            for row, idx in enumerate(indices):
                sample = dataset[idx]
                img = _get(sample, key)
                arr = img.numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
                if arr.shape != ring.shape[2:] or arr.dtype != ring.dtype:
                    raise ValueError(f'sample {idx}: image {arr.dtype}{arr.shape} does not fit '
                                     f'the ring slot {ring.dtype}{ring.shape[2:]}')
                ring[slot, row] = arr
                _set(sample, key, None)
                metas.append(sample)
            results.put((task_id, slot, len(indices), collate(metas), None))
        except Exception as exc:  # reported to and re-raised by the main process
            results.put((task_id, slot, 0, None, f'{type(exc).__name__}: {exc}'))


class ShmRingLoader:
    """Iterable of batches built by ``num_workers`` forked workers through a shm ring.

    Args:
        dataset: map-style dataset whose samples hold a fixed-shape uint8 image at
            ``image_key`` (e.g. mmdet3d ``Pack3DDetInputs`` output: ``inputs.img``).
        batch_size: samples per batch.
        num_workers: worker processes (>= 1).
        sampler: iterable of indices per epoch (default: shuffled or sequential).
        collate_fn: collates the per-sample metadata (images removed); default
            mmengine's ``pseudo_collate``.
        slots: ring slots; default ``2 * num_workers + 1``.
        device: ``'cpu'`` or a CUDA device to copy images to (pinned, non-blocking).
        timeout: seconds without a batch before checking that workers are alive.
    """

    def __init__(self, dataset, batch_size: int = 1, num_workers: int = 2,
                 shuffle: bool = False, sampler=None, collate_fn: Callable | None = None,
                 drop_last: bool = False, slots: int | None = None, device: str = 'cpu',
                 image_key: Sequence[str] = DEFAULT_IMAGE_KEY, seed: int = 0,
                 timeout: float = 5.0) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f'batch_size must be a positive int, got {batch_size!r}')
        if not isinstance(num_workers, int) or num_workers < 1:
            raise ValueError(f'num_workers must be an int >= 1, got {num_workers!r}')
        if 'fork' not in mp.get_all_start_methods():
            raise RuntimeError('ShmRingLoader needs the fork start method (Linux)')
        if collate_fn is None:
            from mmengine.dataset import pseudo_collate
            collate_fn = pseudo_collate
        self.dataset, self.batch_size, self.num_workers = dataset, batch_size, num_workers
        self.sampler, self.shuffle, self.drop_last = sampler, shuffle, drop_last
        self.collate_fn, self.image_key, self.seed = collate_fn, tuple(image_key), seed
        self.slots = slots or 2 * num_workers + 1
        if self.slots < 2:
            raise ValueError(f'slots must be >= 2, got {self.slots!r}')
        self.device = torch.device(device)
        self.timeout = timeout
        self._shm: shared_memory.SharedMemory | None = None
        self._ring: np.ndarray | None = None
        self._procs: list = []
        self._epoch = 0

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _open_ring(self) -> None:
        probe = _get(self.dataset[0], self.image_key)
        probe = probe.numpy() if isinstance(probe, torch.Tensor) else np.asarray(probe)
        shape = (self.slots, self.batch_size, *probe.shape)
        nbytes = int(np.prod(shape)) * probe.dtype.itemsize
        name = f'bevboost-{os.getpid()}-{secrets.token_hex(4)}'
        self._shm = shared_memory.SharedMemory(name=name, create=True, size=nbytes)
        self._shm.unlink()  # the mapping lives on; the name never outlives this line
        self._ring = np.ndarray(shape, probe.dtype, buffer=self._shm.buf)
        if self.device.type == 'cuda':
            cudart = torch.cuda.cudart()
            ptr = self._ring.ctypes.data
            cudart.cudaHostRegister(ptr, nbytes, 0)
        logger.info('shm ring: %d slots x %d samples of %s %s (%.1f MiB)', self.slots,
                    self.batch_size, probe.dtype, probe.shape, nbytes / 2 ** 20)

    def _start(self) -> None:
        if self._ring is None:
            self._open_ring()
        ctx = mp.get_context('fork')
        self._tasks, self._results = ctx.Queue(), ctx.Queue()
        self._procs = [ctx.Process(target=_worker, daemon=True, args=(
            self.dataset, self._ring, self._tasks, self._results, self.collate_fn,
            self.image_key, w, self.seed + 1000 * self._epoch)) for w in range(self.num_workers)]
        for p in self._procs:
            p.start()

    def _batches(self) -> Iterator[list[int]]:
        """Index batches, drawn lazily: mmengine's InfiniteSampler never ends."""
        if self.sampler is not None:
            order = iter(self.sampler)
        elif self.shuffle:
            order = iter(np.random.default_rng(self.seed + self._epoch).permutation(
                len(self.dataset)).tolist())
        else:
            order = iter(range(len(self.dataset)))
        while True:
            batch = list(itertools.islice(order, self.batch_size))
            if not batch or (self.drop_last and len(batch) < self.batch_size):
                return
            yield batch

    def _wait(self):
        while True:
            try:
                return self._results.get(timeout=self.timeout)
            except queue.Empty:
                dead = [(i, p.exitcode) for i, p in enumerate(self._procs) if not p.is_alive()]
                if dead:
                    raise RuntimeError(f'ShmRingLoader worker(s) died: {dead} '
                                       '(worker id, exit code)') from None

    def __iter__(self) -> Iterator[Any]:
        batches = self._batches()
        self._start()
        try:
            free = list(range(self.slots))
            submitted: dict[int, list[int]] = {}
            pending, next_task, next_yield = {}, 0, 0
            in_use: int | None = None
            exhausted = False
            while True:
                while free and not exhausted:
                    batch = next(batches, None)
                    if batch is None:
                        exhausted = True
                        break
                    self._tasks.put((next_task, free.pop(), batch))
                    submitted[next_task] = batch
                    next_task += 1
                if next_yield >= next_task:
                    return
                while next_yield not in pending:
                    task_id, slot, n, meta, err = self._wait()
                    if err is not None:
                        raise RuntimeError(f'ShmRingLoader worker failed on batch '
                                           f'{submitted[task_id]}: {err}')
                    pending[task_id] = (slot, n, meta)
                slot, n, meta = pending.pop(next_yield)
                submitted.pop(next_yield)
                if in_use is not None:
                    free.append(in_use)
                in_use = slot
                next_yield += 1
                yield self._assemble(slot, n, meta)
        finally:
            self._stop()
            self._epoch += 1

    def _assemble(self, slot: int, n: int, meta: Any) -> Any:
        imgs = torch.from_numpy(self._ring[slot, :n])  # a view: no copy
        if self.device.type == 'cuda':
            imgs = imgs.to(self.device, non_blocking=True)
            torch.cuda.current_stream(self.device).synchronize()  # slot is reused next
        _set(meta, self.image_key, list(imgs.unbind(0)))
        return meta

    def _stop(self) -> None:
        for _ in self._procs:
            try:
                self._tasks.put(None)
            except (OSError, ValueError):
                pass
        for p in self._procs:
            p.join(timeout=2.0)
            if p.is_alive():
                p.kill()
                p.join()
        self._procs = []

    def close(self) -> None:
        """Stop workers and drop the mapping (idempotent)."""
        self._stop()
        if self._shm is not None:
            if self.device.type == 'cuda' and self._ring is not None:
                torch.cuda.cudart().cudaHostUnregister(self._ring.ctypes.data)
            self._ring = None
            try:
                self._shm.close()
            except BufferError:  # views still alive in user code; freed with them
                pass
            self._shm = None

    def __enter__(self) -> 'ShmRingLoader':
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass
