"""Compute boosts on the toy task: what each changes on the built runner, what each refuses.

The reference side is mmengine's Runner on the same config without the boost.
"""
from __future__ import annotations

import pytest
import torch
from mmengine.config import Config

from bevboost.boosts import BoostNotInEffect, apply_boosts, get_boost
from bevboost.runner_utils import runner_from_cfg
from bevboost.seams.torch_compat import FUSED_CPU_MIN
from bevboost.testing.toy import toy_config
from bevboost.testing.compute_helpers import ADAMW, train_toy  # also registers the toy models
from bevboost.testing.runner_helpers import assert_params_close, params_of

#: fused AdamW/SGD kernels on CPU (torch 2.1-2.3: CUDA only; see bevboost/seams/torch_compat.py)
FUSED_ON_CPU = pytest.mark.torch_min(FUSED_CPU_MIN, 'fused optimizer kernels on CPU')


# ---------------------------------------------------------------- fused-optim

@FUSED_ON_CPU
def test_fused_adamw_matches_for_loop_adamw(tmp_path):
    base, base_loss = train_toy(tmp_path / 'base', optim_wrapper=ADAMW)
    fused, fused_loss = train_toy(tmp_path / 'fused', ['fused-optim'], optim_wrapper=ADAMW)
    group = fused.optim_wrapper.optimizer.param_groups[0]
    assert group['fused'] is True and not base.optim_wrapper.optimizer.param_groups[0]['fused']
    assert 'AdamW fused' in get_boost('fused-optim').verify(fused)
    # one fused kernel vs torch's per-tensor loop: same formula, rounding may differ (1 ulp-ish)
    torch.testing.assert_close(fused_loss, base_loss, rtol=1e-6, atol=1e-7)
    assert_params_close(params_of(base), params_of(fused), rtol=1e-6)


def test_verify_says_when_not_fused(tmp_path):
    base, _ = train_toy(tmp_path, optim_wrapper=ADAMW, max_iters=1)
    with pytest.raises(BoostNotInEffect, match='neither fused nor foreach'):
        get_boost('fused-optim').verify(base)


def test_optimizer_without_fused_falls_back_to_foreach_with_a_log_line(tmp_path, mm_log):
    cfg = Config(toy_config(str(tmp_path), optim_wrapper=dict(
        type='OptimWrapper', optimizer=dict(type='Adadelta', lr=0.5))))
    boosted = apply_boosts(cfg, ['fused-optim'])
    assert boosted.optim_wrapper.optimizer.foreach is True
    assert 'fused' not in boosted.optim_wrapper.optimizer
    assert any('Adadelta has no fused implementation' in m and 'foreach' in m for m in mm_log)


@pytest.mark.parametrize('optimizer, impl, match', [
    (dict(type='LBFGS', lr=0.1), 'auto', 'LBFGS has no fused implementation'),
    (dict(type='Adadelta', lr=0.1), 'fused', 'use fused-optim=foreach'),
    pytest.param(dict(type='AdamW', lr=0.1, foreach=True), 'auto', 'sets foreach=True',
                 marks=FUSED_ON_CPU),
    (dict(type='SGD', lr=0.1), 'fastest', 'impl must be one of'),
])
def test_fused_optim_refuses(tmp_path, optimizer, impl, match):
    cfg = Config(toy_config(str(tmp_path), optim_wrapper=dict(type='OptimWrapper',
                                                              optimizer=optimizer)))
    with pytest.raises(ValueError, match=match):
        apply_boosts(cfg, {'fused-optim': dict(impl=impl)})


@FUSED_ON_CPU
@pytest.mark.torch_min((2, 5), 'fused params checked at the first step (before 2.5 the optimizer '
                               "constructor refuses them, torch's message)")
def test_fused_rejected_param_group_refused_before_first_iteration(tmp_path):
    model = dict(type='ToyWithComplexParam')
    runner_cfg = apply_boosts(Config(toy_config(str(tmp_path / 'b'), model=model,
                                                optim_wrapper=ADAMW)), ['fused-optim'])
    runner = runner_from_cfg(runner_cfg)
    with pytest.raises(ValueError, match=r"param group 0 \(parameter 'gain'.*fused-optim="
                                         r"foreach"):
        runner.train()
    assert runner.iter == 0
    # without the check, torch only fails inside the first optimizer step
    plain = Config(toy_config(str(tmp_path / 'p'), model=model, optim_wrapper=dict(
        type='OptimWrapper', optimizer=dict(type='AdamW', lr=0.01, fused=True))))
    with pytest.raises(RuntimeError, match='`fused=True` requires'):
        runner_from_cfg(plain).train()


# ---------------------------------------------------------------- loader

