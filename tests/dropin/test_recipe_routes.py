"""The reference recipe holds on the routes users launch from, or the run stops before iteration 1.

Configs are written by the CLI (``bevboost plan --out``, ``bevboost boost --out``) from
a config that never mentions bevboost, then launched in one fresh process the way
MMDetection3D's ``tools/train.py`` does with its flags (``--auto-scale-lr``,
``--cfg-options``, ``--amp``; ``train_like_tools.py``), which never imports bevboost.
The reference side is mmengine alone: the same plain config at the reference batch
(or mmengine's own ``auto_scale_lr`` where no accumulation is involved, which it
scales right). Each param group's LR is read as iteration 1 runs, with a
``paramwise_cfg`` ``lr_mult`` so groups differ.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.runner import Runner

from bevboost.cli.main import main as cli
from bevboost.engine.recipe_check import RecipeMismatchError
from bevboost.seams.torch_compat import CPU_FP16_MIN
from bevboost.testing.toy import toy_config

from tests.dropin.launch import train_fresh

PLAIN = '''
custom_imports = dict(imports=['plainmodels'], allow_failed_imports=False)
default_scope = 'mmengine'
model = dict(type='PlainRegressor')
train_dataloader = dict(batch_size=8, num_workers=0,
                        sampler=dict(type='InfiniteSampler', shuffle=False),
                        dataset=dict(type='PlainRegressionDataset', num_samples=32),
                        collate_fn=dict(type='default_collate'))
train_cfg = dict(by_epoch=False, max_iters=2, val_interval=1000)
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9),
                     paramwise_cfg=dict(custom_keys={'net.2': dict(lr_mult=0.1)}))
param_scheduler = [dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=2)]
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1000))
auto_scale_lr = dict(enable=False, base_batch_size=8)
randomness = dict(seed=0)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
log_level = 'WARNING'
'''


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= 1e-9 * max(abs(y), 1e-12) for x, y in zip(a, b))


@pytest.fixture(scope='module')
def launched(tmp_path_factory):
    """Every route of the table in docs/engine.md, trained in one fresh process."""
    tmp = tmp_path_factory.mktemp('recipe_routes')
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:  # the CLI loads the configs, which import plainmodels
        sys.path.insert(0, here)
    plain = _write(tmp, 'plain.py', PLAIN)
    plain_b4 = _write(tmp, 'plain_b4.py', PLAIN.replace('dict(batch_size=8', 'dict(batch_size=4'))
    planned = tmp / 'planned.py'  # 1 GPU x 1 x accumulation 8 for the reference 8x1
    assert cli(['plan', '--config', str(plain), '--reference', '8x1', '--gpus', '1',
                '--max-per-gpu', '1', '--out', str(planned)]) == 0
    scaled = tmp / 'lr_scaled.py'  # batch 4 against reference 8: LR halves
    assert cli(['boost', str(plain_b4), '--with', 'lr-scale:reference_batch=8',
                '--out', str(scaled)]) == 0
    accum_written = tmp / 'accum.py'
    assert cli(['boost', str(plain_b4), '--with', 'accum=2', '--out', str(accum_written)]) == 0
    accum_in_config = _write(tmp, 'accum_in_config.py', PLAIN.replace(
        "imports=['plainmodels']", "imports=['plainmodels', 'bevboost']").replace(
        'dict(batch_size=8', 'dict(batch_size=4') + '\nbevboost_boosts = dict(accum=dict(counts=2))\n')
    flexible = _write(tmp, 'flexible.py', PLAIN.replace(
        "imports=['plainmodels']", "imports=['plainmodels', 'bevboost']") + '''
runner_type = 'FlexibleRunner'
strategy = dict(type='DDPStrategy', model_wrapper=dict(
    type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False))
bevboost_boosts = dict(amp=dict(dtype='bfloat16'))
''')
    static_scale = _write(tmp, 'static_scale.py', PLAIN.replace(
        "imports=['plainmodels']", "imports=['plainmodels', 'bevboost']").replace(
        "optim_wrapper = dict(type='OptimWrapper',",
        "optim_wrapper = dict(type='AmpOptimWrapper', loss_scale=512., dtype='float16',") +
        '\nbevboost_boosts = dict(accum=dict(counts=2))\n')
    jobs = {
        'reference b8': dict(config=plain),
        'reference b4 mmengine auto-scale': dict(config=plain_b4, auto_scale_lr=True),
        'reference b2 mmengine auto-scale': dict(config=plain_b4, auto_scale_lr=True,
                                                 cfg_options=['train_dataloader.batch_size=2']),
        'plan + --auto-scale-lr': dict(config=planned, auto_scale_lr=True),
        'plan + batch override': dict(config=planned,
                                      cfg_options=['train_dataloader.batch_size=2']),
        'lr-scale': dict(config=scaled),
        'lr-scale + --auto-scale-lr': dict(config=scaled, auto_scale_lr=True),
        'lr-scale + batch override': dict(config=scaled,
                                          cfg_options=['train_dataloader.batch_size=2']),
        'accum written + --auto-scale-lr': dict(config=accum_written, auto_scale_lr=True),
        'bevboost_boosts accum + --auto-scale-lr': dict(config=accum_in_config,
                                                        auto_scale_lr=True),
        'accum written + --amp': dict(config=accum_written, amp=True),
        'static loss scale + accum': dict(config=static_scale),
        'FlexibleRunner DDP 1 process': dict(config=flexible, world_size=1),
        'FlexibleRunner DDP 2 processes': dict(config=flexible, world_size=2),
    }
    # --resume: the first run saves its last checkpoint; the second resumes it, with the
    # flag that would rescale, and trains 4 more iterations
    jobs['plan, saved'] = dict(config=planned, work_dir=tmp / 'wd_resume')
    jobs['plan + --resume --auto-scale-lr'] = dict(
        config=planned, work_dir=tmp / 'wd_resume', resume=True, auto_scale_lr=True,
        cfg_options=['train_cfg.max_iters=20'])
    job_list = [dict(job, config=str(job['config']), route='tools',
                     work_dir=str(job.get('work_dir') or tmp / f'wd{i}'))
                for i, job in enumerate(jobs.values())]
    return dict(zip(jobs, train_fresh(job_list, tmp)))


def _ok(result: dict) -> dict:
    assert result['ok'], result.get('traceback') or result.get('error')
    return result


def test_planned_accumulation_keeps_the_reference_lr_under_auto_scale_lr(launched):
    """1 x accumulation 8 for 8x1: mmengine alone scales by 1/8 (blind to accumulation)."""
    reference = _ok(launched['reference b8'])
    run = _ok(launched['plan + --auto-scale-lr'])
    assert len(reference['first_iteration_lrs']) == 4  # lr_mult 0.1 on net.2: groups differ
    assert _close(run['first_iteration_lrs'], reference['first_iteration_lrs'])
    assert run['accumulative_counts'] == 8 and run['batch_size'] == 1
    assert any('auto_scale_lr.enable=True' in n for n in run['launch_notes'])
    assert run['recipe'].startswith('recipe: reference batch 8') and \
        'effective batch 8' in run['recipe']


def test_planned_config_with_another_batch_stops_before_iteration_1(launched):
    run = launched['plan + batch override']
    assert not run['ok']
    assert 'RecipeMismatchError' in run['error'] and 'train_dataloader.batch_size is 2' in \
        run['error'] and 'effective batch 16' in run['error'] and 'planned for 8' in run['error']


@pytest.mark.parametrize('route,reference', [
    ('lr-scale', 'reference b4 mmengine auto-scale'),
    ('lr-scale + --auto-scale-lr', 'reference b4 mmengine auto-scale'),  # scaled once, not twice
    ('lr-scale + batch override', 'reference b2 mmengine auto-scale'),  # from the built batch
    ('accum written + --auto-scale-lr', 'reference b4 mmengine auto-scale'),
    ('bevboost_boosts accum + --auto-scale-lr', 'reference b4 mmengine auto-scale'),
])
def test_lr_follows_the_effective_batch_like_mmengine_at_that_batch(launched, route, reference):
    """mmengine's own linear auto_scale_lr at the same effective batch, no accumulation, is
    the reference; the kit's run must give every param group the same iteration-1 LR."""
    ref = _ok(launched[reference])
    run = _ok(launched[route])
    assert _close(run['first_iteration_lrs'], ref['first_iteration_lrs']), (run, ref)
    assert run['recipe'] and 'LR per group' in run['recipe']


