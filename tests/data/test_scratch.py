"""Scratch memory: what lives in it never reaches a result, and libjpeg-turbo's sizes fit it."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import simplejpeg

from bevboost.data import scratch as scratch_mod
from bevboost.data.decode import decode_cpu, decoded_hw
from bevboost.data.fold import fold_options
from bevboost.data.scratch import scratch
from bevboost.data.transforms import FastLoadMultiViewImageFromFiles
from tests.data.conftest import make_results


def test_a_role_keeps_one_block_and_grows_it():
    big = scratch('test-role', (40, 50, 4))
    small = scratch('test-role', (30, 70, 3))  # another shape, fewer bytes: the same memory
    assert small.shape == (30, 70, 3) and np.shares_memory(big, small)
    grown = scratch('test-role', (100, 100, 4))
    assert grown.shape == (100, 100, 4) and not np.shares_memory(big, grown)
    assert scratch('test-role', (8,), np.int32).dtype == np.int32
    other = []
    t = threading.Thread(target=lambda: other.append(scratch('test-role', (10, 10, 4))))
    t.start()
    t.join()
    assert not np.shares_memory(other[0], grown)  # each thread its own


@pytest.mark.parametrize('hw', [(900, 1600), (899, 1599), (901, 1603), (1080, 1920)])
@pytest.mark.parametrize('target', [None, (450, 800), (256, 704), (100, 150)])
def test_decoded_size_is_libjpeg_turbos(hw, target):
    """The size decode_cpu allocates and the transform plans with is what libjpeg-turbo writes,
    odd frame sizes included."""
    img = np.random.default_rng(0).integers(0, 256, hw + (3,), np.uint8)
    data = simplejpeg.encode_jpeg(img, quality=80)
    want = decoded_hw(hw, target, 1.25)
    for padded in (False, True):
        for into_scratch in (False, True):
            out, _ = decode_cpu(data, target, max_upsample=1.25, padded=padded,
                                into_scratch=into_scratch)
            assert out.shape == want + (4 if padded else 3,)
    plain, _ = decode_cpu(data, target, max_upsample=1.25)
    padded, _ = decode_cpu(data, target, max_upsample=1.25, padded=True, into_scratch=True)
    np.testing.assert_array_equal(padded[..., :3], plain)


@pytest.mark.parametrize('fold', [
    dict(type='ImageAug3D', final_dim=(256, 704), resize_lim=(0.38, 0.55), bot_pct_lim=(0.0, 0.0),
         rot_lim=(-5.4, 5.4), rand_flip=True, is_train=True),
    dict(type='ResizeCropFlipImage', training=True, data_aug_conf=dict(
        resize_lim=(0.47, 0.625), final_dim=(320, 800), bot_pct_lim=(0.0, 0.0),
        rot_lim=(0.0, 0.0), H=900, W=1600, rand_flip=True))])
def test_views_own_their_pixels(nus_root, fold):
    """Every view the loader returns is its own array: none shares this thread's scratch memory
    or another view, and later samples leave them as they were; flipped and unflipped views."""
    views, kept, flips = [], [], set()
    for seed in range(6):
        out = FastLoadMultiViewImageFromFiles(seed=seed, **fold_options(fold))(
            make_results(nus_root, seed % 2))
        views += out['img']
        kept += [v.copy() for v in out['img']]
        flips |= {bool(m[0, 0] < 0) for m in out['img_aug_matrix']}
    assert flips == {False, True}
    blocks = list(vars(scratch_mod._BUFFERS).values())
    assert blocks, 'the resize/rotation path used no scratch memory'
    for i, view in enumerate(views):
        assert not any(np.shares_memory(view, b) for b in blocks)
        assert not any(np.shares_memory(view, o) for o in views[i + 1:])
    for view, copy in zip(views, kept):  # as each sample returned them
        np.testing.assert_array_equal(view, copy)
