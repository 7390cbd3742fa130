"""The ``fast-decode`` boost: the fast multi-view loader with the model's resize folded in.

It replaces the stock multi-view loading transform and folds the resize/crop it
reaches under the rule of :mod:`bevboost.data.fold` (PETR ``ResizeCropFlipImage``,
StreamPETR ``ResizeCropFlipRotImage``, BEVFusion ``ImageAug3D``, the kit's
``MultiViewResizeCropFlip``) into
:class:`~bevboost.data.transforms.FastLoadMultiViewImageFromFiles` in every pipeline
of the config; where CUDA lives, decoding moves to the training process
(:mod:`bevboost.data.main_decode`).
"""
from __future__ import annotations

import logging
from typing import Any

from mmengine.config import Config

from bevboost.boosts import Boost, BoostCard, add_custom_hook, config_entry, register_boost
from bevboost.data.fold import FAST_TYPE, LOADERS, rewrite_pipeline, short_type

logger = logging.getLogger(__name__)

MAIN_DECODE_PREPROCESSOR = 'MainProcessDecodePreprocessor'
#: data-preprocessor options a model reads itself before building it (BEVFusion)
_HOISTED_KEYS = ('voxelize_cfg',)


def _pipelines(cfg: Config) -> list[list]:
    found = []
    for key in ('train_pipeline', 'test_pipeline', 'eval_pipeline'):
        if isinstance(cfg.get(key), list):
            found.append(cfg[key])
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        ds = (cfg.get(key) or {}).get('dataset') or {}
        while isinstance(ds, dict) and 'dataset' in ds and 'pipeline' not in ds:
            ds = ds['dataset']  # CBGSDataset / RepeatDataset wrappers
        if isinstance(ds, dict) and isinstance(ds.get('pipeline'), list):
            found.append(ds['pipeline'])
    return found


def _wrap_data_preprocessor(cfg: Config, backend: str) -> bool:
    """Put the main-process decode stage in front of the model's data preprocessor."""
    model = cfg.get('model')
    inner = model.get('data_preprocessor') if isinstance(model, dict) else None
    if not isinstance(inner, dict):
        return False
    if short_type(inner) != MAIN_DECODE_PREPROCESSOR:
        inner = dict(inner)
        hoisted = {k: inner.pop(k) for k in _HOISTED_KEYS if k in inner}
        model['data_preprocessor'] = dict(type=MAIN_DECODE_PREPROCESSOR, preprocessor=inner,
                                          backend=backend, **hoisted)
    return True


def _ship_encoded(pipeline: list) -> bool:
    """Let every ``Pack3DDetInputs`` of ``pipeline`` carry the encoded images as metainfo."""
    from bevboost.data.transforms import MAIN_DECODE_KEYS
    packs = [s for s in pipeline if short_type(s) == 'Pack3DDetInputs']
    if not packs or any('meta_keys' not in s for s in packs):
        return False
    for step in packs:
        step['meta_keys'] = tuple(step['meta_keys']) + tuple(
            k for k in MAIN_DECODE_KEYS if k not in step['meta_keys'])
    return True


def apply_fast_decode(cfg: Config, backend: str = 'auto', decode: str = 'auto') -> None:
    """Use the fast loader in every pipeline, folding each pipeline's resize/crop.

    ``decode='main'`` (or ``'auto'`` where the training process has a GPU
    decoder at run time) ships JPEG bytes from the workers and decodes them in
    :class:`~bevboost.data.main_decode.MainProcessDecodePreprocessor`, which
    this wraps around the model's data preprocessor. ValueError when there is no
    loader to replace, or a resize/crop the folding rule cannot reach.
    """
    if decode not in ('auto', 'worker', 'main'):
        raise ValueError(f"decode must be 'auto', 'worker' or 'main', got {decode!r}")
    from bevboost.data.decode import BACKENDS
    if backend not in BACKENDS:  # fail when the config is written, not in a worker mid-run
        raise ValueError(f'fast-decode backend must be one of {", ".join(BACKENDS)}, '
                         f'got {backend!r}')
    if backend == 'cpu' and decode == 'auto':
        decode = 'worker'  # a CPU decoder belongs in the workers
    shm = 'shm' in (cfg.get('bevboost_boosts') or {}) or cfg.get('runner_type') == 'ShmRingRunner'
    if shm and decode != 'worker':
        if decode == 'main':
            raise ValueError("decode='main' ships encoded bytes as metadata; the shm ring "
                             "carries decoded images: use decode='worker' with shm")
        decode = 'worker'
    pipelines = _pipelines(cfg)
    options = dict(backend=backend, decode=decode)
    folded = [rewrite_pipeline(p, options) for p in pipelines]
    if not any(folded):
        raise ValueError(f'config {cfg.filename or "<in memory>"!r} has no '
                         f'{"/".join(LOADERS)} transform to replace')
    if decode != 'worker':
        ok = all(_ship_encoded(p) for p, f in zip(pipelines, folded) if f)
        ok = ok and _wrap_data_preprocessor(cfg, backend)
        if not ok:
            if decode == 'main':
                raise ValueError("decode='main' needs model.data_preprocessor and explicit "
                                 'Pack3DDetInputs meta_keys in every camera pipeline')
            logger.info('fast-decode: no model.data_preprocessor or explicit Pack3DDetInputs '
                        'meta_keys to carry encoded images; decoding in the loader workers')
            for p, f in zip(pipelines, folded):
                for step in p:
                    if short_type(step) == FAST_TYPE:
                        step['decode'] = 'worker'
    # with on_error='skip', the skipped-sample total goes into the training log
    add_custom_hook(cfg, dict(type='SkippedSamplesHook'))
    imports = config_entry(cfg, 'custom_imports', dict(imports=[], allow_failed_imports=False))
    if 'bevboost' not in imports.get('imports', []):
        imports['imports'] = list(imports.get('imports', [])) + ['bevboost']


