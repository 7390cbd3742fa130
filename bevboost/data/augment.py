"""Image-augmentation geometry of the resize/crop transforms the fast loader folds.

Each folded transform samples (resize, crop, flip, rotate), resizes the image to
``resize_dims``, crops ``final_dim`` (zero padding outside), optionally flips
and rotates about the crop centre, and carries a 3x3 "ida" matrix mapping
original pixels to augmented ones. What differs between them is *how* they
sample and which result keys they update; :data:`FOLDABLE` records that per
transform, and the samplers draw from ``rng`` in the same order as the stock
code draws from ``np.random``, so a ``RandomState`` seeded like the global one
reproduces the stock parameters exactly.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import cv2
import numpy as np

from bevboost.data.region_resize import resize_region
from bevboost.data.scratch import scratch


@dataclasses.dataclass(frozen=True)
class AugParams:
    resize: float
    resize_dims: tuple[int, int]  # (W, H) after resizing
    crop: tuple[int, int, int, int]  # x0, y0, x1, y1 in resized pixels
    flip: bool
    rotate: float  # degrees, counter-clockwise

    @property
    def resize_hw(self) -> tuple[int, int]:
        return self.resize_dims[1], self.resize_dims[0]


@dataclasses.dataclass(frozen=True)
class FoldedTransform:
    """How one stock resize/crop transform samples and which keys it updates.

    Attributes:
        sampler: ``'petr'`` (absolute ``resize_lim``, ``int`` sizes; PETR,
            StreamPETR, BEVFusion) or ``'relative'`` (``resize_lim`` relative to
            the covering scale, rounded sizes; the kit's ``MultiViewResizeCropFlip``).
        per_view: one draw per camera (True) or one per sample.
        update_intrinsics: the augmentation goes into ``cam2img`` (and so
            ``lidar2img``); False keeps it only in ``img_aug_matrix`` (BEVFusion).
        sets_img_shape: ``img_shape``/``pad_shape`` become ``final_dim``; False
            leaves the loader's full-image shape, as the stock transform does.
    """
    sampler: str
    per_view: bool
    update_intrinsics: bool
    sets_img_shape: bool


#: stock transforms the fast loader can stand in for (registry names)
FOLDABLE = {
    'ResizeCropFlipImage': FoldedTransform('petr', False, True, False),
    'ResizeCropFlipRotImage': FoldedTransform('petr', False, True, False),
    'ImageAug3D': FoldedTransform('petr', True, False, False),
    'MultiViewResizeCropFlip': FoldedTransform('relative', True, True, True),
}
#: what the loader does when it folds nothing but is given ``final_dim``
UNFOLDED = FoldedTransform('petr', False, True, True)


def sample_aug(src_hw: tuple[int, int], final_dim: tuple[int, int],
               resize_lim: tuple[float, float] | None = None,
               bot_pct_lim: tuple[float, float] = (0.0, 0.0),
               rot_lim: tuple[float, float] = (0.0, 0.0), rand_flip: bool = False,
               is_train: bool = False, rng: Any = None, sampler: str = 'petr') -> AugParams:
    """Draw augmentation parameters the way the folded transform does.

    ``'petr'``: test time uses ``resize = max(fH / H, fW / W)`` when
    ``resize_lim`` is None (PETR), else its mean (BEVFusion). ``'relative'``:
    ``MultiViewResizeCropFlip``. ``rng`` is a ``np.random.Generator`` or
    ``RandomState`` (both have ``uniform``, ``choice`` and ``random``).
    """
    rng = rng if rng is not None else np.random.default_rng()
    if sampler == 'relative':
        return _sample_relative(src_hw, final_dim, resize_lim or (1.0, 1.0), bot_pct_lim,
                                rand_flip, is_train, rng)
    if sampler != 'petr':
        raise ValueError(f"sampler must be 'petr' or 'relative', got {sampler!r}")
    height, width = src_hw
    f_h, f_w = final_dim
    if is_train:
        if resize_lim is None:
            raise ValueError('resize_lim is required when is_train=True')
        resize = float(rng.uniform(*resize_lim))
    elif resize_lim is None:
        resize = max(f_h / height, f_w / width)
    else:
        resize = float(np.mean(resize_lim))
    new_w, new_h = int(width * resize), int(height * resize)
    if is_train:
        crop_h = int((1 - rng.uniform(*bot_pct_lim)) * new_h) - f_h
        crop_w = int(rng.uniform(0, max(0, new_w - f_w)))
        flip = bool(rand_flip and rng.choice([0, 1]))
        rotate = float(rng.uniform(*rot_lim))
    else:
        crop_h = int((1 - np.mean(bot_pct_lim)) * new_h) - f_h
        crop_w = int(max(0, new_w - f_w) / 2)
        flip, rotate = False, 0.0
    return AugParams(resize, (new_w, new_h), (crop_w, crop_h, crop_w + f_w, crop_h + f_h),
                     flip, rotate)


def _sample_relative(src_hw, final_dim, resize_lim, bot_pct_lim, rand_flip, is_train, rng):
    height, width = src_hw
    f_h, f_w = final_dim
    fit = max(f_h / height, f_w / width)
    if is_train:
        resize = fit * rng.uniform(*resize_lim)
        bot = rng.uniform(*bot_pct_lim)
    else:
        resize, bot = fit, float(np.mean(bot_pct_lim))
    new_h, new_w = int(round(height * resize)), int(round(width * resize))
    crop_h = max(0, int((1 - bot) * new_h) - f_h)
    slack = max(0, new_w - f_w)
    crop_w = int(rng.uniform(0, slack)) if is_train else slack // 2
    flip = bool(is_train and rand_flip and rng.random() < 0.5)
    return AugParams(float(resize), (new_w, new_h), (crop_w, crop_h, crop_w + f_w, crop_h + f_h),
                     flip, 0.0)


def ida_matrix(p: AugParams) -> np.ndarray:
    """3x3 matrix taking original pixel coordinates to augmented ones.

    Resize by ``p.resize``, crop (translate by ``-crop[:2]``), flip about the
    crop's width, rotate ``p.rotate`` degrees about the crop's centre. Written
    out in floats rather than as matrix products: it runs for every view.
    """
    x0, y0, x1, y1 = p.crop
    a00, a11 = (-p.resize if p.flip else p.resize), p.resize  # linear part: diag(a00, a11)
    bx, by = (float(x1) if p.flip else float(-x0)), float(-y0)  # translation
    out = np.eye(3)
    if not p.rotate:
        out[0, 0], out[0, 2], out[1, 1], out[1, 2] = a00, bx, a11, by
        return out
    t = math.radians(p.rotate)
    c, s = math.cos(t), math.sin(t)
    cx, cy = (x1 - x0) / 2, (y1 - y0) / 2
    # R = [[c, s], [-s, c]] about the centre: A' = R A, b' = R b + centre - R centre
    out[0] = (c * a00, s * a11, (c * bx + s * by + cx) - (c * cx + s * cy))
    out[1] = (-s * a00, c * a11, (-s * bx + c * by + cy) - (-s * cx + c * cy))
    return out


def img_aug_matrix(ida: np.ndarray) -> np.ndarray:
    """BEVFusion's 4x4 ``img_aug_matrix``: rotation in ``[:2, :2]``, translation in ``[:2, 3]``."""
    out = np.eye(4)
    out[:2, :2], out[:2, 3] = ida[:2, :2], ida[:2, 2]
    return out


def decode_padded(p: AugParams | None) -> bool:
    """Whether a view under plan ``p`` is best decoded with a padding byte per pixel (HxWx4).

    Its rotation is a nearest warp, which moves one 32-bit word per pixel
    (:func:`warp_nearest`): libjpeg-turbo writes the padding byte at no extra
    cost, the 4-byte resize is no slower, and the warp then needs no packing pass.
    """
    return p is not None and bool(p.rotate)


def apply_plan(img: np.ndarray, p: AugParams, padded: bool = False) -> np.ndarray:
    """Resize ``img`` to ``p.resize_dims`` (from any decoded scale), crop, flip, rotate.

    The geometry is PIL's, as the folded transforms run it: ``resize`` then
    ``crop`` (zeros outside the image), ``FLIP_LEFT_RIGHT``, then ``rotate``
    about the crop's centre with PIL's default *nearest* resampling and zeros
    outside the crop. Rotation uses nearest too: a bilinear rotation blends the
    zero fill into every edge pixel and put rotated views out of tolerance.
    After a reduced-scale decode the residual resize is within 2x, where bilinear
    stays close to PIL's filtered resize at a fraction of its cost (INTER_AREA
    beyond 2x). No pass more than needed: only the crop's part inside the image
    is resized (:func:`bevboost.data.region_resize.resize_region`, sampling
    within 1/64 px of the whole frame's grid); crop, flip and rotation are one
    nearest warp from that part (outside it both sides are zero; :func:`warp_nearest`),
    a flip alone is ``cv2.flip``, and an unflipped crop inside the image is returned as is.

    ``padded``: ``img`` is HxWx4 uint8, three channels and a padding byte
    (:func:`decode_padded`); the result has the three channels only.
    """
    new_w, new_h = p.resize_dims
    x0, y0, x1, y1 = p.crop
    w, h = x1 - x0, y1 - y0
    if padded:
        _check_padded(img)
    channels = (3,) if padded else img.shape[2:]
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, new_w), min(y1, new_h)
    if sx1 <= sx0 or sy1 <= sy0:  # the crop misses the image: all zeros, as PIL's
        return np.zeros((h, w) + channels, img.dtype)
    if img.shape[:2] == (new_h, new_w):
        inside = img[sy0:sy1, sx0:sx1]
    elif img.shape[1] > 2 * new_w:  # strong shrink: whole frame, INTER_AREA
        inside = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_AREA)[sy0:sy1, sx0:sx1]
    else:  # only the crop's part (region_resize: within 1/64 px of the whole frame's grid)
        # a rotation or flip writes the result from it: resize into scratch memory then
        inside = resize_region(img, (new_w, new_h), (sx0, sy0, sx1, sy1),
                               into_scratch=bool(p.rotate or p.flip))
    if p.rotate:
        return warp_nearest(inside, _crop_flip_rotate(p, sx0 - x0, sy0 - y0), (w, h), padded)
    if padded:  # not what decode_padded asks for, but served
        inside = np.ascontiguousarray(inside[..., :3])
    if (sx0, sy0, sx1, sy1) != (x0, y0, x1, y1):
        framed = np.zeros((h, w) + channels, img.dtype)
        framed[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = inside
        inside = framed
    return cv2.flip(inside, 1) if p.flip else inside


def _crop_flip_rotate(p: AugParams, tx: int, ty: int) -> np.ndarray:
    """2x3 map from the crop's part inside the image to the view: translate by (tx, ty) into
    crop pixels, flip (x -> w-1-x), rotate ``p.rotate`` degrees counter-clockwise about the
    crop's centre. PIL rotates about (w/2, h/2) in pixel-corner coordinates: (w-1)/2, (h-1)/2
    in OpenCV's pixel-centre ones. Written out (it runs per view) rather than as 3x3 products."""
    x0, y0, x1, y1 = p.crop
    cx, cy = (x1 - x0 - 1) / 2, (y1 - y0 - 1) / 2
    sx, ox = (-1.0, 2 * cx - tx) if p.flip else (1.0, float(tx))  # x' = sx * x + ox
    t = math.radians(p.rotate)
    c, s = math.cos(t), math.sin(t)
    # rotation about (cx, cy): X = c x' + s y' + (1-c) cx - s cy;  Y = -s x' + c y' + s cx + (1-c) cy
    return np.array([[c * sx, s, c * ox + s * ty + (1 - c) * cx - s * cy],
                     [-s * sx, c, -s * ox + c * ty + s * cx + (1 - c) * cy]])


def warp_nearest(img: np.ndarray, m: np.ndarray, size: tuple[int, int],
                 padded: bool = False) -> np.ndarray:
    """``cv2.warpAffine(img, m, size, INTER_NEAREST)`` with zeros outside, pixel for pixel.

    A nearest warp only moves whole pixels, and OpenCV moves one 32-bit word faster than three
    bytes: 3-channel uint8 images are packed into one int32 per pixel (RGBA, alpha 255) for the
    warp and unpacked after (the border reads back as zeros, alpha dropped). ``padded``: ``img``
    is HxWx4 uint8 already (three channels and a padding byte, :func:`decode_padded`) and is
    warped as it stands; the result has the three channels. The packed image and the warped one
    are this thread's scratch arrays (:mod:`bevboost.data.scratch`).
    """
    if padded:
        _check_padded(img)
        packed = img
    elif img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        return cv2.warpAffine(img, m, size, flags=cv2.INTER_NEAREST,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    else:
        packed = cv2.cvtColor(img, cv2.COLOR_RGB2RGBA,
                              dst=scratch('warp-in', img.shape[:2] + (4,)))
    warped = cv2.warpAffine(packed.view(np.int32)[..., 0], m, size,
                            dst=scratch('warp-out', (size[1], size[0], 4)).view(np.int32)[..., 0],
                            flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=0)
    return cv2.cvtColor(warped.view(np.uint8).reshape(size[1], size[0], 4), cv2.COLOR_RGBA2RGB)


def _check_padded(img: np.ndarray) -> None:
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 4:
        raise ValueError(f'a padded image is HxWx4 uint8, got {img.shape} {img.dtype}')
