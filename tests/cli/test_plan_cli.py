"""``bevboost plan``: the documented interface, config rewriting, schedule lint, bad input."""
import json
import textwrap

import pytest
from mmengine.config import Config

from bevboost.cli.main import main

TOY_CONFIG = textwrap.dedent('''
    custom_imports = dict(imports=['bevboost', 'bevboost.testing.toy'])
    default_scope = 'mmengine'
    model = dict(type='ToyRegressor')
    train_dataloader = dict(batch_size=4, num_workers=0,
                            sampler=dict(type='InfiniteSampler', shuffle=False),
                            dataset=dict(type='ToyRegressionDataset', num_samples=64),
                            collate_fn=dict(type='default_collate'))
    train_cfg = dict(by_epoch=False, max_iters=500, val_interval=100)
    optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=2e-4))
    param_scheduler = [
        dict(type='LinearLR', start_factor=1 / 3, by_epoch=False, begin=0, end=50),
        dict(type='CosineAnnealingLR', T_max=450, by_epoch=False, begin=50, end=500),
    ]
    default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=100, by_epoch=False))
    auto_scale_lr = dict(enable=False, base_batch_size=32)
''')


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_json_fields(capsys):
    code, out, _ = run_cli(capsys, 'plan', '--reference', '8x4', '--lr', '2e-4', '--gpus', '4',
                           '--max-per-gpu', '3', '--json')
    assert code == 0
    result = json.loads(out)
    assert result['per_gpu_batch'] == 2 and result['accumulative_counts'] == 4
    assert result['effective_batch'] == 32 and result['lr'] == pytest.approx(2e-4)


def test_plan_text(capsys):
    code, out, _ = run_cli(capsys, 'plan', '--reference', '8x4', '--lr', '2e-4', '--gpus', '4',
                           '--max-per-gpu', '3', '--rule', 'sqrt')
    assert code == 0
    assert 'per-GPU batch  2' in out and 'accumulation   4' in out and 'effective batch 32' in out


def test_check_rejects_effective_batch_96(capsys):
    code, _, err = run_cli(capsys, 'plan', '--reference', '8x4', '--gpus', '4', '--per-gpu', '3',
                           '--accum', '8')
    assert code != 0
    assert 'effective batch of 96' in err and 'reference 32' in err
    assert '4x4x2' in err and '4x2x4' in err


def test_check_accepts_equivalent(capsys):
    code, out, _ = run_cli(capsys, 'plan', '--reference', '8x4', '--gpus', '4', '--per-gpu', '4',
                           '--accum', '2')
    assert code == 0 and '(exact)' in out


@pytest.mark.parametrize('argv, needle', [
    (['--reference', '8x', '--gpus', '4', '--max-per-gpu', '3'], "'8x'"),
    (['--reference', '0x4', '--gpus', '4', '--max-per-gpu', '3'], "'0x4'"),
    (['--reference', 'x4', '--gpus', '4', '--max-per-gpu', '3'], "'x4'"),
    (['--reference', '8x4', '--lr', '-1', '--gpus', '4', '--max-per-gpu', '3'], '--lr'),
    (['--reference', '8x4', '--gpus', '0', '--max-per-gpu', '3'], 'gpus'),
    (['--reference', '8x4', '--gpus', '4', '--per-gpu', '2', '--accum', '0'], 'accum'),
    (['--config', '/nonexistent/cfg.py', '--gpus', '4'], 'config file not found'),
])
def test_bad_input_is_one_clear_error(capsys, argv, needle):
    code, out, err = run_cli(capsys, 'plan', *argv)
    assert code == 2
    assert needle in err and 'Traceback' not in err


def test_unknown_rule_is_rejected(capsys):
    with pytest.raises(SystemExit) as exc:
        main(['plan', '--reference', '8x4', '--gpus', '4', '--max-per-gpu', '3', '--rule', 'cubic'])
    assert exc.value.code == 2
    assert "invalid choice: 'cubic'" in capsys.readouterr().err


def test_config_without_optimizer(tmp_path, capsys):
    cfg = tmp_path / 'noopt.py'
    cfg.write_text("train_dataloader = dict(batch_size=2)\nauto_scale_lr = dict(base_batch_size=8)\n")
    code, _, err = run_cli(capsys, 'plan', '--config', str(cfg), '--gpus', '2')
    assert code == 2 and 'optimizer' in err


