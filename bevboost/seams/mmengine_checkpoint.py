"""mmengine checkpoint seams: ``HistoryBuffer`` pickling.

Checked on mmengine 0.10.4-0.10.7 (``tests/seams/test_mmengine_seams.py``).

``HistoryBuffer.__getstate__`` pickles its statistics methods as
``getattr(HistoryBuffer, 'min')`` calls, and ``getattr`` must never be allow-listed
for ``torch.load(weights_only=True)``; its default methods are rebuilt on load
anyway (``__setstate__`` calls ``_set_default_statistics``), so they are left out of
the pickle. mmengine's ``__setstate__`` merges a checkpoint's ``statistics_methods``
into the class-wide registry (``_statistics_methods``); here a checkpoint may only
name methods this process registered, and the process's function is kept.
Relies on: instance attributes ``max_length``, ``_log_history``, ``_count_history``;
class attribute ``_statistics_methods``; method ``_set_default_statistics``.
"""
from __future__ import annotations

import logging

from mmengine.logging import HistoryBuffer

logger = logging.getLogger(__name__)

#: statistics methods HistoryBuffer registers itself
_DEFAULT_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer_getstate(self: HistoryBuffer) -> dict:
    state = dict(self.__dict__)
    custom = {name: fn for name, fn in self._statistics_methods.items()
              if not (name in _DEFAULT_STATISTICS and fn is getattr(HistoryBuffer, name))}
    state.pop('statistics_methods', None)
    if custom:
        state['statistics_methods'] = custom
    return state


#: instance attributes a HistoryBuffer has (mmengine 0.10)
_HISTORY_BUFFER_ATTRS = frozenset({'max_length', '_log_history', '_count_history'})


def _history_buffer_setstate(self: HistoryBuffer, state: dict) -> None:
    """Load a buffer's data; never let a checkpoint change process-wide statistics methods."""
    state = dict(state)
    methods = state.pop('statistics_methods', None) or {}
    self._set_default_statistics()
    registered = HistoryBuffer._statistics_methods
    ignored = sorted(str(name) for name in methods if name not in registered)
    unexpected = sorted(str(key) for key in state if key not in _HISTORY_BUFFER_ATTRS)
    if ignored or unexpected:
        logger.warning('checkpoint HistoryBuffer: ignored statistics methods %s not registered '
                       'in this process and unexpected attributes %s', ignored, unexpected)
    self.__dict__.update({k: v for k, v in state.items() if k in _HISTORY_BUFFER_ATTRS})



def patch_history_buffer() -> None:
    """Replace ``HistoryBuffer.__getstate__``/``__setstate__`` (idempotent)."""
    HistoryBuffer.__getstate__ = _history_buffer_getstate
    HistoryBuffer.__setstate__ = _history_buffer_setstate
