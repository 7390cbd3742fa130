"""The stock resize/crop transforms of mmdetection3d ``projects/`` (not in the mmdet3d wheel).

With an mmdetection3d checkout (``MMDET3D_ROOT``, as for the BEVFusion configs)
:func:`stock_transform` returns the real classes: PETR's
``ResizeCropFlipImage`` and BEVFusion's ``ImageAug3D`` and
``BEVLoadMultiViewImageFromFiles`` (v1.4.0). Without one
(CI) it returns stand-ins that follow those transforms step for step: the
same ``np.random`` calls in the same order, PIL resize/crop/flip/rotate, the
same post-homography (``torch`` float32) and the same keys updated.
StreamPETR's ``ResizeCropFlipRotImage`` samples and transforms exactly like
PETR's but reads/writes ``intrinsics``/``extrinsics``/``lidar2img``; the
stand-in covers that variant with ``keys='streampetr'``.
"""
from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import torch
from PIL import Image


#: what the reduced decode is held to against these stock transforms, per view (every view of
#: every case; also the main-process decode's CPU form): reduced decode + OpenCV against full
#: decode + PIL (accuracy-trading). Measured (synthetic 1600x900 q90, 6 seeds x 2 samples x
#: 6 views per pipeline): mean <= 0.73, p99 <= 6 (docs/data.md)
VIEW_MEAN_TOL, VIEW_P99_TOL = 1.0, 8.0


def _ida(resize, crop, flip, rotate) -> torch.Tensor:
    rot, tran = torch.eye(2) * resize, -torch.Tensor(crop[:2])
    if flip:
        a = torch.Tensor([[-1, 0], [0, 1]])
        rot, tran = a.matmul(rot), a.matmul(tran) + torch.Tensor([crop[2] - crop[0], 0])
    h = rotate / 180 * np.pi
    a = torch.Tensor([[np.cos(h), np.sin(h)], [-np.sin(h), np.cos(h)]])
    b = torch.Tensor([crop[2] - crop[0], crop[3] - crop[1]]) / 2
    b = a.matmul(-b) + b
    return a.matmul(rot), a.matmul(tran) + b


def _pil_aug(img, resize_dims, crop, flip, rotate, mode=None) -> np.ndarray:
    pil = Image.fromarray(np.uint8(img), mode=mode) if mode else Image.fromarray(np.uint8(img))
    pil = pil.resize(resize_dims).crop(crop)
    if flip:
        pil = pil.transpose(method=Image.Transpose.FLIP_LEFT_RIGHT)
    return np.array(pil.rotate(rotate)).astype(np.float32)


def _draw(h, w, final_dim, resize_lim, bot_pct_lim, rot_lim, rand_flip, train, test_resize):
    f_h, f_w = final_dim
    if train:
        resize = np.random.uniform(*resize_lim)
        new_w, new_h = int(w * resize), int(h * resize)
        crop_h = int((1 - np.random.uniform(*bot_pct_lim)) * new_h) - f_h
        crop_w = int(np.random.uniform(0, max(0, new_w - f_w)))
        flip = bool(rand_flip and np.random.choice([0, 1]))
        rotate = np.random.uniform(*rot_lim)
    else:
        resize = test_resize
        new_w, new_h = int(w * resize), int(h * resize)
        crop_h = int((1 - np.mean(bot_pct_lim)) * new_h) - f_h
        crop_w = int(max(0, new_w - f_w) / 2)
        flip, rotate = False, 0
    return resize, (new_w, new_h), (crop_w, crop_h, crop_w + f_w, crop_h + f_h), flip, rotate


class ResizeCropFlipImage:
    """Stand-in for PETR's: one draw per sample, H/W from ``data_aug_conf``, updates ``cam2img``."""

    def __init__(self, data_aug_conf=None, training=True, keys='petr'):
        self.data_aug_conf, self.training, self.keys = data_aug_conf, training, keys

    def __call__(self, results):
        c = self.data_aug_conf
        h, w = c['H'], c['W']
        f_h, f_w = c['final_dim']
        resize, dims, crop, flip, rotate = _draw(
            h, w, c['final_dim'], c.get('resize_lim'), c['bot_pct_lim'], c.get('rot_lim'),
            c['rand_flip'], self.training, max(f_h / h, f_w / w))
        key = 'intrinsics' if self.keys == 'streampetr' else 'cam2img'
        if self.keys == 'petr':
            results['lidar2cam'] = np.array(results['lidar2cam'])
        new_imgs = []
        for i, img in enumerate(results['img']):
            k = np.array(results[key][i])
            pad = np.eye(4)
            pad[:k.shape[0], :k.shape[1]] = k
            results[key][i] = pad
            rot, tran = _ida(resize, crop, flip, rotate)
            ida = torch.eye(3)
            ida[:2, :2], ida[:2, 2] = rot, tran
            new_imgs.append(_pil_aug(img, dims, crop, flip, rotate))
            results[key][i][:3, :3] = ida.numpy() @ results[key][i][:3, :3]
        results['img'] = new_imgs
        if self.keys == 'streampetr':
            results['lidar2img'] = [results['intrinsics'][i] @ results['extrinsics'][i]
                                    for i in range(len(results['extrinsics']))]
        return results


