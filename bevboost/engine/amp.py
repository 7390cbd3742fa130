"""Mixed precision that also works on CPU and shows what the loss scaler does.

Builds on mmengine's :class:`AmpOptimWrapper` (its ``backward``, ``step``,
``state_dict`` and gradient-accumulation context are reused) and fixes what
it gets wrong for BEV training:

* it refuses to build without a GPU: here bf16 (and fp16, for tests) run on
  CPU through ``torch.autocast('cpu')`` and ``torch.amp.GradScaler('cpu')``;
* it logs neither the loss scale nor skipped steps: ``train/loss_scale`` and
  ``train/skipped_steps`` go to the message hub, so LoggerHook prints them at
  every logging interval;
* schedulers advance on skipped (overflow) steps: :attr:`applied_steps` counts
  only steps that changed the weights, and
  :class:`~bevboost.engine.accumulation.OptimizerStepSchedulerHook` steps
  iteration-based schedulers only when it grows;
* persistent overflow (the scale collapsing) is reported loudly;
* ``fp32_modules`` run numerically sensitive modules in float32.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Literal, Sequence

import torch
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import nn

from bevboost.boosts import Boost, BoostCard, register_boost
from bevboost.engine.fp32_guards import install_fp32_guards

logger = logging.getLogger(__name__)

AmpDtype = Literal['auto', 'float16', 'bfloat16']
_DTYPE_ALIASES = {'fp16': 'float16', 'float16': 'float16', 'half': 'float16',
                  'bf16': 'bfloat16', 'bfloat16': 'bfloat16', 'auto': 'auto'}


def resolve_dtype(dtype: str, device_type: str) -> torch.dtype:
    """``'auto'`` is bf16 where the device supports it, else fp16 (CUDA only)."""
    if not isinstance(dtype, str) or dtype.lower() not in _DTYPE_ALIASES:
        raise ValueError(f'dtype must be one of {sorted(_DTYPE_ALIASES)}, got {dtype!r}')
    name = _DTYPE_ALIASES[dtype.lower()]
    if name == 'auto':
        bf16_ok = device_type == 'cpu' or torch.cuda.is_bf16_supported()
        name = 'bfloat16' if bf16_ok else 'float16'
    return getattr(torch, name)


@OPTIM_WRAPPERS.register_module()
class BoostAmpOptimWrapper(AmpOptimWrapper):
    """AMP optimizer wrapper for CUDA and CPU with loss-scale monitoring.

    Args:
        dtype: ``'float16'`` (dynamic loss scaling), ``'bfloat16'`` (no
            scaling needed) or ``'auto'``.
        loss_scale: ``'dynamic'``, an initial scale (float) or GradScaler kwargs.
        fp32_modules: class names or qualified-name globs to run in float32.
        device_type: ``'cuda'`` or ``'cpu'``; default: CUDA when available.
        overflow_warn_after: consecutive skipped steps after which overflow is
            reported as an error in the log (a few at the start are normal
            while the scale settles).
        **kwargs: passed to :class:`mmengine.optim.OptimWrapper`
            (``optimizer``, ``accumulative_counts``, ``clip_grad``).
    """

    def __init__(self, dtype: AmpDtype = 'auto', loss_scale='dynamic',
                 fp32_modules: Sequence[str] = (), device_type: str | None = None,
                 overflow_warn_after: int = 20, **kwargs):
        # AmpOptimWrapper.__init__ asserts a GPU; build the same state here.
        OptimWrapper.__init__(self, **kwargs)
        if device_type is None:
            device_type = 'cuda' if torch.cuda.is_available() else 'cpu'
        if device_type not in ('cuda', 'cpu'):
            raise ValueError(f"device_type must be 'cuda' or 'cpu', got {device_type!r}")
        if device_type == 'cuda' and not torch.cuda.is_available():
            raise ValueError("device_type='cuda' but torch sees no CUDA device")
        if not isinstance(overflow_warn_after, int) or overflow_warn_after < 1:
            raise ValueError(f'overflow_warn_after must be a positive int, got {overflow_warn_after!r}')
        self.device_type = device_type
        self.cast_dtype = resolve_dtype(dtype, device_type)
        use_scaler = self.cast_dtype == torch.float16
        self._scale_update_param = None
        if loss_scale == 'dynamic':
            scaler_kwargs: dict = {}
        elif isinstance(loss_scale, (int, float)) and not isinstance(loss_scale, bool):
            scaler_kwargs = {'init_scale': float(loss_scale)}
            self._scale_update_param = float(loss_scale)  # static scale, as in mmengine
        elif isinstance(loss_scale, dict):
            scaler_kwargs = dict(loss_scale)
        else:
            raise TypeError(f"loss_scale must be 'dynamic', a number or a dict, got {loss_scale!r}")
        self.loss_scaler = torch.amp.GradScaler(device_type, enabled=use_scaler, **scaler_kwargs)
        if device_type == 'cpu' and use_scaler:
            logger.warning('fp16 autocast on CPU is slow and meant for testing; use bf16 on CPU')
        self.fp32_modules = list(fp32_modules)
        self.overflow_warn_after = overflow_warn_after
        self._guards_installed = not self.fp32_modules
        self.applied_steps = 0
        self.skipped_steps = 0
        self.consecutive_skips = 0

    @property
    def loss_scale(self) -> float:
        return float(self.loss_scaler.get_scale()) if self.loss_scaler.is_enabled() else 1.0

    def step(self, **kwargs) -> None:
        """Step through the scaler; count the step as applied or skipped."""
        scale_before = self.loss_scale
        super().step(**kwargs)
        # GradScaler lowers the scale exactly when it found inf/NaN and skipped.
        skipped = self.loss_scaler.is_enabled() and self.loss_scale < scale_before
        if skipped:
            self.skipped_steps += 1
            self.consecutive_skips += 1
            self._report_overflow(scale_before)
        else:
            self.applied_steps += 1
            self.consecutive_skips = 0
        self.message_hub.update_scalar('train/loss_scale', self.loss_scale)
        self.message_hub.update_scalar('train/skipped_steps', self.skipped_steps)

    def _report_overflow(self, scale_before: float) -> None:
        n = self.consecutive_skips
        if n < self.overflow_warn_after:
            logger.info('fp16 overflow: step skipped, loss scale %.4g -> %.4g',
                        scale_before, self.loss_scale)
        elif n == self.overflow_warn_after or n % (10 * self.overflow_warn_after) == 0:
            logger.error(
                'fp16 overflow persists: %d consecutive optimizer steps skipped, loss scale '
                'now %.3g. The weights are not being updated. Run the offending modules in '
                'fp32 (fp32_modules=[...]), use dtype="bfloat16", or check the loss for '
                'inf/NaN.', n, self.loss_scale)

    @contextmanager
    def optim_context(self, model: nn.Module):
        """Accumulation context (no DDP sync mid-window) plus autocast."""
        if not self._guards_installed:
            install_fp32_guards(model, self.fp32_modules, self.device_type)
            self._guards_installed = True
        with OptimWrapper.optim_context(self, model), \
                torch.autocast(device_type=self.device_type, dtype=self.cast_dtype):
            yield

    def state_dict(self) -> dict:
        state = super().state_dict()
        state['bevboost_amp'] = dict(applied_steps=self.applied_steps,
                                     skipped_steps=self.skipped_steps)
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        counters = state_dict.pop('bevboost_amp', None)
        if counters:
            self.applied_steps = counters['applied_steps']
            self.skipped_steps = counters['skipped_steps']
        if not self.loss_scaler.is_enabled():
            state_dict.pop('loss_scaler', None)
        super().load_state_dict(state_dict)


def apply_amp(cfg, dtype: str = 'auto', fp32_modules: Sequence[str] | None = None,
              loss_scale='dynamic') -> None:
    """Switch the config's optimizer wrapper to :class:`BoostAmpOptimWrapper`."""
    resolve_dtype(dtype, 'cpu')  # validate the name early
    wrapper = cfg.get('optim_wrapper')
    if not wrapper or 'optimizer' not in wrapper:
        raise ValueError('config has no optim_wrapper.optimizer to wrap with AMP')
    if wrapper.get('type', 'OptimWrapper') not in ('OptimWrapper', 'AmpOptimWrapper',
                                                   'BoostAmpOptimWrapper'):
        raise ValueError(f"cannot add AMP to optim_wrapper type {wrapper['type']!r}")
    wrapper.pop('use_fsdp', None)
    wrapper['type'] = 'BoostAmpOptimWrapper'
    wrapper['dtype'] = dtype
    wrapper['loss_scale'] = loss_scale
    if fp32_modules is not None:
        wrapper['fp32_modules'] = list(fp32_modules)
    # skipped steps must not advance schedulers
    from bevboost.engine.accumulation import use_optimizer_step_scheduler_hook
    use_optimizer_step_scheduler_hook(cfg)


