"""Load a config, apply boosts, build mmengine's Runner; make ``bevboost_boosts`` a drop-in.

A config may ask for boosts with ``bevboost_boosts = dict(amp=dict(dtype='bfloat16'))``.
mmengine's launch routes know nothing of that key:

* ``tools/train.py`` builds ``RUNNERS.build(cfg)`` when ``runner_type`` is
  set, which calls ``<runner class>.from_cfg(cfg)``, else ``Runner.from_cfg(cfg)``;
* scripts call ``Runner.from_cfg(cfg)`` directly (``runner_type`` ignored).

Both end in ``Runner.from_cfg``. :func:`install_config_boosts_route` (called
when ``bevboost`` is imported, which the config's own ``custom_imports`` does)
wraps that one classmethod: a config still carrying ``bevboost_boosts`` is
boosted first, and built with the runner class the boosts need (``shm`` needs
``ShmRingRunner``); a config the kit wrote (``bevboost_applied``) is built
with the ``runner_type`` it names on both routes. A boost that cannot apply
stops the build with one error naming ``bevboost_boosts``, the route and the
fix. A runner built past that classmethod (a subclass whose own ``from_cfg``
does not call it, ``Runner(cfg=...)``) is stopped in ``Runner.__init__`` when
its config still carries ``bevboost_boosts``: never trained silently plain.
:class:`BoostReportHook` then logs what is in effect on the built runner
before the first iteration.
"""
from __future__ import annotations

import functools
import inspect
import logging
from pathlib import Path
from typing import Any, Iterable

from mmengine.config import Config, DictAction  # noqa: F401  (DictAction re-exported for CLIs)
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from bevboost.boosts import (APPLIED_KEY, CONFIG_KEY, BoostNotInEffect, apply_boosts,
                             verify_boosts)

logger = logging.getLogger(__name__)

_CUSTOM_IMPORTS_FAILED = 'Failed to import custom modules from'


