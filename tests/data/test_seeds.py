"""Augmentation seeds follow mmengine: different per worker, rank and epoch; reproducible.

Ranks are simulated the way mmengine's Runner seeds them: the main process
through ``set_random_seed(seed)``, each worker through mmengine's own
``worker_init_fn(worker_id, num_workers, rank, seed)``.
"""
from __future__ import annotations

from functools import partial

import cv2
import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate, worker_init_fn
from mmengine.runner import set_random_seed

from bevboost.data.shm_loader import ShmRingLoader
from bevboost.data.transforms import FastLoadMultiViewImageFromFiles

SEED, WORKERS, RANKS, EPOCHS = 7, 2, 2, 2


@pytest.fixture(scope='module')
def cameras(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp('tiny_cams')
    rng = np.random.default_rng(0)
    images = {}
    for v in range(6):
        path = root / f'cam{v}.jpg'
        cv2.imwrite(str(path), rng.integers(0, 255, (90, 160, 3), dtype=np.uint8))
        k = np.array([[80.0, 0, 80], [0, 80.0, 45], [0, 0, 1]])
        images[f'CAM{v}'] = dict(img_path=str(path), cam2img=k, lidar2cam=np.eye(4))
    return images


def _fast_load() -> FastLoadMultiViewImageFromFiles:
    return FastLoadMultiViewImageFromFiles(
        final_dim=(32, 64), resize_lim=(0.3, 0.6), bot_pct_lim=(0.0, 0.2),
        rot_lim=(-5.0, 5.0), rand_flip=True, is_train=True)


class AugDataset:
    """Returns the augmentation each sample got, and which worker drew it."""

    def __init__(self, cameras: dict, n: int = 4) -> None:
        self.cameras, self.n = cameras, n
        self.load = _fast_load()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        out = self.load(dict(images=self.cameras, token=str(i)))
        worker = torch.utils.data.get_worker_info()
        return {'inputs': {'img': torch.zeros(1, dtype=torch.uint8)},
                'data_samples': dict(worker=worker.id if worker else -1,
                                     aug=tuple(np.round(out['img_aug_matrix'][0][:2].ravel(), 6)))}


def _torch_loader(ds, rank: int, persistent: bool):
    return torch.utils.data.DataLoader(
        ds, batch_size=1, num_workers=WORKERS, collate_fn=pseudo_collate,
        persistent_workers=persistent,
        worker_init_fn=partial(worker_init_fn, num_workers=WORKERS, rank=rank, seed=SEED))


def _shm_loader(ds, rank: int, persistent: bool):
    return ShmRingLoader(ds, batch_size=1, num_workers=WORKERS, worker_init_fn=partial(
        worker_init_fn, num_workers=WORKERS, rank=rank, seed=SEED))


def _first_draws(cameras: dict, make_loader, persistent: bool = False,
                 dataset=AugDataset) -> dict:
    """(rank, epoch, worker) -> the first augmentation that worker drew."""
    draws = {}
    for rank in range(RANKS):
        set_random_seed(SEED)  # what the Runner does in every rank's main process
        loader = make_loader(dataset(cameras), rank, persistent)
        for epoch in range(EPOCHS):
            for batch in loader:
                sample = batch['data_samples']
                draws.setdefault((rank, epoch, sample['worker'][0]), sample['aug'][0])
        getattr(loader, 'close', lambda: None)()
    return draws


@pytest.mark.parametrize('make_loader,persistent', [
    (_torch_loader, False), (_torch_loader, True), (_shm_loader, False)],
    ids=['torch', 'torch-persistent', 'shm'])
def test_augmentation_differs_per_worker_rank_epoch_and_reproduces(cameras, make_loader,
                                                                   persistent):
    draws = _first_draws(cameras, make_loader, persistent)
    assert len(draws) == WORKERS * RANKS * EPOCHS
    assert len(set(draws.values())) == len(draws), draws
    assert _first_draws(cameras, make_loader, persistent) == draws


def test_outside_workers_it_draws_what_stock_transforms_draw(cameras):
    """num_workers=0: the same np.random stream as mmdet3d's transforms (no private scheme)."""
    load = _fast_load()
    np.random.seed(3)
    ours = load(dict(images=cameras, token='0'))['img_aug_matrix'][0]
    np.random.seed(3)
    assert np.array_equal(_fast_load()(dict(images=cameras, token='0'))['img_aug_matrix'][0],
                          ours)
    np.random.seed(4)
    assert not np.array_equal(load(dict(images=cameras, token='0'))['img_aug_matrix'][0], ours)


@pytest.mark.mmdet3d
def test_kit_mmdet3d_transforms_differ_per_worker_rank_epoch(cameras):
    from bevboost_petr.transforms import BEVRandomRotScale, MultiViewResizeCropFlip

    class PluginDataset(AugDataset):
        def __getitem__(self, i):
            img = np.zeros((90, 160, 3), np.uint8)
            out = MultiViewResizeCropFlip(final_dim=(32, 64), resize_lim=(0.9, 1.3),
                                          bot_pct_lim=(0.0, 0.2), rand_flip=True)(
                dict(img=[img], cam2img=[np.eye(3)], lidar2cam=[np.eye(4)]))
            out = BEVRandomRotScale()(out)
            worker = torch.utils.data.get_worker_info()
            return {'inputs': {'img': torch.zeros(1, dtype=torch.uint8)},
                    'data_samples': dict(worker=worker.id,
                                         aug=tuple(np.round(out['lidar2img'][0].ravel(), 6)))}

    draws = _first_draws(cameras, _torch_loader, dataset=PluginDataset)
    assert len(draws) == WORKERS * RANKS * EPOCHS and len(set(draws.values())) == len(draws)
    assert _first_draws(cameras, _torch_loader, dataset=PluginDataset) == draws


def test_transforms_still_copy_and_pickle():
    """Pipelines get deep-copied and, with the spawn start method, pickled into workers."""
    import copy
    import pickle
    load = _fast_load()
    load.rng.uniform()  # a built stream (np.random) must not be copied along
    for clone in (copy.deepcopy(load), pickle.loads(pickle.dumps(load.rng)),
                  pickle.loads(pickle.dumps(FastLoadMultiViewImageFromFiles(seed=3).rng))):
        rng = getattr(clone, 'rng', clone)
        assert 0.0 <= rng.uniform() < 1.0
