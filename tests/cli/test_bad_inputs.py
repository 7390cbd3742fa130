"""Every bad CLI input: exit status 2, one stderr line naming the argument and the value.

The table runs ``bevboost.cli.main.main`` in-process; a guard makes any run that
starts (a bench worker, a Runner build) fail the test, so each case also proves
the input was refused before work began. A few cases run as a subprocess to see
the real stderr (log lines and warnings included). Further down: nothing is
overwritten without ``--force``, and ``--force`` does overwrite.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

from bevboost.cli import checks
from bevboost.cli.main import main

TOY_CONFIG = textwrap.dedent('''
    custom_imports = dict(imports=['bevboost', 'bevboost.testing.toy'])
    default_scope = 'mmengine'
    model = dict(type='ToyRegressor')
    work_dir = {work_dir!r}
    train_dataloader = dict(batch_size=4, num_workers=0,
                            sampler=dict(type='InfiniteSampler', shuffle=False),
                            dataset=dict(type='ToyRegressionDataset', num_samples=16),
                            collate_fn=dict(type='default_collate'))
    train_cfg = dict(by_epoch=False, max_iters=2)
    optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr={lr}))
    auto_scale_lr = dict(enable=False, base_batch_size=32)
''')


@pytest.fixture(scope='module')
def files(tmp_path_factory) -> dict[str, str]:
    """Inputs the table refers to as ``{name}``."""
    root = tmp_path_factory.mktemp('bad_inputs')
    paths = {name: root / name for name in (
        'toy.py', 'nan_lr.py', 'syntax.py', 'bad_import.py', 'raises.py', 'exists.py',
        'afile', 'full', 'empty.pth', 'truncated.pth', 'notckpt.pth', 'wd_bad', 'fresh')}
    paths['toy.py'].write_text(TOY_CONFIG.format(work_dir=str(root / 'wd'), lr=0.01))
    paths['nan_lr.py'].write_text(TOY_CONFIG.format(work_dir=str(root / 'wd'), lr="float('nan')"))
    paths['syntax.py'].write_text('model = dict(type="ToyRegressor"\n')
    paths['bad_import.py'].write_text("custom_imports = dict(imports=['no_such_module_bb14'])\n")
    paths['raises.py'].write_text('x = 1 / 0\n')
    paths['exists.py'].write_text('# a file the user keeps\n')
    paths['afile'].write_text('not a directory\n')
    paths['full'].mkdir()
    (paths['full'] / 'keep.txt').write_text('keep me\n')
    paths['empty.pth'].write_bytes(b'')
    good = root / 'good.pth'
    torch.save({'state_dict': {'w': torch.zeros(256)}}, good)
    paths['truncated.pth'].write_bytes(good.read_bytes()[:good.stat().st_size // 2])
    with zipfile.ZipFile(paths['notckpt.pth'], 'w') as archive:
        archive.writestr('readme.txt', 'a zip, not a checkpoint')
    paths['wd_bad'].mkdir()  # auto-resume would pick an empty checkpoint
    (paths['wd_bad'] / 'last_checkpoint').write_text(str(paths['empty.pth']))
    return {k.replace('.', '_'): str(v) for k, v in paths.items()}


PLAN = ['plan', '--reference', '8x4', '--gpus', '4', '--max-per-gpu', '2']

#: (id, argv with {file} placeholders, strings the one error line must contain)
CASES = [
    # argparse level
    ('no-command', [], ['COMMAND']),
    ('unknown-command', ['frobnicate'], ["'frobnicate'"]),
    ('plan-missing-gpus', ['plan', '--reference', '8x4'], ['--gpus']),
    ('plan-gpus-not-int', ['plan', '--reference', '8x4', '--gpus', 'four'], ['--gpus', "'four'"]),
    ('plan-lr-not-number', PLAN + ['--lr', 'abc'], ['--lr', "'abc'"]),
    ('plan-unknown-rule', PLAN + ['--rule', 'cubic'], ['--rule', "'cubic'"]),
    ('plan-unknown-option', PLAN + ['--bogus'], ['--bogus']),
    # plan: implausible numbers
    ('plan-lr-above-10', PLAN + ['--lr', '11'], ['--lr', '11']),
    ('plan-lr-1e30', PLAN + ['--lr', '1e30'], ['--lr', '1e+30']),
    ('plan-lr-nan', PLAN + ['--lr', 'nan'], ['--lr', 'nan']),
    ('plan-lr-inf', PLAN + ['--lr', 'inf'], ['--lr', 'inf']),
    ('plan-lr-negative', PLAN + ['--lr', '-1'], ['--lr', '-1']),
    ('plan-lr-zero', PLAN + ['--lr', '0'], ['--lr', '0']),
    ('plan-reference-huge', ['plan', '--reference', '100000000000000000000x4', '--gpus', '4',
                             '--max-per-gpu', '2'], ['--reference', "'100000000000000000000x4'"]),
    ('plan-reference-total-huge', ['plan', '--reference', '2000000', '--gpus', '4',
                                   '--max-per-gpu', '2'], ['--reference', "'2000000'"]),
    ('plan-reference-malformed', ['plan', '--reference', '8x', '--gpus', '4',
                                  '--max-per-gpu', '2'], ['--reference', "'8x'"]),
    ('plan-reference-zero', ['plan', '--reference', '0', '--gpus', '4', '--max-per-gpu', '2'],
     ['--reference', "'0'"]),
    ('plan-samples-negative', PLAN + ['--samples', '-5'], ['--samples', '-5']),
    ('plan-samples-zero', PLAN + ['--samples', '0'], ['--samples', '0']),
    ('plan-gpus-zero', ['plan', '--reference', '8x4', '--gpus', '0', '--max-per-gpu', '2'],
     ['--gpus', '0']),
    ('plan-max-per-gpu-negative', ['plan', '--reference', '8x4', '--gpus', '4',
                                   '--max-per-gpu', '-3'], ['--max-per-gpu', '-3']),
    ('plan-max-per-gpu-huge', ['plan', '--reference', '8x4', '--gpus', '4',
                               '--max-per-gpu', '1000000000'], ['--max-per-gpu', '1000000000']),
    ('plan-accum-zero', ['plan', '--reference', '8x4', '--gpus', '4', '--per-gpu', '2',
                         '--accum', '0'], ['--accum', '0']),
    # plan: configs and --out
    ('plan-config-missing', ['plan', '--config', '{toy_py}.missing', '--gpus', '4'],
     ['{toy_py}.missing']),
    ('plan-config-syntax', ['plan', '--config', '{syntax_py}', '--gpus', '4'],
     ['{syntax_py}', 'SyntaxError']),
    ('plan-config-import', ['plan', '--config', '{bad_import_py}', '--gpus', '4'],
     ['{bad_import_py}', 'no_such_module_bb14']),
    ('plan-config-raises', ['plan', '--config', '{raises_py}', '--gpus', '4'],
     ['{raises_py}', 'ZeroDivisionError']),
    ('plan-config-nan-lr', ['plan', '--config', '{nan_lr_py}', '--gpus', '4'],
     ['{nan_lr_py}', 'nan']),
    ('plan-out-txt', ['plan', '--config', '{toy_py}', '--gpus', '4', '--out', '{fresh}.txt'],
     ['--out', "'{fresh}.txt'", '.py, .json, .yaml']),
    ('plan-out-is-input', ['plan', '--config', '{toy_py}', '--gpus', '4', '--out', '{toy_py}'],
     ['--out', '{toy_py}', 'input', '--force']),
    ('plan-out-exists', ['plan', '--config', '{toy_py}', '--gpus', '4', '--out', '{exists_py}'],
     ['--out', '{exists_py}', 'exists', '--force']),
    ('plan-out-no-dir', ['plan', '--config', '{toy_py}', '--gpus', '4', '--out',
                         '{fresh}/sub/x.py'], ['--out', '{fresh}/sub/x.py']),
    ('plan-out-without-config', PLAN + ['--out', '{fresh}.py'], ['--out', '--config']),
    # boost
    ('boost-duplicate', ['boost', '{toy_py}', '--with', 'amp=bf16,amp=fp16'],
     ['--with', "'amp=bf16,amp=fp16'", 'twice']),
    ('boost-unknown', ['boost', '{toy_py}', '--with', 'warp-drive'], ['--with', "'warp-drive'"]),
    ('boost-bad-value', ['boost', '{toy_py}', '--with', 'amp=fp8'], ['--with', "'amp=fp8'"]),
    ('boost-fast-decode-backend', ['boost', '{toy_py}', '--with', 'fast-decode=foo'],
     ['--with', "'fast-decode=foo'", "'foo'"]),
    ('boost-accum-zero', ['boost', '{toy_py}', '--with', 'accum=0'], ['--with', "'accum=0'"]),
    ('boost-config-syntax', ['boost', '{syntax_py}', '--with', 'amp'], ['{syntax_py}']),
    ('boost-config-import', ['boost', '{bad_import_py}'], ['{bad_import_py}']),
    ('boost-out-is-input', ['boost', '{toy_py}', '--with', 'amp', '--out', '{toy_py}'],
     ['--out', '{toy_py}', '--force']),
    ('boost-out-exists', ['boost', '{toy_py}', '--out', '{exists_py}'],
     ['--out', '{exists_py}', '--force']),
    ('boost-out-txt', ['boost', '{toy_py}', '--out', '{fresh}.txt'], ['--out', '.txt', '.py']),
    ('boost-out-without-config', ['boost', '--out', '{fresh}.py'], ['--out', 'CONFIG']),
    # train
    ('train-config-syntax', ['train', '{syntax_py}'], ['{syntax_py}', 'SyntaxError']),
    ('train-config-import', ['train', '{bad_import_py}'], ['{bad_import_py}']),
    ('train-config-nan-lr', ['train', '{nan_lr_py}'], ['{nan_lr_py}', 'lr', 'nan']),
    ('train-duplicate-boost', ['train', '{toy_py}', '--boosts', 'accum=2,accum=4'],
     ['--boosts', "'accum=2,accum=4'", 'twice']),
    ('train-unknown-boost', ['train', '{toy_py}', '--boosts', 'turbo'], ['--boosts', "'turbo'"]),
    ('train-cfg-options-no-equals', ['train', '{toy_py}', '--cfg-options', 'foo'],
     ['--cfg-options', "'foo'"]),
    ('train-cfg-options-empty-key', ['train', '{toy_py}', '--cfg-options', '=3'],
     ['--cfg-options', "'=3'"]),
    ('train-cfg-options-brackets', ['train', '{toy_py}', '--cfg-options', 'a=[1,2'],
     ['--cfg-options', "'a=[1,2'"]),
    ('train-cfg-options-nan-lr', ['train', '{toy_py}', '--cfg-options',
                                  'optim_wrapper.optimizer.lr=nan'],
     ['--cfg-options', "'optim_wrapper.optimizer.lr=nan'"]),
    ('train-cfg-options-huge-lr', ['train', '{toy_py}', '--cfg-options',
                                   'optim_wrapper.optimizer.lr=1e30'], ['--cfg-options', '1e+30']),
    ('train-cfg-options-misfit', ['train', '{toy_py}', '--cfg-options', 'train_cfg.max_iters.x=1'],
     ['--cfg-options', 'max_iters']),
    ('train-work-dir-file', ['train', '{toy_py}', '--work-dir', '{afile}'],
     ['--work-dir', '{afile}']),
    ('train-resume-empty', ['train', '{toy_py}', '--resume', '{empty_pth}'],
     ['--resume', '{empty_pth}', 'empty']),
    ('train-resume-truncated', ['train', '{toy_py}', '--resume', '{truncated_pth}'],
     ['--resume', '{truncated_pth}', 'truncated']),
    ('train-boosted-truncated', ['train', '{toy_py}', '--boosts', 'accum=2', '--resume',
                                 '{truncated_pth}'], ['--resume', '{truncated_pth}']),
    ('train-resume-not-checkpoint', ['train', '{toy_py}', '--resume', '{notckpt_pth}'],
     ['--resume', '{notckpt_pth}']),
    ('train-resume-missing', ['train', '{toy_py}', '--resume', '{fresh}.pth'],
     ['--resume', '{fresh}.pth']),
    ('train-auto-resume-empty', ['train', '{toy_py}', '--work-dir', '{wd_bad}', '--resume'],
     ['--resume', '{empty_pth}']),
    ('train-load-from-truncated', ['train', '{toy_py}', '--cfg-options',
                                   'load_from={truncated_pth}'], ['load_from', '{truncated_pth}']),
    # bench: everything checked before the first run
    ('bench-variants-empty', ['bench', '--variants', '', '--out', '{fresh}'], ['--variants', "''"]),
    ('bench-variants-comma', ['bench', '--variants', 'amp,', '--out', '{fresh}'],
     ['--variants', "'amp,'"]),
    ('bench-variants-unknown', ['bench', '--variants', 'nitro', '--out', '{fresh}'],
     ['--variants', "'nitro'"]),
    ('bench-variants-bad-value', ['bench', '--variants', 'baseline,amp=fp8', '--out', '{fresh}'],
     ['--variants', "'amp=fp8'", 'fp8']),
    ('bench-variants-duplicate', ['bench', '--variants', 'amp+amp=fp16', '--out', '{fresh}'],
     ['--variants', "'amp+amp=fp16'", 'twice']),
    ('bench-variants-tooling', ['bench', '--variants', 'measure', '--out', '{fresh}'],
     ['--variants', "'measure'"]),
    ('bench-config-syntax', ['bench', '{syntax_py}', '--variants', 'amp', '--out', '{fresh}'],
     ['{syntax_py}']),
    ('bench-config-missing', ['bench', '{fresh}.py', '--out', '{fresh}'], ['{fresh}.py']),
    ('bench-timeout-nan', ['bench', '--timeout', 'nan'], ['--timeout', 'nan']),
    ('bench-timeout-inf', ['bench', '--timeout', 'inf'], ['--timeout', 'inf']),
    ('bench-timeout-zero', ['bench', '--timeout', '0'], ['--timeout', 'got 0']),
    ('bench-iters-zero', ['bench', '--iters', '0'], ['--iters', 'got 0']),
    ('bench-warmup-negative', ['bench', '--warmup', '-1'], ['--warmup', 'got -1']),
    ('bench-repeats-zero', ['bench', '--repeats', '0'], ['--repeats', 'got 0']),
    ('bench-out-txt', ['bench', '--variants', 'amp', '--out', '{fresh}.txt'],
     ['--out', "'{fresh}.txt'", 'report.json']),
    ('bench-out-file', ['bench', '--variants', 'amp', '--out', '{afile}'], ['--out', '{afile}']),
    # data synth
    ('synth-out-file', ['data', 'synth', '{afile}'], ['{afile}', 'file']),
    ('synth-out-not-empty', ['data', 'synth', '{full}'], ['{full}', 'not empty', '--force']),
    ('synth-samples-negative', ['data', 'synth', '{fresh}', '--samples-per-scene', '-5'],
     ['--samples-per-scene', 'got -5']),
    ('synth-scenes-zero', ['data', 'synth', '{fresh}', '--scenes', '0'], ['--scenes', 'got 0']),
    ('synth-image-odd', ['data', 'synth', '{fresh}', '--image-size', '33', '64'],
     ['--image-size', '33 64']),
    ('synth-image-tiny', ['data', 'synth', '{fresh}', '--image-size', '8', '8'],
     ['--image-size', '8 8']),
    ('synth-sweeps-negative', ['data', 'synth', '{fresh}', '--lidar-sweeps', '-1'],
     ['--lidar-sweeps', 'got -1']),
    ('synth-version', ['data', 'synth', '{fresh}', '--version', 'v2'], ['--version', "'v2'"]),
]


@pytest.fixture
def no_runs(monkeypatch):
    """Fail the test if a bench run or a Runner build starts: checks come first."""
    def started(*args, **kwargs):
        raise AssertionError('a run started before the bad input was refused')
    import bevboost.bench.harness as bench
    import bevboost.runner_utils as runner_utils
    monkeypatch.setattr(bench, '_run_one', started)
    monkeypatch.setattr(runner_utils, 'runner_from_cfg', started)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_table_is_large_enough():
    assert len(CASES) >= 40
    assert len({case[0] for case in CASES}) == len(CASES)


#: cases that read bench's default config (PETRv2: its custom_imports need mmdet3d)
NEEDS_MMDET3D = {'bench-variants-bad-value', 'bench-variants-duplicate'}


def _marked(case_id: str, *values):
    return pytest.param(*values, id=case_id,
                        marks=[pytest.mark.mmdet3d] if case_id in NEEDS_MMDET3D else [])


@pytest.mark.parametrize('argv, needles', [_marked(c[0], *c[1:]) for c in CASES])
def test_bad_input_is_exit_2_and_one_line(argv, needles, files, no_runs, capsys):
    argv = [a.format(**files) for a in argv]
    fresh_before = os.path.exists(files['fresh'])
    code, out, err = run_cli(argv, capsys)
    lines = err.splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert 'Traceback' not in err and out == ''
    for needle in needles:
        assert needle.format(**files) in lines[0], (needle, lines[0])
    assert os.path.exists(files['fresh']) == fresh_before  # nothing created


#: cases whose real stderr (a fresh process: logging, warnings) must stay one line
SUBPROCESS_CASES = ['bench-variants-bad-value', 'train-config-syntax',
                    'train-boosted-truncated', 'synth-out-not-empty']


@pytest.mark.parametrize('case_id', [_marked(c, c) for c in SUBPROCESS_CASES])
def test_bad_input_one_line_in_a_fresh_process(case_id, files, tmp_path):
    argv, needles = next(c[1:] for c in CASES if c[0] == case_id)
    argv = [a.format(**files) for a in argv]
    proc = subprocess.run([sys.executable, '-m', 'bevboost.cli.main', *argv], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert all(n.format(**files) in lines[0] for n in needles), lines[0]
    assert list(tmp_path.iterdir()) == []  # e.g. no bench_out/, no runs


# --- nothing overwritten silently -------------------------------------------------------

def test_boost_out_refuses_then_force_overwrites(files, tmp_path, capsys):
    src = tmp_path / 'cfg.py'
    src.write_text(Path(files['toy_py']).read_text())
    before = src.read_text()
    code, _, err = run_cli(['boost', str(src), '--with', 'amp', '--out', str(src)], capsys)
    assert code == 2 and '--force' in err
    assert src.read_text() == before
    code, out, _ = run_cli(['boost', str(src), '--with', 'amp', '--out', str(src), '--force'],
                           capsys)
    assert code == 0 and f'wrote {src}' in out
    assert src.read_text() != before and 'AmpOptimWrapper' in src.read_text()


def test_plan_out_refuses_existing_then_force_overwrites(files, tmp_path, capsys):
    out = tmp_path / 'planned.py'
    out.write_text('# mine\n')
    argv = ['plan', '--config', files['toy_py'], '--reference', '8x4', '--gpus', '4',
            '--max-per-gpu', '2', '--out', str(out)]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and 'exists' in err and '--force' in err
    assert out.read_text() == '# mine\n'
    code, _, _ = run_cli(argv + ['--force'], capsys)
    assert code == 0 and 'accumulative_counts' in out.read_text()


SYNTH = ['--scenes', '2', '--samples-per-scene', '1', '--image-size', '32', '32',
         '--lidar-sweeps', '0', '--no-progress']


def test_synth_refuses_non_empty_dir_then_force_writes(tmp_path, capsys):
    root = tmp_path / 'data'
    root.mkdir()
    code, _, _ = run_cli(['data', 'synth', str(root), *SYNTH], capsys)  # empty dir: fine
    assert code == 0 and (root / 'nuscenes_infos_train.pkl').is_file()
    infos = root / 'nuscenes_infos_train.pkl'
    infos.write_bytes(b'user data')
    code, _, err = run_cli(['data', 'synth', str(root), *SYNTH], capsys)
    assert code == 2 and 'not empty' in err and '--force' in err
    assert infos.read_bytes() == b'user data'
    code, _, _ = run_cli(['data', 'synth', str(root), *SYNTH, '--force'], capsys)
    assert code == 0 and infos.read_bytes() != b'user data'


# --- the checkpoint check refuses only what is broken ------------------------------------

def test_checkpoint_check_accepts_real_checkpoints(tmp_path):
    state = {'state_dict': {'w': torch.ones(8)}, 'meta': {'iter': 3}}
    torch.save(state, tmp_path / 'zip.pth')
    torch.save(state, tmp_path / 'legacy.pth', _use_new_zipfile_serialization=False)
    for name in ('zip.pth', 'legacy.pth'):
        checks.check_checkpoint(str(tmp_path / name), '--resume')  # no error
        assert torch.load(tmp_path / name, weights_only=True)['meta'] == {'iter': 3}
    checks.check_checkpoint('s3://bucket/ckpt.pth', 'load_from')  # left to the loader


def test_truncated_checkpoint_is_what_torch_cannot_load(files):
    """The check refuses the same file torch.load fails on (with an error that names no file)."""
    with pytest.raises(Exception) as torch_error:
        torch.load(files['truncated_pth'], weights_only=True)
    assert files['truncated_pth'] not in str(torch_error.value)
    with pytest.raises(ValueError, match='truncated'):
        checks.check_checkpoint(files['truncated_pth'], '--resume')
