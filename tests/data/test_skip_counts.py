"""Samples skipped for corrupt JPEGs are totalled over workers and land in the work-dir log."""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import BaseDataset
from mmengine.registry import DATASETS, TRANSFORMS
from mmengine.runner import Runner

from bevboost.data.runner import ShmRingRunner
from bevboost.data.skip_counts import SkipCounter, find_skip_counters
from bevboost.testing.toy import toy_config

CORRUPT = {1: b'not a jpeg at all', 3: None, 5: b'not a jpeg either'}  # None: truncated
EPOCHS = 2


class CameraToyDataset(BaseDataset):
    """8 samples of 6 tiny JPEG views; indices in CORRUPT point at broken files."""

    def __init__(self, root: str, **kwargs) -> None:
        self.root = Path(root)
        kwargs.setdefault('serialize_data', False)
        super().__init__(**kwargs)

    def load_data_list(self) -> list[dict]:
        rng = np.random.default_rng(0)
        good = cv2.imencode('.jpg', rng.integers(0, 255, (90, 160, 3), dtype=np.uint8))[1]
        out = []
        for i in range(8):
            images = {}
            for v in range(6):
                path = self.root / f'{i}_{v}.jpg'
                data = good.tobytes()
                if i in CORRUPT and v == 2:
                    data = CORRUPT[i] if CORRUPT[i] is not None else data[:200]
                path.write_bytes(data)
                images[f'CAM{v}'] = dict(img_path=str(path), cam2img=np.eye(3) * 80,
                                         lidar2cam=np.eye(4))
            out.append(dict(images=images, token=f'sample-{i}'))
        return out

    def _rand_another(self) -> int:
        return 0  # refetch a good sample: exactly one skip per corrupt index per epoch


class ImagesToToyInputs:
    """Turn the loaded views into the toy regressor's (inputs, targets)."""

    def __call__(self, results: dict) -> dict:
        means = np.stack(results['img']).reshape(6, -1).mean(1)
        return dict(inputs=torch.tensor(np.r_[means, 0, 0], dtype=torch.float32) / 255,
                    targets=torch.tensor(0.0))


@pytest.fixture(autouse=True, scope='module')
def _registered():
    DATASETS.register_module(module=CameraToyDataset, force=True)
    TRANSFORMS.register_module(module=ImagesToToyInputs, force=True)


def _config(work_dir: Path, data_root: Path, runner_type: str | None) -> dict:
    cfg = toy_config(str(work_dir), batch_size=2, log_level='INFO')
    cfg.update(
        train_cfg=dict(by_epoch=True, max_epochs=EPOCHS, val_interval=10 ** 9),
        custom_hooks=[dict(type='SkippedSamplesHook')],
        train_dataloader=dict(
            batch_size=2, num_workers=2, persistent_workers=False,
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate'),
            dataset=dict(type='CameraToyDataset', root=str(data_root), pipeline=[
                dict(type='FastLoadMultiViewImageFromFiles', num_views=6, final_dim=(32, 64),
                     on_error='skip'),
                dict(type='ImagesToToyInputs')])))
    cfg['default_hooks']['logger'] = dict(type='LoggerHook', interval=2)
    if runner_type == 'ShmRingRunner':
        cfg['train_dataloader'].update(collate_fn=dict(type='pseudo_collate'),
                                       shm_ring=dict(payload_keys=[('inputs',)]))
    return cfg


@pytest.mark.parametrize('runner_cls', [Runner, ShmRingRunner], ids=['Runner', 'ShmRingRunner'])
def test_skipped_samples_total_is_in_the_work_dir_log(tmp_path, runner_cls):
    data_root = tmp_path / 'data'
    data_root.mkdir()
    # toy_config gives each run a unique experiment name: mmengine reuses the logger (and its
    # file) of a same-named one
    runner = runner_cls(**_config(tmp_path / 'work', data_root, runner_cls.__name__))
    runner.train()
    log = Path(runner.logger.log_file).read_text()  # the logger's own file
    expected = len(CORRUPT) * EPOCHS
    assert f"on_error='skip' transforms (all workers and ranks): train {expected}" in log
    interval_totals = [int(n) for n in re.findall(r'skipped_samples: (\d+)', log)]
    assert interval_totals and interval_totals == sorted(interval_totals)
    assert interval_totals[-1] == expected
    # each corrupt file was named where it was skipped, with the running total
    for i in CORRUPT:
        assert f'sample-{i}' in log
    assert 'skipped so far, all workers' in log


