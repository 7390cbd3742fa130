"""Make mmengine checkpoints load under ``torch.load(weights_only=True)``.

Since torch 2.6 ``torch.load`` defaults to ``weights_only=True`` and mmengine
0.10's resume fails with ``Weights only load failed ... HistoryBuffer``.
Switching ``weights_only`` off would run code from any checkpoint, so instead
we allow-list exactly the classes an mmengine checkpoint holds:

* ``mmengine.logging.HistoryBuffer`` (the message hub's logged scalars) and
  the numpy pieces its arrays pickle to (``ndarray``, ``dtype``, the
  ``_reconstruct`` and ``scalar`` constructors);
* nothing else: optimizer, scheduler, loss-scaler and model states are plain
  tensors, dicts and numbers.

One more fix is needed: ``HistoryBuffer.__getstate__`` pickles its statistics
methods as ``getattr(HistoryBuffer, 'min')`` calls, and ``getattr`` must never
be allow-listed (it reaches any attribute of any allowed object). Its default
methods are rebuilt on load anyway (``__setstate__`` calls
``_set_default_statistics``), so we leave them out of the pickle; a custom
statistics method registered by the user is still saved (and then needs the
user's explicit ``torch.serialization.add_safe_globals``).

Loading is fenced too: mmengine's ``HistoryBuffer.__setstate__`` merges a
checkpoint's ``statistics_methods`` into the *class-wide* registry, so a
crafted checkpoint could replace ``mean`` for the whole process with any
callable it can reach. Here a checkpoint may only name statistics methods
this process already registered (the defaults, or the user's own via
``HistoryBuffer.register_statistics``), and the process's function is kept;
the checkpoint's callables are never used. Other unexpected instance
attributes are dropped the same way.
"""
from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
from mmengine.logging import HistoryBuffer

from bevboost.seams.torch_compat import add_safe_globals

logger = logging.getLogger(__name__)


def check_checkpoint(path: str, what: str) -> None:
    """Refuse a missing, empty or truncated checkpoint before the run loads it.

    ``torch.save`` writes a zip archive whose directory sits at the end: a
    truncated file has none. Remote paths (``s3://``, ``https://``) are left to
    the loader; a legacy (pre-zip) pickle is only checked for its first byte.
    """
    if '://' in str(path):
        return
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f'{what}: checkpoint {str(path)!r} not found')
    size = p.stat().st_size
    if size == 0:
        raise ValueError(f'{what}: checkpoint {str(path)!r} is empty (0 bytes)')
    if zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise ValueError(f'{what}: checkpoint {str(path)!r} is unreadable: {exc}') from None
        if not any(n.endswith('data.pkl') for n in names):
            raise ValueError(f'{what}: {str(path)!r} is a zip archive but not a PyTorch '
                             'checkpoint (no data.pkl)')
        return
    with open(p, 'rb') as f:
        head = f.read(1)
    if head != b'\x80':  # a pickle protocol opcode starts the legacy format
        raise ValueError(f'{what}: checkpoint {str(path)!r} is truncated or not a PyTorch '
                         f'checkpoint ({size} bytes, no zip directory at its end)')


def checkpoint_to_load(runner) -> tuple[str, str] | None:
    """The checkpoint ``Runner.load_or_resume`` is about to read, and the key that named it
    (mmengine 0.10's choice: ``resume`` + ``load_from``, ``resume`` alone: the work dir's
    latest, else ``load_from``); None when it reads none."""
    from mmengine.runner import find_latest_checkpoint
    from bevboost.seams.mmengine_runner import checkpoint_request
    load_from, resume, loaded = checkpoint_request(runner)
    if loaded:
        return None
    if resume and load_from is None:
        latest = find_latest_checkpoint(runner.work_dir)
        return None if latest is None else (latest, f'resume (latest in {runner.work_dir})')
    if load_from is not None:
        return load_from, 'resume' if resume else 'load_from'
    return None


def _numpy_globals() -> list:
    """The numpy callables an array pickles to, under every module path numpy uses."""
    multiarray = np.core.multiarray if hasattr(np, 'core') else np._core.multiarray
    allowed: list = [np.ndarray, np.dtype]
    for fn in (multiarray._reconstruct, multiarray.scalar):
        # numpy 1.x pickles as numpy.core.multiarray.X, numpy 2.x as numpy._core.multiarray.X
        allowed += [(fn, f'numpy.core.multiarray.{fn.__name__}'),
                    (fn, f'numpy._core.multiarray.{fn.__name__}')]
    # numpy >= 1.25 pickles dtypes via their classes (numpy.dtypes.Float64DType, ...)
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        allowed += [getattr(dtypes, name) for name in dir(dtypes) if name.endswith('DType')]
    return allowed


def mmengine_safe_globals() -> list:
    """Everything an mmengine checkpoint needs beyond torch's own allow-list."""
    return [HistoryBuffer, *_numpy_globals()]


def install() -> None:
    """Allow-list mmengine checkpoint classes (``HistoryBuffer``'s pickling is fixed by
    :func:`bevboost.seams.mmengine_checkpoint.patch_history_buffer`).

    Idempotent; called by :func:`bevboost.seams.install` when :mod:`bevboost` is imported.
    """
    if add_safe_globals(mmengine_safe_globals()):
        logger.debug('allow-listed mmengine checkpoint classes for weights_only loading')
