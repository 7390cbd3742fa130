"""A non-finite loss or gradient skips the step in fp32 and bf16 as in fp16; nothing silent."""
import math
import re
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook

from bevboost.boosts import apply_boosts
from bevboost.engine.nonfinite import BoostOptimWrapper, NonFiniteTrainingError
from bevboost.runner_utils import runner_from_cfg
from bevboost.seams.torch_compat import CPU_FP16_MIN
from bevboost.testing.toy import toy_config
from bevboost.testing.runner_helpers import StepRecorder, params_of

SCHED = [dict(type='LinearLR', start_factor=0.2, by_epoch=False, begin=0, end=6)]


class NaNInputAt(Hook):
    """Puts a NaN into the batch of the given iterations: the loss itself is NaN."""

    priority = 'HIGHEST'

    def __init__(self, iters):
        self.iters = set(iters)

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter in self.iters:
            data_batch['inputs'][0][0] = math.nan


def _run(tmp_path, boosts, nan_at=(), checkpoint_interval=10 ** 9, lr=0.05, **cfg):
    config = Config(toy_config(str(tmp_path), max_iters=6, lr=lr, param_scheduler=SCHED, **cfg))
    config.default_hooks.checkpoint = dict(type='CheckpointHook', interval=checkpoint_interval,
                                           by_epoch=False, save_last=False)
    config.log_level = 'INFO'
    config.experiment_name = f'{tmp_path.parent.name}-{tmp_path.name}'  # its own log file
    runner = runner_from_cfg(apply_boosts(config, boosts))
    rec = StepRecorder()
    runner.register_hook(rec)
    runner.register_hook(NaNInputAt(nan_at))
    return runner, rec


def _log_text(runner) -> str:
    (log_file,) = Path(runner.log_dir).glob('*.log')
    return log_file.read_text()


@pytest.mark.parametrize('boost', [{'nan-guard': {}}, {'amp': dict(dtype='bf16')}],
                         ids=['fp32', 'bf16'])
def test_nan_step_is_skipped_counted_and_logged(tmp_path, boost):
    clean, clean_rec = _run(tmp_path / 'clean', boost)
    clean.train()
    runner, rec = _run(tmp_path / 'nan', boost, nan_at=[2])
    runner.train()
    wrapper = runner.optim_wrapper
    assert (wrapper.applied_steps, wrapper.skipped_steps) == (5, 1)
    assert all(torch.isfinite(p).all() for p in params_of(runner).values())
    assert rec.lrs == clean_rec.lrs[:5]  # the LR held on the skipped step
    log = _log_text(runner)  # what the user reads in the work dir
    assert 'optimizer step 3 (iteration 3) skipped: non-finite loss' in log
    assert 'iteration 3: non-finite loss terms loss=nan' in log
    assert 'skipped_steps: 1' in log  # LoggerHook's interval line
    assert 'optimizer steps: 5 applied, 1 skipped' in log  # the end-of-run total


def test_without_the_guard_one_nan_ruins_every_weight(tmp_path):
    """The failure the guard exists for: mmengine's plain OptimWrapper writes NaN weights."""
    runner, _ = _run(tmp_path, [], nan_at=[2])
    runner.train()
    assert not any(torch.isfinite(p).any() for p in params_of(runner).values())


def test_nan_guard_boost_builds_the_guarded_wrapper(tmp_path):
    runner, _ = _run(tmp_path, {'nan-guard': dict(max_consecutive_skips='7')})
    runner.train()
    assert isinstance(runner.optim_wrapper, BoostOptimWrapper)
    assert runner.optim_wrapper.max_consecutive_skips == 7


def test_consecutive_skips_stop_training(tmp_path):
    runner, _ = _run(tmp_path, {'nan-guard': dict(max_consecutive_skips=3)}, nan_at=range(6))
    with pytest.raises(NonFiniteTrainingError, match='3 optimizer steps in a row'):
        runner.train()
    assert runner.optim_wrapper.applied_steps == 0


def test_non_finite_lr_is_an_error(tmp_path):
    runner, _ = _run(tmp_path, ['nan-guard'], lr=math.nan)
    with pytest.raises(NonFiniteTrainingError, match='lr=nan'):
        runner.train()


