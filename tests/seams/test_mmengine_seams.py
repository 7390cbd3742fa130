"""Each mmengine/torch shape the seams rely on, pinned on the running versions.

A failure here names the seam and the shape that changed: an mmengine or torch upgrade
breaks this file, not a training run. ``test_a_changed_from_cfg_signature_is_refused``
shows it once with a faked signature.
"""
from __future__ import annotations

import inspect
import logging

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import HistoryBuffer, MMLogger
from mmengine.optim import OptimWrapper
from mmengine.registry import RUNNERS, build_runner_from_cfg
from mmengine.runner import FlexibleRunner, Runner

import bevboost  # noqa: F401  (installs the seams)
from bevboost.seams import mmengine_checkpoint, mmengine_cli, mmengine_optim, mmengine_runner
from bevboost.seams import torch_internals
from bevboost.seams.torch_compat import torch_at_least
from bevboost.testing.toy import toy_config


@pytest.mark.parametrize('runner_class', [Runner, FlexibleRunner])
def test_launch_route_wrappers_are_installed_on_the_classes_every_route_calls(runner_class):
    func = runner_class.__dict__['from_cfg'].__func__
    assert getattr(func, '_bevboost_wrapped', False), \
        f'{runner_class.__name__}.from_cfg is not the kit wrapper (seam mmengine_runner)'
    assert 'cfg' in inspect.signature(mmengine_runner._ORIGINAL_INIT[runner_class]).parameters
    # tools/train.py's RUNNERS.build route ends in runner_cls.from_cfg(args)
    assert RUNNERS.build_func is build_runner_from_cfg
    assert '.from_cfg(args)' in inspect.getsource(build_runner_from_cfg)


def test_a_changed_from_cfg_signature_is_refused(caplog):
    """What an mmengine upgrade that changes ``from_cfg`` looks like: no silent wrapping."""
    class ChangedRunner:
        def __init__(self, cfg=None):
            pass

        @classmethod
        def from_cfg(cls, cfg, launcher):  # a new required argument
            return cls(cfg)

    assert mmengine_runner.from_cfg_shape_problem(ChangedRunner) == \
        'ChangedRunner.from_cfg is not classmethod(cls, cfg)'
    with caplog.at_level(logging.ERROR, logger='bevboost'):
        installed = mmengine_runner.install_from_cfg_hook(
            ChangedRunner, lambda cls, cfg: None, lambda runner, arguments: None)
    assert installed is False and 'ChangedRunner.from_cfg is not classmethod' in caplog.text
    assert not getattr(ChangedRunner.from_cfg.__func__, '_bevboost_wrapped', False)


def test_runner_private_state_read_by_the_kit(tmp_path):
    cfg = Config(toy_config(str(tmp_path), load_from=str(tmp_path / 'x.pth'), resume=True))
    runner = Runner.from_cfg(cfg)
    assert mmengine_runner.checkpoint_request(runner) == (str(tmp_path / 'x.pth'), True, False)
    assert '_has_loaded' in runner.__dict__
    loops = mmengine_runner.built_loops(runner)
    assert len(loops) == 3 and isinstance(loops[0], dict)  # built lazily, from their configs
    assert isinstance(MMLogger._instance_dict, dict) and mmengine_runner.mmlogger_exists()


def _toy_wrapper(**kwargs) -> tuple[OptimWrapper, torch.nn.Linear]:
    model = torch.nn.Linear(2, 1)
    return OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), **kwargs), model


def test_optim_wrapper_counters_drive_mmengines_own_windows():
    wrapper, model = _toy_wrapper(accumulative_counts=3)
    assert all(hasattr(wrapper, a) for a in mmengine_optim.COUNTER_ATTRS), \
        'mmengine OptimWrapper renamed its accumulation counters (seam mmengine_optim)'
    assert mmengine_optim.accumulative_counts(wrapper) == 3
    wrapper.initialize_count_status(model, 0, 100)
    mmengine_optim.restart_windows(wrapper, 5)  # windows of 3 then the short remainder 2
    steps = []
    step = wrapper.optimizer.step

    def counted_step(*args, **kwargs):  # mmengine calls optimizer.step() once per window
        steps.append(mmengine_optim.inner_count(wrapper))
        return step(*args, **kwargs)
    wrapper.optimizer.step = counted_step
    for _ in range(5):
        wrapper.update_params(model(torch.ones(1, 2)).sum())
    assert steps == [3, 5]


