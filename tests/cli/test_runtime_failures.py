"""A failure after the run starts is never bad input: exit 1, traceback on stderr and in the
work-dir log, a last line naming the phase.

The table trains a toy config through ``bevboost train`` (in-process) with a fault
injected into the model, the dataset, a hook or the checkpoint saving, at a known
iteration. mmengine builds and runs everything; the kit only watches.
"""
from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.registry import DATASETS, HOOKS, MODELS

from bevboost.cli.main import main
from bevboost.testing.toy import ToyRegressionDataset, ToyRegressor


class FaultyRegressor(ToyRegressor):
    """Raises on the ``fail_at``-th training forward (0: in ``__init__``)."""

    def __init__(self, fail_at: int = 0, **kwargs):
        if fail_at == 0:
            raise RuntimeError('model init failed: layer config 7 is not supported')
        super().__init__(**kwargs)
        self.fail_at, self.calls = fail_at, 0

    def forward(self, inputs, targets=None, mode='tensor', **unused):
        if mode == 'loss':
            self.calls += 1
            if self.calls == self.fail_at:
                raise ValueError('shapes (8,3) and (4,) not aligned')
        return super().forward(inputs, targets, mode, **unused)


class FaultyDataset(ToyRegressionDataset):
    """Raises when sample ``fail_index`` is read (-1: while its list is built)."""

    def __init__(self, fail_index: int = -1, **kwargs):
        self.fail_index = fail_index
        super().__init__(**kwargs)

    def load_data_list(self):
        if self.fail_index == -1:
            raise KeyError('annotation field "gt_boxes" missing')
        return super().load_data_list()

    def __getitem__(self, idx):
        if idx == self.fail_index:
            raise OSError(f'sample {idx}: broken record in the data file')
        return super().__getitem__(idx)


class FaultyHook(Hook):
    """Raises after iteration ``at``."""

    def __init__(self, at: int):
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.at:
            raise TypeError('hook bug: unsupported operand type(s) for +')


class UnpicklableCheckpoint(Hook):
    """Puts a local function into the checkpoint: torch.save fails while saving it."""

    def before_save_checkpoint(self, runner, checkpoint):
        checkpoint['meta']['callback'] = lambda: None


@pytest.fixture(autouse=True, scope='module')
def _registered():
    MODELS.register_module(module=FaultyRegressor, force=True)
    DATASETS.register_module(module=FaultyDataset, force=True)
    HOOKS.register_module(module=FaultyHook, force=True)
    HOOKS.register_module(module=UnpicklableCheckpoint, force=True)


CONFIG = textwrap.dedent('''
    custom_imports = dict(imports=['bevboost', 'bevboost.testing.toy'])
    default_scope = 'mmengine'
    experiment_name = {name!r}
    model = dict(type={model!r}, **{model_kwargs!r})
    work_dir = {work_dir!r}
    train_dataloader = dict(batch_size=4, num_workers=0,
                            sampler=dict(type='InfiniteSampler', shuffle=False),
                            dataset=dict(type={dataset!r}, num_samples=32, **{dataset_kwargs!r}),
                            collate_fn=dict(type='default_collate'))
    train_cfg = dict(by_epoch=False, max_iters=4)
    optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01))
    default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False,
                                         interval={ckpt_interval}))
    custom_hooks = {hooks!r}
    log_level = 'WARNING'
''')

#: (id, config fields, phase named on the last line, text of the error, frame it was raised in)
CASES = [
    ('model-iteration-3', dict(model='FaultyRegressor', model_kwargs=dict(fail_at=3)),
     'iteration 3', 'shapes (8,3) and (4,) not aligned', 'in forward'),
    ('model-build', dict(model='FaultyRegressor', model_kwargs=dict(fail_at=0)),
     'building', 'model init failed', 'in __init__'),
    ('dataset-sample-at-iteration-3', dict(dataset='FaultyDataset',
                                           dataset_kwargs=dict(fail_index=9)),
     'iteration 3 (loading its batch)', 'sample 9: broken record', 'in __getitem__'),
    ('dataset-build', dict(dataset='FaultyDataset', dataset_kwargs=dict(fail_index=-1)),
     'building', 'gt_boxes', 'in load_data_list'),
    ('hook-iteration-2', dict(hooks=[dict(type='FaultyHook', at=2)]),
     'iteration 2', 'hook bug', 'in after_train_iter'),
    ('checkpoint-saving-iteration-2', dict(hooks=[dict(type='UnpicklableCheckpoint')],
                                           ckpt_interval=2),
     'saving the checkpoint after iteration 2', 'pickle', 'in save_checkpoint'),
]


def write_config(tmp_path: Path, **fields) -> tuple[Path, Path]:
    work_dir = tmp_path / 'wd'
    values = dict(name=f'fault_{uuid.uuid4().hex[:10]}', model='ToyRegressor', model_kwargs={},
                  dataset='ToyRegressionDataset', dataset_kwargs={}, hooks=[],
                  ckpt_interval=10 ** 6, work_dir=str(work_dir))
    values.update(fields)
    path = tmp_path / 'faulty.py'
    path.write_text(CONFIG.format(**values))
    return path, work_dir


@pytest.mark.parametrize('fields, phase, message, frame', [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_runtime_failure_is_exit_1_with_traceback_and_phase(fields, phase, message, frame,
                                                            tmp_path, capsys):
    config, work_dir = write_config(tmp_path, **fields)
    code = main(['train', str(config)])
    _, err = capsys.readouterr()
    assert code == 1, err
    assert 'Traceback (most recent call last)' in err and message in err and frame in err, err
    last = err.rstrip().splitlines()[-1]
    assert last.startswith(f'bevboost train: failed during {phase}:'), last
    assert message in last, last
    logs = sorted(work_dir.glob('*/*.log'))  # the runner's MMLogger file
    assert len(logs) == 1, logs
    log = logs[0].read_text()
    assert f'failed during {phase}' in log and 'Traceback (most recent call last)' in log
    assert message in log and frame in log
    assert str(logs[0]) in last  # the last line says where the traceback is kept


def test_a_run_that_works_exits_0(tmp_path, capsys):
    config, work_dir = write_config(tmp_path, ckpt_interval=4)
    assert main(['train', str(config)]) == 0, capsys.readouterr().err
    assert (work_dir / 'iter_4.pth').is_file()
    assert torch.load(work_dir / 'iter_4.pth', weights_only=False)['meta']['iter'] == 4


def test_input_error_stays_one_line_exit_2_and_verbose_shows_its_traceback(tmp_path, capsys):
    config, _ = write_config(tmp_path)
    argv = ['train', str(config), '--boosts', 'amp=fp8']
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and 'Traceback' not in err
    assert main(['-v', *argv]) == 2
    err = capsys.readouterr().err
    assert 'Traceback (most recent call last)' in err
    assert err.splitlines()[-1].startswith("bevboost train: error: --boosts 'amp=fp8'")


def test_verbose_sets_the_kit_logger_to_debug(tmp_path, capsys):
    import logging
    kit = logging.getLogger('bevboost')
    before = kit.level
    try:
        config, _ = write_config(tmp_path)
        main(['-v', 'boost', str(config)])
        assert kit.getEffectiveLevel() == logging.DEBUG
    finally:
        kit.setLevel(before)
