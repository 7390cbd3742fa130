"""Image-augmentation geometry shared by PETR(v2) and BEVFusion pipelines.

Both sample one (resize, crop, flip, rotate) per sample, resize the image to
``(int(W * resize), int(H * resize))``, crop ``final_dim`` (zero padding
outside), optionally flip and rotate about the crop centre, and carry a 3x3
"ida" matrix mapping original pixels to augmented ones.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np


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


def sample_aug(src_hw: tuple[int, int], final_dim: tuple[int, int],
               resize_lim: tuple[float, float] | None = None,
               bot_pct_lim: tuple[float, float] = (0.0, 0.0),
               rot_lim: tuple[float, float] = (0.0, 0.0), rand_flip: bool = False,
               is_train: bool = False, rng: np.random.Generator | None = None) -> AugParams:
    """Draw augmentation parameters the way PETR/BEVFusion do.

    Test time uses ``resize = max(fH / H, fW / W)`` (PETR) unless
    ``resize_lim`` is given, then its mean (BEVFusion).
    """
    height, width = src_hw
    f_h, f_w = final_dim
    rng = rng if rng is not None else np.random.default_rng()
    if is_train:
        if resize_lim is None:
            raise ValueError('resize_lim is required when is_train=True')
        resize = float(rng.uniform(*resize_lim))
    elif resize_lim is None:
        resize = max(f_h / height, f_w / width)
    else:
        resize = float(np.mean(resize_lim))
    new_w, new_h = int(width * resize), int(height * resize)
    bot = float(rng.uniform(*bot_pct_lim)) if is_train else float(np.mean(bot_pct_lim))
    crop_h = int((1 - bot) * new_h) - f_h
    crop_w = int(rng.uniform(0, max(0, new_w - f_w))) if is_train else int(max(0, new_w - f_w) / 2)
    flip = bool(rand_flip and is_train and rng.integers(0, 2))
    rotate = float(rng.uniform(*rot_lim)) if is_train else 0.0
    return AugParams(resize, (new_w, new_h), (crop_w, crop_h, crop_w + f_w, crop_h + f_h),
                     flip, rotate)


def ida_matrix(p: AugParams) -> np.ndarray:
    """3x3 matrix taking original pixel coordinates to augmented ones."""
    a = np.eye(2) * p.resize
    b = -np.array(p.crop[:2], dtype=np.float64)
    if p.flip:
        f = np.array([[-1.0, 0.0], [0.0, 1.0]])
        a, b = f @ a, f @ b + np.array([p.crop[2] - p.crop[0], 0.0])
    if p.rotate:
        t = math.radians(p.rotate)
        r = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])
        centre = np.array([p.crop[2] - p.crop[0], p.crop[3] - p.crop[1]]) / 2
        a, b = r @ a, r @ b + centre - r @ centre
    out = np.eye(3)
    out[:2, :2], out[:2, 2] = a, b
    return out


def crop_padded(img: np.ndarray, crop: tuple[int, int, int, int]) -> np.ndarray:
    """Crop ``x0, y0, x1, y1`` with zeros outside the image (like PIL's crop)."""
    x0, y0, x1, y1 = crop
    out = np.zeros((y1 - y0, x1 - x0) + img.shape[2:], img.dtype)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x1, img.shape[1]), min(y1, img.shape[0])
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = img[sy0:sy1, sx0:sx1]
    return out
