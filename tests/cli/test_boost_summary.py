"""``bevboost boost`` prints a short summary per boost; the full key diff with ``--diff``/``-v``.

The summary's claims are checked against the written config as mmengine reads it back.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from mmengine.config import Config

from bevboost.cli.main import main

TOY = textwrap.dedent('''
    custom_imports = dict(imports=['bevboost', 'bevboost.testing.toy'])
    default_scope = 'mmengine'
    model = dict(type='ToyRegressor')
    work_dir = 'wd'
    train_dataloader = dict(batch_size=4, num_workers=0,
                            sampler=dict(type='InfiniteSampler', shuffle=False),
                            dataset=dict(type='ToyRegressionDataset', num_samples=16),
                            collate_fn=dict(type='default_collate'))
    train_cfg = dict(by_epoch=False, max_iters=4)
    optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01))
''')


def boost(tmp_path, capsys, config: Path, with_: str) -> tuple[str, Config]:
    out = tmp_path / 'boosted.py'
    assert main(['boost', str(config), '--with', with_, '--out', str(out)]) == 0
    return capsys.readouterr().out, Config.fromfile(str(out))


def lookup(cfg: Config, key: str):
    value = cfg
    for part in key.split('.'):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def test_summary_is_short_and_true_of_the_written_config(tmp_path, capsys):
    config = tmp_path / 'toy.py'
    config.write_text(TOY)
    text, written = boost(tmp_path, capsys, config, 'amp=bf16,accum=2,nan-guard')
    lines = text.splitlines()
    assert max(map(len, lines)) <= 120, max(lines, key=len)
    assert len(lines) <= 20 and "'<unset>'" not in text
    assert [line for line in lines if line.endswith(':')] == ['accum=2:', 'amp=bf16:',
                                                              'nan-guard:']
    assert '  replaced optim_wrapper: OptimWrapper -> BoostAmpOptimWrapper' in lines
    assert written.optim_wrapper.type == 'BoostAmpOptimWrapper'
    assert '  hooks added: AccumulationHook' in lines
    assert 'AccumulationHook' in [h['type'] for h in written.custom_hooks]
    # amp brings the non-finite guard: nan-guard after it changes nothing more
    assert lines[lines.index('nan-guard:') + 1].startswith('  no further change')
    sets = [line.strip()[len('set '):] for line in lines if line.startswith('  set ')]
    assert 'optim_wrapper.accumulative_counts = 2' in sets
    for item in sets:  # every "set KEY = VALUE" holds in the file mmengine reads back
        key, _, value = item.partition(' = ')
        assert repr(lookup(written, key)) == value.split(' (was ')[0], item
    assert '--diff' in lines[-3]  # then the in-effect note and 'wrote ...'


@pytest.mark.parametrize('flags', [('--diff',), ('-v',)], ids=['diff', 'verbose'])
def test_full_diff_with_diff_or_verbose(flags, tmp_path, capsys):
    config = tmp_path / 'toy.py'
    config.write_text(TOY)
    out = tmp_path / 'boosted.py'
    argv = ['boost', str(config), '--with', 'accum=2', '--out', str(out)]
    argv = ['-v', *argv] if flags == ('-v',) else [*argv, *flags]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "optim_wrapper.accumulative_counts: '<unset>' -> 2" in text
    assert 'train_dataloader.batch_size: 4 -> 2' in text
    assert Config.fromfile(str(out)).train_dataloader.batch_size == 2


def test_transforms_replaced_are_named_per_loader(tmp_path, capsys):
    pytest.importorskip('mmdet3d', reason='the tiny PETRv2 config imports mmdet3d')
    config = Path(__file__).resolve().parents[2] / 'configs' / 'petrv2' / 'petrv2_tiny_synth.py'
    text, written = boost(tmp_path, capsys, config, 'fast-decode')
    lines = text.splitlines()
    assert max(map(len, lines)) <= 120, max(lines, key=len)
    assert '  transforms LoadMultiViewImageFromFiles -> FastLoadMultiViewImageFromFiles ' \
           '(train)' in lines, text
    assert written.train_dataloader.dataset.pipeline[0]['type'] == \
        'FastLoadMultiViewImageFromFiles'
    assert '  replaced model.data_preprocessor: Det3DDataPreprocessor -> ' \
           'MainProcessDecodePreprocessor' in lines
    assert written.model.data_preprocessor.type == 'MainProcessDecodePreprocessor'
