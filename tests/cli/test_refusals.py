"""Refusals leave nothing behind and name their argument; ``--resume`` with nothing to
resume says so; ``bench`` keeps an earlier report and checks its data before any run."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from bevboost.cli.main import main

CONFIG = textwrap.dedent('''
    custom_imports = dict(imports=['bevboost', 'bevboost.testing.toy'])
    default_scope = 'mmengine'
    experiment_name = {name!r}
    model = dict(type='ToyRegressor')
    work_dir = {work_dir!r}
    train_dataloader = dict(batch_size=4, num_workers=0,
                            sampler=dict(type='InfiniteSampler', shuffle=False),
                            dataset=dict(type='ToyRegressionDataset', num_samples=16),
                            collate_fn=dict(type='default_collate'))
    train_cfg = dict(by_epoch=False, max_iters={max_iters})
    optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01))
    default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2))
    log_level = 'WARNING'
''')


def toy(tmp_path: Path, max_iters: int = 4) -> Path:
    path = tmp_path / 'toy.py'
    path.write_text(CONFIG.format(name=f'refusal_{uuid.uuid4().hex[:10]}', max_iters=max_iters,
                                  work_dir=str(tmp_path / 'wd')))
    return path


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with the content of its files."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob('*'))}


def test_refused_resume_leaves_nothing_behind(tmp_path, capsys):
    config = toy(tmp_path)
    work_dir = tmp_path / 'wd'
    assert main(['train', str(config), '--boosts', 'accum=2']) == 0, capsys.readouterr().err
    before = snapshot(work_dir)
    assert 'last_checkpoint' in before and 'toy.py' in before
    config.write_text(config.read_text().replace("batch_size=4", "batch_size=6"))
    capsys.readouterr()
    time.sleep(1.05)  # mmengine names a run's log dir by the second: not the earlier run's
    code = main(['train', str(config), '--boosts', 'accum=2', '--resume'])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.splitlines()[-1].startswith('bevboost train: error: cannot resume: the '
                                           'checkpoint was trained at effective batch 4')
    assert 'Traceback' not in err
    # no second log directory, and the earlier run's copy of its config is as it was
    assert snapshot(work_dir) == before


def test_refused_resume_into_a_new_nested_work_dir_removes_it(tmp_path, capsys):
    """The refusal also removes the work dir (and parents) the refused run created."""
    config = toy(tmp_path)
    assert main(['train', str(config), '--boosts', 'accum=2']) == 0
    checkpoint = tmp_path / 'wd' / 'iter_4.pth'
    config.write_text(config.read_text().replace("batch_size=4", "batch_size=6"))
    capsys.readouterr()
    new = tmp_path / 'new' / 'nested'
    code = main(['train', str(config), '--boosts', 'accum=2', '--work-dir', str(new),
                 '--resume', str(checkpoint)])
    assert code == 2, capsys.readouterr().err
    assert not (tmp_path / 'new').exists()


@pytest.mark.parametrize('argv', [
    ['train', '{config}', '--work-dir', '{afile}/wd'],
    ['data', 'synth', '{afile}/data'],
    ['bench', '{config}', '--variants', 'baseline', '--out', '{afile}/out'],
], ids=['train-work-dir', 'synth-out', 'bench-out'])
def test_uncreatable_directory_names_its_argument(argv, tmp_path, capsys):
    afile = tmp_path / 'afile'
    afile.write_text('a file, not a directory\n')
    argv = [a.format(config=toy(tmp_path), afile=afile) for a in argv]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1, err
    what = {'train': '--work-dir', 'data': 'OUT', 'bench': '--out'}[argv[0]]
    assert f'{what} {argv[-1]!r} is not writable' in err and 'Not a directory' in err, err


@pytest.mark.skipif(not os.path.isdir('/sys'), reason='needs /sys (Linux): it refuses new '
                    'directories, even to root')
@pytest.mark.parametrize('argv, what', [
    (['train', '{config}', '--work-dir', '/sys/bevboost_x/wd'], "--work-dir '/sys/bevboost_x/wd'"),
    (['data', 'synth', '/sys/bevboost_x'], "OUT '/sys/bevboost_x'"),
], ids=['train-work-dir', 'synth-out'])
def test_sys_path_error_names_its_argument(argv, what, tmp_path, capsys):
    argv = [a.format(config=toy(tmp_path)) for a in argv]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1, err
    assert what in err and "cannot create directory '/sys/bevboost_x'" in err, err
    assert not os.path.exists('/sys/bevboost_x')


def test_resume_without_a_checkpoint_warns_and_trains_from_scratch(tmp_path):
    """mmengine's auto-resume meaning is kept; the kit says it in one WARNING line."""
    config = toy(tmp_path, max_iters=1)
    proc = subprocess.run([sys.executable, '-m', 'bevboost.cli.main', 'train', str(config),
                           '--resume'], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if '--resume' in line]
    assert len(warnings) == 1, proc.stderr
    assert warnings[0].startswith('WARNING bevboost.') and 'no checkpoint to resume' in \
        warnings[0] and 'from scratch' in warnings[0]
    assert (tmp_path / 'wd' / 'iter_1.pth').is_file()  # it trained


