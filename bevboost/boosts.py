"""One optimization = one boost: a config transform with a card.

A boost is switched on by name from configs (the ``bevboost_boosts`` dict that
``configs/_base_/boosts/*.py`` fragments merge into), from the CLI
(``bevboost boost``, ``bevboost bench --variants``) and from tests. Each boost
module defines a pure ``apply_<name>(cfg, **options)`` function and a thin
:class:`Boost` adapter registered here with :func:`register_boost`.

Variant strings are ``name`` or ``name=value`` (``accum=4``, ``amp=fp16``);
the value goes to the boost's primary option.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any, ClassVar, Iterable

from mmengine.config import Config

logger = logging.getLogger(__name__)

#: config key that fragments merge boost options into
CONFIG_KEY = 'bevboost_boosts'


@dataclasses.dataclass(frozen=True)
class BoostCard:
    """Machine-readable description of a boost.

    Attributes:
        name: the name configs and the CLI use.
        summary: one line saying what it does.
        changes: config keys it touches.
        expected_effect: what a user should expect (speed, memory).
        exact: True when training math is unchanged (up to float rounding);
            False when it trades accuracy for speed.
        requires: what it needs to run: ``'cuda'`` or import names.
        order: where it applies relative to other boosts (low first).
    """
    name: str
    summary: str
    changes: tuple[str, ...]
    expected_effect: str
    exact: bool = True
    requires: tuple[str, ...] = ()
    order: int = 50

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Boost:
    """Adapter base: subclasses set ``card`` and ``primary_option``."""

    card: ClassVar[BoostCard]
    #: option that ``name=value`` sets (None: the boost takes no value)
    primary_option: ClassVar[str | None] = None

    def parse_value(self, value: str) -> dict[str, Any]:
        """Turn the ``value`` of a ``name=value`` variant into options."""
        if self.primary_option is None:
            raise ValueError(
                f'boost {self.card.name!r} takes no value, got {value!r}')
        return {self.primary_option: value}

    def apply(self, cfg: Config, **options: Any) -> None:
        """Change ``cfg`` in place."""
        raise NotImplementedError

    def verify(self, runner: Any, **options: Any) -> str:
        """Say what of this boost is in effect on a built ``runner``, in a few words.

        Looks at the real objects (optimizer wrapper, loops, dataloader,
        pipeline transforms, hooks), never at the config. Returns the verdict
        for the start-of-training log line (e.g. ``'BoostAmpOptimWrapper
        bfloat16'``); raises :class:`BoostNotInEffect` when the boost is not
        doing what its card says. Subclasses override it.
        """
        raise NotImplementedError(f'boost {self.card.name!r} has no verify()')

    def unavailable_reason(self, **options: Any) -> str | None:
        """Why this boost cannot run on this machine, or None when it can."""
        from bevboost._optional import missing_requirements
        missing = missing_requirements(*self.card.requires)
        return f"requires: [{' + '.join(missing)}]" if missing else None


class BoostNotInEffect(RuntimeError):
    """A boost that was asked for is not in effect on the built runner."""


_BOOSTS: dict[str, Boost] = {}


def register_boost(cls: type[Boost]) -> type[Boost]:
    """Class decorator registering a boost under ``cls.card.name``."""
    name = cls.card.name
    if name in _BOOSTS and type(_BOOSTS[name]) is not cls:
        raise KeyError(f'boost {name!r} is already registered')
    _BOOSTS[name] = cls()
    return cls


def config_entry(cfg: Config, key: str, default: Any) -> Any:
    """``cfg[key]``, created as ``default`` when missing, mutable in place.

    (``Config.setdefault`` returns a detached copy, so appends to it are lost.)
    """
    if cfg.get(key) is None:
        cfg[key] = default
    return cfg[key]


def add_custom_hook(cfg: Config, hook: dict[str, Any]) -> None:
    """Append ``hook`` to ``cfg.custom_hooks`` unless a hook of its type is there."""
    hooks = config_entry(cfg, 'custom_hooks', [])
    if not any(h.get('type') == hook['type'] for h in hooks):
        hooks.append(hook)


def _ensure_builtin_boosts() -> None:
    # Importing the package registers the built-in boosts.
    import bevboost  # noqa: F401


def available_boosts() -> dict[str, Boost]:
    """All registered boosts by name, in application order."""
    _ensure_builtin_boosts()
    return dict(sorted(_BOOSTS.items(), key=lambda kv: (kv[1].card.order, kv[0])))


def get_boost(name: str) -> Boost:
    boosts = available_boosts()
    if name not in boosts:
        raise ValueError(
            f'unknown boost {name!r}; known boosts: {", ".join(boosts)}')
    return boosts[name]


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    """``'accum=4'`` -> ``('accum', {'counts': '4'})``; validates the name."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f'empty boost name in {spec!r}')
    name, sep, value = spec.strip().partition('=')
    boost = get_boost(name.strip())
    options = boost.parse_value(value.strip()) if sep else {}
    return boost.card.name, options


def boosts_in_config(cfg: Config) -> dict[str, dict[str, Any]]:
    """The boosts a config asks for through its ``bevboost_boosts`` key."""
    requested = cfg.get(CONFIG_KEY) or {}
    if not isinstance(requested, dict):
        raise TypeError(
            f'{CONFIG_KEY} must be a dict of boost name -> options, '
            f'got {type(requested).__name__}')
    out = {}
    for name, options in requested.items():
        boost = get_boost(name.replace('_', '-'))
        out[boost.card.name] = dict(options or {})
    return out


def apply_boosts(cfg: Config,
                 requested: dict[str, dict[str, Any]] | Iterable[str] = (),
                 *, from_config: bool = True) -> Config:
    """Return a copy of ``cfg`` with the boosts applied, in card order.

    Args:
        cfg: the config to boost (left unchanged).
        requested: variant strings (``['amp', 'accum=4']``) or a dict of
            name -> options.
        from_config: also apply what ``cfg.bevboost_boosts`` asks for.
    """
    if isinstance(requested, dict):
        wanted = {get_boost(k).card.name: dict(v or {}) for k, v in requested.items()}
    else:
        wanted = dict(parse_variant(spec) for spec in requested)
    cfg = copy.deepcopy(cfg)
    if from_config:
        wanted = {**boosts_in_config(cfg), **wanted}
    applied = []
    for name, boost in available_boosts().items():
        if name not in wanted:
            continue
        boost.apply(cfg, **wanted[name])
        applied.append(name)
        logger.info('applied boost %s %s', name, wanted[name] or '')
    if CONFIG_KEY in cfg:
        cfg.pop(CONFIG_KEY)
    cfg['bevboost_applied'] = applied
    return cfg
