"""bevboost bench: variants, unavailable path, report fields, bad inputs."""
from __future__ import annotations

import json
from typing import ClassVar

import pytest

from bevboost.boosts import Boost, BoostCard, _BOOSTS
from bevboost.cli.main import main
from bevboost.bench.harness import ALL, BASELINE, CEILING, resolve_variants
from bevboost.bench.toy import write_toy_bench_config


class _NeedsGpu(Boost):
    card: ClassVar[BoostCard] = BoostCard(name='test-needs-gpu', summary='x', changes=(),
                                          expected_effect='x', requires=('cuda', 'no_such_mod'))

    def apply(self, cfg, **options):
        raise AssertionError('an unavailable boost must not be applied')


class _Lossy(Boost):
    card: ClassVar[BoostCard] = BoostCard(name='test-lossy', summary='x', changes=(),
                                          expected_effect='x', exact=False)

    def apply(self, cfg, **options):
        cfg.train_dataloader.batch_size = 2


@pytest.fixture
def fake_boosts(monkeypatch):
    monkeypatch.setitem(_BOOSTS, 'test-needs-gpu', _NeedsGpu())
    monkeypatch.setitem(_BOOSTS, 'test-lossy', _Lossy())


@pytest.fixture
def toy_config_file(tmp_path):
    return write_toy_bench_config(tmp_path / 'cfg' / 'toy.py', decode_work=20, num_workers=0)


def test_resolve_orders_and_adds_ceiling(fake_boosts):
    vs = resolve_variants(['amp', 'accum=4', ALL, 'test-lossy'])
    assert [v.name for v in vs] == [BASELINE, 'amp', 'accum=4', 'test-lossy', ALL, CEILING]
    by = {v.name: v for v in vs}
    assert 'accum=4' in by[ALL].specs and 'test-lossy' not in by[ALL].specs
    assert 'test-needs-gpu' not in by[ALL].specs and not by['test-lossy'].exact
    assert by[CEILING].replay and not resolve_variants(['amp'], ceiling=False)[-1].replay


def test_unavailable_variant_has_reason(fake_boosts):
    v = resolve_variants(['test-needs-gpu'])[1]
    assert 'CUDA' in v.reason and 'no_such_mod' in v.reason


@pytest.mark.parametrize('names,match', [(['nope'], "unknown boost 'nope'"),
                                         (['amp', ''], 'empty variant'),
                                         (['measure'], 'measures')])
def test_bad_variants(names, match):
    with pytest.raises(ValueError, match=match):
        resolve_variants(names)


def test_lenient_default_lists_missing_boost():
    v = resolve_variants(['no-such-boost'], lenient=True)[1]
    assert 'not in this build' in v.reason


@pytest.mark.slow
def test_bench_cli_writes_report(fake_boosts, tmp_path, capsys):
    # a data-bound toy run: ~10 ms of decode per sample in the main process, ~1 ms steps
    config = write_toy_bench_config(tmp_path / 'cfg' / 'toy.py', decode_work=2000,
                                    num_workers=0)
    out = tmp_path / 'out'
    rc = main(['bench', str(config), '--variants', 'baseline,test-needs-gpu', '--iters', '4',
               '--warmup', '1', '--repeats', '1', '--trace-iters', '2', '--out', str(out)])
    assert rc == 0, capsys.readouterr()
    report = json.loads((out / 'report.json').read_text())
    rows = {r['name']: r for r in report['variants']}
    assert set(rows) == {BASELINE, 'test-needs-gpu', CEILING}
    assert rows['test-needs-gpu']['status'] == 'unavailable'
    assert report['unavailable'][0]['name'] == 'test-needs-gpu'
    base, ceiling = rows[BASELINE], rows[CEILING]
    # the ceiling (same step, batches from memory) is far faster: reported as data-bound
    assert base['verdict']['data_bound'], base['verdict']
    assert base['share_of_ceiling']['median'] < 0.5
    assert base['stall_share']['median'] > 0.5  # loading in the main process is all waiting
    assert base['data_cpu_ms_per_sample']['median'] > 5 * ceiling['data_cpu_ms_per_sample'][
        'median']
    md = (out / 'report.md').read_text()
    assert '**baseline**: data-bound' in md
    # 4 measured + 1 profiler warm-up + 2 profiled iterations in the traced baseline run
    assert len(base['curves']['loss']) == 1 + 4 + 3
    events = json.loads((out / 'trace.json').read_text())['traceEvents']
    names = {e.get('name') for e in events}
    assert {'data_loading', 'train_step'} <= names
    assert list((out / 'tb_profiler').glob('*/*.pt.trace.json'))
    assert '[trace.json](trace.json)' in md
    assert (out / 'chart.png').stat().st_size > 0 and (out / 'curves.png').stat().st_size > 0


def test_lossy_variant_goes_to_its_own_table():
    from bevboost.bench.harness import Variant, build_report
    from bevboost.bench.report import markdown
    run = {'status': 'ok', 'samples_per_s': 5.0, 'gpu': {'state': 'no-gpu', 'reason': 'x'}}
    lossy = build_report('c.py', [Variant(BASELINE, [], runs=[run]),
                                  Variant('test-lossy', ['test-lossy'], exact=False,
                                          runs=[run])], iters=3, warmup=1, repeats=1, seed=0)
    assert lossy['accuracy_trading'] == ['test-lossy']
    text = markdown(lossy)
    assert text.index('| test-lossy |') > text.index('## Accuracy-trading')


def _err(capsys) -> str:
    return capsys.readouterr().err


def test_cli_missing_config(tmp_path, capsys):
    assert main(['bench', str(tmp_path / 'missing.py'), '--out', str(tmp_path / 'o')]) == 2
    assert 'config file not found' in _err(capsys)


def test_cli_unknown_variant(toy_config_file, tmp_path, capsys):
    assert main(['bench', str(toy_config_file), '--variants', 'baseline,warp-speed',
                 '--out', str(tmp_path / 'o')]) == 2
    assert "unknown boost 'warp-speed'" in _err(capsys)


def test_cli_unwritable_out(toy_config_file, tmp_path, capsys):
    blocker = tmp_path / 'file'
    blocker.write_text('x')
    assert main(['bench', str(toy_config_file), '--out', str(blocker / 'sub')]) == 2
    assert 'is not writable' in _err(capsys)
    assert main(['bench', str(toy_config_file), '--out', str(blocker)]) == 2
    assert 'not a directory' in _err(capsys)


def test_cli_bad_iters(toy_config_file, tmp_path, capsys):
    assert main(['bench', str(toy_config_file), '--iters', '0', '--variants', 'baseline',
                 '--out', str(tmp_path / 'o')]) == 2
    assert 'iters must be' in _err(capsys)