def test_lr_scale_verdict_reads_the_built_param_groups(launched):
    run = _ok(launched['lr-scale + --auto-scale-lr'])
    verdict = next(v for v in run['verdicts'] if v.startswith('lr-scale'))
    assert 'built LR per group 0.005, 0.005, 0.0005, 0.0005' in verdict, verdict


def test_amp_flag_on_a_kit_config_uses_the_kits_wrapper(launched):
    """mmengine's AmpOptimWrapper cannot even be built on a CPU; the kit's takes its place
    with the same arguments and says so."""
    run = _ok(launched['accum written + --amp'])
    assert run['wrapper'] == 'BoostAmpOptimWrapper' and run['cast_dtype'] == 'torch.bfloat16'
    assert any('AmpOptimWrapper (e.g. --amp) -> BoostAmpOptimWrapper' in n
               for n in run['launch_notes'])


@pytest.mark.torch_min(CPU_FP16_MIN, 'fp16 on CPU')
def test_a_users_static_loss_scale_is_kept(launched):
    run = _ok(launched['static loss scale + accum'])
    assert run['wrapper'] == 'BoostAmpOptimWrapper' and run['cast_dtype'] == 'torch.float16'
    assert run['loss_scale'] == '512.0'


@pytest.mark.parametrize('route', ['FlexibleRunner DDP 1 process', 'FlexibleRunner DDP 2 processes'])
def test_flexible_runner_with_ddp_strategy_applies_bevboost_boosts(launched, route):
    run = _ok(launched[route])
    assert run['runner'] == 'FlexibleRunner'
    assert run['wrapper'] == 'BoostAmpOptimWrapper' and run['cast_dtype'] == 'torch.bfloat16'
    assert run['verdicts'][0].startswith('amp: BoostAmpOptimWrapper bfloat16')
    if route.endswith('2 processes'):
        assert run['world_size'] == 2 and run['rank_errors'] == [None, None]
        lrs = run['rank_first_iteration_lrs']
        assert _close(lrs[0], lrs[1])


