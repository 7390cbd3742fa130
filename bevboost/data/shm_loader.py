"""A data loader whose workers write batch payloads into a shared-memory ring.

torch's DataLoader moves every tensor of every batch into a fresh shared-memory
file (created, faulted in, mapped by the main process, unlinked), and pickles
``bytes`` through a pipe. Here one anonymous ``memfd`` of ``slots`` fixed-size
slots is mapped once; workers copy each batch's payload (a uint8 image tensor,
or a list of encoded JPEG ``bytes``/arrays) into a free slot and send back only
the slot index, the payload layout and the small metadata; the main process
wraps the slot as tensors/arrays without copying.

Lifecycle (Linux/fork only):

* The ring has no name in any file system (``memfd_create``, the fd closed
  once mapped); only this process and its workers map it, so it goes with them.
* Workers die with their parent: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` plus a
  parent-liveness check while idle, as torch's workers watch their parent.
  (The death signal follows the *thread* that forked them: iterate from a
  thread that outlives the iteration, as mmengine's runner does.)
* One live worker set per loader: a second ``iter()`` stops the first
  iterator's workers, and the first iterator raises on its next use.
* ``close()`` (or :class:`~bevboost.data.runner.ShmRingRunner` at the end of
  train/val/test, also on an exception) stops workers and unmaps the ring.
* A worker exception is re-raised in the main process with the worker's full
  traceback text and the batch's indices.

Seeding follows torch and mmengine: per iterator a base seed is drawn from
torch's global generator (so it differs per epoch and follows the config's
seed), each worker seeds ``random``/``torch``/``numpy`` from it, publishes
torch's ``WorkerInfo`` (``get_worker_info()`` works), then calls
``worker_init_fn`` (mmengine's adds the rank).

A yielded batch's payload views stay valid until the next batch is requested;
copy them to keep them longer. With ``device='cuda'`` the ring is page-locked
(``cudaHostRegister``) and tensor payloads are copied to the GPU with
``non_blocking=True`` before yielding, so those views never escape.
"""
from __future__ import annotations

import ctypes
import itertools
import logging
import mmap
import multiprocessing as mp
import os
import queue
import random
import signal
import traceback
import weakref
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from bevboost.data.ring_payload import (ALIGN, MISSING, as_bytes_view, find, pack, parts,
                                        payload_nbytes, put, take, unpack)

logger = logging.getLogger(__name__)

#: where samples keep their payload: ``Pack3DDetInputs``' multi-view image tensor, and the
#: JPEG bytes ``FastLoadMultiViewImageFromFiles(decode='main')`` ships in the metainfo
DEFAULT_PAYLOAD_KEYS = (('inputs', 'img'), ('data_samples', 'img_jpeg', 'blobs'))
_PR_SET_PDEATHSIG = 1
#: seconds an idle worker waits for a task before checking that its parent is alive
_LIVENESS_S = 1.0


