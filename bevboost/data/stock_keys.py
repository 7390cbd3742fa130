"""The result keys the stock loaders and folded transforms write, with the stock values.

A fold must leave the results dict as the stock chain leaves it, so that every
transform after it and every ``Pack3DDetInputs`` ``meta_keys`` list sees the
same thing. :func:`write_loader_keys` writes what mmdet3d 1.4.0's
``LoadMultiViewImageFromFiles`` (or BEVFusion's ``BEVLoadMultiViewImageFromFiles``)
writes except ``img``; :func:`apply_fold_keys` then updates the keys the folded
transform updates, step for step as its code does (PETR's
``ResizeCropFlipImage`` pads ``cam2img`` to 4x4 in place and turns
``lidar2cam`` into an array; BEVFusion's ``ImageAug3D`` only adds
``img_aug_matrix``, float32 as its torch maths gives it). The one documented
difference: ``img`` stays uint8 (``to_float32=True`` on the fast loader casts).
"""
from __future__ import annotations

import copy
from typing import Sequence

import numpy as np

from bevboost.data.augment import img_aug_matrix

#: the stock loaders whose keys the fast loader can write
STOCK_LOADERS = ('LoadMultiViewImageFromFiles', 'BEVLoadMultiViewImageFromFiles')


def pad4(m) -> np.ndarray:
    """``m`` (3x3 or 4x4, any array-like) in the top-left of a float64 4x4 identity."""
    m = np.asarray(m, np.float64)
    out = np.eye(4)
    out[:m.shape[0], :m.shape[1]] = m
    return out


def write_loader_keys(results: dict, loader: str, paths: Sequence[str], cam2img: list,
                      lidar2cam: list, shape_hw: tuple[int, int], num_views: int,
                      num_ref_frames: int, set_default_scale: bool) -> None:
    """Every key ``loader`` writes, as it writes them (``img`` aside).

    ``cam2img``/``lidar2cam`` are the per-view entries of ``results['images']``
    as given (lists of lists in mmdet3d's infos).
    """
    if loader not in STOCK_LOADERS:
        raise ValueError(f'loader must be one of {STOCK_LOADERS}, got {loader!r}')
    paths = list(paths)
    if loader == 'BEVLoadMultiViewImageFromFiles':
        # its per-view float32 maths, done for all views at once (it runs for every sample)
        n = len(lidar2cam)
        m32 = np.array(lidar2cam).astype(np.float32)
        rot_t, trans = m32[:, :3, :3].transpose(0, 2, 1), m32[:, :3, 3:4]
        cam2lidar = np.repeat(np.eye(4)[None], n, axis=0)
        cam2lidar[:, :3, :3] = rot_t
        cam2lidar[:, :3, 3:4] = -1 * np.matmul(rot_t, trans)
        k32 = np.repeat(np.eye(4, dtype=np.float32)[None], n, axis=0)
        k32[:, :3, :3] = np.array(cam2img).astype(np.float32)
        results['img_path'] = paths
        results['cam2img'] = k32
        results['lidar2cam'] = np.stack(lidar2cam, axis=0)
        results['cam2lidar'] = cam2lidar
        results['lidar2img'] = np.matmul(k32, m32)
    else:
        results['cam2img'] = list(cam2img)
        results['lidar2cam'] = list(lidar2cam)
    results['filename'] = paths
    results['ori_cam2img'] = copy.deepcopy(results['cam2img'])
    shape = tuple(int(x) for x in shape_hw)
    results['img_shape'] = shape
    results['ori_shape'] = shape
    results['pad_shape'] = shape
    if set_default_scale:
        results['scale_factor'] = 1.0
    results['img_norm_cfg'] = dict(mean=np.zeros(3, dtype=np.float32),
                                   std=np.ones(3, dtype=np.float32), to_rgb=False)
    results['num_views'] = num_views
    results['num_ref_frames'] = num_ref_frames


def apply_fold_keys(results: dict, fold: str, idas: Sequence[np.ndarray],
                    final_dim: tuple[int, int]) -> None:
    """Update the keys ``fold`` (a stock transform's name) updates, given each view's 3x3 ida.

    The stock transforms compute the ida in float32 (torch) and multiply it into
    float64 intrinsics; so does this.
    """
    ida32 = [np.asarray(ida, np.float64).astype(np.float32) for ida in idas]
    if fold in ('ResizeCropFlipImage', 'ResizeCropFlipRotImage'):
        if fold == 'ResizeCropFlipImage':
            results['lidar2cam'] = np.array(results['lidar2cam'])
        for i, ida in enumerate(ida32):
            viewpad = pad4(np.array(results['cam2img'][i]))
            results['cam2img'][i] = viewpad
            results['cam2img'][i][:3, :3] = ida @ results['cam2img'][i][:3, :3]
        if fold == 'ResizeCropFlipRotImage':  # StreamPETR: lidar2img from the new intrinsics
            results['lidar2img'] = [pad4(results['cam2img'][i]) @ pad4(m)
                                    for i, m in enumerate(results['lidar2cam'])]
    elif fold == 'ImageAug3D':
        results['img_aug_matrix'] = [img_aug_matrix(ida).astype(np.float32) for ida in ida32]
    elif fold == 'MultiViewResizeCropFlip':
        cam2img = []
        for i, ida in enumerate(idas):
            ida4 = np.eye(4)
            ida4[:3, :3] = ida
            cam2img.append(ida4 @ pad4(results['cam2img'][i]))
        results['cam2img'] = cam2img
        results['lidar2img'] = np.stack([k @ pad4(m) for k, m in zip(
            cam2img, results['lidar2cam'])]).astype(np.float32)
        results['img_shape'] = results['pad_shape'] = tuple(final_dim)
    else:
        raise ValueError(f'no stock keys known for fold {fold!r}')