class ImageAug3D:
    """Stand-in for BEVFusion's (one draw per view, H/W from ``ori_shape``, ``img_aug_matrix``)."""

    def __init__(self, final_dim, resize_lim, bot_pct_lim, rot_lim, rand_flip, is_train):
        self.final_dim, self.resize_lim, self.bot_pct_lim = final_dim, resize_lim, bot_pct_lim
        self.rot_lim, self.rand_flip, self.is_train = rot_lim, rand_flip, is_train

    def __call__(self, data):
        new_imgs, transforms = [], []
        for img in data['img']:
            h, w = data['ori_shape']
            resize, dims, crop, flip, rotate = _draw(
                h, w, self.final_dim, self.resize_lim, self.bot_pct_lim, self.rot_lim,
                self.rand_flip, self.is_train, np.mean(self.resize_lim))
            new_imgs.append(_pil_aug(img.astype('uint8'), dims, crop, flip, rotate, mode='RGB'))
            rot, tran = _ida(resize, crop, flip, rotate)
            transform = torch.eye(4)
            transform[:2, :2], transform[:2, 3] = rot, tran
            transforms.append(transform.numpy())
        data['img'], data['img_aug_matrix'] = new_imgs, transforms
        return data


def _bev_load_class():
    """Stand-in for BEVFusion's ``BEVLoadMultiViewImageFromFiles`` (without reference frames):
    mmdet3d's loader with Pillow RGB decoding and the extra stacked keys, step for step."""
    import copy

    import mmcv
    from mmdet3d.datasets.transforms import LoadMultiViewImageFromFiles
    from mmengine.fileio import get

    class BEVLoadMultiViewImageFromFiles(LoadMultiViewImageFromFiles):
        def transform(self, results):
            filename, cam2img, lidar2cam, cam2lidar, lidar2img = [], [], [], [], []
            for _, cam_item in results['images'].items():
                filename.append(cam_item['img_path'])
                lidar2cam.append(cam_item['lidar2cam'])
                lidar2cam_array = np.array(cam_item['lidar2cam']).astype(np.float32)
                rot, trans = lidar2cam_array[:3, :3], lidar2cam_array[:3, 3:4]
                camera2lidar = np.eye(4)
                camera2lidar[:3, :3] = rot.T
                camera2lidar[:3, 3:4] = -1 * np.matmul(rot.T, trans.reshape(3, 1))
                cam2lidar.append(camera2lidar)
                cam2img_array = np.eye(4).astype(np.float32)
                cam2img_array[:3, :3] = np.array(cam_item['cam2img']).astype(np.float32)
                cam2img.append(cam2img_array)
                lidar2img.append(cam2img_array @ lidar2cam_array)
            results['img_path'] = filename
            results['cam2img'] = np.stack(cam2img, axis=0)
            results['lidar2cam'] = np.stack(lidar2cam, axis=0)
            results['cam2lidar'] = np.stack(cam2lidar, axis=0)
            results['lidar2img'] = np.stack(lidar2img, axis=0)
            results['ori_cam2img'] = copy.deepcopy(results['cam2img'])
            imgs = [mmcv.imfrombytes(get(name), flag=self.color_type, backend='pillow',
                                     channel_order='rgb') for name in filename]
            img = np.stack(imgs, axis=-1)
            if self.to_float32:
                img = img.astype(np.float32)
            results['filename'] = filename
            results['img'] = [img[..., i] for i in range(img.shape[-1])]
            results['img_shape'] = results['ori_shape'] = results['pad_shape'] = img.shape[:2]
            if self.set_default_scale:
                results['scale_factor'] = 1.0
            results['img_norm_cfg'] = dict(mean=np.zeros(3, dtype=np.float32),
                                           std=np.ones(3, dtype=np.float32), to_rgb=False)
            results['num_views'] = self.num_views
            results['num_ref_frames'] = self.num_ref_frames
            return results
    return BEVLoadMultiViewImageFromFiles


#: where the real classes live in an mmdetection3d checkout (v1.4.0)
PROJECT_FILES = {'ResizeCropFlipImage': 'projects/PETR/petr/transforms_3d.py',
                 'ImageAug3D': 'projects/BEVFusion/bevfusion/transforms_3d.py',
                 'BEVLoadMultiViewImageFromFiles': 'projects/BEVFusion/bevfusion/loading.py'}


def stock_transform(name: str):
    """The real projects/ class when an mmdetection3d checkout is configured, else the stand-in.

    The checkout's module file is loaded on its own (not its package, whose other
    modules register names the kit's plugins also register).
    """
    root = os.environ.get('MMDET3D_ROOT')
    if root and name in PROJECT_FILES:
        module_name = f'mmdet3d_project_{name}'
        if module_name not in sys.modules:
            spec = importlib.util.spec_from_file_location(
                module_name, os.path.join(root, PROJECT_FILES[name]))
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        return getattr(sys.modules[module_name], name)
    if name == 'BEVLoadMultiViewImageFromFiles':
        return _bev_load_class()
    return {'ResizeCropFlipImage': ResizeCropFlipImage, 'ImageAug3D': ImageAug3D}[name]
