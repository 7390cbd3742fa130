"""The folding rule: where the fast loader may take over a pipeline's resize/crop.

A stock multi-view loader is replaced by ``FastLoadMultiViewImageFromFiles``.
Scanning forward from it, transforms in :data:`PASS_THROUGH` are stepped over:
they neither read nor write images or camera geometry (``img``, ``cam2img``,
``lidar2cam``, ``lidar2img``, ``img_shape``), so running the image
augmentation before them changes nothing they see or produce. The first
transform in :data:`bevboost.data.augment.FOLDABLE` is folded: removed, its
options moved into the loader. Any other transform ends the scan. A foldable
transform found *after* such a blocker is refused (ValueError naming both):
leaving it would decode full frames and, worse, hand the blocker geometry
that the later resize silently changes.

The only visible difference of a fold is the order of random draws: the image
augmentation now draws before the pass-through transforms do (e.g. before
``ObjectSample``), which leaves every distribution unchanged.
"""
from __future__ import annotations

import logging
from typing import Any

from bevboost.data.augment import FOLDABLE

logger = logging.getLogger(__name__)

#: stock loading transforms the kit replaces (registry names, any scope prefix)
LOADERS = ('LoadMultiViewImageFromFiles', 'BEVLoadMultiViewImageFromFiles')
#: transforms that touch neither images nor camera geometry (safe to fold across)
PASS_THROUGH = ('LoadAnnotations3D', 'ObjectRangeFilter', 'ObjectNameFilter',
                'LoadPointsFromFile', 'LoadPointsFromMultiSweeps', 'PointsRangeFilter',
                'PointShuffle', 'ObjectSample')
FAST_TYPE = 'FastLoadMultiViewImageFromFiles'


def short_type(step: Any) -> str:
    """A pipeline step's registry name without its scope (``mmdet3d.X`` -> ``X``)."""
    t = step.get('type') if isinstance(step, dict) else None
    return t.rsplit('.', 1)[-1] if isinstance(t, str) else ''


def passes_through(step: dict) -> bool:
    """True when ``step`` touches neither images nor camera geometry."""
    name = short_type(step)
    if name == 'ObjectSample':
        return not step.get('sample_2d', False)  # 2D paste edits the images
    return name in PASS_THROUGH


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


def rewrite_pipeline(pipeline: list, loader_options: dict) -> list[str]:
    """Replace each loader in ``pipeline`` (in place), folding what the rule allows.

    Returns the names of the transforms folded (``''`` for a loader that folded
    none). Raises ValueError where a foldable transform sits behind a blocker.
    """
    folded = []
    for i, step in enumerate(pipeline):
        if short_type(step) not in LOADERS:
            continue
        new = dict(type=FAST_TYPE, num_views=step.get('num_views', 6), **loader_options)
        if short_type(step) == 'BEVLoadMultiViewImageFromFiles':
            new['channel_order'] = 'rgb'  # it decodes with Pillow, RGB
        blocker, j = None, i + 1
        while j < len(pipeline):
            name = short_type(pipeline[j])
            if name in FOLDABLE and blocker is None:
                new.update(fold_options(pipeline.pop(j)))
                break
            if name in FOLDABLE:
                raise ValueError(
                    f'cannot fold {name} into {FAST_TYPE}: {blocker} stands between it and '
                    f'the loader and may read or change images or camera geometry. Move '
                    f'{name} before {blocker}, or drop fast-decode for this pipeline.')
            if blocker is None and not passes_through(pipeline[j]):
                blocker = name or repr(pipeline[j])
            j += 1
        pipeline[i] = new
        folded.append(new.get('fold', ''))
        if 'fold' not in new:
            logger.info('%s: no resize/crop transform to fold after %s; decoding full size',
                        FAST_TYPE, short_type(step))
    return folded
