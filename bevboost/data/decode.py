"""JPEG decode backends that decode at the smallest DCT scale covering a target.

libjpeg-turbo can run the inverse DCT at 1/2, 1/4 or 1/8 scale, which skips
most of the decode work when the pipeline shrinks the image anyway (PETRv2:
1600x900 -> 800x450 costs ~2.4 ms instead of ~5.4 ms on one core). Only
power-of-two scales are used: libjpeg-turbo's M/8 scales are slower than a
full decode. Backends:

* ``cpu``: simplejpeg (libjpeg-turbo), per image, in loader workers or the
  main process.
* ``dali``: an NVIDIA DALI pipeline, per batch of images: ``device='mixed'``
  (GPU decode) in the main process on CUDA, ``'cpu'`` everywhere else.
* ``nvjpeg``: ``torchvision.io.decode_jpeg(device='cuda')``, per batch, main
  process only.
* ``auto``: chosen per process by :func:`resolve_backend`. A loader worker
  never picks a CUDA backend and never asks CUDA anything: once the main
  process has put the model on the GPU, CUDA cannot be initialised in a
  forked child.
"""
from __future__ import annotations

import logging
from typing import Literal, Sequence

import numpy as np

from bevboost._optional import cuda_available, is_available, require
from bevboost.data.scratch import scratch

logger = logging.getLogger(__name__)

Backend = Literal['auto', 'cpu', 'dali', 'nvjpeg']
BACKENDS = ('auto', 'cpu', 'dali', 'nvjpeg')
SCALES = (8, 4, 2, 1)


class ImageLoadError(RuntimeError):
    """A camera image could not be read or decoded; names the file and sample."""

    def __init__(self, message: str, path: str = '', sample: str = '') -> None:
        super().__init__(f'{message}: file {path!r} of sample {sample!r}')
        self.path, self.sample = path, sample


