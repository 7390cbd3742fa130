"""JPEG decode on the device (nvJPEG, DALI ``mixed``) and the main-process decode preprocessor.

Each compares against libjpeg-turbo (:func:`bevboost.data.decode.decode_cpu`,
the loader workers' decoder) on the same 1600x900 frames, or, for the
preprocessor, against the worker path (decode + resize in a loader worker).
"""
from __future__ import annotations

import copy
import pickle

import numpy as np
from mmengine.model import BaseModel

from bevboost.data.decode import DaliDecoder, decode_cpu, decode_nvjpeg
from bevboost.doctor.core import (PIXEL_MEAN_TOL, CheckFailed, Context, Outcome, check_pixels,
                                  median_ms, pixel_diff, register)

#: the kit's own resize/crop/flip (one plan per view, no rotation), as the tests fold it
KIT_AUG = dict(type='MultiViewResizeCropFlip', final_dim=(320, 800), resize_lim=(0.94, 1.25),
               rand_flip=True, training=True)
#: geometry keys the worker path and the main-process path must write alike
GEOMETRY_KEYS = ('cam2img', 'lidar2img', 'img_aug_matrix', 'img_shape')


def reference_decode(blobs: list[bytes]) -> list[np.ndarray]:
    """libjpeg-turbo at full size, BGR: what every decoder here is compared with."""
    return [decode_cpu(b, None, 'bgr')[0] for b in blobs]


def _cpu_ms_per_image(blobs: list[bytes]) -> float:
    return median_ms(lambda: reference_decode(blobs), 'cpu') / len(blobs)


@register('decode-nvjpeg', 'torchvision.io.decode_jpeg (nvJPEG on CUDA, its CPU decoder on '
          'cpu) vs libjpeg-turbo on 12 frames of 1600x900',
          f'mean |pixel difference| <= {PIXEL_MEAN_TOL} per image, same shapes')
def check_nvjpeg(ctx: Context, device) -> Outcome:
    blobs = ctx.frames()
    ref = reference_decode(blobs)
    imgs = decode_nvjpeg(blobs, device=str(device))
    if imgs and imgs[0].device.type != device.type:
        raise CheckFailed(f'decoded onto {imgs[0].device}, asked for {device}')
    diff = pixel_diff(imgs, ref)
    check_pixels(diff)
    ms = median_ms(lambda: decode_nvjpeg(blobs, device=str(device)), device) / len(blobs)
    cpu_ms = _cpu_ms_per_image(blobs)
    return Outcome(f'{ms:.2f} ms/img vs libjpeg-turbo {cpu_ms:.2f}; mean|d| '
                   f'{diff["pixel_mean_abs_diff"]:.2f}',
                   dict(diff, ms_per_image=ms, libjpeg_turbo_ms_per_image=cpu_ms,
                        images=len(blobs)))


@register('decode-dali', "DALI image decoder (device 'mixed' on CUDA, 'cpu' on cpu) vs "
          'libjpeg-turbo on the same frames',
          f'mean |pixel difference| <= {PIXEL_MEAN_TOL} per image, same shapes')
def check_dali(ctx: Context, device) -> Outcome:
    blobs = ctx.frames()
    ref = reference_decode(blobs)
    decoder = DaliDecoder('mixed' if device.type == 'cuda' else 'cpu', batch_size=len(blobs))
    imgs = decoder.decode_tensors(blobs, None)
    where = imgs[0].device.type
    if where != device.type:
        raise CheckFailed(f'DALI returned images on {where}, expected {device.type}')
    diff = pixel_diff(imgs, ref)
    check_pixels(diff)
    ms = median_ms(lambda: decoder.decode_tensors(blobs, None), device) / len(blobs)
    return Outcome(f'{ms:.2f} ms/img vs libjpeg-turbo {_cpu_ms_per_image(blobs):.2f}; '
                   f'mean|d| {diff["pixel_mean_abs_diff"]:.2f}',
                   dict(diff, ms_per_image=ms, images=len(blobs), dali_device=decoder.device))


def sample_results(root, index: int = 0) -> dict:
    """A NuScenesDataset-style results dict (absolute image paths) from the synthetic infos."""
    with open(root / 'nuscenes_infos_train.pkl', 'rb') as f:
        info = pickle.load(f)['data_list'][index]
    images = {c: dict(v, img_path=str(root / 'samples' / c / v['img_path']))
              for c, v in info['images'].items()}
    return dict(images=images, token=info['token'], cam_sweeps=info['cam_sweeps'])


class PreprocessorHost(BaseModel):
    """A model that only carries a data preprocessor, moved to a device as the runner moves one
    (``BaseModel.to`` sets the device of every nested preprocessor, the wrapped one too)."""

    def forward(self, *args, **kwargs):
        raise NotImplementedError('only its data_preprocessor runs')


def worker_and_shipped(ctx: Context) -> tuple[dict, dict]:
    """The same sample through the worker path (decoded) and the ``decode='main'`` path."""
    from bevboost.data.fold import fold_options
    from bevboost.data.transforms import FastLoadMultiViewImageFromFiles
    results = sample_results(ctx.nus_root())
    worker = FastLoadMultiViewImageFromFiles(seed=7, **fold_options(KIT_AUG))
    main = FastLoadMultiViewImageFromFiles(seed=7, decode='main', **fold_options(KIT_AUG))
    return worker(copy.deepcopy(results)), main(copy.deepcopy(results))


@register('main-decode', 'MainProcessDecodePreprocessor on the device (backend auto: nvJPEG > '
          'DALI mixed > libjpeg-turbo; resize/crop/flip as torch ops there) vs the loader-worker '
          'path on the same sample',
          f'geometry keys equal (allclose); mean |pixel difference| <= {PIXEL_MEAN_TOL}')
def check_main_decode(ctx: Context, device) -> Outcome:
    import torch
    from mmengine.structures import BaseDataElement

    from bevboost.data.main_decode import MainProcessDecodePreprocessor
    ref, shipped = worker_and_shipped(ctx)
    if 'img_jpeg' not in shipped or 'img' in shipped:
        raise CheckFailed("decode='main' did not ship the JPEG bytes (img_jpeg)")
    for key in GEOMETRY_KEYS:
        a, b = np.asarray(shipped[key], np.float64), np.asarray(ref[key], np.float64)
        if a.shape != b.shape or not np.allclose(a, b):
            raise CheckFailed(f'{key} differs between the main-process and the worker path')
    pre = MainProcessDecodePreprocessor(preprocessor=dict(type='BaseDataPreprocessor'),
                                        backend='auto' if device.type == 'cuda' else 'cpu')
    pre = PreprocessorHost(data_preprocessor=pre).to(device).data_preprocessor
    meta = {k: shipped[k] for k in ('img_jpeg', 'cam2img')}

    def run():
        sample = BaseDataElement(metainfo=copy.copy(meta))
        return pre(dict(inputs={}, data_samples=[sample]))['inputs']['img'][0]

    imgs = run()
    if imgs.device.type != device.type or imgs.dtype != torch.uint8:
        raise CheckFailed(f'images came out {imgs.dtype} on {imgs.device}, expected uint8 on '
                          f'{device}')
    diff = pixel_diff(list(imgs), list(ref['img']))
    check_pixels(diff)
    ms = median_ms(run, device)
    backend = pre.decoder.backend
    return Outcome(f'{backend}: {ms:.1f} ms per {len(imgs)} views; mean|d| '
                   f'{diff["pixel_mean_abs_diff"]:.2f}',
                   dict(diff, backend=backend, ms_per_sample=ms, views=len(imgs)))
