"""Stage recorder and pipeline instrumentation."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from bevboost.profiling.stages import COLLATE, StageRecorder, TimedStage, instrument_dataloader


class _Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


def add_one(x):
    return x + 1


class Double:
    scale = 2

    def __call__(self, x):
        return x * self.scale


class _DS(Dataset):
    def __init__(self):
        self.pipeline = _Compose([add_one, Double(), Double()])

    def __len__(self):
        return 16

    def __getitem__(self, i):
        return self.pipeline(torch.tensor(float(i)))


class _Wrapper(Dataset):  # like RepeatDataset / CBGSDataset
    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return self.dataset[i]


@pytest.mark.parametrize('workers', [0, 2])
def test_instrumented_loader_reports_every_stage(workers):
    loader = DataLoader(_Wrapper(_DS()), batch_size=4, num_workers=workers)
    rec = StageRecorder()
    names = instrument_dataloader(loader, rec)
    assert names == ['add_one', 'Double', 'Double#2', COLLATE]
    assert instrument_dataloader(loader, rec) == names  # no double wrapping
    batches = [b for b in loader]
    assert torch.equal(batches[0], torch.tensor([4.0, 8.0, 12.0, 16.0]))  # same output
    summary = rec.summary()
    rec.close()
    assert summary['stages']['add_one']['calls'] == 16
    assert summary['stages'][COLLATE]['calls'] == 4
    assert summary['workers_seen'] == workers
    if workers:  # the 16 samples the workers batched, whatever worker made them
        assert summary['worker_samples'] == 16


def test_timed_stage_keeps_attributes():
    stage = TimedStage(Double(), 'Double', StageRecorder())
    assert stage.scale == 2 and stage(3) == 6


def test_reset_drops_warmup():
    rec = StageRecorder()
    rec.record('a', 1.0)
    rec.reset()
    rec.record('b', 0.5)
    assert set(rec.summary()['stages']) == {'b'}
    rec.close()


def test_bad_flush_interval():
    with pytest.raises(ValueError, match='flush_interval'):
        StageRecorder(flush_interval=0)


def test_instrumented_pipeline_still_shows_its_transforms(toy_cfg):
    # boost verdicts look at the built pipeline's transform types through the timers
    from bevboost.boosts import train_pipeline_transforms
    from bevboost.bench.toy import ToyDecode
    from bevboost.runner_utils import build_runner
    runner = build_runner(toy_cfg(max_iters=2), ['measure=0'])
    runner.train()
    dataset = runner.train_dataloader.dataset
    assert isinstance(dataset.pipeline.transforms[0], TimedStage)
    assert [type(t) for t in train_pipeline_transforms(runner)] == [ToyDecode]
