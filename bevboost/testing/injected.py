"""Known costs to inject into a toy run: sleeps and CPU burns in the data path and the step.

The measurement tests check the hook's split against these, not against its own sums.
"""
from __future__ import annotations

import time

from mmengine.hooks import Hook
from mmengine.model import BaseDataPreprocessor
from mmengine.registry import HOOKS, MODELS, TRANSFORMS

from bevboost.testing.toy import ToyRegressor


def burn_cpu(seconds: float) -> None:
    """Spin until this thread has used ``seconds`` of CPU (wall time may be longer)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


@TRANSFORMS.register_module(force=True)
class InjectedDataCost:
    """Per sample: sleep ``sleep_s``, then burn ``cpu_s`` of CPU."""

    def __init__(self, sleep_s: float = 0.0, cpu_s: float = 0.0) -> None:
        self.sleep_s, self.cpu_s = sleep_s, cpu_s

    def __call__(self, results: dict) -> dict:
        time.sleep(self.sleep_s)
        burn_cpu(self.cpu_s)
        return results


@MODELS.register_module(force=True)
class InjectedStepRegressor(ToyRegressor):
    """The toy model; every loss forward sleeps ``sleep_s`` and burns ``cpu_s``."""

    def __init__(self, sleep_s: float = 0.0, cpu_s: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sleep_s, self.cpu_s = sleep_s, cpu_s

    def forward(self, inputs, targets=None, mode: str = 'tensor', **unused):
        if mode == 'loss':
            time.sleep(self.sleep_s)
            burn_cpu(self.cpu_s)
        return super().forward(inputs, targets, mode, **unused)


@MODELS.register_module(force=True)
class InjectedPreprocessor(BaseDataPreprocessor):
    """mmengine's data preprocessor that burns ``cpu_s`` per batch (like a main-process
    decode)."""

    def __init__(self, cpu_s: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.cpu_s = cpu_s

    def forward(self, data, training: bool = False):
        burn_cpu(self.cpu_s)
        return super().forward(data, training)


@HOOKS.register_module(force=True)
class InjectedLateHook(Hook):
    """Runs after every other hook (LOWEST) and sleeps ``sleep_s`` per iteration."""

    priority = 'LOWEST'

    def __init__(self, sleep_s: float = 0.0) -> None:
        self.sleep_s = sleep_s

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        time.sleep(self.sleep_s)


def injected_config(toy_cfg, *, data_sleep=0.0, data_cpu=0.0, step_sleep=0.0, step_cpu=0.0,
                    hook_sleep=0.0, num_workers=0, batch_size=2, iters=8, warmup=2) -> dict:
    """Toy config with the injected costs and StallMonitorHook."""
    cfg = toy_cfg(num_workers=num_workers, max_iters=iters + warmup, batch_size=batch_size)
    cfg['train_dataloader']['dataset']['pipeline'] = [
        dict(type='InjectedDataCost', sleep_s=data_sleep, cpu_s=data_cpu)]
    cfg['model'] = dict(type='InjectedStepRegressor', sleep_s=step_sleep, cpu_s=step_cpu)
    cfg['default_hooks']['logger'] = dict(type='LoggerHook', interval=100)
    cfg['custom_hooks'] = [dict(type='StallMonitorHook', warmup_iters=warmup,
                                gpu_sampling=False),
                           dict(type='InjectedLateHook', sleep_s=hook_sleep)]
    return cfg