def load_config(path: str | Path, cfg_options: dict[str, Any] | None = None) -> Config:
    """Read a config file; a missing file or failing ``custom_imports`` is one clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'config file not found: {path}')
    try:
        cfg = Config.fromfile(str(path))
    except ImportError as exc:
        if not str(exc).startswith(_CUSTOM_IMPORTS_FAILED):
            raise
        cause = exc.__cause__ or exc
        raise ValueError(
            f'config {path}: its own custom_imports failed: {type(cause).__name__}: {cause} '
            '(install that module or put its directory on PYTHONPATH)') from None
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def build_runner(cfg: Config | dict, boosts: Iterable[str] | dict = (),
                 work_dir: str | Path | None = None):
    """Apply ``boosts`` (and the config's own ``bevboost_boosts``) and build a Runner."""
    if isinstance(cfg, dict) and not isinstance(cfg, Config):
        cfg = Config(cfg)
    cfg = apply_boosts(cfg, boosts)
    if work_dir is not None:
        cfg.work_dir = str(work_dir)
    if not cfg.get('work_dir'):
        raise ValueError('no work_dir: pass --work-dir or set work_dir in the config')
    return runner_from_cfg(cfg)


def runner_from_cfg(cfg: Config):
    """Build the runner the way mmengine's ``tools/train.py`` does (honours ``runner_type``)."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


@HOOKS.register_module()
class BoostReportHook(Hook):
    """Log one line listing each boost as found on the built runner; stop if one is not in effect.

    Added by :func:`~bevboost.boosts.apply_boosts`; runs in ``before_train``
    (after the optimizer wrapper, schedulers and train dataloader are built,
    before iteration 1). In ``before_run`` it checks the checkpoint the runner
    is about to load (``load_from``/``resume``): an empty or truncated file is
    refused with its path.

    Args:
        boosts: boost name -> the options it was applied with.
    """

    priority = 'VERY_LOW'

    def __init__(self, boosts: dict[str, dict] | None = None) -> None:
        self.boosts = {k: dict(v or {}) for k, v in (boosts or {}).items()}
        self.verdicts: list[str] = []

    def before_run(self, runner) -> None:
        """An empty or truncated checkpoint is named here, before mmengine's loader fails on it
        with an error that does not say which file it read."""
        from bevboost.engine.checkpoint_safety import check_checkpoint, checkpoint_to_load
        found = checkpoint_to_load(runner)
        if found is not None:
            check_checkpoint(*found)

    def before_train(self, runner) -> None:
        self.verdicts, failures = verify_boosts(runner, self.boosts)
        line = 'bevboost boosts in effect: ' + ('; '.join(self.verdicts) or 'none')
        print_log(line, logger='current', level=logging.ERROR if failures else logging.INFO)
        if failures:
            raise BoostNotInEffect('boosts not in effect on the built runner, stopping before '
                                   'the first iteration: ' + '; '.join(failures))


# --- the one place that touches mmengine internals: Runner.from_cfg -----------------------

_original_from_cfg = None


def _boosting_from_cfg(cls, cfg):
    """``Runner.from_cfg`` that first applies a config's ``bevboost_boosts``."""
    if isinstance(cfg, (dict, Config)) and cfg.get(CONFIG_KEY):
        route = f'{cls.__name__}.from_cfg'
        config = cfg if isinstance(cfg, Config) else Config(dict(cfg))
        try:
            boosted = apply_boosts(config)
            target = _runner_class(boosted, cls)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(
                f'{CONFIG_KEY} = {dict(cfg[CONFIG_KEY])!r} cannot be applied on the route '
                f'{route} (tools/train.py or a script): {exc}. Fix: correct the boost options, '
                'or write the boosted config with `bevboost boost CONFIG --out boosted.py` and '
                'train that file') from exc
        logger.info('%s: applied %s %s; building %s', route, CONFIG_KEY,
                    boosted.get('bevboost_applied'), target.__name__)
        return target.from_cfg(boosted)
    if isinstance(cfg, (dict, Config)) and cfg.get(APPLIED_KEY) and cfg.get('runner_type'):
        # a config the kit wrote names the runner its boosts need (shm: ShmRingRunner);
        # Runner.from_cfg would ignore that and fail on the boosted dataloader
        target = _runner_class(cfg, cls)
        if target is not cls:
            return target.from_cfg(cfg)
    return _original_from_cfg(cls, cfg)


_original_init = None
_init_signature: inspect.Signature | None = None


def _refusing_unapplied_init(self, *args, **kwargs):
    """``Runner.__init__`` that stops when the config's ``bevboost_boosts`` was not applied."""
    bound = _init_signature.bind_partial(self, *args, **kwargs)
    cfg = bound.arguments.get('cfg')
    if isinstance(cfg, (dict, Config)) and cfg.get(CONFIG_KEY):
        name = type(self).__name__
        raise ValueError(
            f'{CONFIG_KEY} = {dict(cfg[CONFIG_KEY])!r} reached {name}.__init__ unapplied: this '
            f'runner was built without mmengine\'s Runner.from_cfg (the route that applies '
            f'boosts): {name}.from_cfg does not call it, or the runner was built as '
            f'{name}(cfg=...). Fix: write the boosted config with `bevboost boost CONFIG --out '
            f'boosted.py` and train that file, or call super().from_cfg(cfg) in {name}.from_cfg')
    _original_init(self, *args, **kwargs)


def _runner_class(cfg: Config, called_on: type) -> type:
    """The runner class a boosted config needs (``runner_type``), given the route's class."""
    from mmengine.registry import RUNNERS
    wanted = cfg.get('runner_type')
    if not wanted or wanted == called_on.__name__:
        return called_on
    target = RUNNERS.get(wanted)
    if target is None or not issubclass(target, called_on):
        raise ValueError(f'the boosts need runner_type {wanted!r}, which is not a '
                         f'{called_on.__name__} subclass')
    return target


def install_config_boosts_route() -> bool:
    """Wrap ``mmengine.runner.Runner.from_cfg`` so ``bevboost_boosts`` takes effect, and
    ``Runner.__init__`` so a runner built past it with ``bevboost_boosts`` still in its
    config stops.

    Idempotent. Returns False (and logs an error) when this mmengine's
    ``Runner.from_cfg`` is not the ``classmethod(cls, cfg)`` the wrapper was
    written for; ``tests/dropin/test_launch_routes.py`` fails loudly then.
    """
    global _original_from_cfg, _original_init, _init_signature
    from mmengine.runner import Runner
    current = Runner.__dict__.get('from_cfg')
    func = getattr(current, '__func__', None)
    if func is _boosting_from_cfg:
        return True
    if not isinstance(current, classmethod) or \
            list(inspect.signature(func).parameters) != ['cls', 'cfg'] or \
            'cfg' not in inspect.signature(Runner.__init__).parameters:
        logger.error('mmengine Runner.from_cfg is not classmethod(cls, cfg), or Runner.__init__ '
                     'takes no cfg, in this mmengine; %s in configs will not be applied by '
                     'tools/train.py', CONFIG_KEY)
        return False
    _original_from_cfg = func
    _original_init = Runner.__init__
    _init_signature = inspect.signature(_original_init)
    Runner.from_cfg = classmethod(_boosting_from_cfg)
    Runner.__init__ = functools.wraps(_original_init)(_refusing_unapplied_init)
    return True