def test_config_rewrite_exact(tmp_path, capsys):
    src, out = tmp_path / 'ref.py', tmp_path / 'boosted.py'
    src.write_text(TOY_CONFIG)
    code, text, _ = run_cli(capsys, 'plan', '--config', str(src), '--gpus', '4', '--max-per-gpu',
                            '3', '--out', str(out))
    assert code == 0 and f'wrote {out}' in text
    assert 'optim_wrapper.accumulative_counts' in text  # shows what changed
    new = Config.fromfile(str(out))
    assert new.train_dataloader.batch_size == 2
    assert new.optim_wrapper.accumulative_counts == 4
    assert new.optim_wrapper.optimizer.lr == pytest.approx(2e-4)
    assert new.train_cfg.max_iters == 2000 and new.train_cfg.val_interval == 400
    assert new.default_hooks.checkpoint.interval == 400
    assert new.default_hooks.param_scheduler.type == 'OptimizerStepSchedulerHook'
    assert new.param_scheduler[0].end == 50  # optimizer steps: unchanged
    assert new.bevboost_recipe.effective_batch == 32


def test_config_rewrite_not_exact_rescales_bounds(tmp_path, capsys):
    src, out = tmp_path / 'ref.py', tmp_path / 'boosted.py'
    src.write_text(TOY_CONFIG)
    code, text, _ = run_cli(capsys, 'plan', '--config', str(src), '--gpus', '3', '--max-per-gpu',
                            '3', '--out', str(out), '--json')
    assert code == 0
    result = json.loads(text)
    assert not result['exact']
    new = Config.fromfile(str(out))
    eff = result['effective_batch']
    assert new.optim_wrapper.optimizer.lr == pytest.approx(2e-4 * eff / 32)
    assert new.param_scheduler[0].end == round(50 * 32 / eff)
    assert new.param_scheduler[1].T_max == round(450 * 32 / eff)
    assert any(c['key'] == 'optim_wrapper.optimizer.lr' for c in result['config_changes'])


def test_schedule_lint_catches_short_cosine():
    from bevboost.planning import lint_schedule
    cfg = Config(dict(train_cfg=dict(by_epoch=True, max_epochs=24),
                      train_dataloader=dict(batch_size=1), optim_wrapper=dict(optimizer=dict(lr=1)),
                      param_scheduler=[dict(type='CosineAnnealingLR', T_max=20, by_epoch=True,
                                            begin=0, end=24)]))
    warnings = lint_schedule(cfg)
    assert any('rises again after epoch 20' in w for w in warnings)
    cfg.param_scheduler[0].update(T_max=24)
    assert lint_schedule(cfg) == []
    cfg.param_scheduler[0].update(T_max=20, end=20)
    assert any('constant LR' in w for w in lint_schedule(cfg))


def _inheriting_config(tmp_path, own: str = '') -> str:
    """A config whose schedule (LR, auto_scale_lr) comes from a ``_base_`` file."""
    base = tmp_path / 'lidar_schedule.py'
    base.write_text("optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', "
                    "lr=1e-4))\nauto_scale_lr = dict(enable=False, base_batch_size=32)\n")
    model = TOY_CONFIG.split('optim_wrapper')[0]  # the toy without its own schedule
    cfg = tmp_path / 'model.py'
    cfg.write_text("_base_ = ['./lidar_schedule.py']\n" + model + own)
    return str(cfg)


def test_plan_names_the_base_file_the_reference_came_from(tmp_path, capsys):
    cfg = _inheriting_config(tmp_path)
    code, out, _ = run_cli(capsys, 'plan', '--config', cfg, '--gpus', '2', '--max-per-gpu', '2')
    assert code == 0
    base = str(tmp_path / 'lidar_schedule.py')
    assert f'batch 32 (from auto_scale_lr.base_batch_size in {base})' in out
    assert f'lr 0.0001 (from optim_wrapper.optimizer.lr in {base})' in out
    assert f'warning: the reference base_batch_size 32 is inherited from {base}' in out
    assert f'warning: the reference lr 0.0001 is inherited from {base}' in out


def test_plan_prefers_the_configs_bevboost_recipe_and_does_not_warn(tmp_path, capsys):
    cfg = _inheriting_config(
        tmp_path, own='bevboost_recipe = dict(reference_batch=8, reference_lr=2e-4)\n')
    code, out, _ = run_cli(capsys, 'plan', '--config', cfg, '--gpus', '2', '--max-per-gpu', '2',
                           '--json')
    assert code == 0
    result = json.loads(out)
    assert result['reference_batch'] == 8 and result['reference_lr'] == pytest.approx(2e-4)
    assert result['reference_source'] == {
        'batch': f'bevboost_recipe.reference_batch in {cfg}',
        'lr': f'bevboost_recipe.reference_lr in {cfg}'}
    assert not [w for w in result['warnings'] if 'inherited' in w]
    assert result['per_gpu_batch'] == 2 and result['accumulative_counts'] == 2


