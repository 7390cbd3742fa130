"""How a batch payload is laid out in one ring slot of :mod:`bevboost.data.shm_loader`.

A payload is one tensor/array or a list of tensors/arrays/``bytes`` (encoded
JPEGs). Each part is copied at a 64-byte aligned offset; its layout (kind,
dtype, shape, offset) travels through the result queue, and the main process
rebuilds each part as a view of the slot: tensors as tensors, arrays and
``bytes`` as numpy arrays (uint8 for bytes), without copying. A payload is
found in a sample by a path of dict keys or attributes (``inputs.img``, or
``data_samples.img_jpeg.blobs`` in a data sample's metainfo).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

#: byte alignment of every part in a slot
ALIGN = 64


def parts(payload: Any) -> tuple[bool, list]:
    """(is_list, parts) of a payload: one array/tensor, or a list of arrays/tensors/bytes."""
    if isinstance(payload, (list, tuple)):
        return True, list(payload)
    return False, [payload]


def as_bytes_view(part: Any) -> tuple[str, np.ndarray]:
    if isinstance(part, torch.Tensor):
        return 'tensor', part.detach().cpu().numpy()
    if isinstance(part, (bytes, bytearray, memoryview)):
        return 'bytes', np.frombuffer(part, np.uint8)
    if isinstance(part, np.ndarray):
        return 'array', part
    raise TypeError(f'the shm ring carries tensors, arrays or bytes, got {type(part).__name__}')


def payload_nbytes(payload: Any) -> int:
    """Bytes a payload takes in a ring slot (aligned parts)."""
    return sum(-(-as_bytes_view(p)[1].nbytes // ALIGN) * ALIGN for p in parts(payload)[1])


def pack(slot: np.ndarray, offset: int, payload: Any) -> tuple[tuple, int]:
    """Copy ``payload`` into ``slot`` at ``offset``; return its layout and the next offset."""
    is_list, items = parts(payload)
    entries = []
    for part in items:
        kind, arr = as_bytes_view(part)
        arr = np.ascontiguousarray(arr)
        end = offset + arr.nbytes
        if end > slot.nbytes:
            raise ValueError(f'batch payload needs more than the ring slot\'s {slot.nbytes} bytes; '
                             'raise ShmRingLoader(slot_mib=...) (config: shm_ring.slot_mib)')
        slot[offset:end] = arr.reshape(-1).view(np.uint8)
        entries.append((kind, arr.dtype.str, arr.shape, offset))
        offset = -(-end // ALIGN) * ALIGN
    return (is_list, entries), offset


def unpack(slot: np.ndarray, layout: tuple) -> Any:
    is_list, entries = layout
    out = []
    for kind, dtype, shape, offset in entries:
        dtype = np.dtype(dtype)
        n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        arr = slot[offset:offset + n].view(dtype).reshape(shape)
        out.append(torch.from_numpy(arr) if kind == 'tensor' else arr)
    return out if is_list else out[0]


#: marks a payload path a sample does not have
MISSING = object()


def _step(obj: Any, key: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(key, MISSING)
    return getattr(obj, key, MISSING)


def find(sample: Any, path: Sequence[str]) -> Any:
    """The value at ``path`` (dict keys or attributes: a data sample's metainfo too), or MISSING."""
    for key in path:
        sample = _step(sample, key)
        if sample is MISSING:
            return MISSING
    return sample


def take(sample: Any, path: Sequence[str]) -> Any:
    """Remove and return the value at ``path``; MISSING (and nothing removed) if absent."""
    parent = find(sample, path[:-1])
    value = MISSING if parent is MISSING else _step(parent, path[-1])
    if value is not MISSING:
        if isinstance(parent, dict):
            del parent[path[-1]]
        else:
            delattr(parent, path[-1])
    return value


def put(sample: Any, path: Sequence[str], value: Any) -> None:
    """Put ``value`` back where :func:`take` found it."""
    parent = find(sample, path[:-1])
    if isinstance(parent, dict):
        parent[path[-1]] = value
    else:
        setattr(parent, path[-1], value)