@register_boost
class AmpBoost(Boost):
    card = BoostCard(
        name='amp',
        summary='Mixed precision: fp16 with dynamic loss scaling or bf16; fp32 guards for '
                'sensitive modules; loss scale and skipped steps logged.',
        changes=('optim_wrapper.type', 'optim_wrapper.dtype', 'optim_wrapper.fp32_modules',
                 'default_hooks.param_scheduler'),
        expected_effect='1.5-2x step speed and less activation memory on tensor-core GPUs; '
                        'slower on CPUs without bf16 units.',
        exact=True,
        order=20,
    )
    primary_option = 'dtype'

    def apply(self, cfg, **options) -> None:
        apply_amp(cfg, **options)

    def verify(self, runner, dtype='auto', **options) -> str:
        from bevboost.boosts import BoostNotInEffect, require_hook
        wrapper = runner.optim_wrapper
        if not isinstance(wrapper, BoostAmpOptimWrapper):
            raise BoostNotInEffect(f'optimizer wrapper is {type(wrapper).__name__}, '
                                   'not BoostAmpOptimWrapper')
        if isinstance(dtype, str) and dtype.lower() != 'auto':
            wanted = resolve_dtype(dtype, wrapper.device_type)
            if wrapper.cast_dtype != wanted:
                raise BoostNotInEffect(f'autocast dtype is {wrapper.cast_dtype}, asked {wanted}')
        require_hook(runner, 'OptimizerStepSchedulerHook')
        scaling = 'dynamic loss scale' if wrapper.loss_scaler.is_enabled() else 'no loss scaling'
        fp32 = f', fp32 {list(wrapper.fp32_modules)}' if wrapper.fp32_modules else ''
        return (f'{type(wrapper).__name__} {str(wrapper.cast_dtype).replace("torch.", "")} '
                f'on {wrapper.device_type}, {scaling}{fp32}, OptimizerStepSchedulerHook')
