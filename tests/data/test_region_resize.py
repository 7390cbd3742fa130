"""resize_region against OpenCV's own whole-frame resize, then cropped."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from bevboost.data.region_resize import MAX_SHIFT_PX, resize_region

#: decoded 800x450 frames resized as PETRv2 (0.94-1.25x) and BEVFusion (0.76-1.1x) train draw,
#: an exact 2x shrink (OpenCV's area fast path) and odd sizes
SCALES = [(921, 518), (1000, 562), (752, 423), (879, 494), (608, 342), (400, 225), (801, 451),
          (777, 333)]


def _regions(rng, new_w, new_h, n=12):
    out = [(0, 0, new_w, new_h), (0, new_h - min(new_h, 320), min(new_w, 800), new_h)]
    for _ in range(n):
        x0, y0 = int(rng.integers(0, new_w - 1)), int(rng.integers(0, new_h - 1))
        out.append((x0, y0, int(rng.integers(x0 + 1, new_w + 1)),
                    int(rng.integers(y0 + 1, new_h + 1))))
    return out


@pytest.mark.parametrize('size', SCALES)
def test_samples_within_the_stated_shift_of_the_whole_frame(size):
    """On a float ramp a bilinear resize returns each pixel's sample position: the region's
    positions stay within MAX_SHIFT_PX (output pixels) of the whole frame's."""
    src_h, src_w = 450, 800
    ys, xs = np.mgrid[0:src_h, 0:src_w].astype(np.float32)
    ramp = np.dstack([xs, ys])
    whole = cv2.resize(ramp, size, interpolation=cv2.INTER_LINEAR)
    scale = np.array([size[0] / src_w, size[1] / src_h])
    rng = np.random.default_rng(sum(size))
    for x0, y0, x1, y1 in _regions(rng, *size):
        part = resize_region(ramp, size, (x0, y0, x1, y1))
        assert part.shape == (y1 - y0, x1 - x0, 2)
        ref = whole[y0:y1, x0:x1]
        # interior only: at the frame's edges both clamp to the border pixel
        inner = (slice(1 if y0 == 0 else 0, None), slice(1 if x0 == 0 else 0, None))
        shift_out = np.abs(part - ref)[inner].reshape(-1, 2).max(axis=0) * scale
        assert (shift_out <= MAX_SHIFT_PX + 1e-3).all(), ((x0, y0, x1, y1), shift_out)


@pytest.mark.parametrize('size', SCALES)
def test_uint8_pixels_match_the_whole_frame(size):
    """A camera-like uint8 frame (a JPEG round trip of smooth texture plus edges): the 11-bit
    fixed-point weights round some pixels the other way, never far."""
    rng = np.random.default_rng(7)
    small = rng.integers(0, 256, (57, 101, 3), np.uint8)
    img = cv2.resize(small, (800, 450), interpolation=cv2.INTER_CUBIC)
    cv2.rectangle(img, (200, 100), (420, 300), (255, 255, 255), 3)
    img = cv2.imdecode(cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1],
                       cv2.IMREAD_COLOR)
    whole = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
    for x0, y0, x1, y1 in _regions(rng, *size):
        part = resize_region(img, size, (x0, y0, x1, y1))
        diff = np.abs(part.astype(int) - whole[y0:y1, x0:x1].astype(int))
        assert diff.mean() <= 0.3 and diff.max() <= 4, ((x0, y0, x1, y1), diff.mean(), diff.max())


def test_a_region_at_the_origin_is_exact():
    img = np.random.default_rng(1).integers(0, 256, (450, 800, 3), np.uint8)
    whole = cv2.resize(img, (913, 513), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(resize_region(img, (913, 513), (0, 0, 500, 200)),
                                  whole[:200, :500])


def test_it_resizes_less_than_the_frame(monkeypatch):
    """The point of it: a PETRv2-like bottom crop interpolates well under the whole frame."""
    img = np.zeros((450, 800, 3), np.uint8)
    calls = []
    real = cv2.resize

    def spy(src, *args, **kwargs):
        calls.append(src.shape[:2])
        return real(src, *args, **kwargs)
    monkeypatch.setattr(cv2, 'resize', spy)
    resize_region(img, (913, 513), (46, 193, 846, 513))
    (h, w), = calls
    assert h * w <= 0.75 * 450 * 800, (h, w)


@pytest.mark.parametrize('region', [(0, 0, 914, 10), (-1, 0, 10, 10), (5, 5, 5, 10)])
def test_a_region_outside_the_frame_is_refused(region):
    with pytest.raises(ValueError, match='not inside'):
        resize_region(np.zeros((450, 800, 3), np.uint8), (913, 513), region)
