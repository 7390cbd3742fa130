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

import copy
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
        self.recipe: str | None = None

    def before_run(self, runner) -> None:
        """An empty or truncated checkpoint is named here, before mmengine's loader fails on it
        with an error that does not say which file it read."""
        from bevboost.engine.checkpoint_safety import check_checkpoint, checkpoint_to_load
        found = checkpoint_to_load(runner)
        if found is not None:
            check_checkpoint(*found)

    def before_train(self, runner) -> None:
        from bevboost.engine.recipe_check import NOTES_KEY, check_built_recipe
        for note in runner.cfg.get(NOTES_KEY) or []:  # what the launch route changed
            print_log(f'bevboost: {note}', logger='current', level=logging.WARNING)
        self.recipe = check_built_recipe(runner)  # RecipeMismatchError stops the run here
        if self.recipe:
            print_log(f'bevboost {self.recipe}', logger='current', level=logging.INFO)
        self.verdicts, failures = verify_boosts(runner, self.boosts)
        line = 'bevboost boosts in effect: ' + ('; '.join(self.verdicts) or 'none')
        print_log(line, logger='current', level=logging.ERROR if failures else logging.INFO)
        if failures:
            raise BoostNotInEffect('boosts not in effect on the built runner, stopping before '
                                   'the first iteration: ' + '; '.join(failures))


# --- the launch-route wrappers: Runner and FlexibleRunner ---------------------------------

#: class -> its own ``from_cfg`` function / ``__init__`` before wrapping
_original_from_cfg: dict[type, Any] = {}
_original_init: dict[type, Any] = {}
_init_signature: dict[type, inspect.Signature] = {}


def _as_config(cfg) -> Config:
    return cfg if isinstance(cfg, Config) else Config(dict(cfg))


def _wrapped_base(cls: type) -> type:
    """The class in ``cls``'s MRO whose ``from_cfg`` the kit wrapped (Runner, FlexibleRunner)."""
    return next(base for base in cls.__mro__ if base in _original_from_cfg)


def _boosting_from_cfg(cls, cfg):
    """``<Runner|FlexibleRunner>.from_cfg`` that first applies a config's ``bevboost_boosts``
    and reconciles a kit-written config with the launch flags (``auto_scale_lr``, batch)."""
    base = _wrapped_base(cls)
    if isinstance(cfg, (dict, Config)) and cfg.get(CONFIG_KEY):
        route = f'{cls.__name__}.from_cfg'
        config = _as_config(cfg)
        try:
            boosted = apply_boosts(config)
            check_strategy(boosted, cls)
            target = _runner_class(boosted, cls, config.get('runner_type'))
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(
                f'{CONFIG_KEY} = {dict(cfg[CONFIG_KEY])!r} cannot be applied on the route '
                f'{route} (tools/train.py or a script): {exc}. Fix: correct the boost options, '
                'or write the boosted config with `bevboost boost CONFIG --out boosted.py` and '
                'train that file') from exc
        logger.info('%s: applied %s %s; building %s', route, CONFIG_KEY,
                    boosted.get('bevboost_applied'), target.__name__)
        return target.from_cfg(boosted)
    if isinstance(cfg, (dict, Config)) and _kit_written(cfg):
        # a config the kit wrote, launched with flags that may change its recipe
        from bevboost.engine.recipe_check import reconcile_launch
        cfg = copy.deepcopy(_as_config(cfg))
        reconcile_launch(cfg)
        check_strategy(cfg, cls)
        if cfg.get('runner_type'):
            # it names the runner its boosts need (shm: ShmRingRunner); Runner.from_cfg
            # would ignore that and fail on the boosted dataloader
            target = _runner_class(cfg, cls, None)
            if target is not cls:
                return target.from_cfg(cfg)
    return _original_from_cfg[base](cls, cfg)


def _kit_written(cfg) -> bool:
    """A config the kit wrote: boosted (``bevboost_applied``), planned (``bevboost_recipe``)
    or LR-scaled (``optim_wrapper.lr_scaling``)."""
    return cfg.get(APPLIED_KEY) is not None or bool(cfg.get('bevboost_recipe')) or \
        bool((cfg.get('optim_wrapper') or {}).get('lr_scaling'))


