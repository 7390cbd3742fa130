"""The bundled V2-99 fp16 config is the published recipe: fp16, static loss scale 512."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.mmdet3d

CONFIGS = Path(__file__).resolve().parents[2] / 'configs' / 'petrv2'
FP16 = ['petrv2_vov99_gridmask_800x320_8xb1-24e_nus_amp-fp16.py',
        'petrv2_vov99_gridmask_800x320_8xb1-24e_nus_amp-fp16_fast-decode_shm_measure.py']


@pytest.mark.parametrize('name', FP16)
def test_fp16_configs_use_the_published_static_loss_scale(name):
    from mmengine.config import Config
    from bevboost.boosts import apply_boosts
    cfg = apply_boosts(Config.fromfile(str(CONFIGS / name)))
    wrapper = cfg.optim_wrapper
    assert (wrapper.type, wrapper.dtype, wrapper.loss_scale) == (
        'BoostAmpOptimWrapper', 'float16', 512.0)
    assert wrapper.clip_grad == dict(max_norm=35, norm_type=2)  # the published grad_clip
    assert wrapper.optimizer.type == 'AdamW' and wrapper.optimizer.lr == 2e-4


@pytest.mark.torch_min((2, 3), 'fp16 on CPU')
def test_recipe_wrapper_skips_an_overflow_and_keeps_the_scale():
    from mmengine.config import Config
    from mmengine.registry import OPTIM_WRAPPERS, OPTIMIZERS
    from bevboost.boosts import apply_boosts
    import bevboost.engine.amp  # noqa: F401  (registers BoostAmpOptimWrapper)
    cfg = apply_boosts(Config.fromfile(str(CONFIGS / FP16[0]))).optim_wrapper
    model = torch.nn.Linear(4, 2)
    optimizer = OPTIMIZERS.build(dict(cfg.optimizer, params=model.parameters()))
    wrapper = OPTIM_WRAPPERS.build(dict(type=cfg.type, dtype=cfg.dtype, loss_scale=cfg.loss_scale,
                                        clip_grad=cfg.clip_grad, optimizer=optimizer))
    before = model.weight.detach().clone()
    with wrapper.optim_context(model):
        loss = model(torch.randn(3, 4)).sum() * float('inf')
    wrapper.update_params(loss)
    assert torch.equal(model.weight, before)  # skipped
    assert wrapper.loss_scale == 512.0 and wrapper.skipped_steps == 1
    with wrapper.optim_context(model):
        loss = model(torch.randn(3, 4)).float().sum()
    wrapper.update_params(loss)
    assert not torch.equal(model.weight, before) and wrapper.loss_scale == 512.0
