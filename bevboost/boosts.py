"""One optimization = one boost: a config transform with a card.

A boost is switched on by name from configs (the ``bevboost_boosts`` dict that
``configs/_base_/boosts/*.py`` fragments merge into), from the CLI
(``bevboost boost``, ``bevboost bench --variants``) and from tests. Each boost
module defines a pure ``apply_<name>(cfg, **options)`` function and a thin
:class:`Boost` adapter registered here with :func:`register_boost`.

Variant strings are ``name``, ``name=value`` (``accum=4``, ``amp=fp16``; the
value goes to the boost's primary option) and any number of ``:key=value``
options after it (``accum=2:per_gpu_batch=1``, ``lr-scale:reference_batch=16``).
Values are read as Python literals (``1``, ``0.5``, ``True``, ``[1, 2]``),
anything else as a string. The same syntax works in ``bevboost boost --with``,
``bevboost train --boosts`` and ``bevboost bench --variants``.

Every config :func:`apply_boosts` returns is self-sufficient: it imports
``bevboost`` (and what the boosts' cards list in ``imports``) through its own
``custom_imports`` and carries a ``BoostReportHook`` that checks on the built
runner that each boost is in effect (:meth:`Boost.verify`).
"""
from __future__ import annotations

import ast
import copy
import dataclasses
import logging
import importlib
from typing import Any, ClassVar, Iterable, Mapping

from mmengine.config import Config

logger = logging.getLogger(__name__)

