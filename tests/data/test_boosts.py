"""fast-decode / dali / shm boosts rewrite mmdet3d-style configs."""
from __future__ import annotations

import pytest
from mmengine.config import Config

from bevboost.boosts import apply_boosts


def _cfg(aug_type: str = 'ResizeCropFlipImage', training: bool = True) -> Config:
    aug = (dict(type=aug_type, data_aug_conf=dict(resize_lim=(0.47, 0.625), final_dim=(320, 800),
                                                  bot_pct_lim=(0.0, 0.0), rand_flip=True),
                training=training) if aug_type == 'ResizeCropFlipImage' else
           dict(type=aug_type, final_dim=(256, 704), resize_lim=(0.38, 0.55), is_train=training))
    pipe = [dict(type='LoadMultiViewImageFromFiles', to_float32=True, num_views=6), aug,
            dict(type='Pack3DDetInputs', keys=['img'])]
    return Config(dict(train_dataloader=dict(batch_size=1, num_workers=2,
                                             dataset=dict(type='NuScenesDataset', pipeline=pipe)),
                       test_pipeline=[dict(pipe[0]), dict(aug, training=False, is_train=False)]))


def test_fast_decode_folds_petr_augmentation():
    out = apply_boosts(_cfg(), ['fast-decode=cpu'])
    pipe = out.train_dataloader.dataset.pipeline
    assert [p['type'] for p in pipe] == ['FastLoadMultiViewImageFromFiles', 'Pack3DDetInputs']
    assert pipe[0]['final_dim'] == (320, 800) and pipe[0]['is_train'] and pipe[0]['backend'] == 'cpu'
    assert out.test_pipeline[0]['resize_lim'] is None  # PETR test resize is max(fH/H, fW/W)
    assert pipe[0]['decode'] == 'worker'  # the CPU backend decodes in the workers


def test_bevfusion_keeps_intrinsics_and_dali_backend():
    out = apply_boosts(_cfg('ImageAug3D'), ['dali'])
    step = out.train_dataloader.dataset.pipeline[0]
    assert step['backend'] == 'dali' and step['fold'] == 'ImageAug3D'
    # no model.data_preprocessor to put the main-process decode in front of: workers decode
    assert step['decode'] == 'worker'
    with pytest.raises(ValueError, match="decode='main' needs model.data_preprocessor"):
        apply_boosts(_cfg('ImageAug3D'), {'dali': dict(decode='main')})


def test_shm_swaps_the_runner():
    out = apply_boosts(_cfg(), ['shm=3'])
    assert out.runner_type == 'ShmRingRunner' and out.train_dataloader.shm_ring['slots'] == 3
    assert 'bevboost' in out.custom_imports['imports']


def test_nothing_to_replace_names_the_config():
    cfg = Config(dict(train_dataloader=dict(dataset=dict(pipeline=[dict(type='LoadPointsFromFile')]))))
    with pytest.raises(ValueError, match='no LoadMultiViewImageFromFiles'):
        apply_boosts(cfg, ['fast-decode'])
    with pytest.raises(ValueError, match='slots'):
        apply_boosts(_cfg(), ['shm=1'])


def test_shm_runner_builds_the_ring_loader():
    from bevboost.data.runner import ShmRingRunner
    from bevboost.data.shm_loader import ShmRingLoader
    loader = ShmRingRunner.build_dataloader(dict(
        batch_size=2, num_workers=1, shm_ring=dict(slots=2),
        dataset=dict(type='ToyDatasetForShm'), sampler=dict(type='DefaultSampler', shuffle=False)))
    assert isinstance(loader, ShmRingLoader) and len(loader) == 2
    loader.close()


@pytest.fixture(autouse=True, scope='module')
def _toy_dataset():
    import torch
    from mmengine.registry import DATASETS

    class ToyDatasetForShm(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {'inputs': {'img': torch.zeros(3, 4, 4, dtype=torch.uint8)}}
    DATASETS.register_module(module=ToyDatasetForShm, force=True)
    yield
