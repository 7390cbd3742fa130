"""Measurement a training run loads: stall/compute hook, torch.profiler hook, replay ceiling.

Importing this package registers ``StallMonitorHook``, ``TorchProfilerHook``
and ``ReplayDataHook`` in mmengine's root ``HOOKS`` and the ``measure`` and
``profile`` boosts.
"""
from bevboost.profiling.boost_measure import apply_measure
from bevboost.profiling.boost_profile import apply_profile
from bevboost.profiling.gpu import GpuSampler
from bevboost.profiling.profiler_hook import TorchProfilerHook
from bevboost.profiling.replay import ReplayDataHook
from bevboost.profiling.stages import StageRecorder, instrument_dataloader
from bevboost.profiling.stall_hook import StallMonitorHook

__all__ = ['GpuSampler', 'ReplayDataHook', 'StageRecorder', 'StallMonitorHook',
           'TorchProfilerHook', 'apply_measure', 'apply_profile',
           'instrument_dataloader']
