"""``compile``: ``torch.compile`` through mmengine's own ``compile`` key, optionally scoped.

Whole model (``compile`` or ``compile=model``): sets ``cfg.compile`` and lets
mmengine's ``Runner.train`` compile ``model.train_step`` as it always does.
mmengine has no scope, so a scoped compile (``compile=backbone`` or
``compile=img_backbone/img_neck``) leaves ``cfg.compile`` unset and compiles
the named submodules in place with ``nn.Module.compile`` at ``before_train``:
parameter names and checkpoints stay as they are (no ``_orig_mod.`` prefix),
and the Hungarian matcher's CPU work and the head's box-count-dependent shapes
stay outside the graphs. Either way :class:`CompileTimingHook` logs the first
iteration (compilation included) apart from the steady-state step time.
"""
from __future__ import annotations

import inspect
import shutil
import statistics
import time
from typing import Any, Callable, Sequence

import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from bevboost.boosts import Boost, BoostCard, BoostNotInEffect, add_custom_hook, register_boost
from bevboost.compute._common import check_model_config_has, log, module_names, submodules

#: ``compile=backbone``: the camera backbone and neck, as mmdet3d detectors name them
BACKBONE_SCOPE = ('img_backbone', 'img_neck')
WHOLE_MODEL = 'model'
#: steady-state iterations averaged for the compile-time log line
STEADY_ITERS = 5


def _compile_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    allowed = set(inspect.signature(torch.compile).parameters) - {'model'}
    bad = sorted(set(options) - allowed)
    if bad:
        raise ValueError(f'compile: unknown torch.compile option(s) {bad}; '
                         f'torch.compile takes {sorted(allowed)}')
    return dict(options)


def _scope(modules: Any) -> tuple[str, ...] | None:
    """None for the whole model, else the submodule names."""
    if modules is None or modules == WHOLE_MODEL:
        return None
    if modules == 'backbone':
        return BACKBONE_SCOPE
    return module_names(modules, option='modules', boost='compile')


def is_compiled_function(fn: Callable) -> bool:
    """True for what ``torch.compile(fn)`` returns (the one place that reads dynamo's marker)."""
    return getattr(fn, '_torchdynamo_orig_callable', None) is not None


def is_compiled_module(module: torch.nn.Module) -> bool:
    """True after ``module.compile()`` (the one place that reads nn.Module's private slot)."""
    return getattr(module, '_compiled_call_impl', None) is not None


def apply_compile(cfg: Config, modules: str | Sequence[str] | None = None,
                  **compile_kwargs: Any) -> None:
    """Whole model through ``cfg.compile``; named submodules through :class:`CompileTimingHook`.

    Args:
        modules: ``None``/``'model'`` (mmengine compiles ``train_step``),
            ``'backbone'`` (``img_backbone`` and ``img_neck``) or submodule names.
        **compile_kwargs: ``torch.compile`` options (``backend``, ``mode``,
            ``dynamic``, ...).
    """
    scope = _scope(modules)
    kwargs = _compile_kwargs(compile_kwargs)
    if scope is None:
        cfg.compile = kwargs or True
    else:
        if cfg.get('compile'):
            raise ValueError('compile: the config already compiles the whole train_step '
                             f'(compile={cfg.compile!r}); a scoped compile of {list(scope)} would '
                             'compile those modules twice. Drop one of the two.')
        if scope == BACKBONE_SCOPE:
            check_model_config_has(cfg, scope, boost='compile')
    add_custom_hook(cfg, dict(type='CompileTimingHook',
                              modules=None if scope is None else list(scope),
                              compile_cfg=None if scope is None else kwargs))


@HOOKS.register_module()
class CompileTimingHook(Hook):
    """Compiles the named submodules (scoped compile) and logs compile vs steady-state time.

    Args:
        modules: submodule names to compile with ``nn.Module.compile``; None
            when mmengine's ``compile`` key compiles the whole ``train_step``.
        compile_cfg: ``torch.compile`` options for the scoped compile.
    """

    priority = 'VERY_HIGH'

    def __init__(self, modules: Sequence[str] | None = None, compile_cfg: dict | None = None):
        self.modules = None if modules is None else module_names(
            modules, option='modules', boost='compile')
        self.compile_cfg = _compile_kwargs(dict(compile_cfg or {}))
        self._iter_start = 0.0
        self.first_iter_s: float | None = None
        self.steady_iter_s: list[float] = []

    def before_train(self, runner) -> None:
        if self.modules is None:
            return
        for name, module in submodules(runner.model, self.modules, boost='compile').items():
            module.compile(**self.compile_cfg)
        log(f'compile: compiled {list(self.modules)} with nn.Module.compile '
            f'{self.compile_cfg or "(defaults)"}; the first iteration compiles them')

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._iter_start = time.perf_counter()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        elapsed = time.perf_counter() - self._iter_start
        if self.first_iter_s is None:
            self.first_iter_s = elapsed
            runner.message_hub.update_info('compile/first_iter_s', elapsed)
            return
        if len(self.steady_iter_s) < STEADY_ITERS:
            self.steady_iter_s.append(elapsed)
            if len(self.steady_iter_s) == STEADY_ITERS:
                steady = statistics.median(self.steady_iter_s)
                runner.message_hub.update_info('compile/steady_iter_s', steady)
                log(f'compile: first iteration {self.first_iter_s:.2f} s (compilation '
                    f'included), steady-state median {steady * 1e3:.1f} ms/iter over the '
                    f'next {STEADY_ITERS}')


def _has_cxx_compiler() -> bool:
    return any(shutil.which(c) for c in ('g++', 'c++', 'clang++'))


@register_boost
class CompileBoost(Boost):
    card = BoostCard(
        name='compile',
        summary='torch.compile: the whole train_step through mmengine\'s `compile` key, or only '
                'named submodules (compile=backbone: img_backbone + img_neck)',
        changes=('compile', 'custom_hooks'),
        expected_effect='GPU: fused kernels, typically 1.1-1.5x on conv backbones (unmeasured '
                        'here); CPU: see docs/compute.md; the first iteration pays the '
                        'compilation (tens of seconds to minutes)',
        exact=True, requires=(), order=60)
    primary_option = 'modules'

    def apply(self, cfg: Config, **options: Any) -> None:
        apply_compile(cfg, **options)

    def unavailable_reason(self, **options: Any) -> str | None:
        backend = options.get('backend', 'inductor')
        if backend == 'inductor' and not torch.cuda.is_available() and not _has_cxx_compiler():
            return 'requires: [a C++ compiler (g++) for torch.compile on CPU]'
        return None

    def verify(self, runner: Any, **options: Any) -> str:
        scope = _scope(options.get('modules'))
        if scope is None:
            if not is_compiled_function(runner.model.train_step):
                raise BoostNotInEffect(
                    'compile: model.train_step is not compiled (mmengine compiles it in '
                    'Runner.train from the `compile` key, just before the first iteration)')
            return f'train_step compiled by mmengine ({runner.cfg.get("compile")})'
        found = submodules(runner.model, scope, boost='compile')
        plain = [n for n, m in found.items() if not is_compiled_module(m)]
        if plain:
            raise BoostNotInEffect(f'compile: {plain} not compiled (CompileTimingHook '
                                   'compiles them at before_train)')
        return f'compiled {list(scope)} (nn.Module.compile)'
