"""Fast multi-view image loading: a drop-in for mmdet3d's load + resize/crop pair.

``FastLoadMultiViewImageFromFiles`` replaces ``LoadMultiViewImageFromFiles``
(or BEVFusion's ``BEVLoadMultiViewImageFromFiles``) *and* the following
``ResizeCropFlipImage`` (PETR) / ``ImageAug3D`` (BEVFusion): knowing the final
size lets it decode at a reduced DCT scale, resize the small image with
OpenCV and keep uint8. It writes the stock keys (``img`` as a list of HxWx3
arrays, ``img_shape``, ``ori_shape``, ``pad_shape``, ``filename``,
``cam2img``, ``ori_cam2img``, ``lidar2cam``, ``num_views``,
``num_ref_frames``, ``img_norm_cfg``) plus ``lidar2img`` and
``img_aug_matrix`` (BEVFusion's per-view 4x4). Normalisation is left to
:class:`bevboost.data.preprocess.UInt8Normalizer` on the GPU.

Registered in mmengine's root ``TRANSFORMS``, so mmdet3d configs find it after
``custom_imports=dict(imports=['bevboost'])``; nothing here imports mmdet3d.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import cv2
import numpy as np
from mmengine.registry import TRANSFORMS

from bevboost.data import augment
from bevboost.data.decode import DaliDecoder, ImageLoadError, decode_cpu, resolve_backend

logger = logging.getLogger(__name__)


def read_bytes(path: str, sample: str) -> bytes:
    """File contents, or :class:`ImageLoadError` naming the file and the sample."""
    try:
        if '://' in path:
            from mmengine.fileio import get
            return get(path)
        with open(path, 'rb') as f:
            return f.read()
    except OSError as exc:
        raise ImageLoadError(f'cannot read camera image ({exc.strerror or exc})',
                             path, sample) from exc


@TRANSFORMS.register_module()
class FastLoadMultiViewImageFromFiles:
    """Load N camera JPEGs at reduced DCT scale, resize/crop/flip, keep uint8.

    Args:
        num_views: expected cameras per sample; other counts are an error.
        final_dim: (H, W) network input; None decodes full size (no augmentation).
        resize_lim, bot_pct_lim, rot_lim, rand_flip, is_train: augmentation as
            PETR's ``data_aug_conf`` / BEVFusion's ``ImageAug3D``.
        update_intrinsics: fold the augmentation into ``cam2img`` (PETR); False
            leaves it only in ``img_aug_matrix`` (BEVFusion).
        load_prev_frame: also load ``cam_sweeps[0]`` (the previous keyframe) with
            the same augmentation, appended after the current views (PETRv2);
            the current frame is repeated on a scene's first sample.
        backend: ``'cpu'``, ``'dali'`` (CPU DALI in workers), ``'nvjpeg'`` or ``'auto'``.
        on_error: ``'raise'`` or ``'skip'`` (return None so the dataset picks
            another sample; the count is in ``skipped``).
        channel_order: ``'bgr'`` like mmcv's default, or ``'rgb'``.
        to_float32: cast to float32 at the end (only for strict drop-in use).
        seed: seed of the augmentation RNG (None: fresh entropy per process).
    """

    def __init__(self, num_views: int = 6, final_dim: tuple[int, int] | None = None,
                 resize_lim: tuple[float, float] | None = None,
                 bot_pct_lim: tuple[float, float] = (0.0, 0.0),
                 rot_lim: tuple[float, float] = (0.0, 0.0), rand_flip: bool = False,
                 is_train: bool = False, update_intrinsics: bool = True,
                 load_prev_frame: bool = False, backend: str = 'cpu',
                 on_error: str = 'raise', channel_order: str = 'bgr',
                 to_float32: bool = False, seed: int | None = None, **stock_kwargs: Any) -> None:
        if not isinstance(num_views, int) or num_views < 1:
            raise ValueError(f'num_views must be a positive int, got {num_views!r}')
        if on_error not in ('raise', 'skip'):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if channel_order not in ('bgr', 'rgb'):
            raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
        if final_dim is not None and (len(final_dim) != 2 or min(final_dim) < 1):
            raise ValueError(f'final_dim must be (H, W) > 0, got {final_dim!r}')
        unknown = set(stock_kwargs) - {'color_type', 'backend_args', 'num_ref_frames',
                                       'test_mode', 'set_default_scale'}
        if unknown:
            raise TypeError(f'unexpected arguments {sorted(unknown)}')
        self.num_views, self.final_dim = num_views, final_dim
        self.aug_kwargs = dict(resize_lim=resize_lim, bot_pct_lim=bot_pct_lim, rot_lim=rot_lim,
                               rand_flip=rand_flip, is_train=is_train)
        self.update_intrinsics, self.load_prev_frame = update_intrinsics, load_prev_frame
        self.backend = resolve_backend(backend)
        self.on_error, self.channel_order, self.to_float32 = on_error, channel_order, to_float32
        self.rng = np.random.default_rng(seed)
        self.skipped = 0
        self._dali: DaliDecoder | None = None

    def _decode(self, paths: list[str], target_hw, sample: str) -> list[np.ndarray]:
        blobs = [read_bytes(p, sample) for p in paths]
        if self.backend == 'dali':
            if self._dali is None:
                self._dali = DaliDecoder('cpu', batch_size=len(blobs),
                                         channel_order=self.channel_order)
            return self._dali(blobs, target_hw, paths, sample)
        if self.backend == 'nvjpeg':
            from bevboost.data.decode import decode_nvjpeg
            imgs = decode_nvjpeg(blobs, target_hw, channel_order=self.channel_order)
            return [im.permute(1, 2, 0).contiguous().cpu().numpy() for im in imgs]
        return [decode_cpu(b, target_hw, self.channel_order, p, sample)[0]
                for b, p in zip(blobs, paths)]

    def _views(self, results: dict) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
        sample = str(results.get('token', results.get('sample_idx', '?')))
        images = results.get('images')
        if not isinstance(images, dict) or len(images) != self.num_views:
            n = len(images) if isinstance(images, dict) else 0
            raise ImageLoadError(f'expected {self.num_views} cameras, got {n}', '', sample)
        paths = [cam['img_path'] for cam in images.values()]
        cam2img = [np.asarray(cam['cam2img'], np.float64) for cam in images.values()]
        lidar2cam = [np.asarray(cam['lidar2cam'], np.float64) for cam in images.values()]
        if self.load_prev_frame:
            sweeps = results.get('cam_sweeps') or []
            prev = sweeps[0] if sweeps else images
            for cam_name, cur in images.items():
                if cam_name not in prev:
                    raise ImageLoadError(f'previous frame lacks camera {cam_name}', '', sample)
                item = prev[cam_name]
                folder = os.path.dirname(cur['img_path'])
                paths.append(os.path.join(folder, os.path.basename(item['img_path'])))
                cam2img.append(np.asarray(item['cam2img'], np.float64))
                lidar2cam.append(np.asarray(item['lidar2cam'], np.float64))
        return paths, cam2img, lidar2cam

    def __call__(self, results: dict) -> dict | None:
        try:
            return self._load(results)
        except ImageLoadError as exc:
            if self.on_error == 'raise':
                raise
            self.skipped += 1
            logger.warning('skipping sample (%d skipped so far): %s', self.skipped, exc)
            return None

    def _load(self, results: dict) -> dict:
        sample = str(results.get('token', results.get('sample_idx', '?')))
        paths, cam2img, lidar2cam = self._views(results)
        params = target = None
        if self.final_dim is not None:
            sj = __import__('simplejpeg')
            first = read_bytes(paths[0], sample)
            try:
                src_hw = sj.decode_jpeg_header(first)[:2]
            except ValueError as exc:
                raise ImageLoadError(f'corrupt JPEG header ({exc})', paths[0], sample) from exc
            params = augment.sample_aug(src_hw, self.final_dim, rng=self.rng, **self.aug_kwargs)
            target = params.resize_hw
        imgs = self._decode(paths, target, sample)
        shapes = {im.shape for im in imgs}
        if params is None:
            if len(shapes) != 1:
                raise ImageLoadError(f'camera images differ in size {sorted(shapes)}', '', sample)
            ida = np.eye(3)
            ori_hw = imgs[0].shape[:2]
        else:
            ori_hw = src_hw
            ida = augment.ida_matrix(params)
            imgs = [self._augment(im, params) for im in imgs]
        if self.to_float32:
            imgs = [im.astype(np.float32) for im in imgs]
        ida4 = np.eye(4)
        ida4[:3, :3] = ida
        ori_cam2img = [k.copy() for k in cam2img]
        if self.update_intrinsics:
            cam2img = [self._pad4(ida @ k[:3, :3]) for k in cam2img]
        results.update(
            filename=paths, img=imgs, img_shape=imgs[0].shape[:2], ori_shape=tuple(ori_hw),
            pad_shape=imgs[0].shape[:2], cam2img=cam2img, ori_cam2img=ori_cam2img,
            lidar2cam=lidar2cam,
            lidar2img=[self._pad4(k) @ l2c for k, l2c in zip(cam2img, lidar2cam)],
            img_aug_matrix=[ida4.copy() for _ in imgs], num_views=self.num_views,
            num_ref_frames=1 if self.load_prev_frame else 0,
            img_norm_cfg=dict(mean=np.zeros(3, np.float32), std=np.ones(3, np.float32),
                              to_rgb=False))
        return results

    @staticmethod
    def _pad4(k: np.ndarray) -> np.ndarray:
        out = np.eye(4)
        out[:k.shape[0], :k.shape[1]] = k
        return out

    @staticmethod
    def _augment(img: np.ndarray, p: augment.AugParams) -> np.ndarray:
        new_w, new_h = p.resize_dims
        if img.shape[:2] != (new_h, new_w):
            shrink = img.shape[1] > new_w
            img = cv2.resize(img, (new_w, new_h),
                             interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        img = augment.crop_padded(img, p.crop)
        if p.flip:
            img = np.ascontiguousarray(img[:, ::-1])
        if p.rotate:
            h, w = img.shape[:2]
            rot = cv2.getRotationMatrix2D((w / 2, h / 2), p.rotate, 1.0)
            img = cv2.warpAffine(img, rot, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
        return img

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num_views={self.num_views}, final_dim={self.final_dim}, '
                f'backend={self.backend!r}, on_error={self.on_error!r})')