def test_no_checkpoint_with_non_finite_weights(tmp_path):
    """An unguarded wrapper with the guard's hook: the NaN weights are never written."""
    runner, _ = _run(tmp_path, [], nan_at=[2], checkpoint_interval=2,
                     custom_hooks=[dict(type='NonFiniteGuardHook')])
    with pytest.raises(NonFiniteTrainingError, match='refusing to save the checkpoint'):
        runner.train()
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['iter_2.pth']  # before the NaN


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16])
def test_fused_gradient_check_agrees_with_isfinite_and_leaves_values_alone(dtype):
    """The one-pass check against torch.isfinite on each tensor, for every position of a
    nan, +inf or -inf; finite values (-0.0, subnormals, the dtype's extremes) bit for bit."""
    from bevboost.engine.nonfinite import grads_finite
    info = torch.finfo(dtype)
    special = torch.tensor([-0.0, info.tiny / 4, info.max, -info.max, info.eps], dtype=dtype)
    base = [torch.randn(7, 5).to(dtype), special.clone(), torch.randn(300).to(dtype)]
    (flag,) = grads_finite([g.clone() for g in base])
    assert bool(flag)
    after = [g.clone() for g in base]
    grads_finite(after)
    for a, b in zip(after, base):
        assert torch.equal(a.view(torch.int16 if a.element_size() == 2 else torch.int32),
                           b.view(torch.int16 if b.element_size() == 2 else torch.int32))
    for which in range(len(base)):
        for bad in (math.nan, math.inf, -math.inf):
            grads = [g.clone() for g in base]
            grads[which].view(-1)[-1] = bad
            expected = all(bool(torch.isfinite(g).all()) for g in grads)
            assert [bool(f) for f in grads_finite(grads)] == [expected] == [False]


def test_fused_gradient_check_groups_dtypes_and_takes_sparse_grads():
    from bevboost.engine.nonfinite import grads_finite
    sparse = torch.sparse_coo_tensor([[0, 3]], [1.0, math.inf], (5,))
    flags = grads_finite([torch.ones(3), torch.ones(3, dtype=torch.bfloat16), sparse])
    assert [bool(f) for f in flags] == [False, True]  # float32 (with the sparse inf), bfloat16


def test_skipped_loss_is_not_averaged_into_the_smoothed_log(tmp_path):
    """mmengine's LogProcessor averages ``loss`` over ``window_size`` iterations: the skipped
    step's NaN goes to ``skipped_loss`` instead, so the lines after it show a finite loss."""
    runner, _ = _run(tmp_path, ['nan-guard'], nan_at=[2])
    runner.train()
    lines = [line for line in _log_text(runner).splitlines() if '(train) [' in line]
    assert len(lines) == 6, lines
    for line in lines[2:]:  # iteration 3 (skipped) and every later one
        loss = re.search(r' loss: (\S+)', line).group(1)
        assert math.isfinite(float(loss)), line
        assert 'skipped_loss: nan' in line, line
    assert 'skipped_loss' not in lines[1]
    assert runner.optim_wrapper.skipped_steps == 1


@pytest.mark.torch_min(CPU_FP16_MIN, 'fp16 on CPU')
def test_fp16_nan_loss_is_reported_as_a_non_finite_loss_not_an_overflow(caplog):
    from torch import nn

    from bevboost.engine.amp import BoostAmpOptimWrapper
    model = nn.Linear(2, 1)
    wrapper = BoostAmpOptimWrapper(dtype='fp16', optimizer=torch.optim.SGD(model.parameters(),
                                                                           lr=0.1))
    with caplog.at_level('INFO', logger='bevboost'):
        wrapper.update_params(model(torch.ones(4, 2)).sum() * math.nan)
    assert wrapper.skipped_steps == 1
    records = [r for r in caplog.records if 'skipped' in r.getMessage()]
    assert [r.levelname for r in records] == ['WARNING'], caplog.text
    assert 'skipped: non-finite loss (nan) at fp16 loss scale' in records[0].getMessage()
    assert 'overflow' not in caplog.text
    assert wrapper.last_skip_reason.startswith('non-finite loss (nan)')
