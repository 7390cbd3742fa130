"""``compile``: ``torch.compile`` through mmengine's own ``compile`` key, optionally scoped.

Whole model (``compile=model``; the default for models without an
``img_backbone``): sets ``cfg.compile`` and lets mmengine's ``Runner.train``
compile ``model.train_step`` as it always does. mmengine has no scope, so a
scoped compile (``compile=backbone``, the default for camera detectors, or
``compile=img_backbone/img_neck``) leaves ``cfg.compile`` unset and compiles
the named submodules' forward in place at ``before_train``
(:func:`~bevboost.seams.torch_compat.compile_in_place`; ``nn.Module.compile`` traces
nothing of an ``nn.Sequential`` on torch 2.13): parameter names and checkpoints stay as
they are (no ``_orig_mod.`` prefix), and the data samples, the Hungarian matcher's CPU
work and the head's box-count-dependent shapes stay outside the graphs (with torch 2.13 and
mmengine 0.10.7 the whole PETRv2 train_step does not compile: dynamo fails on
``Det3DDataSample.set_metainfo`` deep-copying numpy metadata). Either way
:class:`CompileTimingHook` logs the first iteration (compilation included)
apart from the steady-state step time.
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
from mmengine.registry import HOOKS, OPTIMIZERS

from bevboost.boosts import Boost, BoostCard, BoostNotInEffect, add_custom_hook, register_boost
from bevboost.compute._common import log, module_names, submodules
from bevboost.seams.torch_compat import (check_compile_train_step, compile_in_place,
                                         dynamo_graph_count, eager_runs, is_compiled_in_place)

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


def _scope(modules: Any, cfg: Config) -> tuple[str, ...] | None:
    """None for the whole model, else the submodule names.

    ``None`` (default): the backbone scope when the model config has an
    ``img_backbone``, else the whole model.
    """
    model = cfg.get('model')
    model_keys = set(model) if isinstance(model, dict) else set()
    if modules is None:
        modules = 'backbone' if BACKBONE_SCOPE[0] in model_keys else WHOLE_MODEL
        if modules == 'backbone':
            log('compile: camera detector: compiling its backbone and neck (the whole '
                'train_step breaks on the data samples; compile=model forces it)')
    if modules == WHOLE_MODEL:
        return None
    if modules == 'backbone':
        if BACKBONE_SCOPE[0] not in model_keys:
            raise ValueError(f'compile: the model config has no {BACKBONE_SCOPE[0]!r} for '
                             f'compile=backbone; name the submodules (compile=a/b) or use '
                             f'compile=model')
        return tuple(n for n in BACKBONE_SCOPE if n in model_keys)
    return module_names(modules, option='modules', boost='compile')


def is_compiled_function(fn: Callable) -> bool:
    """True for what ``torch.compile(fn)`` returns, also behind wrappers that set
    ``__wrapped__`` (measurement timers); the one place that reads dynamo's marker."""
    for _ in range(8):
        if getattr(fn, '_torchdynamo_orig_callable', None) is not None:
            return True
        fn = getattr(fn, '__wrapped__', None)
        if fn is None:
            return False
    return False


def is_compiled_module(module: torch.nn.Module) -> bool:
    """True after ``module.compile()`` or the scoped compile (marked only: whether dynamo
    traced it shows in :func:`~bevboost.seams.torch_compat.eager_runs`)."""
    return is_compiled_in_place(module)


def ran_eagerly(modules: dict[str, torch.nn.Module]) -> dict[str, int]:
    """name -> calls that ran eagerly, for the scoped-compiled modules that did."""
    return {n: runs for n, m in modules.items() if (runs := eager_runs(m) or 0) > 0}


def _check_optimizer_compiles(cfg: Config) -> None:
    """Refuse ``compile=model`` where this torch's dynamo cannot compile the optimizer step."""
    wrapper = cfg.get('optim_wrapper')
    opt = wrapper.get('optimizer') if isinstance(wrapper, dict) else None
    if not isinstance(opt, dict):
        return
    kind = opt.get('type')
    if isinstance(kind, str):
        kind = OPTIMIZERS.get(kind)
    check_compile_train_step(kind if isinstance(kind, type) else None, opt)