def test_plan_command_line_reference_wins(tmp_path, capsys):
    code, out, _ = run_cli(capsys, 'plan', '--config', _inheriting_config(tmp_path),
                           '--reference', '8x1', '--lr', '2e-4', '--gpus', '2',
                           '--max-per-gpu', '2')
    assert code == 0
    assert 'batch 8 (from --reference), lr 0.0002 (from --lr)' in out
    assert 'inherited' not in out


@pytest.mark.parametrize('path, batch, gpus, per_gpu', [
    ('configs/petrv2/petrv2_vov99_gridmask_800x320_8xb1-24e_nus.py', 8, 8, 1),
    ('configs/bevfusion/bevfusion_lidar-cam_voxel0075_swint_256x704_8xb4-6e_nus.py', 32, 8, 4),
    ('configs/bevfusion/bevfusion_lidar_voxel0075_second_secfpn_8xb4-cyclic-20e_nus.py',
     32, 8, 4),
])
def test_bundled_configs_carry_their_published_reference(path, batch, gpus, per_gpu):
    from pathlib import Path

    from bevboost.planning import BATCH_KEYS, reference_with_source
    full = Path(__file__).resolve().parents[2] / path
    cfg = Config.fromfile(str(full), import_custom_modules=False)
    recipe = cfg.bevboost_recipe
    assert (recipe.reference_batch, recipe.gpus, recipe.per_gpu_batch) == (batch, gpus, per_gpu)
    assert recipe.gpus * recipe.per_gpu_batch == recipe.reference_batch
    value, source, warning = reference_with_source(cfg, BATCH_KEYS)
    assert value == batch and source.startswith('bevboost_recipe.') and warning is None


def test_planned_config_imports_bevboost_and_reports_its_boosts(tmp_path, capsys):
    src, out = tmp_path / 'ref.py', tmp_path / 'planned.py'
    src.write_text(TOY_CONFIG.replace("imports=['bevboost', 'bevboost.testing.toy']",
                                      "imports=['bevboost.testing.toy']"))
    assert run_cli(capsys, 'plan', '--config', str(src), '--gpus', '4', '--max-per-gpu', '3',
                   '--out', str(out))[0] == 0
    new = Config.fromfile(str(out))
    assert new.custom_imports.imports == ['bevboost.testing.toy', 'bevboost']
    report = [h for h in new.custom_hooks if h.type == 'BoostReportHook']
    # the plan's accumulation is the accum boost's (plan rescales the loop lengths itself)
    assert report and report[0].boosts == {'accum': {'counts': 4, 'per_gpu_batch': 2,
                                                     'scale_loop': False}}
    assert new.bevboost_applied == ['accum']


def test_train_takes_boost_options(tmp_path, capsys):
    src = tmp_path / 'toy.py'
    src.write_text(TOY_CONFIG.replace('max_iters=500, val_interval=100',
                                      'max_iters=2, val_interval=100')
                   + "log_level = 'WARNING'\n")
    code = main(['train', str(src), '--work-dir', str(tmp_path / 'work'),
                 '--with', 'accum=4:per_gpu_batch=1'])
    assert code == 0
    logs = list((tmp_path / 'work').glob('*/vis_data/config.py'))
    assert logs, 'no run'
    run_cfg = Config.fromfile(str(logs[0]))
    assert run_cfg.optim_wrapper.accumulative_counts == 4
    assert run_cfg.train_dataloader.batch_size == 1 and run_cfg.train_cfg.max_iters == 2 * 4


@pytest.mark.parametrize('spec, needles', [
    ('accum=2:per_gpu_batch=x', ['per_gpu_batch', "'x'"]),
    ('accum=2:per_gpu=1', ["'per_gpu'"]),
    ('accum=2:per_gpu_batch', ["'per_gpu_batch'", 'key=value']),
])
def test_bad_boost_option_is_one_error_naming_it(tmp_path, capsys, spec, needles):
    src = tmp_path / 'toy.py'
    src.write_text(TOY_CONFIG)
    code, _, err = run_cli(capsys, 'boost', str(src), '--with', spec)
    assert code == 2 and len(err.strip().splitlines()) == 1 and 'Traceback' not in err
    assert all(n in err for n in needles), err


def test_bench_variants_take_boost_options():
    """``bench --variants`` resolves through the same parser; the worker applies the specs."""
    from bevboost.boosts import apply_boosts
    from bevboost.bench.harness import resolve_variants
    variants = resolve_variants(['amp=bf16+accum=2:per_gpu_batch=1'], ceiling=False)
    variant = next(v for v in variants if v.specs)
    assert variant.specs == ['amp=bf16', 'accum=2:per_gpu_batch=1']
    cfg = apply_boosts(Config.fromstring(TOY_CONFIG, '.py'), variant.specs)
    assert cfg.optim_wrapper.accumulative_counts == 2 and cfg.train_dataloader.batch_size == 1
    assert 'bevboost' in cfg.custom_imports.imports
