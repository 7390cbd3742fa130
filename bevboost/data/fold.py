"""The folding rule: where the fast loader may take over a pipeline's resize/crop.

A stock multi-view loader is replaced by ``FastLoadMultiViewImageFromFiles``,
which reads the files and JPEG headers and writes exactly the stock loader's
keys (:mod:`bevboost.data.stock_keys`). Scanning forward from it, transforms in
:data:`PIXEL_FREE` are stepped over: they read no pixels (they may read or
change camera geometry, which the loader already wrote as stock does). The
first transform in :data:`bevboost.data.augment.FOLDABLE` is folded *in place*:
``FastDecodeMultiViewImages`` takes its position and decodes, resizes, crops,
flips and rotates there, drawing exactly what and where the stock transform
draws and updating the keys it updates. So the same seed gives the stock
chain's geometry, also with transforms between that draw from ``np.random``
(``LoadPointsFromMultiSweeps`` with more sweeps than ``sweeps_num``). A
foldable transform right after the loader folds into the loader itself (the
same draws, one transform fewer).

Any other transform ends the scan (it may read pixels, which the loader has not
decoded yet). A foldable transform found *after* such a transform is refused
(ValueError naming both): leaving it would decode full frames.
"""
from __future__ import annotations

import logging
from typing import Any

from bevboost.data.augment import FOLDABLE

logger = logging.getLogger(__name__)

#: stock loading transforms the kit replaces (registry names, any scope prefix)
LOADERS = ('LoadMultiViewImageFromFiles', 'BEVLoadMultiViewImageFromFiles')
#: transforms that read no pixels (they may draw, or read and change camera geometry)
PIXEL_FREE = ('LoadAnnotations3D', 'ObjectRangeFilter', 'ObjectNameFilter',
              'LoadPointsFromFile', 'LoadPointsFromMultiSweeps', 'PointsRangeFilter',
              'PointShuffle', 'ObjectSample', 'GlobalRotScaleTrans',
              'BEVFusionGlobalRotScaleTrans', 'BEVFusionRandomFlip3D')
PASS_THROUGH = PIXEL_FREE  # the name of earlier releases
FAST_TYPE = 'FastLoadMultiViewImageFromFiles'
#: what stands where a folded transform stood when transforms stand between
DECODE_TYPE = 'FastDecodeMultiViewImages'


def short_type(step: Any) -> str:
    """A pipeline step's registry name without its scope (``mmdet3d.X`` -> ``X``)."""
    t = step.get('type') if isinstance(step, dict) else None
    return t.rsplit('.', 1)[-1] if isinstance(t, str) else ''


def passes_through(step: dict) -> bool:
    """True when ``step`` reads no pixels."""
    name = short_type(step)
    if name == 'ObjectSample':
        return not step.get('sample_2d', False)  # 2D paste edits the images
    return name in PIXEL_FREE


def fold_options(aug: dict) -> dict:
    """The fast loader's options that reproduce ``aug`` (a foldable transform's config)."""
    name = short_type(aug)
    if name in ('ResizeCropFlipImage', 'ResizeCropFlipRotImage'):
        conf = dict(aug.get('data_aug_conf') or {})
        training = bool(aug.get('training', True))
        if name == 'ResizeCropFlipRotImage' and training and aug.get('with_2d', True):
            raise ValueError('ResizeCropFlipRotImage(with_2d=True) also moves 2D boxes, which '
                             'the fast loader does not do; set with_2d=False to fold it')
        out = dict(final_dim=tuple(conf['final_dim']), resize_lim=conf.get('resize_lim'),
                   bot_pct_lim=tuple(conf.get('bot_pct_lim', (0.0, 0.0))),
                   rot_lim=tuple(conf.get('rot_lim', (0.0, 0.0))),
                   rand_flip=bool(conf.get('rand_flip', False)), is_train=training)
        if 'H' in conf and 'W' in conf:
            out['src_hw'] = (int(conf['H']), int(conf['W']))
        if not training:
            out['resize_lim'] = None  # PETR tests at max(fH / H, fW / W), not the mean
    elif name == 'ImageAug3D':
        out = dict(final_dim=tuple(aug['final_dim']), resize_lim=tuple(aug['resize_lim']),
                   bot_pct_lim=tuple(aug.get('bot_pct_lim', (0.0, 0.0))),
                   rot_lim=tuple(aug.get('rot_lim', (0.0, 0.0))),
                   rand_flip=bool(aug.get('rand_flip', False)),
                   is_train=bool(aug.get('is_train', False)))
    elif name == 'MultiViewResizeCropFlip':
        out = dict(final_dim=tuple(aug['final_dim']),
                   resize_lim=tuple(aug.get('resize_lim', (1.0, 1.0))),
                   bot_pct_lim=tuple(aug.get('bot_pct_lim', (0.0, 0.0))),
                   rand_flip=bool(aug.get('rand_flip', False)),
                   is_train=bool(aug.get('training', True)))
    else:
        raise ValueError(f'{name!r} is not a foldable transform ({", ".join(FOLDABLE)})')
    out['fold'] = name
    return out


def stock_loader_options(step: dict) -> dict:
    """The fast loader's options that write ``step``'s (a stock loader's) keys as it does."""
    name = short_type(step)
    if step.get('num_ref_frames', -1) > 0:
        raise ValueError(f'{name}(num_ref_frames={step["num_ref_frames"]}) selects reference '
                         f'frames from img_filename, which {FAST_TYPE} does not; drop '
                         'fast-decode for this pipeline')
    out = dict(replaces=name, num_views=step.get('num_views', 5),
               num_ref_frames=step.get('num_ref_frames', -1),
               set_default_scale=step.get('set_default_scale', True), check_views=False)
    if name == 'BEVLoadMultiViewImageFromFiles':
        out['channel_order'] = 'rgb'  # it decodes with Pillow, RGB
    return out


def rewrite_pipeline(pipeline: list, loader_options: dict) -> list[str]:
    """Replace each loader in ``pipeline`` (in place), folding what the rule allows.

    Returns the names of the transforms folded (``''`` for a loader that folded
    none). Raises ValueError where a foldable transform sits behind a transform
    that may read pixels.
    """
    folded = []
    for i, step in enumerate(pipeline):
        if short_type(step) not in LOADERS:
            continue
        new = dict(type=FAST_TYPE, **stock_loader_options(step), **loader_options)
        blocker, j = None, i + 1
        while j < len(pipeline):
            name = short_type(pipeline[j])
            if name in FOLDABLE and blocker is None:
                new.update(fold_options(pipeline[j]))
                if j == i + 1:
                    pipeline.pop(j)
                else:  # decode where the folded transform stood: its draws stay in place
                    new['defer'] = True
                    pipeline[j] = dict(type=DECODE_TYPE, stands_for=name)
                break
            if name in FOLDABLE:
                raise ValueError(
                    f'cannot fold {name} into {FAST_TYPE}: {blocker} stands between it and '
                    f'the loader and may read the images, which are decoded where {name} '
                    f'stands. Move {name} before {blocker}, or drop fast-decode for this '
                    'pipeline.')
            if blocker is None and not passes_through(pipeline[j]):
                blocker = name or repr(pipeline[j])
            j += 1
        pipeline[i] = new
        folded.append(new.get('fold', ''))
        if 'fold' not in new:
            logger.info('%s: no resize/crop transform to fold after %s; decoding full size',
                        FAST_TYPE, short_type(step))
    return folded