def _refusing_unapplied_init(self, *args, **kwargs):
    """``__init__`` that stops when the config's ``bevboost_boosts`` was not applied."""
    base = next(b for b in type(self).__mro__ if b in _original_init)
    bound = _init_signature[base].bind_partial(self, *args, **kwargs)
    cfg = bound.arguments.get('cfg')
    if isinstance(cfg, (dict, Config)) and cfg.get(CONFIG_KEY):
        name = type(self).__name__
        raise ValueError(
            f'{CONFIG_KEY} = {dict(cfg[CONFIG_KEY])!r} reached {name}.__init__ unapplied: this '
            f'runner was built without mmengine\'s {base.__name__}.from_cfg (the route that '
            f'applies boosts): {name}.from_cfg does not call it, or the runner was built as '
            f'{name}(cfg=...). Fix: write the boosted config with `bevboost boost CONFIG --out '
            f'boosted.py` and train that file, or call super().from_cfg(cfg) in {name}.from_cfg')
    _original_init[base](self, *args, **kwargs)


def _runner_class(cfg: Config, called_on: type, asked: str | None) -> type:
    """The runner class a boosted config needs (``runner_type``), given the route's class.

    ``asked`` is the config's own ``runner_type`` before the boosts: like mmengine,
    ``Runner.from_cfg`` ignores a user's runner_type that is not a subclass of the
    route's class, but a runner_type a boost set (``shm``) must be honoured.
    """
    from mmengine.registry import RUNNERS
    wanted = cfg.get('runner_type')
    if not wanted or wanted == called_on.__name__:
        return called_on
    target = RUNNERS.get(wanted)
    if target is not None and issubclass(target, called_on):
        return target
    if wanted == asked:
        return called_on
    raise ValueError(f'the boosts need runner_type {wanted!r}, which is not a '
                     f'{called_on.__name__} subclass')


def check_strategy(cfg: Config, runner_class: type) -> None:
    """Under mmengine's ``FlexibleRunner``, refuse boosts whose card does not list the
    config's strategy (``shm`` needs a Runner; optimizer boosts need DDP or one device)."""
    from mmengine.runner import FlexibleRunner
    from bevboost.boosts import get_boost
    if not issubclass(runner_class, FlexibleRunner):
        return
    strategy = cfg.get('strategy') or {}
    kind = strategy.get('type') if isinstance(strategy, dict) else type(strategy).__name__
    kind = getattr(kind, '__name__', kind) or 'SingleDeviceStrategy'
    refused = [name for name in cfg.get(APPLIED_KEY) or []
               if '*' not in get_boost(name).card.strategies
               and kind not in get_boost(name).card.strategies]
    if refused:
        works = {n: list(get_boost(n).card.strategies) or ['none (needs mmengine Runner)']
                 for n in refused}
        raise ValueError(f'boost(s) {refused} do not work under {runner_class.__name__} with '
                         f'strategy {kind} (they work under: {works}; docs/engine.md). Fix: '
                         'drop them, or train with runner_type Runner')


def install_config_boosts_route() -> bool:
    """Wrap ``from_cfg`` of mmengine's ``Runner`` and ``FlexibleRunner`` so ``bevboost_boosts``
    takes effect and kit-written configs keep their recipe under launch flags, and their
    ``__init__`` so a runner built past ``from_cfg`` with ``bevboost_boosts`` still in its
    config stops.

    Idempotent. Returns False (and logs an error) when this mmengine's
    ``from_cfg`` is not the ``classmethod(cls, cfg)`` the wrapper was written
    for; ``tests/dropin/test_launch_routes.py`` fails loudly then.
    """
    from mmengine.runner import FlexibleRunner, Runner
    ok = True
    for runner_class in (Runner, FlexibleRunner):
        current = runner_class.__dict__.get('from_cfg')
        func = getattr(current, '__func__', None)
        if func is _boosting_from_cfg:
            continue
        if not isinstance(current, classmethod) or \
                list(inspect.signature(func).parameters) != ['cls', 'cfg'] or \
                'cfg' not in inspect.signature(runner_class.__init__).parameters:
            logger.error('mmengine %s.from_cfg is not classmethod(cls, cfg), or its __init__ '
                         'takes no cfg, in this mmengine; %s in configs will not be applied by '
                         'tools/train.py', runner_class.__name__, CONFIG_KEY)
            ok = False
            continue
        _original_from_cfg[runner_class] = func
        _original_init[runner_class] = runner_class.__init__
        _init_signature[runner_class] = inspect.signature(runner_class.__init__)
        runner_class.from_cfg = classmethod(_boosting_from_cfg)
        runner_class.__init__ = functools.wraps(runner_class.__init__)(_refusing_unapplied_init)
    return ok