def test_clip_gradients_is_the_wrappers_clip_grad():
    wrapper, model = _toy_wrapper(clip_grad=dict(max_norm=0.5))
    (model(torch.ones(1, 2)) * 100).sum().backward()
    mmengine_optim.clip_gradients(wrapper)
    norm = torch.norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert norm <= 0.5 + 1e-6


def test_history_buffer_shape_the_pickling_patch_relies_on():
    buffer = HistoryBuffer()
    assert set(vars(buffer)) == mmengine_checkpoint._HISTORY_BUFFER_ATTRS, \
        'HistoryBuffer instance attributes changed (seam mmengine_checkpoint)'
    assert isinstance(HistoryBuffer._statistics_methods, dict)
    assert set(mmengine_checkpoint._DEFAULT_STATISTICS) <= set(HistoryBuffer._statistics_methods)
    assert callable(buffer._set_default_statistics)
    assert HistoryBuffer.__getstate__ is mmengine_checkpoint._history_buffer_getstate


def test_cfg_option_values_parse_as_mmengine_does():
    assert mmengine_cli.parse_cfg_option_value('[1,2]') == [1, 2]
    assert mmengine_cli.parse_cfg_option_value('(a,b)') == ('a', 'b')
    assert mmengine_cli.parse_cfg_option_value('0.5') == 0.5


def test_iteration_loop_iterator_shape():
    from mmengine.dataset import InfiniteSampler
    from mmengine.runner.loops import _InfiniteDataloaderIterator
    dataset = list(range(8))
    loader = torch.utils.data.DataLoader(dataset, batch_size=2,
                                         sampler=InfiniteSampler(dataset, shuffle=False))
    it = _InfiniteDataloaderIterator(loader)
    assert torch_internals.loader_iterator(it) is not None
    assert callable(loader.sampler._indices_of_rank)


def test_torch_internals_the_kit_calls():
    grads = [torch.ones(3), torch.tensor([1.0, float('nan')])]
    if torch_at_least(2, 3):  # GradScaler's CPU kernels (before: callers check per tensor)
        assert bool(torch_internals.fused_all_finite(grads[:1], torch.device('cpu')))
        assert not bool(torch_internals.fused_all_finite(grads, torch.device('cpu')))
        assert torch.equal(grads[0], torch.ones(3))  # values left as they were
    else:
        with pytest.raises((RuntimeError, NotImplementedError)):
            torch_internals.fused_all_finite(grads, torch.device('cpu'))
    from bevboost.engine.nonfinite import grads_finite
    assert [bool(f) for f in grads_finite(grads)] == [False]  # one device/dtype group
    torch_internals.publish_worker_info(id=1, num_workers=2, seed=3, dataset=None)
    try:
        assert torch.utils.data.get_worker_info().id == 1
    finally:
        from torch.utils.data._utils import worker as torch_worker
        torch_worker._worker_info = None
    from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter
    assert callable(_MultiProcessingDataLoaderIter._shutdown_workers)
    assert 'optimizer' in inspect.signature(
        torch.amp.GradScaler._found_inf_per_device if hasattr(torch.amp, 'GradScaler')
        else torch.cuda.amp.GradScaler._found_inf_per_device).parameters


def test_cuda_entry_points_the_fork_trap_replaces_exist():
    assert all(callable(getattr(torch.cuda, n)) for n in torch_internals.CUDA_ENTRY_POINTS)
    # the C probe exists in CUDA builds only (the trap sets it either way)
    assert torch.version.cuda is None or callable(torch._C._cuda_getDeviceCount)