def test_counter_is_shared_by_forked_workers_and_copies():
    import copy
    import multiprocessing as mp
    counter = SkipCounter()
    procs = [mp.get_context('fork').Process(target=counter.add, args=(3,)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert counter.value == 6 and copy.deepcopy(counter) is counter


def test_fast_decode_boost_adds_the_hook_and_the_hook_finds_wrapped_counters():
    from bevboost.data.boost_fast_decode import apply_fast_decode
    cfg = Config(dict(train_dataloader=dict(dataset=dict(type='RepeatDataset', dataset=dict(
        pipeline=[dict(type='LoadMultiViewImageFromFiles', num_views=6)])))))
    apply_fast_decode(cfg, backend='cpu', decode='worker')
    assert [h['type'] for h in cfg.custom_hooks] == ['SkippedSamplesHook']

    class Wrapper:  # like RepeatDataset / CBGSDataset around a dataset with a pipeline
        def __init__(self, inner):
            self.dataset = inner
    from mmengine.dataset import Compose
    from bevboost.data.transforms import FastLoadMultiViewImageFromFiles
    skipping = FastLoadMultiViewImageFromFiles(on_error='skip')
    inner = type('DS', (), {})()
    inner.pipeline = Compose([skipping, FastLoadMultiViewImageFromFiles()])
    assert find_skip_counters(Wrapper(inner)) == [skipping.skip_counter]


# --- a flood of bad files is summarised; every file bad stops with the kit's total -----------

class FloodDataset(CameraToyDataset):
    """``num`` samples; those with ``index % bad_every != 0`` are corrupt (``bad_every=0``:
    all). mmengine's own refetch (a random other sample) is kept."""

    def __init__(self, root: str, num: int = 8, bad_every: int = 0, **kwargs) -> None:
        self.num, self.bad_every = num, bad_every
        super().__init__(root, **kwargs)

    def load_data_list(self) -> list[dict]:
        rng = np.random.default_rng(0)
        good = cv2.imencode('.jpg', rng.integers(0, 255, (90, 160, 3), dtype=np.uint8))[1]
        out = []
        for i in range(self.num):
            bad = self.bad_every == 0 or i % self.bad_every != 0
            images = {}
            for v in range(6):
                path = self.root / f'{i}_{v}.jpg'
                path.write_bytes(b'not a jpeg' if bad and v == 0 else good.tobytes())
                images[f'CAM{v}'] = dict(img_path=str(path), cam2img=np.eye(3) * 80,
                                         lidar2cam=np.eye(4))
            out.append(dict(images=images, token=f'sample-{i}'))
        return out

    _rand_another = BaseDataset._rand_another


def _flood_config(tmp_path: Path, bad_every: int, epochs: int, workers: int) -> dict:
    DATASETS.register_module(module=FloodDataset, force=True)
    data_root = tmp_path / 'data'
    data_root.mkdir()
    cfg = _config(tmp_path / 'work', data_root, None)
    cfg['train_cfg'] = dict(by_epoch=True, max_epochs=epochs, val_interval=10 ** 9)
    cfg['train_dataloader'].update(num_workers=workers)
    cfg['train_dataloader']['dataset'].update(type='FloodDataset', num=16, bad_every=bad_every)
    return cfg


def test_a_flood_of_bad_files_is_listed_first_then_counted(tmp_path):
    from bevboost.data.skip_counts import FIRST_IN_FULL
    runner = Runner(**_flood_config(tmp_path, bad_every=2, epochs=3, workers=0))
    runner.train()
    log = Path(runner.logger.log_file).read_text()
    listed = re.findall(r'skipping sample \((\d+) skipped so far', log)
    assert [int(n) for n in listed] == list(range(1, FIRST_IN_FULL + 1))  # then no more
    assert f'{FIRST_IN_FULL} samples skipped: further ones are counted' in log
    more = [int(n) for n in re.findall(r'(\d+) more samples skipped', log)]
    total = int(re.findall(r'train (\d+)', log)[-1])  # the end-of-run total
    assert total >= 3 * 8  # half of 16 samples bad, 3 epochs (refetches may add more)
    assert more and FIRST_IN_FULL + sum(more) == total


def test_every_sample_bad_stops_with_the_total_and_the_first_files(tmp_path):
    from bevboost.data.skip_counts import ALL_FAIL_AFTER, FIRST_IN_FULL, AllSamplesSkipped
    runner = Runner(**_flood_config(tmp_path, bad_every=0, epochs=1, workers=2))
    with pytest.raises(AllSamplesSkipped) as error:
        runner.train()
    message = str(error.value)
    assert 'every sample tried failed to load' in message and 'none loaded' in message
    assert re.search(r'(\d+) skipped \(all workers\)', message)
    assert int(re.search(r'(\d+) skipped \(all workers\)', message).group(1)) >= ALL_FAIL_AFTER
    assert re.search(r'First bad files: .*sample-\d+', message)
    log = Path(runner.logger.log_file).read_text()
    assert len(re.findall(r'skipping sample \(', log)) == FIRST_IN_FULL  # not thousands
    assert 'Cannot find valid image' not in message + log  # stopped before mmengine's refetch
