"""mmengine optimizer-wrapper seams: accumulation counters and gradient clipping.

Checked on mmengine 0.10.4-0.10.7 (``tests/seams/test_mmengine_seams.py``).
``OptimWrapper`` keeps its accumulation state in private attributes with no public
accessor: ``_accumulative_counts`` (micro-batches per step), ``_inner_count``
(micro-batches seen), ``_max_counts`` (micro-batches in the run, or here in the
epoch) and ``_remainder_counts`` (the short last window); its ``scale_loss``,
``should_update`` and ``should_sync`` read them. ``_clip_grad()`` applies the
wrapper's ``clip_grad`` config (and logs ``grad_norm``).
"""
from __future__ import annotations

from typing import Any

#: private attributes of mmengine's OptimWrapper read or written here
COUNTER_ATTRS = ('_accumulative_counts', '_inner_count', '_max_counts', '_remainder_counts')


def accumulative_counts(wrapper: Any) -> int:
    """Micro-batches per optimizer step of a built ``OptimWrapper`` (1 when it has none)."""
    return int(getattr(wrapper, '_accumulative_counts', 1) or 1)


def inner_count(wrapper: Any) -> int:
    """Micro-batches the wrapper has counted so far."""
    return int(getattr(wrapper, '_inner_count', 0))


def restart_windows(wrapper: Any, micro_batches: int) -> None:
    """Count accumulation windows afresh over the next ``micro_batches`` (an epoch): the last
    window is the short remainder, as mmengine does for the end of a run."""
    counts = wrapper._accumulative_counts
    wrapper._inner_count = 0
    wrapper._max_counts = micro_batches
    wrapper._remainder_counts = micro_batches % counts


def clip_gradients(wrapper: Any) -> None:
    """Clip as the wrapper's ``clip_grad`` config says (mmengine's own ``_clip_grad``)."""
    wrapper._clip_grad()