def test_loader_sets_worker_options_and_batches_match(tmp_path):
    base, base_loss = train_toy(tmp_path / 'base', max_iters=3, train_dataloader=dict(
        batch_size=8, num_workers=1, sampler=dict(type='InfiniteSampler', shuffle=True),
        dataset=dict(type='ToyRegressionDataset'), collate_fn=dict(type='default_collate')))
    boosted, loss = train_toy(tmp_path / 'boosted', ['loader=1:prefetch_factor=3'],
                              max_iters=3, train_dataloader=base.cfg.train_dataloader)
    loader = boosted.train_dataloader
    assert (loader.num_workers, loader.persistent_workers, loader.prefetch_factor) == (1, True, 3)
    assert loader.pin_memory is torch.cuda.is_available()
    assert not base.train_dataloader.persistent_workers
    assert 'persistent_workers=True' in get_boost('loader').verify(boosted, prefetch_factor=3)
    torch.testing.assert_close(loss, base_loss, rtol=0, atol=0)  # same batches, same math


def test_loader_refuses_without_workers(tmp_path):
    cfg = Config(toy_config(str(tmp_path)))  # num_workers=0
    with pytest.raises(ValueError, match='num_workers is 0.*loader=N'):
        apply_boosts(cfg, ['loader'])
    with pytest.raises(ValueError, match='prefetch_factor must be >= 1'):
        apply_boosts(cfg, ['loader=2:prefetch_factor=0'])


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU-only path')
def test_loader_pin_memory_without_cuda_is_logged_not_set(tmp_path, mm_log):
    cfg = Config(toy_config(str(tmp_path)))
    boosted = apply_boosts(cfg, ['loader=2:pin_memory=True'])
    assert boosted.train_dataloader.pin_memory is False
    assert any('pin_memory left off: no CUDA device' in m for m in mm_log)


def test_loader_verify_catches_a_non_persistent_loader(tmp_path):
    base, _ = train_toy(tmp_path, max_iters=1, train_dataloader=dict(
        batch_size=8, num_workers=1, sampler=dict(type='InfiniteSampler'),
        dataset=dict(type='ToyRegressionDataset'), collate_fn=dict(type='default_collate')))
    with pytest.raises(BoostNotInEffect, match='persistent_workers=False'):
        get_boost('loader').verify(base)


# ---------------------------------------------------------------- channels-last

def test_channels_last_converts_backbone_and_inputs_and_matches(tmp_path):
    model = dict(type='ToyConvRegressor')
    base, base_loss = train_toy(tmp_path / 'base', model=model, optim_wrapper=ADAMW)
    boosted, loss = train_toy(tmp_path / 'cl', ['channels-last=img_backbone'], model=model,
                              optim_wrapper=ADAMW)
    # NHWC convolution kernels sum in another order: float32 rounding only
    torch.testing.assert_close(loss, base_loss, rtol=1e-5, atol=1e-6)
    assert_params_close(params_of(base), params_of(boosted), rtol=1e-5)
    conv = boosted.model.img_backbone[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert not base.model.img_backbone[0].weight.is_contiguous(memory_format=torch.channels_last)
    # the optimizer still updates the converted Parameters (same objects)
    assert any(p is conv for p in boosted.optim_wrapper.optimizer.param_groups[0]['params'])
    assert 'channels_last' in get_boost('channels-last').verify(boosted, modules='img_backbone')
    seen = []
    boosted.model.img_backbone[0].register_forward_pre_hook(
        lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    boosted.model.train_step(next(iter(boosted.train_dataloader)), boosted.optim_wrapper)
    assert seen == [True]  # NCHW images arrive converted


def test_channels_last_refuses(tmp_path):
    with pytest.raises(ValueError, match="no \\['img_backbone'\\].*modules="):
        apply_boosts(Config(toy_config(str(tmp_path))), ['channels-last'])  # MLP toy
    cfg = apply_boosts(Config(toy_config(str(tmp_path))), ['channels-last=net'])
    with pytest.raises(ValueError, match='Sequential has no 2-D convolution weights'):
        runner_from_cfg(cfg).train()


def test_channels_last_verify_before_conversion_says_so(tmp_path):
    cfg = Config(toy_config(str(tmp_path), model=dict(type='ToyConvRegressor')))
    runner = runner_from_cfg(cfg)
    with pytest.raises(BoostNotInEffect, match='not in channels_last'):
        get_boost('channels-last').verify(runner, modules='img_backbone')


def test_loader_under_shm_is_not_applied_and_says_so(tmp_path, mm_log):
    from bevboost.data.runner import SHM_KEY
    cfg = Config(toy_config(str(tmp_path)))
    cfg.train_dataloader.num_workers = 2
    cfg.train_dataloader[SHM_KEY] = dict(slots=3)  # what the shm boost (applied first) sets
    boosted = apply_boosts(cfg, ['loader:prefetch_factor=4'])
    assert 'prefetch_factor' not in boosted.train_dataloader
    assert any('loader: not applied: the shm boost replaces' in m for m in mm_log)