def verify_fast_loader(runner: Any, backend: str | None) -> str:
    """What loads the built train pipeline's images, and whether it folded the resize."""
    from bevboost.boosts import BoostNotInEffect, train_pipeline_transforms
    from bevboost.data.transforms import FastLoadMultiViewImageFromFiles
    transforms = train_pipeline_transforms(runner)
    stock = [type(t).__name__ for t in transforms if type(t).__name__ in LOADERS]
    fast = [t for t in transforms if isinstance(t, FastLoadMultiViewImageFromFiles)]
    if stock or not fast:
        raise BoostNotInEffect('train pipeline loads images with '
                               f'{", ".join(stock) or "no multi-view loader"}, not {FAST_TYPE}')
    loader = fast[0]
    if backend is not None and loader.backend != backend:
        raise BoostNotInEffect(f'{FAST_TYPE} decodes with {loader.backend!r}, not {backend!r}')
    fold = getattr(loader, 'fold', None)
    folded = (f'resize/crop {fold or ""} folded to {tuple(loader.final_dim)}' if loader.final_dim
              else 'resize not folded (no resize/crop transform followed the loader: '
                   'full-size decode)')
    return f'{FAST_TYPE} backend={loader.backend}, {folded}, {_decode_site(runner, loader)}'


def _decode_site(runner: Any, loader: Any) -> str:
    """Where the built runner decodes; BoostNotInEffect when shipped bytes have no decoder."""
    from bevboost.boosts import BoostNotInEffect
    from bevboost.data.main_decode import MainProcessDecodePreprocessor
    if getattr(loader, 'decode', 'worker') != 'main':
        return 'decoded in the loader workers'
    model = getattr(runner.model, 'module', runner.model)
    pre = getattr(model, 'data_preprocessor', None)
    if not isinstance(pre, MainProcessDecodePreprocessor):
        raise BoostNotInEffect(f'{FAST_TYPE} ships encoded images (decode=main) but the model '
                               f'has no {MAIN_DECODE_PREPROCESSOR} to decode them')
    return f'decoded in the training process ({pre.decoder.backend})'


@register_boost
class FastDecodeBoost(Boost):
    card = BoostCard(
        name='fast-decode',
        contract_model='camera', fragment='fast_decode.py',
        docs='docs/data.md#loading-transform-and-folding-fast-decode-boost',
        summary=('decode camera JPEGs at reduced DCT scale and fold the resize/crop/flip/rotate '
                 'in place (same seed, same geometry and keys as the stock chain; refuses a '
                 'transform between that reads pixels: see bevboost.data.fold); on CUDA, decode '
                 'batched in the training process (nvJPEG / DALI mixed)'),
        changes=('train_dataloader.dataset.pipeline', 'val_dataloader.dataset.pipeline',
                 'test_dataloader.dataset.pipeline', 'train_pipeline', 'test_pipeline',
                 'model.data_preprocessor', 'custom_hooks'),
        expected_effect=('9.3-11.8x less CPU per camera image than mmdet3d loader + the '
                         "model's resize at 320x800 and 256x704, train and test (5.3-9.4x in "
                         'full benchmark runs); 1.3x a bare reduced decode of the same files or '
                         'less, BEVFusion train on the line (PETRv2 train 1.22-1.27x, BEVFusion '
                         'train 1.28-1.33x, median 1.30x; 2-core CPU, docs/data.md); pixels '
                         'within tolerance of the stock chain per view; uint8 or encoded '
                         'batches'),
        exact=False, requires=('simplejpeg',), order=20)
    primary_option = 'backend'

    def apply(self, cfg: Config, **options: Any) -> None:
        apply_fast_decode(cfg, **options)

    def verify(self, runner: Any, **options: Any) -> str:
        return verify_fast_loader(runner, backend=None)
