"""Fast multi-view image loading: a drop-in for mmdet3d's load + resize/crop pair.

``FastLoadMultiViewImageFromFiles`` replaces ``LoadMultiViewImageFromFiles``
(or BEVFusion's ``BEVLoadMultiViewImageFromFiles``) *and* a resize/crop
transform it folds (``fold=``: PETR's ``ResizeCropFlipImage``, StreamPETR's
``ResizeCropFlipRotImage``, BEVFusion's ``ImageAug3D``, the kit's
``MultiViewResizeCropFlip``): knowing the final size lets it decode at a
reduced DCT scale, resize the small image with OpenCV and keep uint8. The
augmentation is sampled the way the folded transform samples it, and the
geometry keys (``cam2img``, ``lidar2img``, ``img_aug_matrix``, ``img_shape``)
come out as the stock load + transform pair writes them. It also writes the
stock loader's keys (``filename``, ``ori_shape``, ``pad_shape``,
``ori_cam2img``, ``lidar2cam``, ``cam2lidar``, ``num_views``,
``num_ref_frames``, ``img_norm_cfg``).

``decode='main'`` leaves decoding to the training process: the transform
ships ``img_jpeg`` (the encoded bytes, the per-view plan and the channel
order) instead of ``img``, and
:class:`bevboost.data.main_decode.MainProcessDecodePreprocessor` decodes the
batch where the model lives (nvJPEG / DALI ``mixed`` on CUDA, CPU otherwise).

Registered in mmengine's root ``TRANSFORMS``, so mmdet3d configs find it after
``custom_imports=dict(imports=['bevboost'])``; nothing here imports mmdet3d.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import numpy as np
from mmengine.registry import TRANSFORMS

from bevboost.data import augment, stock_keys
from bevboost.data.decode import (DaliDecoder, ImageLoadError, decode_cpu, decoded_hw,
                                  in_loader_worker, resolve_backend)
from bevboost.data.seeding import WorkerRng
from bevboost.data.skip_counts import SkipCounter

logger = logging.getLogger(__name__)

#: result keys that carry main-process decode work (must be in Pack3DDetInputs' meta_keys)
MAIN_DECODE_KEYS = ('img_jpeg',)


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


def jpeg_hw(data: bytes, path: str, sample: str) -> tuple[int, int]:
    """(H, W) from the JPEG header, without decoding."""
    sj = __import__('simplejpeg')
    try:
        return tuple(sj.decode_jpeg_header(data)[:2])
    except ValueError as exc:
        raise ImageLoadError(f'corrupt JPEG header ({exc})', path, sample) from exc


def choose_decode_site(decode: str, backend: str) -> str:
    """``'worker'`` or ``'main'``; ``auto`` is ``main`` only where a GPU decoder will run."""
    if decode not in ('worker', 'main', 'auto'):
        raise ValueError(f"decode must be 'worker', 'main' or 'auto', got {decode!r}")
    if decode != 'auto':
        return decode
    if backend == 'cpu' or in_loader_worker():
        return 'worker'
    from bevboost._optional import cuda_available
    gpu = cuda_available() and resolve_backend(backend, 'main') in ('nvjpeg', 'dali')
    site = 'main' if gpu else 'worker'
    logger.info("image decode site auto -> %s (%s)", site,
                'a GPU decoder in the training process' if gpu else 'no GPU decoder here')
    return site


@TRANSFORMS.register_module()
class FastLoadMultiViewImageFromFiles:
    """Load N camera JPEGs at reduced DCT scale, resize/crop/flip/rotate, keep uint8.

    Args:
        num_views: cameras per sample; with ``check_views`` other counts are an
            error. Written to ``num_views`` as the stock loader writes it.
        final_dim: (H, W) network input; None decodes full size (no augmentation).
        resize_lim, bot_pct_lim, rot_lim, rand_flip, is_train: augmentation as
            the folded transform's options (PETR's ``data_aug_conf``, BEVFusion's
            ``ImageAug3D``, ``MultiViewResizeCropFlip``).
        fold: name of the stock transform this one stands in for (a key of
            :data:`bevboost.data.augment.FOLDABLE`): how to sample and which keys
            to update. None: PETR-style sampling, ``update_intrinsics`` as given.
        src_hw: the source size the folded transform assumes (PETR's
            ``data_aug_conf`` ``H``/``W``); None uses each image's header.
        update_intrinsics: (``fold=None`` only) fold the augmentation into ``cam2img``.
        replaces: the stock loader whose keys to write, exactly as it writes them
            (:mod:`bevboost.data.stock_keys`), then the folded transform's; what the
            ``fast-decode`` boost sets. None (direct use) writes the kit's superset:
            4x4 ``cam2img``, ``lidar2img``, ``cam2lidar``, ``img_aug_matrix``.
        defer: read files and headers and write the loader's keys here, and leave
            decode + augmentation (and its random draws) to the
            ``FastDecodeMultiViewImages`` that stands where the folded transform
            stood (the boost places it when transforms stand between).
        num_ref_frames, set_default_scale: the stock loader's (written as it does).
        check_views: refuse samples with other than ``num_views`` cameras.
        load_prev_frame: also load ``cam_sweeps[0]`` (the previous keyframe) with
            the same augmentation, appended after the current views (PETRv2);
            the current frame is repeated on a scene's first sample.
        backend: ``'cpu'``, ``'dali'``, ``'nvjpeg'`` or ``'auto'`` (see
            :func:`bevboost.data.decode.resolve_backend`).
        decode: ``'worker'`` (decode here), ``'main'`` (ship JPEG bytes; the
            training process decodes) or ``'auto'`` (``main`` when the building
            process has CUDA and a GPU decoder, else ``worker``).
        on_error: ``'raise'`` or ``'skip'`` (return None so the dataset picks
            another sample; ``skipped`` totals all workers, and
            ``SkippedSamplesHook`` reports it in the training log).
        channel_order: ``'bgr'`` like mmcv's default, or ``'rgb'``.
        to_float32: cast to float32 at the end (only for strict drop-in use).
        dct_scaling: decode at a reduced DCT scale (1/2, 1/4, 1/8) near the
            resize target (the accuracy-trading part); False decodes full size.
        max_upsample: how far below the resize target that scale may be
            (interpolated up): 1.25 keeps PETR's and BEVFusion's training
            resizes (up to 0.625 of 1600x900) on the 1/2 scale. 1.0 never
            decodes below the target.
        seed: None follows mmengine's seeding (different per worker, rank and
            epoch; see :mod:`bevboost.data.seeding`); an int fixes the stream.
    """

    def __init__(self, num_views: int = 6, final_dim: tuple[int, int] | None = None,
                 resize_lim: tuple[float, float] | None = None,
                 bot_pct_lim: tuple[float, float] = (0.0, 0.0),
                 rot_lim: tuple[float, float] = (0.0, 0.0), rand_flip: bool = False,
                 is_train: bool = False, update_intrinsics: bool = True,
                 load_prev_frame: bool = False, backend: str = 'cpu',
                 on_error: str = 'raise', channel_order: str = 'bgr',
                 to_float32: bool = False, seed: int | None = None, fold: str | None = None,
                 src_hw: tuple[int, int] | None = None, decode: str = 'worker',
                 dct_scaling: bool = True, max_upsample: float = 1.25,
                 replaces: str | None = None, defer: bool = False, num_ref_frames: int = -1,
                 set_default_scale: bool = True, check_views: bool = True,
                 **stock_kwargs: Any) -> None:
        if not isinstance(num_views, int) or num_views < 1:
            raise ValueError(f'num_views must be a positive int, got {num_views!r}')
        if on_error not in ('raise', 'skip'):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if channel_order not in ('bgr', 'rgb'):
            raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
        if final_dim is not None and (len(final_dim) != 2 or min(final_dim) < 1):
            raise ValueError(f'final_dim must be (H, W) > 0, got {final_dim!r}')
        if not 1.0 <= max_upsample <= 2.0:
            raise ValueError(f'max_upsample must be in [1, 2], got {max_upsample!r}')
        if fold is not None and fold not in augment.FOLDABLE:
            raise ValueError(f'fold must be one of {sorted(augment.FOLDABLE)}, got {fold!r}')
        if replaces is not None and replaces not in stock_keys.STOCK_LOADERS:
            raise ValueError(f'replaces must be one of {stock_keys.STOCK_LOADERS}, '
                             f'got {replaces!r}')
        if replaces is not None and final_dim is not None and fold is None:
            raise ValueError('replaces= with final_dim needs fold= (the transform whose keys '
                             'to write)')
        if defer and fold is None:
            raise ValueError('defer=True needs fold= (what FastDecodeMultiViewImages stands for)')
        unknown = set(stock_kwargs) - {'color_type', 'backend_args', 'test_mode'}
        if unknown:
            raise TypeError(f'unexpected arguments {sorted(unknown)}')
        self.num_views, self.check_views = num_views, check_views
        self.final_dim = None if final_dim is None else tuple(final_dim)
        self.aug_kwargs = dict(resize_lim=resize_lim, bot_pct_lim=bot_pct_lim, rot_lim=rot_lim,
                               rand_flip=rand_flip, is_train=is_train)
        self.fold, self.replaces, self.defer = fold, replaces, defer
        self.num_ref_frames, self.set_default_scale = num_ref_frames, set_default_scale
        self.rule = augment.FOLDABLE[fold] if fold else dataclasses.replace(
            augment.UNFOLDED, update_intrinsics=update_intrinsics)
        self.src_hw = None if src_hw is None else tuple(src_hw)
        self.load_prev_frame, self.dct_scaling = load_prev_frame, dct_scaling
        self.max_upsample = float(max_upsample) if dct_scaling else 1.0
        self.decode = choose_decode_site(decode, backend)
        # the main process resolves its own backend (MainProcessDecodePreprocessor)
        self.backend = resolve_backend(backend, 'worker') if self.decode == 'worker' else backend
        self.on_error, self.channel_order, self.to_float32 = on_error, channel_order, to_float32
        self.rng = WorkerRng(seed)  # per worker, rank and epoch, as mmengine seeds
        # shared with this transform's copies in every loader worker
        self.skip_counter = SkipCounter() if on_error == 'skip' else None
        self._dali: DaliDecoder | None = None

    @property
    def skipped(self) -> int:
        """Samples skipped so far by this transform in every loader worker."""
        return self.skip_counter.value if self.skip_counter is not None else 0

    def _decode_views(self, job: PendingDecode, plans: list) -> list[np.ndarray]:
        """Every view decoded and augmented. On the CPU one view at a time, so that one
        decoded frame is alive at once: six at once grew the heap past glibc's trim threshold
        and every sample page-faulted it in again (~77 faults per image)."""
        targets = [p and p.resize_hw if self.dct_scaling else None for p in plans]
        if self.backend == 'dali':
            if self._dali is None:
                self._dali = DaliDecoder('cpu', batch_size=len(job.blobs),
                                         channel_order=self.channel_order)
            imgs = self._dali(job.blobs, targets, job.paths, job.sample)
            return [im if p is None else augment.apply_plan(im, p) for im, p in zip(imgs, plans)]
        out = []
        for blob, target, path, hw, p in zip(job.blobs, targets, job.paths, job.src_hws, plans):
            padded = augment.decode_padded(p)  # the CPU decode pads where the plan asks
            # a frame that apply_plan resizes is dropped after: decode it into scratch memory
            resized = p is not None and decoded_hw(hw, target, self.max_upsample) != p.resize_hw
            img = decode_cpu(blob, target, self.channel_order, path, job.sample,
                             self.max_upsample, hw, padded=padded, into_scratch=resized)[0]
            out.append(img if p is None else augment.apply_plan(img, p, padded))
        return out

    def _views(self, results: dict, sample: str) -> tuple[list[str], list, list]:
        images = results.get('images')
        if not isinstance(images, dict) or not images or (
                self.check_views and len(images) != self.num_views):
            n = len(images) if isinstance(images, dict) else 0
            raise ImageLoadError(f'expected {self.num_views} cameras, got {n}', '', sample)
        paths = [cam['img_path'] for cam in images.values()]
        cam2img = [cam['cam2img'] for cam in images.values()]
        lidar2cam = [cam['lidar2cam'] for cam in images.values()]
        if self.load_prev_frame:
            sweeps = results.get('cam_sweeps') or []
            prev = sweeps[0] if sweeps else images
            for cam_name, cur in images.items():
                if cam_name not in prev:
                    raise ImageLoadError(f'previous frame lacks camera {cam_name}', '', sample)
                item = prev[cam_name]
                folder = os.path.dirname(cur['img_path'])
                paths.append(os.path.join(folder, os.path.basename(item['img_path'])))
                cam2img.append(item['cam2img'])
                lidar2cam.append(item['lidar2cam'])
        return paths, cam2img, lidar2cam

    def __call__(self, results: dict) -> dict | None:
        return self.guarded(self._read, results)

    def guarded(self, step, *args) -> dict | None:
        """``step(*args)``, with ``on_error='skip'`` turning an ImageLoadError into None."""
        try:
            loaded = step(*args)
        except ImageLoadError as exc:
            if self.on_error == 'raise':
                raise
            self.skip_counter.skipped(str(exc))  # the first few in full, then counted
            return None
        if self.skip_counter is not None:
            self.skip_counter.loaded()
        return loaded

    def _plans(self, src_hws: list[tuple[int, int]]) -> list[augment.AugParams | None]:
        """One augmentation per view (drawn per view or once per sample, as the fold does)."""
        if self.final_dim is None:
            return [None] * len(src_hws)

        # this process's stream, resolved once per sample (tests may set a RandomState)
        rng = self.rng.stream() if isinstance(self.rng, WorkerRng) else self.rng

        def draw(hw):
            return augment.sample_aug(self.src_hw or hw, self.final_dim, rng=rng,
                                      sampler=self.rule.sampler, **self.aug_kwargs)
        if self.rule.per_view:
            return [draw(hw) for hw in src_hws]
        return [draw(src_hws[0])] * len(src_hws)

    def _read(self, results: dict) -> dict:
        """Read the files and headers, write the stock loader's keys; decode unless deferred."""
        sample = str(results.get('token', results.get('sample_idx', '?')))
        paths, cam2img, lidar2cam = self._views(results, sample)
        blobs = [read_bytes(p, sample) for p in paths]
        src_hws = [jpeg_hw(b, p, sample) for b, p in zip(blobs, paths)]
        if self.final_dim is None and len(set(src_hws)) != 1:
            raise ImageLoadError(f'camera images differ in size {sorted(set(src_hws))}', '',
                                 sample)
        job = PendingDecode(self, sample, paths, blobs, src_hws, cam2img, lidar2cam)
        if self.replaces is not None:
            stock_keys.write_loader_keys(
                results, self.replaces, paths, cam2img, lidar2cam,
                tuple(np.max(src_hws, axis=0)), self.num_views, self.num_ref_frames,
                self.set_default_scale)
        if self.defer:
            results[PENDING_KEY] = job
            return results
        return self._finish(results, job)

    def _finish(self, results: dict, job: PendingDecode) -> dict:
        """Draw the augmentation, decode (or ship the bytes) and update the folded keys."""
        plans = self._plans(job.src_hws)
        if self.decode == 'main':
            results.pop('img', None)
            results['img_jpeg'] = dict(blobs=job.blobs, plans=plans,
                                       channel_order=self.channel_order,
                                       max_upsample=self.max_upsample)
        else:
            imgs = self._decode_views(job, plans)
            if self.to_float32:
                imgs = [im.astype(np.float32) for im in imgs]
            results['img'] = imgs
        idas = [np.eye(3) if p is None else augment.ida_matrix(p) for p in plans]
        if self.replaces is None:
            self._kit_keys(results, job, idas)
        elif self.fold is not None:
            stock_keys.apply_fold_keys(results, self.fold, idas, self.final_dim)
        return results

    def _kit_keys(self, results: dict, job: PendingDecode, idas: list[np.ndarray]) -> None:
        """The keys of direct use (``replaces=None``): the stock loader's and more."""
        ori_cam2img = [np.asarray(k, np.float64) for k in job.cam2img]
        cam2img = [stock_keys.pad4(k) for k in job.cam2img]
        if self.rule.update_intrinsics:
            for k, ida in zip(cam2img, idas):
                k[:3, :3] = ida @ k[:3, :3]
        lidar2cam = [stock_keys.pad4(m) for m in job.lidar2cam]
        out_hw = self.final_dim if self.final_dim and self.rule.sets_img_shape else job.src_hws[0]
        results.update(
            filename=job.paths, img_shape=tuple(out_hw), ori_shape=tuple(job.src_hws[0]),
            pad_shape=tuple(out_hw), cam2img=cam2img, ori_cam2img=ori_cam2img,
            lidar2cam=lidar2cam, cam2lidar=[np.linalg.inv(m) for m in lidar2cam],
            lidar2img=[k @ m for k, m in zip(cam2img, lidar2cam)],
            img_aug_matrix=[augment.img_aug_matrix(ida) for ida in idas],
            num_views=self.num_views, num_ref_frames=1 if self.load_prev_frame else 0,
            img_norm_cfg=dict(mean=np.zeros(3, np.float32), std=np.ones(3, np.float32),
                              to_rgb=False))

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num_views={self.num_views}, final_dim={self.final_dim}, '
                f'fold={self.fold!r}, decode={self.decode!r}, backend={self.backend!r}, '
                f'on_error={self.on_error!r}, defer={self.defer})')


