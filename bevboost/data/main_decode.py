"""Batched JPEG decode + resize/crop in the training process, where CUDA lives.

Loader workers must not touch CUDA (a forked child cannot initialise it once
the parent has), so with ``FastLoadMultiViewImageFromFiles(decode='main')``
they ship the encoded bytes, a per-view plan and the channel order
(``img_jpeg`` in each data sample's metainfo).
:class:`MainProcessDecodePreprocessor` wraps the model's own data
preprocessor: it decodes the batch on the preprocessor's device (nvJPEG via
``torchvision.io.decode_jpeg`` or DALI ``mixed`` on CUDA, libjpeg-turbo at a
reduced DCT scale on the CPU), runs the resize/crop/flip/rotate as torch ops on
that device, puts ``inputs['img']`` as ``(N, 3, H, W)`` uint8 per sample (what
``Pack3DDetInputs`` gives) and hands the batch to the wrapped preprocessor. The
CPU and CUDA forms are the same code; only the device and the decoder differ.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from mmengine.model import BaseDataPreprocessor
from mmengine.registry import MODELS

from bevboost.data.augment import AugParams
from bevboost.data.decode import DaliDecoder, decode_cpu, decode_nvjpeg, resolve_backend

logger = logging.getLogger(__name__)


def resize_crop(img: torch.Tensor, p: AugParams | None) -> torch.Tensor:
    """Apply one view's plan to a uint8 3xHxW tensor on any device (PIL/cv2 geometry)."""
    if p is None:
        return img
    new_w, new_h = p.resize_dims
    x = img.float()[None]
    if tuple(x.shape[-2:]) != (new_h, new_w):
        x = F.interpolate(x, size=(new_h, new_w), mode='bilinear', antialias=True,
                          align_corners=False)
    x0, y0, x1, y1 = p.crop
    out = x.new_zeros((1, x.shape[1], y1 - y0, x1 - x0))
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, new_w), min(y1, new_h)
    if sx1 > sx0 and sy1 > sy0:
        out[..., sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = x[..., sy0:sy1, sx0:sx1]
    if p.flip:
        out = out.flip(-1)
    if p.rotate:
        out = _rotate(out, p.rotate)
    return out[0].round_().clamp_(0, 255).to(torch.uint8)


def _rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate counter-clockwise about the centre, zeros outside, nearest (PIL ``Image.rotate``).

    Nearest, as PIL's default: bilinear would blend the zero fill into every edge pixel.
    """
    h, w = x.shape[-2:]
    t = math.radians(degrees)
    cos, sin = math.cos(t), math.sin(t)
    ys, xs = torch.meshgrid(torch.arange(h, device=x.device, dtype=torch.float32) + 0.5,
                            torch.arange(w, device=x.device, dtype=torch.float32) + 0.5,
                            indexing='ij')
    dx, dy = xs - w / 2, ys - h / 2
    # output x' = R (x - c) + c, R = [[cos, sin], [-sin, cos]]  ->  source x = R^T (x' - c) + c
    src_x = cos * dx - sin * dy + w / 2
    src_y = sin * dx + cos * dy + h / 2
    grid = torch.stack([src_x / w * 2 - 1, src_y / h * 2 - 1], -1)[None]
    return F.grid_sample(x, grid, mode='nearest', padding_mode='zeros', align_corners=False)


class BatchDecoder:
    """Decode a batch of encoded views on ``device`` and apply their plans."""

    def __init__(self, backend: str = 'auto') -> None:
        self.requested = backend
        self.backend = resolve_backend(backend, 'main')
        self._dali: dict[str, DaliDecoder] = {}

    def __call__(self, blobs: Sequence[bytes], plans: Sequence[AugParams | None],
                 device: torch.device, channel_order: str = 'bgr', max_upsample: float = 1.0
                 ) -> list[torch.Tensor]:
        targets = [None if p is None else p.resize_hw for p in plans]
        if self.backend == 'nvjpeg':
            imgs = decode_nvjpeg(blobs, device=str(device), channel_order=channel_order)
        elif self.backend == 'dali':
            imgs = self._dali_decode(blobs, targets, device, channel_order)
        else:  # libjpeg-turbo at the smallest DCT scale covering each target
            imgs = [torch.from_numpy(decode_cpu(b, t, channel_order, max_upsample=max_upsample)[0])
                    .to(device).permute(2, 0, 1) for b, t in zip(blobs, targets)]
        return [resize_crop(im, p) for im, p in zip(imgs, plans)]

    def _dali_decode(self, blobs, targets, device: torch.device, channel_order: str
                     ) -> list[torch.Tensor]:
        dali = self._dali.get(channel_order)
        if dali is None or dali.batch_size < len(blobs):
            dali = self._dali[channel_order] = DaliDecoder(
                'mixed' if device.type == 'cuda' else 'cpu', batch_size=len(blobs),
                channel_order=channel_order)
        return [t.to(device) for t in dali.decode_tensors(blobs, list(targets))]


@MODELS.register_module()
class MainProcessDecodePreprocessor(BaseDataPreprocessor):
    """Decode the batch's encoded camera images, then run the model's own preprocessor.

    Batches without encoded images (decoded in the workers) pass straight through.

    Args:
        preprocessor: config of the wrapped data preprocessor (e.g. ``Det3DDataPreprocessor``).
        backend: ``'auto'`` (nvJPEG > DALI mixed on CUDA, else CPU), ``'nvjpeg'``,
            ``'dali'`` or ``'cpu'``; resolved in the training process.
        **model_keys: options the model reads from its ``data_preprocessor`` dict
            itself (BEVFusion's ``voxelize_cfg``); ignored here.
    """

    def __init__(self, preprocessor: dict, backend: str = 'auto', **model_keys: Any) -> None:
        super().__init__()
        self.preprocessor = MODELS.build(preprocessor)
        self.decoder = BatchDecoder(backend)
        self.decoded_views = 0

    def forward(self, data: dict, training: bool = False) -> Any:
        samples = data.get('data_samples') or []
        if samples and 'img_jpeg' in samples[0].metainfo_keys():
            data = dict(data, inputs=dict(data.get('inputs') or {}, img=self._decode(samples)))
        return self.preprocessor(data, training)

    def _decode(self, samples: Sequence[Any]) -> list[torch.Tensor]:
        out = []
        for s in samples:  # one decoder call per sample: views share a channel order
            job = s.img_jpeg
            del s.img_jpeg  # the bytes are not metadata the model needs
            imgs = self.decoder(job['blobs'], job['plans'], self.device, job['channel_order'],
                                job.get('max_upsample', 1.0))
            self.decoded_views += len(imgs)
            out.append(torch.stack(imgs))
        return out
