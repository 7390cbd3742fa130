"""The stock resize/crop transforms of mmdetection3d ``projects/`` (not in the mmdet3d wheel).

With an mmdetection3d checkout (``MMDET3D_ROOT``, as for the BEVFusion configs)
:func:`stock_transform` returns the real classes: PETR's
``ResizeCropFlipImage`` and BEVFusion's ``ImageAug3D`` (v1.4.0). Without one
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


#: where the real classes live in an mmdetection3d checkout (v1.4.0)
PROJECT_FILES = {'ResizeCropFlipImage': 'projects/PETR/petr/transforms_3d.py',
                 'ImageAug3D': 'projects/BEVFusion/bevfusion/transforms_3d.py'}


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
    return {'ResizeCropFlipImage': ResizeCropFlipImage, 'ImageAug3D': ImageAug3D}[name]