#: config key that fragments merge boost options into
CONFIG_KEY = 'bevboost_boosts'
#: config key listing the boosts a config was rewritten with
APPLIED_KEY = 'bevboost_applied'
#: the hook that reports (and checks) the boosts on the built runner
REPORT_HOOK = 'BoostReportHook'


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
        imports: modules besides ``bevboost`` a boosted config must import
            (e.g. a plugin that registers a transform the boost inserts).
        strategies: the mmengine ``FlexibleRunner`` strategies it works under
            (``'*'``: any); under another strategy the build is refused by name.
        contract_options: the options the contract test trains it with.
        contract_model: what the contract test trains it on: ``'toy'`` (the
            toy regressor), ``'toy-backbone'`` (the toy on a backbone with a
            ``with_cp`` switch), ``'camera'`` (a 6-camera model with mmdet3d's stock
            loader + resize) or ``'camera-own-loader'`` (the user's own loader).
        tooling: it measures rather than optimizes (left out of ``bench
            --variants all`` and of the speed benchmarks).
        step_ratio_limit: the toy train step's time ratio with it on that the
            benchmark holds (None: the general limit).
        fragment: its one-file ``configs/_base_/boosts/`` fragment (None: no
            fragment, ``no_fragment_reason`` says why).
        no_fragment_reason: why it has no fragment.
        docs: where it is documented (``page.md#anchor``).
    """
    name: str
    summary: str
    changes: tuple[str, ...]
    expected_effect: str
    exact: bool = True
    requires: tuple[str, ...] = ()
    order: int = 50
    imports: tuple[str, ...] = ()
    strategies: tuple[str, ...] = ('SingleDeviceStrategy', 'DDPStrategy')
    contract_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    contract_model: str = 'toy'
    tooling: bool = False
    step_ratio_limit: float | None = None
    fragment: str | None = None
    no_fragment_reason: str = ''
    docs: str = ''

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


def find_hooks(runner: Any, type_name: str) -> list[Any]:
    """The runner's hooks whose class is named ``type_name``."""
    return [h for h in runner.hooks if type(h).__name__ == type_name]


def require_hook(runner: Any, type_name: str) -> Any:
    """The runner's ``type_name`` hook; :class:`BoostNotInEffect` when it has none."""
    found = find_hooks(runner, type_name)
    if not found:
        raise BoostNotInEffect(f'no {type_name} among the runner hooks '
                               f'({", ".join(type(h).__name__ for h in runner.hooks)})')
    return found[0]


def train_pipeline_transforms(runner: Any) -> list[Any]:
    """The transform objects of the built train dataset (through dataset wrappers)."""
    dataset = runner.train_dataloader.dataset
    while not hasattr(dataset, 'pipeline') and hasattr(dataset, 'dataset'):
        dataset = dataset.dataset  # RepeatDataset, CBGSDataset, ...
    pipeline = getattr(dataset, 'pipeline', None)
    # measurement wraps transforms in timers (``__wrapped__``): report what they wrap
    return [getattr(t, '__wrapped__', t) for t in getattr(pipeline, 'transforms', None) or []]


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


#: the modules that define the built-in boosts (one boost each); a new boost is listed here
BUILTIN_BOOST_MODULES = (
    'bevboost.engine.accumulation',
    'bevboost.engine.amp',
    'bevboost.engine.lr_scaling',
    'bevboost.engine.nonfinite',
    'bevboost.data.boost_fast_decode',
    'bevboost.data.boost_dali',
    'bevboost.data.boost_shm',
    'bevboost.profiling.boost_measure',
    'bevboost.profiling.boost_profile',
    'bevboost.compute.compile_model',
    'bevboost.compute.fused_optim',
    'bevboost.compute.channels_last',
    'bevboost.compute.loader',
    'bevboost.compute.checkpointing',
)


def _ensure_builtin_boosts() -> None:
    for module in BUILTIN_BOOST_MODULES:
        importlib.import_module(module)


def tooling_boosts() -> frozenset[str]:
    """Boosts that measure rather than optimize (their card's ``tooling``)."""
    return frozenset(name for name, b in available_boosts().items() if b.card.tooling)


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


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    """``'accum=2:per_gpu_batch=1'`` -> ``('accum', {'counts': '2', 'per_gpu_batch': 1})``.

    Validates the boost name and the ``key=value`` form of every option;
    whether a boost accepts an option is its ``apply``'s business.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f'empty boost name in {spec!r}')
    head, *extras = spec.strip().split(':')
    name, sep, value = head.partition('=')
    boost = get_boost(name.strip())
    options = boost.parse_value(value.strip()) if sep else {}
    for extra in extras:
        key, sep, raw = extra.partition('=')
        key = key.strip()
        if not sep or not key.isidentifier() or not raw.strip():
            raise ValueError(f'boost option {extra!r} in {spec!r} must look like key=value '
                             f'(e.g. {boost.card.name}:option=1)')
        if key in options:
            raise ValueError(f'boost option {key!r} given twice in {spec!r}')
        options[key] = _literal(raw.strip())
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


def _import_list(cfg: Config) -> list[str]:
    imports = (cfg.get('custom_imports') or {}).get('imports') or []
    return [imports] if isinstance(imports, str) else list(imports)


def make_self_sufficient(cfg: Config, applied: dict[str, dict[str, Any]]) -> None:
    """Make a boosted ``cfg`` (in place) import what it needs and check it at start.

    Adds ``bevboost`` and the modules the applied boosts' cards list to the
    config's own ``custom_imports`` (so ``tools/train.py`` alone can build it)
    and a ``BoostReportHook`` carrying the boosts and their options, which
    verifies them on the built runner before the first iteration.
    """
    if not applied:
        return
    imports = _import_list(cfg)
    for name in applied:
        for module in ('bevboost',) + get_boost(name).card.imports:
            if module not in imports:
                imports.append(module)
    custom = dict(cfg.get('custom_imports') or {})
    custom['imports'] = imports
    custom.setdefault('allow_failed_imports', False)
    cfg['custom_imports'] = custom
    hooks = [h for h in (cfg.get('custom_hooks') or []) if h.get('type') != REPORT_HOOK]
    hooks.append(dict(type=REPORT_HOOK, boosts={k: dict(v) for k, v in applied.items()}))
    cfg['custom_hooks'] = hooks


def apply_boosts(cfg: Config,
                 requested: dict[str, dict[str, Any]] | Iterable[str] = (),
                 *, from_config: bool = True) -> Config:
    """Return a copy of ``cfg`` with the boosts applied, in card order.

    The copy is self-sufficient (:func:`make_self_sufficient`).

    Args:
        cfg: the config to boost (left unchanged).
        requested: variant strings (``['amp', 'accum=4']``) or a dict of
            name -> options.
        from_config: also apply what ``cfg.bevboost_boosts`` asks for.
    """
    if isinstance(requested, dict):
        wanted = {get_boost(k).card.name: dict(v or {}) for k, v in requested.items()}
    else:
        wanted = {}
        for spec in requested:
            name, options = parse_variant(spec)
            if name in wanted:  # 'amp=bf16,amp=fp16': refuse rather than let the last win
                raise ValueError(f'boost {name!r} given twice ({spec!r} repeats it); '
                                 'give each boost once')
            wanted[name] = options
    cfg = copy.deepcopy(cfg)
    if from_config:
        wanted = {**boosts_in_config(cfg), **wanted}
    applied: dict[str, dict[str, Any]] = {}
    for name, boost in available_boosts().items():
        if name not in wanted:
            continue
        boost.apply(cfg, **copy.deepcopy(wanted[name]))
        applied[name] = wanted[name]
        logger.info('applied boost %s %s', name, wanted[name] or '')
    if from_config and CONFIG_KEY in cfg:
        cfg.pop(CONFIG_KEY)
    if applied or cfg.get(APPLIED_KEY):
        from bevboost.engine.recipe_check import reconcile_launch
        reconcile_launch(cfg)  # auto_scale_lr and batch overrides keep the recipe
    make_self_sufficient(cfg, applied)
    # a config boosted before keeps the names of what was applied then
    cfg[APPLIED_KEY] = list(dict.fromkeys([*(cfg.get(APPLIED_KEY) or []), *applied]))
    return cfg