#: results key carrying a deferred loader's read files to ``FastDecodeMultiViewImages``
PENDING_KEY = '_bevboost_pending_decode'


@dataclasses.dataclass
class PendingDecode:
    """What a deferred loader read: files, headers and the views' camera entries."""
    loader: FastLoadMultiViewImageFromFiles
    sample: str
    paths: list
    blobs: list
    src_hws: list
    cam2img: list
    lidar2cam: list

    def __deepcopy__(self, memo: dict) -> PendingDecode:
        return self  # immutable once read; never copy the loader it finishes with


@TRANSFORMS.register_module()
class FastDecodeMultiViewImages:
    """Decode + augment what a ``FastLoadMultiViewImageFromFiles(defer=True)`` read.

    Stands where the folded transform stood, so the augmentation draws exactly
    where the stock transform draws (after transforms between that draw too,
    e.g. ``LoadPointsFromMultiSweeps``) and updates its keys on the results as
    they are there. The options are the loader's.

    Args:
        stands_for: the folded transform's name (for logs and reprs).
    """

    def __init__(self, stands_for: str = '') -> None:
        self.stands_for = stands_for

    def __call__(self, results: dict) -> dict | None:
        job = results.pop(PENDING_KEY, None)
        if job is None:
            raise RuntimeError(f'{type(self).__name__} found no images read by '
                               'FastLoadMultiViewImageFromFiles(defer=True) earlier in the '
                               'pipeline')
        return job.loader.guarded(job.loader._finish, results, job)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(stands_for={self.stands_for!r})'
