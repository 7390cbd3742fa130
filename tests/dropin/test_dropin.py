"""Configs the kit writes train where bevboost is never imported by the launcher.

A config that never mentions bevboost (``plainmodels``: a regressor and a
6-camera model with the stock ``LoadMultiViewImageFromFiles`` +
``ResizeCropFlipImage`` pipeline) is boosted through the CLI (``bevboost boost
--with``, ``bevboost plan --out``), then every written config is trained a few
iterations in ONE fresh process that runs them as MMDetection3D's
``tools/train.py`` does (``train_like_tools.py``). The facts asserted are read
off the built runner there: optimizer wrapper, accumulation count, loader
class, image-loading transform, hooks, and each boost's verdict.
A config carrying ``bevboost_boosts`` is launched both ways (``RUNNERS.build``
and plain ``Runner.from_cfg``): the boosts are in effect, or the build stops
with the named error.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from mmengine.config import Config

from bevboost.boosts import available_boosts
from bevboost.cli.main import main as cli
from bevboost.seams.torch_compat import COMPILE_SGD_MOMENTUM_MIN, torch_at_least

from tests.dropin.launch import (HERE, PLAIN_BACKBONE, PLAIN_CAMERA,  # noqa: F401
                                  PLAIN_CAMERA_OWN_LOADER, PLAIN_TOY, train_fresh)

#: what ``--with`` gets for each boost on the toy (T), camera (C), own-loader camera (O) or
#: own-backbone toy (B) config
BOOST_SPECS = {
    'amp': ('T', 'amp=bf16'),
    'accum': ('T', 'accum=4:per_gpu_batch=1'),
    'lr-scale': ('T', 'lr-scale:reference_batch=8:rule=linear'),
    'nan-guard': ('T', 'nan-guard=3'),
    'measure': ('T', 'measure=1'),
    'profile': ('T', 'profile=1'),
    'fast-decode': ('C', 'fast-decode'),
    'dali': ('C', 'dali'),
    'shm': ('O', 'shm=3'),
    'compile': ('T', "compile=model:backend='aot_eager'"),
    'fused-optim': ('T', 'fused-optim'),
    'channels-last': ('O', 'channels-last=conv'),
    'loader': ('T', 'loader=1'),
    'checkpoint': ('B', 'checkpoint=backbone'),
}
COMBINATIONS = {'amp+accum+measure': ('T', 'amp=bf16,accum=2,measure=1'),
                'fast-decode+shm': ('C', 'fast-decode,shm')}


def _write_sources(tmp_path: Path, camera_root: Path) -> dict[str, Path]:
    sources = {'T': tmp_path / 'plain_toy.py', 'C': tmp_path / 'plain_camera.py',
               'O': tmp_path / 'plain_camera_own_loader.py', 'B': tmp_path / 'plain_backbone.py'}
    root = str(camera_root) + '/'
    sources['T'].write_text(PLAIN_TOY)
    sources['B'].write_text(PLAIN_BACKBONE)
    sources['C'].write_text(PLAIN_CAMERA.format(root=root))
    sources['O'].write_text(PLAIN_CAMERA_OWN_LOADER.format(root=root))
    for path in sources.values():
        assert 'bevboost' not in path.read_text()
    return sources


@pytest.fixture(scope='module')
def camera_root(tmp_path_factory):
    from bevboost.synth import synthesize_nuscenes
    return synthesize_nuscenes(tmp_path_factory.mktemp("dropin_nus"), scenes=2,
                               samples_per_scene=2, image_size=(128, 352), lidar_sweeps=0)


def test_written_configs_train_without_the_launcher_importing_bevboost(
        tmp_path, camera_root, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))  # the CLI loads the config, which imports plainmodels
    sources = _write_sources(tmp_path, camera_root)
    missing = sorted(set(available_boosts()) - set(BOOST_SPECS))
    assert not missing, f'add how to materialize boost(s) {missing} to BOOST_SPECS'
    # compile=model on the toy (SGD momentum) is refused on torch<2.2 (tests/seams covers that)
    specs = {name: BOOST_SPECS[name] for name, boost in available_boosts().items()
             if boost.unavailable_reason() is None
             and (name != 'compile' or torch_at_least(*COMPILE_SGD_MOMENTUM_MIN))}
    specs.update(COMBINATIONS)
    jobs, printed = [], {}
    for label, (kind, spec) in specs.items():
        out = tmp_path / f'{label}.py'
        assert cli(['boost', str(sources[kind]), '--with', spec, '--out', str(out)]) == 0, label
        printed[label] = capsys.readouterr().out
        jobs.append(dict(config=str(out), work_dir=str(tmp_path / 'work' / label),
                         route='tools', label=label))
    planned = tmp_path / 'planned.py'
    assert cli(['plan', '--config', str(sources['T']), '--gpus', '1', '--max-per-gpu', '2',
                '--out', str(planned)]) == 0
    capsys.readouterr()
    jobs.append(dict(config=str(planned), work_dir=str(tmp_path / 'work' / 'planned'),
                     route='tools', label='planned'))
    # the shm config names ShmRingRunner; plain Runner.from_cfg must build that too
    if 'shm' in specs:
        jobs.append(dict(jobs[list(specs).index('shm')], route='from_cfg', label='shm/from_cfg',
                         work_dir=str(tmp_path / 'work' / 'shm_from_cfg')))

    for job in jobs:  # every written config imports bevboost itself
        imports = Config.fromfile(job['config']).custom_imports['imports']
        assert 'bevboost' in imports and 'plainmodels' in imports, job['label']
    results = {job['label']: r for job, r in zip(jobs, train_fresh(jobs, tmp_path))}
    failed = {k: r['error'] for k, r in results.items() if not r['ok']}
    assert not failed, failed
    assert results[jobs[0]['label']]['bevboost_imported_by_config']

    for label, r in results.items():
        assert r['iter'] >= 2, (label, r)
        # every applied boost was verified in that process, none unverified
        names = label.split('/')[0].split('+') if label != 'planned' else ['accum']
        for name in names:
            verdict = [v for v in r['verdicts'] if v.startswith(f'{name}: ')]
            assert verdict and 'unverified' not in verdict[0], (label, r['verdicts'])
    for label in ('amp', 'amp+accum+measure'):
        assert results[label]['wrapper'] == 'BoostAmpOptimWrapper'
        assert results[label]['cast_dtype'] == 'torch.bfloat16'
        assert 'OptimizerStepSchedulerHook' in results[label]['hooks']
    assert results['accum']['accumulative_counts'] == 4 and results['accum']['batch_size'] == 1
    assert results['amp+accum+measure']['accumulative_counts'] == 2
    assert 'StallMonitorHook' in results['amp+accum+measure']['hooks']
    assert 'AccumulationHook' in results['accum']['hooks']
    assert results['planned']['accumulative_counts'] == 4 and results['planned']['batch_size'] == 2
    assert results['lr-scale']['lr'] == pytest.approx(0.01 * 4 / 8)  # 1 GPU x 4 vs reference 8
    assert 'StallMonitorHook' in results['measure']['hooks']
    assert 'TorchProfilerHook' in results['profile']['hooks']
    for label in ('fast-decode', 'fast-decode+shm'):
        r = results[label]
        assert r['transforms'][0] == 'FastLoadMultiViewImageFromFiles', r['transforms']
        assert 'ResizeCropFlipImage' not in r['transforms'] and r['final_dims'] == [[32, 88]]
    for label in ('shm', 'shm/from_cfg', 'fast-decode+shm'):
        assert results[label]['loader'] == 'ShmRingLoader', label
        assert results[label]['runner'] == 'ShmRingRunner', label
    # `bevboost boost` said what it could without a runner
    assert 'checked on the built runner' in printed['amp']


CARRIER = '''
_base_ = ['./plain_toy.py']
custom_imports = dict(imports=['plainmodels', 'bevboost'], allow_failed_imports=False)
bevboost_boosts = dict(amp=dict(dtype='bfloat16'), accum=dict(counts=2))
'''


def test_bevboost_boosts_take_effect_on_both_launch_routes(tmp_path, camera_root):
    sources = _write_sources(tmp_path, camera_root)
    carrier = tmp_path / 'carrier.py'
    carrier.write_text(CARRIER)
    typed = tmp_path / 'carrier_runner_type.py'
    typed.write_text("_base_ = ['./carrier.py']\nrunner_type = 'Runner'\n")
    shm = tmp_path / 'carrier_shm.py'
    shm.write_text(f"_base_ = [{sources['O'].name!r}]\n"
                   "custom_imports = dict(imports=['plainmodels', 'bevboost'])\n"
                   "bevboost_boosts = dict(shm=dict(slots=3))\n")
    bad = tmp_path / 'carrier_bad.py'
    bad.write_text("_base_ = ['./carrier.py']\n"
                   "bevboost_boosts = dict(accum=dict(counts=0))\n")
    jobs = [dict(config=str(c), work_dir=str(tmp_path / 'w' / f'{c.stem}_{route}'), route=route)
            for c in (carrier, typed, shm, bad) for route in ('tools', 'from_cfg')]
    results = train_fresh(jobs, tmp_path)
    for job, r in zip(jobs[:4], results[:4]):
        assert r['ok'], (job, r.get('error'))
        assert r['wrapper'] == 'BoostAmpOptimWrapper' and r['cast_dtype'] == 'torch.bfloat16'
        assert r['accumulative_counts'] == 2 and 'OptimizerStepSchedulerHook' in r['hooks']
    for r in results[4:6]:
        assert r['ok'], r.get('error')
        assert r['loader'] == 'ShmRingLoader' and r['runner'] == 'ShmRingRunner'
    for r in results[6:]:
        assert not r['ok']
        assert 'bevboost_boosts' in r['error'] and 'Runner.from_cfg' in r['error']
        assert 'bevboost boost CONFIG --out' in r['error'] and 'counts' in r['error']


def test_config_with_failing_custom_imports_is_one_clear_error(tmp_path, capsys):
    cfg = tmp_path / 'broken.py'
    cfg.write_text("custom_imports = dict(imports=['no_such_plugin_xyz'])\n"
                   + textwrap.dedent(PLAIN_TOY).split('\n', 2)[2])
    for argv in (['boost', str(cfg), '--with', 'amp'],
                 ['plan', '--config', str(cfg), '--gpus', '1']):
        assert cli(argv) == 2
        err = capsys.readouterr().err
        assert 'custom_imports' in err and 'no_such_plugin_xyz' in err
        assert 'Traceback' not in err and len(err.strip().splitlines()) == 1