def apply_compile(cfg: Config, modules: str | Sequence[str] | None = None,
                  **compile_kwargs: Any) -> None:
    """Whole model through ``cfg.compile``; named submodules through :class:`CompileTimingHook`.

    Args:
        modules: ``'model'`` (mmengine compiles ``train_step``), ``'backbone'``
            (``img_backbone`` and ``img_neck``), submodule names, or None
            (``'backbone'`` for camera detectors, else ``'model'``).
        **compile_kwargs: ``torch.compile`` options (``backend``, ``mode``,
            ``dynamic``, ...).
    """
    kwargs = _compile_kwargs(compile_kwargs)
    scope = _scope(modules, cfg)
    if scope is None:
        _check_optimizer_compiles(cfg)
        cfg.compile = kwargs or True
    else:
        if cfg.get('compile'):
            raise ValueError('compile: the config already compiles the whole train_step '
                             f'(compile={cfg.compile!r}); a scoped compile of {list(scope)} would '
                             'compile those modules twice. Drop one of the two.')
    add_custom_hook(cfg, dict(type='CompileTimingHook',
                              modules=None if scope is None else list(scope),
                              compile_cfg=None if scope is None else kwargs))


@HOOKS.register_module()
class CompileTimingHook(Hook):
    """Compiles the named submodules (scoped compile) and logs compile vs steady-state time.

    The scoped compile goes through :func:`~bevboost.seams.torch_compat.compile_in_place`
    (``nn.Module.compile`` leaves torch's own containers, ``nn.Sequential``, untraced on
    torch 2.13). After the first iteration a compiled module that ran eagerly (dynamo
    disabled, failing, out of recompiles) stops the run with :class:`BoostNotInEffect`.

    Args:
        modules: submodule names to compile in place; None
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
        #: graphs dynamo captured from before_train to the end of the first iteration
        #: (0 where all came from dynamo's cache, as for a second run in one process)
        self.first_iter_graphs: int | None = None
        self._graphs_before = 0
        self.steady_iter_s: list[float] = []

    def before_train(self, runner) -> None:
        self._graphs_before = dynamo_graph_count()
        if self.modules is None:
            return
        for name, module in submodules(runner.model, self.modules, boost='compile').items():
            compile_in_place(module, **self.compile_cfg)
        log(f'compile: compiled {list(self.modules)} in place (as nn.Module.compile) '
            f'{self.compile_cfg or "(defaults)"}; the first iteration compiles them')

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._iter_start = time.perf_counter()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        elapsed = time.perf_counter() - self._iter_start
        if self.first_iter_s is None:
            self.first_iter_s = elapsed
            runner.message_hub.update_info('compile/first_iter_s', elapsed)
            self.first_iter_graphs = dynamo_graph_count() - self._graphs_before
            if self.modules is not None:
                eager = ran_eagerly(submodules(runner.model, self.modules, boost='compile'))
                if eager:
                    raise BoostNotInEffect(
                        f'compile: {eager} ran eagerly in the first iteration (calls outside '
                        "dynamo's compiled code: dynamo disabled, e.g. TORCHDYNAMO_DISABLE=1, "
                        'or it failed to compile them; see the log above)')
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
        # mmengine's whole-model route; aot_eager keeps the contract fast (inductor: tests/compute)
        contract_options=dict(modules='model', backend='aot_eager'), step_ratio_limit=1.4,
        fragment='compile.py', docs='docs/compute.md#the-cards',
        summary='torch.compile: the whole train_step through mmengine\'s `compile` key '
                '(compile=model), or named submodules (compile=backbone: img_backbone + '
                'img_neck, the default for camera detectors)',
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
        hook = next((h for h in runner.hooks if isinstance(h, CompileTimingHook)), None)
        if hook is None and not runner.cfg.get('compile'):
            raise BoostNotInEffect("compile: neither mmengine's `compile` key nor "
                                   'CompileTimingHook is on this runner')
        scope = None if hook is None else hook.modules
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
        eager = ran_eagerly(found)
        if eager:
            raise BoostNotInEffect(f"compile: {eager} ran eagerly (calls outside dynamo's "
                                   'compiled code)')
        if hook.first_iter_s is None:
            return f'compiled {list(scope)} in place (traced at the first iteration)'
        return (f'compiled {list(scope)} in place: no eager call; {hook.first_iter_graphs} '
                'graph(s) captured in the first iteration')