def test_boosts_a_strategy_does_not_take_are_refused_by_name(tmp_path):
    """amp under FSDPStrategy: not in the amp card's strategies, refused before any build."""
    from mmengine.registry import RUNNERS
    cfg = Config(toy_config(str(tmp_path), runner_type='FlexibleRunner',
                            strategy=dict(type='FSDPStrategy'),
                            bevboost_boosts=dict(amp=dict(dtype='bfloat16'))))
    with pytest.raises(ValueError, match=r"\['amp'\] do not work under FlexibleRunner with "
                                         r"strategy FSDPStrategy .*'SingleDeviceStrategy', "
                                         r"'DDPStrategy'"):
        RUNNERS.build(cfg)


def test_a_route_past_the_kit_is_stopped_by_the_check_on_the_built_runner(tmp_path):
    """Runner(...) built by hand from a kit-written lr-scale config with mmengine's
    auto_scale_lr on: nothing reconciled it, so the check on the built runner stops it."""
    from bevboost.boosts import apply_boosts
    cfg = apply_boosts(Config(toy_config(str(tmp_path), batch_size=4)),
                       ['lr-scale:reference_batch=8'])
    cfg.auto_scale_lr = dict(enable=True, base_batch_size=8)
    kwargs = {k: copy.deepcopy(cfg.get(k)) for k in (
        'model', 'work_dir', 'train_dataloader', 'train_cfg', 'optim_wrapper', 'param_scheduler',
        'default_hooks', 'custom_hooks', 'auto_scale_lr', 'default_scope', 'experiment_name',
        'randomness', 'env_cfg', 'log_level')}
    runner = Runner(cfg=cfg, **kwargs)  # past Runner.from_cfg: not reconciled
    with pytest.raises(RecipeMismatchError, match=r'auto_scale_lr.enable: .* 0.5x off'):
        runner.train()


