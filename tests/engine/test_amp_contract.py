"""BoostAmpOptimWrapper is a drop-in for mmengine's AmpOptimWrapper.

The reference side is mmengine's own classes: ``AmpOptimWrapper``'s
signature, and its ``state_dict``/``load_state_dict`` code run on CPU (its GPU
check and CUDA scaler class swapped for torch's CPU GradScaler, nothing else).
"""
import functools
import inspect
import math
import socket

import pytest
import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.optim.optimizer import amp_optimizer_wrapper as mm_amp
from torch import nn

from bevboost.boosts import apply_boosts
from bevboost.engine.amp import BoostAmpOptimWrapper, apply_amp, scaler_found_inf
from bevboost.engine.nonfinite import NonFiniteTrainingError
from bevboost.runner_utils import runner_from_cfg
from bevboost.seams.torch_compat import CPU_FP16_MIN
from bevboost.testing.toy import toy_config
from bevboost.testing.runner_helpers import InjectInfGrad, StepRecorder

#: fp16 on CPU: autocast fp16 + torch.amp.GradScaler('cpu') (see bevboost/seams/torch_compat.py)
CPU_FP16 = pytest.mark.torch_min(CPU_FP16_MIN, "fp16 autocast and torch.amp.GradScaler('cpu')")


def _sgd(seed=0):
    torch.manual_seed(seed)
    model = nn.Linear(4, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


@pytest.fixture
def mmengine_amp_on_cpu(monkeypatch):
    """mmengine's AmpOptimWrapper, buildable on CPU: its own code, a CPU GradScaler."""
    monkeypatch.setattr(mm_amp, 'is_cuda_available', lambda: True)
    monkeypatch.setattr(mm_amp, 'GradScaler', functools.partial(torch.amp.GradScaler, 'cpu'))
    return AmpOptimWrapper


def _train_steps(wrapper, model, steps=3, inf_at=()):
    x = torch.linspace(-1, 1, 24).reshape(6, 4)
    for i in range(steps):
        with wrapper.optim_context(model):
            loss = model(x).float().pow(2).mean()
        if i in inf_at:
            loss = loss * math.inf
        wrapper.update_params(loss)


# --- construction: the same arguments in the same order -------------------------------------

def test_signature_extends_mmengines_in_order():
    theirs = [p for p in inspect.signature(AmpOptimWrapper.__init__).parameters.values()
              if p.name != 'self' and p.kind is not p.VAR_KEYWORD]
    ours = list(inspect.signature(BoostAmpOptimWrapper.__init__).parameters.values())[1:]
    assert [(p.name, p.default) for p in ours[:len(theirs)]] == \
        [(p.name, p.default) for p in theirs]


@pytest.mark.parametrize('args, kwargs, dtype, scaled', [
    (('dynamic',), {}, torch.bfloat16, False),                 # dtype None: CPU autocast default
    pytest.param((512.0, 'float16'), {}, torch.float16, True, marks=CPU_FP16),
    pytest.param((dict(init_scale=256.0), torch.float16, False), {}, torch.float16, True,
                 marks=CPU_FP16),
    ((), dict(dtype=torch.bfloat16), torch.bfloat16, False),
    ((), dict(dtype='float32'), torch.float32, False),
    ((), dict(dtype='float64'), torch.float64, False),
    ((), dict(dtype=None, loss_scale='dynamic'), torch.bfloat16, False),
])
def test_construction_forms(args, kwargs, dtype, scaled):
    model, opt = _sgd()
    wrapper = BoostAmpOptimWrapper(*args, optimizer=opt, **kwargs)
    assert wrapper.cast_dtype == dtype
    assert wrapper.loss_scaler.is_enabled() == scaled
    _train_steps(wrapper, model, steps=2)
    assert wrapper.applied_steps == 2 and wrapper.skipped_steps == 0
    assert all(torch.isfinite(p).all() for p in model.parameters())


@CPU_FP16
def test_static_and_dict_scales_reach_the_scaler():
    _, opt = _sgd()
    assert BoostAmpOptimWrapper(512.0, 'float16', optimizer=opt).loss_scale == 512.0
    wrapper = BoostAmpOptimWrapper(dict(init_scale=8.0, growth_interval=1), 'float16',
                                   optimizer=opt)
    assert wrapper.loss_scale == 8.0 and wrapper.loss_scaler.get_growth_interval() == 1


@CPU_FP16
def test_use_fsdp_is_honoured_never_dropped():
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler
    _, opt = _sgd()
    assert isinstance(BoostAmpOptimWrapper('dynamic', 'float16', True, optimizer=opt).loss_scaler,
                      ShardedGradScaler)
    assert not isinstance(BoostAmpOptimWrapper(optimizer=opt, dtype='fp16').loss_scaler,
                          ShardedGradScaler)
    with pytest.raises(TypeError, match='use_fsdp'):
        BoostAmpOptimWrapper(use_fsdp='yes', optimizer=opt)
    cfg = Config(toy_config('/tmp/unused'))
    cfg.optim_wrapper.use_fsdp = True
    apply_amp(cfg, dtype='fp16')
    assert cfg.optim_wrapper.use_fsdp is True  # the config's FSDP choice survives the boost


@CPU_FP16
def test_sharded_scaler_counts_skips(tmp_path):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=0, world_size=1)
    try:
        model, opt = _sgd()
        wrapper = BoostAmpOptimWrapper('dynamic', 'float16', True, optimizer=opt)
        _train_steps(wrapper, model, steps=3, inf_at={1})
        assert (wrapper.applied_steps, wrapper.skipped_steps) == (2, 1)
    finally:
        dist.destroy_process_group()


