"""Multi-view image transforms that keep ``lidar2img`` consistent with the pixels.

Both transforms change geometry in one place and fold the change into the
projection matrices, so the 3D position embedding still points at the right
pixels: image-space resize/crop/flip multiplies the intrinsics, BEV rotation
and scaling of the scene multiplies the LiDAR-side of ``lidar2img``.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch
from mmcv.transforms import BaseTransform

from mmdet3d.registry import TRANSFORMS

from bevboost.data.seeding import WorkerRng


def _as4x4(m: np.ndarray) -> np.ndarray:
    out = np.eye(4, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    out[:m.shape[0], :m.shape[1]] = m
    return out


@TRANSFORMS.register_module()
class MultiViewResizeCropFlip(BaseTransform):
    """Resize, crop to ``final_dim`` (keeping the bottom) and optionally flip every view.

    ``resize_lim`` is relative to the scale that just covers ``final_dim``, so
    one setting works for any source resolution: PETRv2's (0.47, 0.625) at
    1600x900 -> 800x320 is (0.94, 1.25) here. Test time uses scale 1.0, no flip.

    Args:
        final_dim: output ``(H, W)``.
        resize_lim: random scale range (training), relative to the covering scale.
        bot_pct_lim: fraction of the bottom that may be cropped away (training).
        rand_flip: horizontal flip with probability 0.5 (training).
        training: sample augmentations; False gives the deterministic test transform.
    """

    def __init__(self, final_dim: Sequence[int], resize_lim: Sequence[float] = (1.0, 1.0),
                 bot_pct_lim: Sequence[float] = (0.0, 0.0), rand_flip: bool = False,
                 training: bool = True) -> None:
        if len(final_dim) != 2 or min(final_dim) <= 0:
            raise ValueError(f'final_dim must be (H, W) > 0, got {final_dim}')
        if len(resize_lim) != 2 or not 0 < resize_lim[0] <= resize_lim[1]:
            raise ValueError(f'resize_lim must be (lo, hi) with 0 < lo <= hi, got {resize_lim}')
        self.final_dim = (int(final_dim[0]), int(final_dim[1]))
        self.resize_lim, self.bot_pct_lim = tuple(resize_lim), tuple(bot_pct_lim)
        self.rand_flip, self.training = rand_flip, training
        self.rng = WorkerRng()  # np.random, per worker/rank/epoch in loader workers

    def _sample(self, h: int, w: int) -> tuple[float, tuple[int, int], bool]:
        fh, fw = self.final_dim
        fit = max(fh / h, fw / w)
        if self.training:
            resize = fit * self.rng.uniform(*self.resize_lim)
            bot = self.rng.uniform(*self.bot_pct_lim)
        else:
            resize, bot = fit, float(np.mean(self.bot_pct_lim))
        nh, nw = int(round(h * resize)), int(round(w * resize))
        crop_h = max(0, int((1 - bot) * nh) - fh)
        slack = max(0, nw - fw)
        crop_w = int(self.rng.uniform(0, slack)) if self.training else slack // 2
        flip = bool(self.training and self.rand_flip and self.rng.random() < 0.5)
        return resize, (crop_w, crop_h), flip

    def transform(self, results: dict) -> dict:
        fh, fw = self.final_dim
        imgs, cam2imgs, lidar2imgs = [], [], []
        for i, img in enumerate(results['img']):
            h, w = img.shape[:2]
            resize, (cw, ch), flip = self._sample(h, w)
            nh, nw = int(round(h * resize)), int(round(w * resize))
            resized = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
            out = np.zeros((fh, fw) + img.shape[2:], dtype=img.dtype)
            crop = resized[ch:ch + fh, cw:cw + fw]
            out[:crop.shape[0], :crop.shape[1]] = crop
            ida = np.array([[resize, 0, -cw], [0, resize, -ch], [0, 0, 1]], dtype=np.float64)
            if flip:
                out = np.ascontiguousarray(out[:, ::-1])
                ida = np.array([[-1, 0, fw], [0, 1, 0], [0, 0, 1]], dtype=np.float64) @ ida
            k = _as4x4(results['cam2img'][i])
            ida4 = np.eye(4)
            ida4[:3, :3] = ida
            k = ida4 @ k
            imgs.append(out)
            cam2imgs.append(k)
            lidar2imgs.append(k @ _as4x4(results['lidar2cam'][i]))
        results['img'] = imgs
        results['cam2img'] = cam2imgs
        results['lidar2img'] = np.stack(lidar2imgs).astype(np.float32)
        results['img_shape'] = (fh, fw)
        results['pad_shape'] = (fh, fw)
        return results


@TRANSFORMS.register_module()
class BEVRandomRotScale(BaseTransform):
    """Rotate/scale the 3D scene about the LiDAR z axis and fold it into ``lidar2img``.

    Args:
        rot_range: yaw range in radians.
        scale_ratio_range: isotropic scale range.
        training: False makes the transform a no-op (test pipelines).
    """

    def __init__(self, rot_range: Sequence[float] = (-0.3925, 0.3925),
                 scale_ratio_range: Sequence[float] = (0.95, 1.05), training: bool = True) -> None:
        if rot_range[0] > rot_range[1] or scale_ratio_range[0] > scale_ratio_range[1]:
            raise ValueError('rot_range and scale_ratio_range must be (lo, hi) with lo <= hi')
        if scale_ratio_range[0] <= 0:
            raise ValueError(f'scale must be positive, got {scale_ratio_range}')
        self.rot_range, self.scale_range, self.training = rot_range, scale_ratio_range, training
        self.rng = WorkerRng()  # np.random, per worker/rank/epoch in loader workers

    def transform(self, results: dict) -> dict:
        if not self.training:
            return results
        angle = float(self.rng.uniform(*self.rot_range))
        scale = float(self.rng.uniform(*self.scale_range))
        boxes = results.get('gt_bboxes_3d')
        c, s = np.cos(angle), np.sin(angle)
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        if boxes is not None:
            _, rot_mat_t = boxes.rotate(angle, points=torch.zeros(1, 3))
            rot = rot_mat_t.double().numpy().T  # the rotation the boxes actually got
            boxes.scale(scale)
        fwd = np.eye(4)
        fwd[:3, :3] = scale * rot
        inv = np.linalg.inv(fwd)
        results['lidar2img'] = np.stack([np.asarray(m) @ inv for m in results['lidar2img']]
                                        ).astype(np.float32)
        if 'lidar2cam' in results:
            results['lidar2cam'] = [_as4x4(m) @ inv for m in results['lidar2cam']]
        return results
