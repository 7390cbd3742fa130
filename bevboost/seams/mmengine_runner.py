"""mmengine runner seams: the launch routes' constructors and the runner's private state.

Checked on mmengine 0.10.4-0.10.7 (``tests/seams/test_mmengine_seams.py`` pins each
shape and fails with the seam's name when an upgrade changes it).

* :func:`install_from_cfg_hook` / :func:`install_init_check` replace
  ``Runner.from_cfg`` and ``FlexibleRunner.from_cfg`` (the classmethod every launch
  route ends in: ``tools/train.py`` calls it directly or through ``RUNNERS.build``,
  whose ``build_runner_from_cfg`` calls ``<class>.from_cfg(cfg)``) and their
  ``__init__`` (``cfg=`` keyword).
* :func:`checkpoint_request` reads ``Runner._load_from`` / ``_resume`` (no public
  accessor), :func:`built_loops` the ``_train_loop``/``_val_loop``/``_test_loop``
  slots, :func:`mmlogger_exists` ``MMLogger._instance_dict``.
"""
from __future__ import annotations

import functools
import inspect
import logging
from typing import Any, Callable

logger = logging.getLogger(__name__)

#: class -> its own ``from_cfg`` function / ``__init__`` before wrapping
_ORIGINAL_FROM_CFG: dict[type, Callable] = {}
_ORIGINAL_INIT: dict[type, Callable] = {}
_INIT_SIGNATURE: dict[type, inspect.Signature] = {}


class SeamChanged(RuntimeError):
    """An mmengine/torch shape the kit relies on is not what it was checked on."""


def from_cfg_shape_problem(runner_class: type) -> str | None:
    """Why ``runner_class.from_cfg``/``__init__`` cannot be wrapped, or None."""
    current = runner_class.__dict__.get('from_cfg')
    func = getattr(current, '__func__', None)
    if getattr(func, '_bevboost_wrapped', False):
        return None
    if not isinstance(current, classmethod) or \
            list(inspect.signature(func).parameters) != ['cls', 'cfg']:
        return f'{runner_class.__name__}.from_cfg is not classmethod(cls, cfg)'
    if 'cfg' not in inspect.signature(runner_class.__init__).parameters:
        return f'{runner_class.__name__}.__init__ takes no cfg'
    return None


def _wrapped_base(cls: type) -> type:
    return next(base for base in cls.__mro__ if base in _ORIGINAL_FROM_CFG)


def original_from_cfg(cls: type, cfg: Any) -> Any:
    """mmengine's own ``from_cfg`` of the wrapped class ``cls`` derives from."""
    return _ORIGINAL_FROM_CFG[_wrapped_base(cls)](cls, cfg)


def wrapped_base_name(cls: type) -> str:
    return _wrapped_base(cls).__name__


def install_from_cfg_hook(runner_class: type, hook: Callable[[type, Any], Any],
                          init_check: Callable[[Any, dict], None]) -> bool:
    """Route ``runner_class.from_cfg(cfg)`` through ``hook(cls, cfg)`` and its ``__init__``
    through ``init_check(self, bound_arguments)`` first. Idempotent.

    ``hook`` returns the built runner (it may call :func:`original_from_cfg`).
    Returns False (and logs an error) when the shapes differ from the checked ones.
    """
    problem = from_cfg_shape_problem(runner_class)
    if problem:
        logger.error('%s in this mmengine; bevboost_boosts in configs will not be applied by '
                     'tools/train.py', problem)
        return False
    if runner_class in _ORIGINAL_FROM_CFG:
        return True
    func = runner_class.__dict__['from_cfg'].__func__
    _ORIGINAL_FROM_CFG[runner_class] = func
    _ORIGINAL_INIT[runner_class] = runner_class.__init__
    _INIT_SIGNATURE[runner_class] = inspect.signature(runner_class.__init__)

    @functools.wraps(func)
    def from_cfg(cls, cfg):
        return hook(cls, cfg)
    from_cfg._bevboost_wrapped = True

    @functools.wraps(runner_class.__init__)
    def __init__(self, *args, **kwargs):
        base = next(b for b in type(self).__mro__ if b in _ORIGINAL_INIT)
        bound = _INIT_SIGNATURE[base].bind_partial(self, *args, **kwargs)
        init_check(self, bound.arguments)
        _ORIGINAL_INIT[base](self, *args, **kwargs)

    runner_class.from_cfg = classmethod(from_cfg)
    runner_class.__init__ = __init__
    return True


def checkpoint_request(runner: Any) -> tuple[str | None, bool, bool]:
    """``(load_from, resume, already_loaded)`` as ``Runner.load_or_resume`` will read them
    (``_load_from``, ``_resume``, ``_has_loaded``: mmengine 0.10 keeps no public accessor)."""
    return runner._load_from, bool(runner._resume), bool(runner.__dict__.get('_has_loaded'))


def built_loops(runner: Any) -> list[Any]:
    """The train/val/test loop slots of a runner as they stand (built loops or their
    configs); mmengine 0.10 builds them lazily behind properties that would build them."""
    return [runner.__dict__.get(name) for name in ('_train_loop', '_val_loop', '_test_loop')]


def mmlogger_exists() -> bool:
    """Whether any ``MMLogger`` exists (``MMLogger._instance_dict``); asking through
    ``get_current_instance`` would create one."""
    from mmengine.logging import MMLogger
    return bool(MMLogger._instance_dict)