def reduction_for(src_hw: tuple[int, int], target_hw: tuple[int, int],
                  max_upsample: float = 1.0) -> int:
    """Largest power-of-two reduction d with ``src / d * max_upsample >= target`` in both axes.

    ``max_upsample > 1`` accepts decoding a little below the target and
    interpolating up (accuracy-trading: fine detail above the decoded
    resolution is lost) to stay on a cheaper DCT scale.
    """
    for d in SCALES:
        if (src_hw[0] // d * max_upsample >= target_hw[0]
                and src_hw[1] // d * max_upsample >= target_hw[1]):
            return d
    return 1


def decoded_hw(src_hw: tuple[int, int], target_hw: tuple[int, int] | None,
               max_upsample: float = 1.0) -> tuple[int, int]:
    """(H, W) :func:`decode_cpu` returns: libjpeg-turbo rounds a scaled size up."""
    d = 1 if target_hw is None else reduction_for(src_hw, target_hw, max_upsample)
    return _scaled_hw(src_hw, d)


def _scaled_hw(src_hw: tuple[int, int], d: int) -> tuple[int, int]:
    return -(-src_hw[0] // d), -(-src_hw[1] // d)


def in_loader_worker() -> bool:
    """True inside a torch DataLoader worker process."""
    import torch.utils.data
    return torch.utils.data.get_worker_info() is not None


def resolve_backend(backend: str, where: Literal['worker', 'main'] = 'worker') -> str:
    """The decode backend for ``where`` the decode runs; logs what ``auto`` chose.

    ``'worker'`` never consults CUDA: ``auto`` is ``cpu`` there and ``nvjpeg``
    is refused. ``'main'`` (the training process, where the model's device
    lives) picks nvJPEG > DALI ``mixed`` when CUDA is visible, else ``cpu``.
    """
    if backend not in BACKENDS:
        raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
    if where not in ('worker', 'main'):
        raise ValueError(f"where must be 'worker' or 'main', got {where!r}")
    if where == 'worker':
        if backend == 'nvjpeg':
            raise ValueError("backend 'nvjpeg' decodes on the GPU, which a loader worker must not "
                             "touch; use decode='main' (decode in the training process)")
        chosen, why = ('cpu', 'loader workers decode on the CPU') if backend == 'auto' else (
            backend, 'as asked')
    elif in_loader_worker():
        raise RuntimeError('main-process decoding was asked for inside a DataLoader worker')
    elif backend != 'auto':
        return backend
    elif cuda_available() and is_available('torchvision'):
        chosen, why = 'nvjpeg', 'CUDA and torchvision (nvJPEG) available'
    elif cuda_available() and is_available('nvidia.dali'):
        chosen, why = 'dali', 'CUDA and DALI available (mixed)'
    else:
        chosen, why = 'cpu', 'no CUDA device' if not cuda_available() else 'no nvJPEG/DALI'
    if backend == 'auto':
        logger.info('image decode backend auto -> %s in the %s (%s)', chosen,
                    'loader workers' if where == 'worker' else 'main process', why)
    return chosen


def decode_cpu(data: bytes, target_hw: tuple[int, int] | None, channel_order: str = 'bgr',
               path: str = '', sample: str = '', max_upsample: float = 1.0,
               src_hw: tuple[int, int] | None = None, padded: bool = False,
               into_scratch: bool = False) -> tuple[np.ndarray, int]:
    """Decode one JPEG with libjpeg-turbo at the smallest scale covering ``target_hw``.

    ``src_hw``: the (H, W) from the header when the caller has parsed it already.
    ``padded``: four bytes per pixel, the channels and a padding byte (``'BGRX'``/``'RGBX'``,
    :func:`bevboost.data.augment.decode_padded`).
    ``into_scratch``: decode into this thread's scratch array (:mod:`bevboost.data.scratch`),
    for a caller that resizes the image and drops it: it is overwritten by the next such decode.
    Returns the uint8 HxWx3 (HxWx4 padded) image and the reduction factor used.
    """
    try:
        if src_hw is None:
            src_hw = _simplejpeg().decode_jpeg_header(data)[:2]
        d = 1 if target_hw is None else reduction_for(src_hw, target_hw, max_upsample)
        out_hw = _scaled_hw(src_hw, d)
        buffer = scratch('decode', out_hw + (3 + padded,)) if into_scratch else None
        img = _simplejpeg().decode_jpeg(data, colorspace=channel_order.upper() + 'X' * padded,
                                        strict=True, min_height=out_hw[0], min_width=out_hw[1],
                                        buffer=buffer)
    except (ValueError, OSError) as exc:
        raise ImageLoadError(f'corrupt or truncated JPEG ({exc})', path, sample) from exc
    return img, d


_SJ = None


def _simplejpeg():
    """simplejpeg, imported once (or the error naming the extra)."""
    global _SJ
    if _SJ is None:
        _SJ = require('simplejpeg', 'fast JPEG decoding')
    return _SJ


class DaliDecoder:
    """Batch JPEG decode with DALI; ``device='cpu'`` needs no GPU.

    Decodes each image and resizes it to the size a ``reduction`` decode would
    give, so results line up with :func:`decode_cpu` geometrically.
    """

    def __init__(self, device: Literal['cpu', 'mixed'] = 'cpu', batch_size: int = 6,
                 num_threads: int = 1, channel_order: str = 'bgr') -> None:
        if device not in ('cpu', 'mixed'):
            raise ValueError(f"device must be 'cpu' or 'mixed', got {device!r}")
        if device == 'mixed' and not cuda_available():
            raise RuntimeError("DALI device='mixed' needs a CUDA device; use device='cpu'")
        self.device, self.batch_size, self.channel_order = device, batch_size, channel_order
        self._num_threads = num_threads
        self._pipe = None

    def _build(self) -> None:
        dali = require('nvidia.dali', 'DALI decoding')
        from bevboost.seams.dali_compat import check_dali_matches_torch
        check_dali_matches_torch()  # once per process: a warning when DALI's CUDA is not torch's
        fn, types = dali.fn, dali.types

        @dali.pipeline_def(batch_size=self.batch_size, num_threads=self._num_threads,
                           device_id=0 if self.device == 'mixed' else None,
                           prefetch_queue_depth=1, exec_dynamic=True)
        def pipe():
            jpegs = fn.external_source(name='jpegs', dtype=types.UINT8, no_copy=False)
            sizes = fn.external_source(name='sizes', dtype=types.FLOAT)
            img = fn.decoders.image(jpegs, device=self.device, output_type=types.RGB)
            return fn.resize(img, size=sizes, interp_type=types.INTERP_LINEAR, antialias=True)

        self._pipe = pipe()
        self._pipe.build()

    def __call__(self, blobs: Sequence[bytes], target_hw, paths: Sequence[str] = (),
                 sample: str = '') -> list[np.ndarray]:
        """Decode ``blobs`` (at most ``batch_size``); returns host uint8 HxWx3 arrays.

        ``target_hw`` is one (H, W) for all images, a list with one per image, or None.
        """
        out = self._run(blobs, target_hw, paths, sample)
        if self.device == 'mixed':
            out = out.as_cpu()
        imgs = [np.array(out.at(i)) for i in range(len(blobs))]
        if self.channel_order == 'bgr':
            imgs = [np.ascontiguousarray(im[..., ::-1]) for im in imgs]
        return imgs

    def decode_tensors(self, blobs: Sequence[bytes], target_hw, paths: Sequence[str] = (),
                       sample: str = '') -> list:
        """Like ``__call__`` but returns uint8 3xHxW torch tensors, on the GPU for ``mixed``."""
        import torch
        out = self._run(blobs, target_hw, paths, sample)
        if self.device == 'cpu':
            tensors = [torch.from_numpy(np.array(out.at(i))) for i in range(len(blobs))]
        else:
            from nvidia.dali.plugin.pytorch import feed_ndarray
            tensors = []
            for i in range(len(blobs)):
                t = torch.empty(out[i].shape(), dtype=torch.uint8, device='cuda')
                feed_ndarray(out[i], t, cuda_stream=torch.cuda.current_stream())
                tensors.append(t)
        tensors = [t.permute(2, 0, 1) for t in tensors]
        return [t.flip(0) if self.channel_order == 'bgr' else t for t in tensors]

    def _run(self, blobs: Sequence[bytes], target_hw, paths: Sequence[str], sample: str):
        if len(blobs) > self.batch_size:
            raise ValueError(f'got {len(blobs)} images for a DALI batch of {self.batch_size}')
        if self._pipe is None:
            self._build()
        targets = (list(target_hw) if isinstance(target_hw, list) else [target_hw] * len(blobs))
        sj = require('simplejpeg', 'JPEG header parsing')
        sizes = []
        for i, data in enumerate(blobs):
            try:
                h, w, _, _ = sj.decode_jpeg_header(data)
            except ValueError as exc:
                path = paths[i] if i < len(paths) else ''
                raise ImageLoadError(f'corrupt JPEG header ({exc})', path, sample) from exc
            d = 1 if targets[i] is None else reduction_for((h, w), targets[i])
            sizes.append(np.array([-(-h // d), -(-w // d)], np.float32))
        arrays = [np.frombuffer(b, np.uint8) for b in blobs]
        self._pipe.feed_input('jpegs', arrays)
        self._pipe.feed_input('sizes', sizes)
        try:
            (out,) = self._pipe.run()
        except RuntimeError as exc:
            raise ImageLoadError(f'DALI could not decode ({exc})', ', '.join(paths),
                                 sample) from exc
        return out


def decode_nvjpeg(blobs: Sequence[bytes], device: str = 'cuda', channel_order: str = 'bgr'):
    """Decode full size with nvJPEG (``torchvision.io.decode_jpeg`` on ``device``), batched.

    Returns uint8 3xHxW tensors on ``device``; resizing is the caller's (on the same device).
    """
    import torch
    require('torchvision', 'nvJPEG decoding (a torchvision build matching your torch and CUDA)')
    from torchvision.io import decode_jpeg
    datas = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    imgs = decode_jpeg(datas, device=device)
    return [img.flip(0) if channel_order == 'bgr' else img for img in imgs]