def _die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this worker when its parent goes (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: the idle liveness check remains
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(0)


def _seed_worker(dataset, worker_id: int, num_workers: int, base_seed: int,
                 worker_init_fn: Callable | None) -> None:
    """Seed as torch's DataLoader worker does, then run mmengine's ``worker_init_fn``."""
    seed = base_seed + worker_id
    random.seed(seed)
    torch.manual_seed(seed)
    np.random.seed(np.random.SeedSequence([base_seed, worker_id]).generate_state(4))
    from bevboost.seams.torch_internals import publish_worker_info
    publish_worker_info(id=worker_id, num_workers=num_workers, seed=seed, dataset=dataset)
    if worker_init_fn is not None:
        worker_init_fn(worker_id)


def _worker(dataset, ring: np.ndarray, tasks, results, keys: tuple, worker_id: int,
            num_workers: int, base_seed: int, worker_init_fn: Callable | None,
            parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    torch.set_num_threads(1)
    try:
        _seed_worker(dataset, worker_id, num_workers, base_seed, worker_init_fn)
        while True:
            try:
                task = tasks.get(timeout=_LIVENESS_S)
            except queue.Empty:
                if os.getppid() != parent_pid:
                    return
                continue
            if task is None:
                return
            task_id, slot, indices = task
            try:
                samples, layouts, offset = [], [], 0
                for idx in indices:
                    sample, found = dataset[idx], []
                    for k, path in enumerate(keys):
                        payload = take(sample, path)
                        if payload is not MISSING:
                            layout, offset = pack(ring[slot], offset, payload)
                            found.append((k, layout))
                    samples.append(sample)
                    layouts.append(found)
                results.put((task_id, slot, layouts, samples, None))
            except Exception:  # re-raised by the main process with this text
                results.put((task_id, slot, None, None, traceback.format_exc()))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole group; the main process reports it
        pass


class ShmRingLoader:
    """Iterable of batches built by ``num_workers`` forked workers through a shm ring.

    Args:
        dataset: map-style dataset whose samples hold, at one of ``payload_keys``,
            a uint8 image tensor/array (mmdet3d ``Pack3DDetInputs``: ``inputs.img``)
            or a list of tensors/arrays/``bytes`` (encoded JPEGs, e.g.
            ``data_samples.img_jpeg.blobs``; they come back as uint8 arrays).
        batch_size: samples per batch.
        num_workers: worker processes (>= 1).
        sampler: iterable of indices per epoch (default: shuffled or sequential).
        collate_fn: collates the samples, in the main process once their payloads
            are back in place as ring views; default mmengine's ``pseudo_collate``
            (which keeps the views; ``default_collate`` stacks them: a copy).
        slots: ring slots; default ``2 * num_workers + 1``.
        slot_mib: bytes per slot in MiB; default: ``batch_size`` times the
            first sample's payload (twice that when the payload holds ``bytes``).
        device: ``'cpu'`` or a CUDA device to copy tensors to (pinned, non-blocking).
        seed: seed of the default shuffle (used without ``sampler``).
        worker_init_fn: called with the worker id after seeding (mmengine's adds rank).
        generator: torch generator the per-iterator base seed is drawn from.
        timeout: seconds without a batch before checking that workers are alive.
    """

    def __init__(self, dataset, batch_size: int = 1, num_workers: int = 2,
                 shuffle: bool = False, sampler=None, collate_fn: Callable | None = None,
                 drop_last: bool = False, slots: int | None = None,
                 slot_mib: float | None = None, device: str = 'cpu',
                 payload_keys: Sequence[Sequence[str]] = DEFAULT_PAYLOAD_KEYS, seed: int = 0,
                 worker_init_fn: Callable | None = None,
                 generator: torch.Generator | None = None, timeout: float = 5.0) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f'batch_size must be a positive int, got {batch_size!r}')
        if not isinstance(num_workers, int) or num_workers < 1:
            raise ValueError(f'num_workers must be an int >= 1, got {num_workers!r}')
        if slots is not None and (not isinstance(slots, int) or slots < 2):
            raise ValueError(f'slots must be an int >= 2, got {slots!r}')
        if slot_mib is not None and not slot_mib > 0:
            raise ValueError(f'slot_mib must be > 0, got {slot_mib!r}')
        if 'fork' not in mp.get_all_start_methods() or not hasattr(os, 'memfd_create'):
            raise RuntimeError('ShmRingLoader needs Linux (fork and memfd_create)')
        if collate_fn is None:
            from mmengine.dataset import pseudo_collate
            collate_fn = pseudo_collate
        self.dataset, self.batch_size, self.num_workers = dataset, batch_size, num_workers
        self.sampler, self.shuffle, self.drop_last = sampler, shuffle, drop_last
        self.collate_fn, self.seed = collate_fn, seed
        self.payload_keys = tuple(tuple(p) for p in payload_keys)
        if not self.payload_keys or not all(self.payload_keys):
            raise ValueError(f'payload_keys must be non-empty paths, got {payload_keys!r}')
        self.worker_init_fn, self.generator = worker_init_fn, generator
        self.slots = slots or 2 * num_workers + 1
        self.slot_mib = slot_mib
        self.device = torch.device(device)
        self.timeout = timeout
        self._map: mmap.mmap | None = None
        self._ring: np.ndarray | None = None
        self._live: weakref.ReferenceType | None = None
        self._epoch = 0

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _open_ring(self) -> None:
        if self.slot_mib is not None:
            slot_bytes = int(self.slot_mib * 2 ** 20)
        else:
            sample = self.dataset[0]
            payloads = [p for p in (find(sample, k) for k in self.payload_keys) if p is not MISSING]
            if not payloads:
                raise ValueError(f'ShmRingLoader: sample 0 has none of payload_keys '
                                 f'{self.payload_keys}; set the path of its image payload')
            has_bytes = any(as_bytes_view(p)[0] == 'bytes' for x in payloads for p in parts(x)[1])
            slot_bytes = sum(map(payload_nbytes, payloads)) * self.batch_size * (
                2 if has_bytes else 1)
        slot_bytes = -(-slot_bytes // ALIGN) * ALIGN
        fd = os.memfd_create(f'bevboost-ring-{os.getpid()}', os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, slot_bytes * self.slots)
            self._map = mmap.mmap(fd, slot_bytes * self.slots)
        finally:
            os.close(fd)  # no name, no fd: only the mappings keep it
        self._ring = np.frombuffer(self._map, np.uint8).reshape(self.slots, slot_bytes)
        if self.device.type == 'cuda':
            torch.cuda.cudart().cudaHostRegister(self._ring.ctypes.data, self._ring.nbytes, 0)
        logger.info('shm ring: %d slots x %.1f MiB for batches of %d', self.slots,
                    slot_bytes / 2 ** 20, self.batch_size)

    def _index_batches(self) -> Iterator[list[int]]:
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

    def __iter__(self) -> '_RingIterator':
        previous = self._live() if self._live is not None else None
        if previous is not None:
            previous.close('a newer iter() over the same ShmRingLoader replaced it')
        if self._ring is None:
            self._open_ring()
        base_seed = int(torch.empty((), dtype=torch.int64).random_(generator=self.generator))
        it = _RingIterator(self, self._index_batches(), base_seed)
        self._live = weakref.ref(it)
        self._epoch += 1
        return it

    @property
    def worker_pids(self) -> list[int]:
        """PIDs of the live iterator's workers (empty when none runs)."""
        it = self._live() if self._live is not None else None
        return [p.pid for p in it._procs] if it is not None and it._closed is None else []

    def close(self) -> None:
        """Stop the live workers and unmap the ring (idempotent; iterating again reopens)."""
        it = self._live() if self._live is not None else None
        if it is not None:
            it.close('its ShmRingLoader was closed')
        self._live = None
        if self._ring is not None:
            if self.device.type == 'cuda':
                torch.cuda.cudart().cudaHostUnregister(self._ring.ctypes.data)
            self._ring = None
            try:
                self._map.close()
            except BufferError:  # views still alive in user code; unmapped with them
                pass
            self._map = None

    def __enter__(self) -> 'ShmRingLoader':
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


class _RingIterator:
    """One pass over a :class:`ShmRingLoader`: owns its worker set and task queues."""

    def __init__(self, loader: ShmRingLoader, batches: Iterator[list[int]],
                 base_seed: int) -> None:
        self._loader, self._batches, self._ring = loader, batches, loader._ring
        self._closed: str | None = None
        ctx = mp.get_context('fork')
        # one task queue per worker, batches dealt round-robin as torch does: which worker
        # (and so which RNG stream) loads a batch does not depend on timing
        self._tasks = [ctx.Queue() for _ in range(loader.num_workers)]
        self._results = ctx.Queue()
        self._procs = [ctx.Process(target=_worker, daemon=True, args=(
            loader.dataset, loader._ring, self._tasks[w], self._results, loader.payload_keys, w,
            loader.num_workers, base_seed, loader.worker_init_fn,
            os.getpid())) for w in range(loader.num_workers)]
        for p in self._procs:
            p.start()
        self._free = list(range(loader.slots))
        self._submitted: dict[int, list[int]] = {}
        self._pending: dict[int, tuple] = {}
        self._next_task = self._next_yield = 0
        self._in_use: int | None = None
        self._exhausted = False

    def __iter__(self) -> '_RingIterator':
        return self

    def __next__(self) -> Any:
        if self._closed is not None:
            if self._closed == 'exhausted':
                raise StopIteration
            raise RuntimeError(f'this ShmRingLoader iterator is closed: {self._closed}')
        try:
            self._submit()
            if self._next_yield >= self._next_task:
                self.close('exhausted')
                raise StopIteration
            while self._next_yield not in self._pending:
                task_id, slot, layouts, samples, err = self._wait()
                if err is not None:
                    raise RuntimeError(f'ShmRingLoader worker failed on batch '
                                       f'{self._submitted[task_id]}; worker traceback:\n{err}')
                self._pending[task_id] = (slot, layouts, samples)
        except BaseException as exc:
            if not isinstance(exc, StopIteration):
                self.close(f'it failed: {type(exc).__name__}')
            raise
        slot, layouts, samples = self._pending.pop(self._next_yield)
        self._submitted.pop(self._next_yield)
        if self._in_use is not None:
            self._free.append(self._in_use)
        self._in_use = slot
        self._next_yield += 1
        return self._assemble(slot, layouts, samples)

    def _submit(self) -> None:
        while self._free and not self._exhausted:
            batch = next(self._batches, None)
            if batch is None:
                self._exhausted = True
                return
            self._tasks[self._next_task % len(self._tasks)].put(
                (self._next_task, self._free.pop(), batch))
            self._submitted[self._next_task] = batch
            self._next_task += 1

    def _wait(self) -> tuple:
        while True:
            try:
                return self._results.get(timeout=self._loader.timeout)
            except queue.Empty:
                dead = [(i, p.exitcode) for i, p in enumerate(self._procs) if not p.is_alive()]
                if dead:
                    raise RuntimeError(f'ShmRingLoader worker(s) died: {dead} '
                                       '(worker id, exit code)') from None

    def _assemble(self, slot: int, layouts: list, samples: list) -> Any:
        device, keys = self._loader.device, self._loader.payload_keys
        for sample, found in zip(samples, layouts):
            for k, layout in found:
                payload = unpack(self._ring[slot], layout)
                if device.type == 'cuda' and isinstance(payload, torch.Tensor):
                    payload = payload.to(device, non_blocking=True)
                put(sample, keys[k], payload)
        if device.type == 'cuda':
            torch.cuda.current_stream(device).synchronize()  # the slot is reused next
        return self._loader.collate_fn(samples)

    def close(self, reason: str = 'closed') -> None:
        """Stop this iterator's workers (idempotent); later ``next()`` raises with ``reason``."""
        if self._closed is not None:
            return
        self._closed, self._ring = reason, None
        graceful = reason == 'exhausted'  # idle workers; otherwise their work is discarded
        for tasks in self._tasks if graceful else ():
            try:
                tasks.put(None)
            except (OSError, ValueError):
                pass
        for p in self._procs:
            if graceful:
                p.join(timeout=2.0)
            if p.is_alive():
                p.kill()
            p.join()
        for q in (*self._tasks, self._results):
            q.cancel_join_thread()
            q.close()

    def __del__(self) -> None:
        try:
            self.close('garbage collected')
        except Exception:  # interpreter shutdown
            pass