def test_resume_keeps_the_lr_of_the_checkpoint(launched):
    saved = _ok(launched['plan, saved'])
    resumed = _ok(launched['plan + --resume --auto-scale-lr'])
    assert saved['iter'] == 16 and resumed['iter'] == 20
    assert _close(resumed['group_lrs_initial'], saved['group_lrs_initial'])
    assert _close(resumed['first_iteration_lrs'], [0.01, 0.01, 0.001, 0.001])  # warm-up over


def test_flexible_runner_built_by_hand_refuses_unapplied_boosts(tmp_path):
    from mmengine.runner import FlexibleRunner
    cfg = Config(toy_config(str(tmp_path), bevboost_boosts=dict(amp=dict(dtype='bf16'))))
    with pytest.raises(ValueError, match=r"reached FlexibleRunner.__init__ unapplied.*"
                                         r"FlexibleRunner.from_cfg"):
        FlexibleRunner(model=cfg['model'], work_dir=cfg['work_dir'], cfg=cfg)


def test_an_lr_override_on_a_planned_config_is_named(tmp_path):
    """--cfg-options optim_wrapper.optimizer.lr=... after `bevboost plan`: the planned LR no
    longer follows from the recorded reference, and the check names the key."""
    from bevboost.planning import apply_plan
    from bevboost.recipe import plan_recipe
    cfg = Config(toy_config(str(tmp_path), batch_size=8, lr=0.1))
    planned = apply_plan(cfg, plan_recipe(8, gpus=1, max_per_gpu=2, lr=0.1))
    planned.optim_wrapper.optimizer.lr = 0.3
    runner = Runner.from_cfg(planned)
    with pytest.raises(RecipeMismatchError, match=r'optim_wrapper.optimizer.lr: .*\[0.3\].*'
                                                  r'implies \[0.1\].*3x off'):
        runner.train()
    assert runner.iter == 0


@pytest.mark.parametrize('mode', ['stop', 'warn'])
def test_a_bundled_recipe_on_fewer_gpus_stops_or_warns(tmp_path, mode):
    """A config carrying its published recipe (8 GPUs x 1 here: the bundled V2-99 form),
    boosted and launched on one process: the effective batch is 1/8 and the LR is the
    reference's. It stops naming the world size, or with bevboost_recipe_check='warn'
    trains and says so."""
    from bevboost.boosts import apply_boosts
    cfg = Config(toy_config(str(tmp_path), batch_size=1, max_iters=2, bevboost_recipe=dict(
        reference_batch=8, reference_lr=0.1, gpus=8, per_gpu_batch=1)))
    if mode == 'warn':
        cfg.bevboost_recipe_check = 'warn'
    runner = Runner.from_cfg(apply_boosts(cfg, ['nan-guard']))
    if mode == 'stop':
        with pytest.raises(RecipeMismatchError, match=r'effective batch 1 .* world size \(GPUs '
                                                      r'launched\) is 1, the recipe has 8.*'
                                                      r'bevboost plan --config CONFIG --gpus 1'):
            runner.train()
        assert runner.iter == 0
    else:
        runner.train()
        report = next(h for h in runner.hooks if type(h).__name__ == 'BoostReportHook')
        assert report.recipe.startswith("WARNING: recipe differs (bevboost_recipe_check='warn'")
        assert runner.iter == 2
