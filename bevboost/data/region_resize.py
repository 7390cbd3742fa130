"""Resize only the part of an image a crop keeps.

The folded transforms resize a view and then crop it: PETRv2 keeps 320 of
~510 resized rows, BEVFusion 256 of ~420. :func:`resize_region` returns the
region ``[y0:y1, x0:x1]`` of ``cv2.resize(img, (new_w, new_h))`` while
interpolating only about that region (plus a pixel of margin), which takes
40 % less CPU on those pipelines than resizing the whole frame.

``cv2.resize`` places output pixel ``i`` of a source slice starting at ``a``
at source position ``a + (i + 0.5) / f - 0.5`` for the scale ``f`` it is given
(``fx``/``fy``). The full frame's output pixel ``b + i`` sits at
``(b + i + 0.5) / f - 0.5``: the two agree exactly when ``a * f == b``. The
slice start ``a`` is therefore the nearest source index at or before the
region (less a margin pixel) whose ``a * f`` lies within :data:`MAX_SHIFT_PX`
of an integer ``b``; every pixel then samples the source at most
``MAX_SHIFT_PX`` output pixels from where the whole-frame resize samples it
(the bilinear weights themselves are 11-bit fixed point, 1/2048 px). Where no
such start exists near the region, the slice starts at 0, which is exact.

Only ``INTER_LINEAR`` is served this way: the caller keeps whole-frame
``INTER_AREA`` for shrinks beyond 2x, whose box filter has other geometry.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from bevboost.data.scratch import scratch

#: how far (in output pixels) a region's sample grid may sit from the whole frame's
MAX_SHIFT_PX = 1 / 64
#: source indices searched below a region's start for an aligned slice start
SEARCH = 256


def slice_start(src_len: int, out_len: int, first: int) -> tuple[int, int]:
    """``(a, b)``: a source slice start ``a`` and its output index ``b <= first``.

    ``a * out_len / src_len`` is within :data:`MAX_SHIFT_PX` of ``b``; the
    source pixel left of output ``first``'s sample position (less one for
    margin) is at or after ``a``.
    """
    scale = out_len / src_len
    need = math.floor((first + 0.5) / scale - 0.5) - 1
    if need <= 0:
        return 0, 0
    starts = np.arange(need, max(0, need - SEARCH), -1)
    ends = np.rint(starts * scale)
    ok = np.flatnonzero((np.abs(starts * scale - ends) <= MAX_SHIFT_PX) & (ends <= first))
    if not ok.size:
        return 0, 0
    return int(starts[ok[0]]), int(ends[ok[0]])


def slice_end(src_len: int, out_len: int, last: int) -> int:
    """Source slice end covering output ``last``'s two bilinear taps, plus a margin pixel."""
    scale = out_len / src_len
    return min(src_len, math.floor((last + 0.5) / scale - 0.5) + 3)


def resize_region(img: np.ndarray, size: tuple[int, int],
                  region: tuple[int, int, int, int], into_scratch: bool = False) -> np.ndarray:
    """``cv2.resize(img, size, interpolation=INTER_LINEAR)[y0:y1, x0:x1]``, computing the region only.

    ``size`` is (W, H) as for ``cv2.resize``; ``region`` (x0, y0, x1, y1) lies
    inside it. Equal to the whole-frame resize up to :data:`MAX_SHIFT_PX`.
    ``into_scratch``: resize into this thread's scratch array (:mod:`bevboost.data.scratch`),
    for a caller that writes its own result from it.
    """
    new_w, new_h = size
    x0, y0, x1, y1 = region
    if not (0 <= x0 < x1 <= new_w and 0 <= y0 < y1 <= new_h):
        raise ValueError(f'region {region} is not inside the resized {new_w}x{new_h} frame')
    src_h, src_w = img.shape[:2]
    ax, bx = slice_start(src_w, new_w, x0)
    ay, by = slice_start(src_h, new_h, y0)
    ex, ey = slice_end(src_w, new_w, x1 - 1), slice_end(src_h, new_h, y1 - 1)
    piece = img[ay:ey, ax:ex]
    fx, fy = new_w / src_w, new_h / src_h
    dst = None
    if into_scratch:  # the size OpenCV gives fx, fy (rounded to nearest); it reallocates if not
        dst = scratch('resize', (round(piece.shape[0] * fy), round(piece.shape[1] * fx))
                      + piece.shape[2:])
    out = cv2.resize(piece, None, dst=dst, fx=fx, fy=fy, interpolation=cv2.INTER_LINEAR)
    part = out[y0 - by:y1 - by, x0 - bx:x1 - bx]
    # cv2.resize copies a slice whose output size rounds to its own size, at any scale
    copied = out.shape[:2] == piece.shape[:2] and (new_w, new_h) != (src_w, src_h)
    if copied or part.shape[:2] != (y1 - y0, x1 - x0):  # or the slice's size rounded short
        return cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)[y0:y1, x0:x1]
    return part
