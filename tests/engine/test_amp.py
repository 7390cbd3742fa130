"""AMP on CPU: bf16 training, fp16 overflow handling, fp32 guards, bad input."""
import math

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from torch import nn

from bevboost.engine.amp import BoostAmpOptimWrapper, resolve_dtype
from bevboost.engine.fp32_guards import install_fp32_guards
from bevboost.seams.torch_compat import CPU_FP16_MIN
from bevboost.testing.runner_helpers import InjectInfGrad, params_of, run_toy

WARMUP = [dict(type='LinearLR', start_factor=0.2, by_epoch=False, begin=0, end=5)]


def test_bf16_trains_in_runner_on_cpu(tmp_path):
    runner, rec = run_toy(tmp_path, boosts=['amp=bf16'], max_iters=4)
    wrapper = runner.optim_wrapper
    assert isinstance(wrapper, BoostAmpOptimWrapper)
    assert wrapper.cast_dtype == torch.bfloat16 and wrapper.device_type == 'cpu'
    assert wrapper.applied_steps == 4 and wrapper.skipped_steps == 0
    hub = MessageHub.get_current_instance()
    assert hub.get_scalar('train/loss_scale').current() == 1.0
    losses = hub.get_scalar('train/loss').data[0]
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]


@pytest.mark.torch_min(CPU_FP16_MIN, 'fp16 on CPU')
def test_fp16_overflow_skips_step_and_holds_schedulers(tmp_path):
    from mmengine.config import Config
    from mmengine.runner import Runner

    from bevboost.boosts import apply_boosts
    from bevboost.testing.toy import toy_config
    from bevboost.testing.runner_helpers import StepRecorder

    def run(name, inject):
        cfg = apply_boosts(Config(toy_config(str(tmp_path / name), max_iters=6, lr=0.05,
                                             param_scheduler=WARMUP)),
                           {'amp': dict(dtype='fp16', loss_scale=dict(init_scale=1024.0))})
        runner = Runner.from_cfg(cfg)
        rec = StepRecorder()
        runner.register_hook(rec)
        snapshots = {}

        class Snap(Hook):
            priority = 'LOWEST'

            def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
                snapshots[runner.iter] = params_of(runner)
        runner.register_hook(Snap())
        runner.register_hook(InjectInfGrad(inject))
        runner.train()
        return runner, rec, snapshots

    clean, clean_rec, _ = run('clean', [])
    bad, bad_rec, snaps = run('bad', [2, 3])
    assert clean.optim_wrapper.skipped_steps == 0
    wrapper = bad.optim_wrapper
    assert wrapper.skipped_steps == 2 and wrapper.applied_steps == 4
    # skipped steps did not touch the weights and left them finite
    for name, value in snaps[3].items():
        assert torch.equal(value, snaps[1][name]), name
        assert torch.isfinite(value).all()
    # schedulers did not advance on skipped steps: the 4 applied steps used the
    # first 4 learning rates of the clean run
    assert bad_rec.lrs == clean_rec.lrs[:4]
    assert MessageHub.get_current_instance().get_scalar('train/skipped_steps').current() == 2
    assert wrapper.loss_scale < clean.optim_wrapper.loss_scale


@pytest.mark.torch_min(CPU_FP16_MIN, 'fp16 on CPU')
def test_persistent_overflow_is_reported_loudly(caplog):
    model = nn.Linear(2, 1)
    wrapper = BoostAmpOptimWrapper(dtype='fp16', overflow_warn_after=3,
                                   optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    x = torch.ones(4, 2)
    with caplog.at_level('INFO', logger='bevboost.engine.amp'):
        for _ in range(4):
            # gradients overflow at every scale tried (1e36 x 4 x scale > fp32 max); the loss
            # itself stays finite: a non-finite loss is no overflow
            wrapper.update_params(model(x).sum() * 1e36)
    assert wrapper.consecutive_skips == 4
    assert 'overflow persists: 3 consecutive' in caplog.text
    wrapper.update_params(model(x).sum())
    assert wrapper.consecutive_skips == 0 and wrapper.applied_steps == 1


def test_fp32_guards_run_modules_in_float32():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    guarded = install_fp32_guards(model, ['1'], 'cpu')
    assert guarded == ['1']
    x = torch.randn(2, 4)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        hidden = model[0](x)
        out = model[1](hidden)
    assert hidden.dtype == torch.bfloat16
    assert out.dtype == torch.float32
    by_type = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    assert install_fp32_guards(by_type, ['LayerNorm'], 'cpu') == ['1']


def test_fp32_guard_typo_is_an_error():
    with pytest.raises(ValueError, match='match no module'):
        install_fp32_guards(nn.Linear(2, 2), ['PositionEncodr'], 'cpu')
    with pytest.raises(TypeError, match='list of patterns'):
        install_fp32_guards(nn.Linear(2, 2), 'Linear', 'cpu')


@pytest.mark.parametrize('bad', ['fp8', 'int8', '', torch.int32, 16])
def test_unknown_dtype_is_rejected(bad):
    with pytest.raises(ValueError, match='dtype must be one of'):
        resolve_dtype(bad, 'cpu')


def test_bad_loss_scale_and_device():
    opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
    with pytest.raises(TypeError, match='loss_scale'):
        BoostAmpOptimWrapper(dtype='bf16', loss_scale='huge', optimizer=opt)
    with pytest.raises(ValueError, match='device_type'):
        BoostAmpOptimWrapper(dtype='bf16', device_type='tpu', optimizer=opt)


@pytest.mark.gpu
def test_fp16_overflow_on_cuda(tmp_path):
    """The real CUDA path: fp16 autocast, GradScaler on the GPU, injected overflow."""
    model = nn.Linear(64, 1).cuda()
    wrapper = BoostAmpOptimWrapper(dtype='fp16',
                                   optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert wrapper.device_type == 'cuda' and wrapper.loss_scaler.is_enabled()
    x = torch.randn(8, 64, device='cuda')
    for i in range(4):
        with wrapper.optim_context(model):
            loss = model(x).float().pow(2).mean()
            assert model(x).dtype == torch.float16
        if i == 1:
            loss = loss * math.inf
        wrapper.update_params(loss)
    assert wrapper.skipped_steps == 1 and wrapper.applied_steps == 3
    assert all(torch.isfinite(p).all() for p in model.parameters())