# --- skipped steps come from the scaler's found-inf result ----------------------------------

@CPU_FP16
def test_found_inf_adapter_reads_torchs_scaler():
    """The one touch of GradScaler internals: fails here first if torch changes it."""
    model, opt = _sgd()
    scaler = torch.amp.GradScaler('cpu')
    for value, expected in ((1.0, False), (math.inf, True)):
        opt.zero_grad()
        scaler.scale(model(torch.ones(2, 4)).sum() * value).backward()
        scaler.unscale_(opt)
        assert scaler_found_inf(scaler, opt) is expected
        scaler.step(opt)
        scaler.update()


@CPU_FP16
@pytest.mark.parametrize('loss_scale',
                         ['dynamic', 512.0, dict(init_scale=64.0, growth_interval=1)])
def test_skips_counted_for_every_loss_scale_form(loss_scale):
    model, opt = _sgd()
    wrapper = BoostAmpOptimWrapper(loss_scale, 'float16', optimizer=opt)
    _train_steps(wrapper, model, steps=5, inf_at={2})
    assert (wrapper.applied_steps, wrapper.skipped_steps) == (4, 1)


@CPU_FP16
def test_static_scale_overflow_skipped_not_applied_and_lr_held(tmp_path):
    """fp16 with loss_scale=512.0: the scale never moves, the skip is still seen."""
    warmup = [dict(type='LinearLR', start_factor=0.2, by_epoch=False, begin=0, end=5)]

    def run(name, inject):
        cfg = apply_boosts(Config(toy_config(str(tmp_path / name), max_iters=5, lr=0.05,
                                             param_scheduler=warmup)),
                           {'amp': dict(dtype='fp16', loss_scale=512.0)})
        runner = runner_from_cfg(cfg)
        rec = StepRecorder()
        runner.register_hook(rec)
        runner.register_hook(InjectInfGrad(inject))
        runner.train()
        return runner.optim_wrapper, rec.lrs

    # one step, and it overflows: skipped=1, applied=0, the warmup LR has not moved
    single = apply_boosts(Config(toy_config(str(tmp_path / 'one'), max_iters=1, lr=0.05,
                                            param_scheduler=warmup)),
                          {'amp': dict(dtype='fp16', loss_scale=512.0)})
    runner = runner_from_cfg(single)
    runner.register_hook(InjectInfGrad([0]))
    runner.train()
    wrapper = runner.optim_wrapper
    assert (wrapper.skipped_steps, wrapper.applied_steps) == (1, 0)
    assert runner.param_schedulers[0].last_step == 0
    assert wrapper.param_groups[0]['lr'] == pytest.approx(0.05 * 0.2)  # still the first LR

    clean, clean_lrs = run('clean', [])
    wrapper, lrs = run('bad', [2])
    assert (wrapper.skipped_steps, wrapper.applied_steps) == (1, 4)
    assert wrapper.loss_scale == 512.0  # static: a scale-based detector would see no skip
    assert lrs == clean_lrs[:4]  # the LR held on the skipped step
    assert (clean.skipped_steps, clean.applied_steps) == (0, 5)


@CPU_FP16
def test_scale_reaching_its_floor_is_an_error():
    model, opt = _sgd()
    wrapper = BoostAmpOptimWrapper(dict(init_scale=1.0), 'float16', optimizer=opt,
                                   min_loss_scale=0.3)
    with pytest.raises(NonFiniteTrainingError, match='floor'):
        _train_steps(wrapper, model, steps=5, inf_at=set(range(5)))
    assert wrapper.applied_steps == 0 and wrapper.skipped_steps == 2  # 1 -> 0.5 -> 0.25
    with pytest.raises(ValueError, match='min_loss_scale'):
        BoostAmpOptimWrapper(dict(init_scale=1.0), 'float16', optimizer=opt, min_loss_scale=2.0)


