"""The stock camera path, for equality tests and benchmarks.

mmdet3d's ``LoadMultiViewImageFromFiles(to_float32=True)`` decodes full size
with OpenCV and casts to float32; PETR's ``ResizeCropFlipImage`` and
BEVFusion's ``ImageAug3D`` then go through PIL per view (resize, crop, flip,
rotate) and back to float32. This module reproduces that second half so the
kit can be compared against it without the model plugins installed.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from bevboost.data.augment import AugParams


def stock_resize_crop(img: np.ndarray, p: AugParams) -> np.ndarray:
    """PETR/BEVFusion-style PIL augmentation of one float32 HxWx3 image."""
    pil = Image.fromarray(np.uint8(img))
    pil = pil.resize(p.resize_dims)
    pil = pil.crop(p.crop)
    if p.flip:
        pil = pil.transpose(method=Image.Transpose.FLIP_LEFT_RIGHT)
    pil = pil.rotate(p.rotate)
    return np.array(pil).astype(np.float32)