# --- bench: an earlier report is kept; missing data is named before any run ----------------

@pytest.fixture
def no_runs(monkeypatch):
    def started(*args, **kwargs):
        raise AssertionError('a bench run started')
    import bevboost.bench.harness as bench
    monkeypatch.setattr(bench, '_run_one', started)


def test_bench_out_with_an_earlier_report_is_refused_unless_force(tmp_path, capsys, no_runs):
    from bevboost.bench.toy import write_toy_bench_config
    config = write_toy_bench_config(tmp_path / 'cfg' / 'toy.py', num_workers=0)
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'report.md').write_text('# my earlier report\n')
    argv = ['bench', str(config), '--variants', 'baseline', '--no-ceiling', '--out', str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--out {str(out)!r} holds an earlier report (report.md)" in err and '--force' in err
    assert (out / 'report.md').read_text() == '# my earlier report\n'
    assert main(argv + ['--force']) == 1  # --force: the first run starts (and fails here)
    assert capsys.readouterr().err.splitlines()[-1] == (
        'bevboost bench: failed during benchmarking: AssertionError: a bench run started')


def test_bench_names_missing_data_and_the_command_that_makes_it(tmp_path, capsys, no_runs):
    repo = Path(__file__).resolve().parents[2]
    config = repo / 'configs' / 'petrv2' / 'petrv2_tiny_synth.py'
    pytest.importorskip('mmdet3d', reason='the tiny PETRv2 config imports mmdet3d')
    cwd = os.getcwd()
    os.chdir(tmp_path)  # its data_root is relative: nothing there yet
    try:
        code = main(['bench', str(config), '--variants', 'baseline', '--out', 'o'])
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "'data/synth_nuscenes/nuscenes_infos_train.pkl' does not exist" in err
    assert '`bevboost data synth data/synth_nuscenes`' in err
    assert not (tmp_path / 'o').exists()


def test_bench_data_check_on_a_config_that_never_mentions_bevboost(tmp_path):
    """A plain mmengine dataset config (wrapped, relative ann_file under data_root)."""
    from mmengine.config import Config

    from bevboost.cli.bench_cmd import check_data_exists, missing_data
    root = tmp_path / 'data'
    cfg = Config(dict(train_dataloader=dict(dataset=dict(
        type='RepeatDataset', times=2,
        dataset=dict(type='NuScenesDataset', data_root=str(root) + '/',
                     ann_file='infos_train.pkl')))))
    assert missing_data(cfg) == [(str(root / 'infos_train.pkl'), str(root) + '/')]
    # the file mmengine's own dataset would read
    from mmengine.dataset import BaseDataset
    reference = BaseDataset(ann_file='infos_train.pkl', data_root=str(root) + '/',
                            lazy_init=True)
    assert missing_data(cfg)[0][0] == reference.ann_file
    with pytest.raises(FileNotFoundError, match=f'bevboost data synth {root}`'):
        check_data_exists(cfg, 'plain.py')
    root.mkdir()
    (root / 'infos_train.pkl').write_bytes(b'')
    check_data_exists(cfg, 'plain.py')  # present: no error


def test_refused_recipe_is_one_line_and_leaves_nothing_behind(tmp_path, capsys):
    """A config carrying its reference recipe (8 GPUs x 1), trained on one process: the
    recipe check stops it before iteration 1 as a refusal (exit 2, one line naming the key
    and the fix, no traceback), and the run's directories are removed."""
    config = toy(tmp_path)
    config.write_text(config.read_text().replace('batch_size=4', 'batch_size=1') +
                      'bevboost_recipe = dict(reference_batch=8, reference_lr=0.01, gpus=8, '
                      'per_gpu_batch=1)\n')
    code = main(['train', str(config), '--boosts', 'nan-guard'])
    err = capsys.readouterr().err
    assert code == 2, err
    last = err.splitlines()[-1]
    assert last.startswith('bevboost train: error: the run trains effective batch 1') and \
        'world size (GPUs launched) is 1, the recipe has 8' in last and 'bevboost plan' in last
    assert 'Traceback' not in err
    assert not (tmp_path / 'wd').exists()