@CPU_FP16
def test_persistent_skips_stop_training():
    model, opt = _sgd()
    wrapper = BoostAmpOptimWrapper('dynamic', 'float16', optimizer=opt, max_consecutive_skips=4)
    with pytest.raises(NonFiniteTrainingError, match='4 optimizer steps in a row'):
        _train_steps(wrapper, model, steps=10, inf_at=set(range(10)))
    assert wrapper.applied_steps == 0 and wrapper.skipped_steps == 4


# --- checkpoints load across precisions and from/into mmengine's wrappers -------------------

def _trained_state(make, steps=3):
    model, opt = _sgd()
    wrapper = make(opt)
    _train_steps(wrapper, model, steps=steps)
    return wrapper.state_dict()


def _momentum(state):
    return [v['momentum_buffer'] for v in state['state'].values()]


KIT_FP16 = functools.partial(BoostAmpOptimWrapper, dict(init_scale=1024.0, growth_interval=1),
                             'float16')
KIT_BF16 = functools.partial(BoostAmpOptimWrapper, dtype='bfloat16')


@CPU_FP16  # mmengine's AmpOptimWrapper on CPU runs torch.amp.GradScaler('cpu')
@pytest.mark.parametrize('source', ['kit_fp16', 'kit_bf16', 'mmengine_amp', 'plain',
                                    'old_kit_bf16'])
@pytest.mark.parametrize('target', ['kit_fp16', 'kit_bf16', 'mmengine_amp', 'plain'])
def test_state_dict_round_trips(mmengine_amp_on_cpu, source, target):
    makers = {
        'kit_fp16': lambda opt: KIT_FP16(optimizer=opt),
        'kit_bf16': lambda opt: KIT_BF16(optimizer=opt),
        # mmengine's CPU autocast takes only bf16; its scaler runs in every dtype
        'mmengine_amp': lambda opt: mmengine_amp_on_cpu(
            dict(init_scale=1024.0, growth_interval=1), 'bfloat16', optimizer=opt),
        'plain': lambda opt: OptimWrapper(optimizer=opt),
    }
    if source == 'old_kit_bf16':  # written before the fix: an empty disabled-scaler state
        state = dict(_trained_state(makers['kit_bf16']), loss_scaler={})
    else:
        state = _trained_state(makers[source])
    _, opt = _sgd(seed=1)
    wrapper = makers[target](opt)
    if source == 'old_kit_bf16' and target == 'mmengine_amp':
        # the bug the kit fixed: mmengine cannot load an empty scaler state
        with pytest.raises(RuntimeError, match='disabled instance of GradScaler'):
            wrapper.load_state_dict(dict(state))
        return
    wrapper.load_state_dict(dict(state))
    loaded = wrapper.state_dict()
    for ours, saved in zip(_momentum(loaded), _momentum(state)):
        assert torch.equal(ours, saved)
    assert loaded['param_groups'][0]['lr'] == state['param_groups'][0]['lr']
    if state.get('loss_scaler') and target in ('kit_fp16', 'mmengine_amp'):
        assert wrapper.loss_scaler.get_scale() == state['loss_scaler']['scale']
    if target.startswith('kit') and source.startswith('kit'):
        assert wrapper.applied_steps == 3


@CPU_FP16
def test_bf16_checkpoint_stores_no_scaler_state():
    assert 'loss_scaler' not in _trained_state(lambda opt: KIT_BF16(optimizer=opt))
    assert _trained_state(lambda opt: KIT_FP16(optimizer=opt))['loss_scaler']['scale'] > 0


@CPU_FP16
def test_steps_at_scale_zero_are_skipped_not_applied():
    """With the floor off, inf every step drives the scale to 0.0; no step counts as applied."""
    model, opt = _sgd()
    wrapper = BoostAmpOptimWrapper(dict(init_scale=1.0), 'float16', optimizer=opt,
                                   min_loss_scale=0.0, max_consecutive_skips=1000)
    before = [p.detach().clone() for p in model.parameters()]
    _train_steps(wrapper, model, steps=160, inf_at=set(range(160)))
    assert wrapper.loss_scale == 0.0
    assert (wrapper.applied_steps, wrapper.skipped_steps) == (0, 160)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
