"""Decode in the training process: workers ship JPEG bytes and never touch CUDA.

The CPU form of the main-process path (the same code as on CUDA, with
``device='cpu'`` and libjpeg-turbo instead of nvJPEG) must give the images the
worker path gives, train the tiny PETRv2, and leave CUDA alone in workers.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from mmengine.model import BaseDataPreprocessor
from mmengine.structures import BaseDataElement

from bevboost._optional import cuda_available as real_cuda_available
from bevboost._optional import is_available as real_is_available
from bevboost.data.fold import fold_options
from bevboost.data.main_decode import MainProcessDecodePreprocessor
from bevboost.data.transforms import FastLoadMultiViewImageFromFiles
from tests.data.conftest import make_results

IMAGE_AUG = dict(type='ImageAug3D', final_dim=(256, 704), resize_lim=(0.38, 0.55),
                 bot_pct_lim=(0.0, 0.0), rot_lim=(-5.4, 5.4), rand_flip=True, is_train=True)
KIT_AUG = dict(type='MultiViewResizeCropFlip', final_dim=(320, 800), resize_lim=(0.94, 1.25),
               rand_flip=True, training=True)


def _pack(results: dict) -> dict:
    """What Pack3DDetInputs + pseudo_collate hand the model for one sample."""
    sample = BaseDataElement(metainfo={k: results[k] for k in ('img_jpeg', 'cam2img')
                                       if k in results})
    inputs = {}
    if 'img' in results:
        inputs['img'] = torch.from_numpy(np.stack(results['img'])).permute(0, 3, 1, 2)
    return dict(inputs=inputs, data_samples=[sample])


@pytest.mark.parametrize('aug', [IMAGE_AUG, KIT_AUG], ids=['ImageAug3D', 'kit'])
def test_main_process_decode_matches_worker_decode(nus_root, aug):
    results = make_results(nus_root)
    worker = FastLoadMultiViewImageFromFiles(seed=7, **fold_options(aug))
    main = FastLoadMultiViewImageFromFiles(seed=7, decode='main', **fold_options(aug))
    ref, shipped = worker(copy.deepcopy(results)), main(copy.deepcopy(results))
    assert 'img' not in shipped and len(shipped['img_jpeg']['blobs']) == 6
    for key in ('cam2img', 'lidar2img', 'img_aug_matrix', 'img_shape'):
        np.testing.assert_allclose(np.asarray(shipped[key]), np.asarray(ref[key]))
    pre = MainProcessDecodePreprocessor(preprocessor=dict(type='BaseDataPreprocessor'),
                                        backend='cpu')
    out = pre(_pack(shipped))
    imgs = out['inputs']['img'][0]
    assert imgs.dtype == torch.uint8 and tuple(imgs.shape) == (6, 3) + aug['final_dim']
    assert 'img_jpeg' not in out['data_samples'][0]  # bytes do not reach the model
    diff = (imgs.float() - _pack(ref)['inputs']['img'].float()).abs()
    rotated = any(abs(m[0, 1]) > 1e-9 for m in ref['img_aug_matrix'])
    assert diff.mean() <= (1.5 if rotated else 1.0), diff.mean()  # torch vs OpenCV resampling
    assert pre.decoded_views == 6


def test_worker_decoded_batches_pass_through():
    pre = MainProcessDecodePreprocessor(preprocessor=dict(type='BaseDataPreprocessor'),
                                        backend='cpu')
    img = torch.randint(0, 255, (6, 3, 8, 16), dtype=torch.uint8)
    out = pre(dict(inputs=dict(img=[img]), data_samples=[BaseDataElement()]))
    assert torch.equal(out['inputs']['img'][0], img) and pre.decoded_views == 0
    assert isinstance(pre.preprocessor, BaseDataPreprocessor)


def _forbid_cuda(worker_id: int) -> None:
    """Make every way into CUDA fail inside the worker (a forked child must not init it)."""
    import bevboost._optional as optional
    import bevboost.data.decode as decode

    def trap(*args, **kwargs):
        raise RuntimeError('CUDA touched in a DataLoader worker')
    # undo the test's pretend-CUDA: in the worker every probe is the real one
    optional.cuda_available = decode.cuda_available = real_cuda_available
    decode.is_available = real_is_available
    real_cuda_available.cache_clear()
    for name in ('is_available', 'init', '_lazy_init', 'device_count', 'current_device'):
        setattr(torch.cuda, name, trap)
    torch._C._cuda_getDeviceCount = trap


class _Samples(torch.utils.data.Dataset):
    """Builds its loaders in the worker too: an ``auto`` choice made there must not ask CUDA."""

    def __init__(self, root, probe_cuda: bool = False) -> None:
        self.root, self.probe_cuda = root, probe_cuda
        self.prebuilt = FastLoadMultiViewImageFromFiles(decode='auto', backend='auto',
                                                        seed=0, **fold_options(KIT_AUG))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> dict:
        if self.probe_cuda:
            torch.cuda.is_available()
        built_here = FastLoadMultiViewImageFromFiles(decode='auto', backend='auto',
                                                     **fold_options(KIT_AUG))
        a = self.prebuilt(make_results(self.root, i))
        b = built_here(make_results(self.root, i))
        return dict(prebuilt=self.prebuilt.decode, built_here=built_here.decode,
                    shipped='img_jpeg' in a, decoded='img' in b)


def _first_batch(dataset) -> dict:
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=1,
                                         worker_init_fn=_forbid_cuda,
                                         multiprocessing_context='fork', collate_fn=lambda b: b)
    return next(iter(loader))


def test_no_cuda_call_happens_in_a_worker(nus_root, monkeypatch):
    import bevboost.data.decode as decode
    import bevboost._optional as optional
    # pretend the training process has CUDA + nvJPEG: 'auto' decodes there, never in workers
    monkeypatch.setattr(optional, 'cuda_available', lambda: True)
    monkeypatch.setattr(decode, 'cuda_available', lambda: True)
    monkeypatch.setattr(decode, 'is_available', lambda name: name == 'torchvision')
    batch = _first_batch(_Samples(nus_root))
    assert [s['prebuilt'] for s in batch] == ['main', 'main']  # chosen in this process
    assert all(s['shipped'] for s in batch)  # the workers shipped bytes...
    assert [s['built_here'] for s in batch] == ['worker', 'worker']  # ...and chose no GPU there
    assert all(s['decoded'] for s in batch)


def test_the_worker_trap_catches_a_cuda_call(nus_root):
    """The check above can fail: a CUDA query in the worker raises through the loader."""
    with pytest.raises(RuntimeError, match='CUDA touched in a DataLoader worker'):
        _first_batch(_Samples(nus_root, probe_cuda=True))


@pytest.mark.mmdet3d
@pytest.mark.slow
def test_tiny_petrv2_trains_with_main_process_decode(tmp_path):
    from bevboost.boosts import apply_boosts
    from bevboost.synth import synthesize_nuscenes
    from bevboost.runner_utils import build_runner
    from tests.petr.conftest import TINY_CONFIG, tiny_config
    root = synthesize_nuscenes(tmp_path / 'nus', scenes=2, samples_per_scene=4,
                               image_size=(128, 352))
    work = tmp_path / 'work'
    work.mkdir()
    cfg = tiny_config(root, work, max_iters=12, config=TINY_CONFIG, num_workers=1)
    cfg = apply_boosts(cfg, {'fast-decode': dict(backend='cpu', decode='main')})
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runner = build_runner(cfg)
        runner.train()
    finally:
        torch.set_num_threads(before)
    pre = runner.model.data_preprocessor
    assert isinstance(pre, MainProcessDecodePreprocessor)
    # every view decoded in this process: 12 iterations x 2 samples x 12 views, then the
    # validation the loop runs at its end (4 samples x 12 views, test pipeline folded too)
    assert pre.decoded_views == 12 * 2 * 12 + 4 * 12
    losses, _ = runner.message_hub.get_scalar('train/loss').data
    losses = np.asarray(losses, dtype=np.float64)
    assert len(losses) == 12 and np.isfinite(losses).all()
    assert losses[-4:].mean() < losses[:4].mean(), losses
    from bevboost.boosts import BoostNotInEffect, get_boost
    verdict = get_boost('fast-decode').verify(runner)
    assert 'MultiViewResizeCropFlip' in verdict and 'training process (cpu)' in verdict
    runner.model.data_preprocessor = pre.preprocessor  # shipped bytes nobody decodes
    with pytest.raises(BoostNotInEffect, match='MainProcessDecodePreprocessor'):
        get_boost('fast-decode').verify(runner)


@pytest.mark.dali
def test_dali_in_the_main_process_matches_libjpeg_turbo(nus_root):
    """The DALI branch of the main-process decoder (CPU DALI here, ``mixed`` on CUDA)."""
    from bevboost.data.main_decode import BatchDecoder
    shipped = FastLoadMultiViewImageFromFiles(seed=1, decode='main', **fold_options(KIT_AUG))(
        make_results(nus_root))
    job = shipped['img_jpeg']
    cpu = BatchDecoder('cpu')(job['blobs'], job['plans'], torch.device('cpu'))
    dali = BatchDecoder('dali')(job['blobs'], job['plans'], torch.device('cpu'))
    assert [tuple(t.shape) for t in dali] == [tuple(t.shape) for t in cpu]
    diff = (torch.stack(dali).float() - torch.stack(cpu).float()).abs().mean()
    assert diff < 2.0, diff
