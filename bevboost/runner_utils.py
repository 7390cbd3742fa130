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
import logging
from pathlib import Path
from typing import Any, Iterable

from mmengine.config import Config, DictAction  # noqa: F401  (DictAction re-exported for CLIs)

from bevboost.boosts import APPLIED_KEY, CONFIG_KEY, apply_boosts
from bevboost.verify import BoostReportHook  # noqa: F401  (registered; kit configs name it)

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


# --- the launch routes: what the kit does when Runner/FlexibleRunner.from_cfg is called ---
# (the wrapping itself lives in bevboost.seams.mmengine_runner)


def _as_config(cfg) -> Config:
    return cfg if isinstance(cfg, Config) else Config(dict(cfg))


def _boosting_from_cfg(cls, cfg):
    """``<Runner|FlexibleRunner>.from_cfg`` that first applies a config's ``bevboost_boosts``
    and reconciles a kit-written config with the launch flags (``auto_scale_lr``, batch)."""
    from bevboost.seams.mmengine_runner import original_from_cfg
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
    return original_from_cfg(cls, cfg)


def _kit_written(cfg) -> bool:
    """A config the kit wrote: boosted (``bevboost_applied``), planned (``bevboost_recipe``)
    or LR-scaled (``optim_wrapper.lr_scaling``)."""
    return bool(cfg.get(APPLIED_KEY)) or bool(cfg.get('bevboost_recipe')) or \
        bool((cfg.get('optim_wrapper') or {}).get('lr_scaling'))


def _refuse_unapplied(runner, arguments: dict) -> None:
    """A runner's ``__init__`` stops when the config's ``bevboost_boosts`` was not applied."""
    from bevboost.seams.mmengine_runner import wrapped_base_name
    cfg = arguments.get('cfg')
    if isinstance(cfg, (dict, Config)) and cfg.get(CONFIG_KEY):
        name = type(runner).__name__
        raise ValueError(
            f'{CONFIG_KEY} = {dict(cfg[CONFIG_KEY])!r} reached {name}.__init__ unapplied: this '
            f'runner was built without mmengine\'s {wrapped_base_name(type(runner))}.from_cfg '
            f'(the route that applies boosts): {name}.from_cfg does not call it, or the runner '
            f'was built as {name}(cfg=...). Fix: write the boosted config with `bevboost boost '
            f'CONFIG --out boosted.py` and train that file, or call super().from_cfg(cfg) in '
            f'{name}.from_cfg')


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
    """Route ``from_cfg`` of mmengine's ``Runner`` and ``FlexibleRunner`` through the kit so
    ``bevboost_boosts`` takes effect and kit-written configs keep their recipe under launch
    flags, and their ``__init__`` so a runner built past ``from_cfg`` with ``bevboost_boosts``
    still in its config stops. Idempotent; False when this mmengine's shapes differ
    (``tests/seams/test_mmengine_seams.py`` fails loudly then).
    """
    from mmengine.runner import FlexibleRunner, Runner
    from bevboost.seams.mmengine_runner import install_from_cfg_hook
    return all([install_from_cfg_hook(cls, _boosting_from_cfg, _refuse_unapplied)
                for cls in (Runner, FlexibleRunner)])
