"""The packed nearest warp against OpenCV's own 3-channel nearest warp, pixel for pixel."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from bevboost.data.augment import warp_nearest


@pytest.mark.parametrize('angle', [-5.4, -0.7, 0.0, 2.5, 5.4, 30.0])
@pytest.mark.parametrize('flip', [False, True])
def test_packed_warp_equals_the_three_channel_warp(angle, flip):
    rng = np.random.default_rng(int(angle * 10 + 100) * 2 + flip)
    img = rng.integers(0, 256, (250, 690, 3), np.uint8)  # every byte value, borders inside
    img[0, :3] = [[0, 0, 0], [255, 255, 255], [128, 255, 0]]
    w, h = 704, 256
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
    m[:, 2] += (7.0, 3.0)  # the crop's part inside the image sits off the view's origin
    if flip:
        m = m @ np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    stock = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_NEAREST,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    ours = warp_nearest(img[:, :], m, (w, h))
    assert ours.dtype == np.uint8 and ours.shape == (h, w, 3)
    np.testing.assert_array_equal(ours, stock)
    assert (ours == 0).all(axis=2).any()  # the zero fill is there, not alpha or garbage


@pytest.mark.parametrize('angle', [-5.4, 3.0])
def test_padded_frame_warps_as_the_three_channel_one(angle):
    """A frame decoded with a padding byte (any value) warps to OpenCV's 3-channel result, also
    from a strided view (the crop's part of a larger resized frame)."""
    rng = np.random.default_rng(7)
    frame = rng.integers(0, 256, (300, 760, 4), np.uint8)
    part = frame[30:280, 40:730]
    m = cv2.getRotationMatrix2D((351.5, 127.5), angle, 1.0)
    stock = cv2.warpAffine(np.ascontiguousarray(part[..., :3]), m, (704, 256),
                           flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    np.testing.assert_array_equal(warp_nearest(part, m, (704, 256), padded=True), stock)
    with pytest.raises(ValueError, match='HxWx4 uint8'):
        warp_nearest(part[..., :3], m, (704, 256), padded=True)


def test_other_images_take_the_plain_warp():
    img = np.arange(60 * 80, dtype=np.float32).reshape(60, 80)
    m = cv2.getRotationMatrix2D((39.5, 29.5), 3.0, 1.0)
    np.testing.assert_array_equal(
        warp_nearest(img, m, (80, 60)),
        cv2.warpAffine(img, m, (80, 60), flags=cv2.INTER_NEAREST,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0))


def test_results_do_not_share_the_scratch_buffers():
    """Each call's result is its own array: a later call (another size too) leaves it alone."""
    rng = np.random.default_rng(5)
    m = cv2.getRotationMatrix2D((351.5, 127.5), 4.0, 1.0)
    imgs = [rng.integers(0, 256, (256, 704, 3), np.uint8),
            rng.integers(0, 256, (240, 650, 3), np.uint8),
            rng.integers(0, 256, (256, 704, 3), np.uint8)]
    sizes = [(704, 256), (704, 256), (640, 200)]
    outs = [warp_nearest(img, m, size) for img, size in zip(imgs, sizes)]
    for img, size, out in zip(imgs, sizes, outs):
        np.testing.assert_array_equal(out, cv2.warpAffine(
            img, m, size, flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0))
