"""Published PETRv2 detector checkpoints into the kit's neck and head.

The published head (``megvii-research/PETR``, ``PETRv2Head`` + mmcv's
``PETRTransformer``) names its modules differently from the kit's head, which
builds on mmdet 3.x's ``DetrTransformerDecoder``. Keys relative to the head::

    transformer.decoder.layers.N.attentions.0.*   -> decoder.layers.N.self_attn.*
    transformer.decoder.layers.N.attentions.1.*   -> decoder.layers.N.cross_attn.*
    transformer.decoder.layers.N.ffns.0.*         -> decoder.layers.N.ffn.*
    transformer.decoder.layers.N.norms.K.*        -> decoder.layers.N.norms.K.*
    transformer.decoder.post_norm.*               -> decoder.post_norm.*
    position_encoder.{0,2}.*                      -> position_encoder.mlp.{0,2}.*
    fpe.conv_reduce.* / fpe.conv_expand.*         -> position_encoder.fpe.reduce.* / .expand.*
    reg_branches.I.reg_branch.{0,3}.*             -> reg_branches.I.shared.{0,2}.*
    code_weights                                  -> (dropped: a loss setting the config owns)

``input_proj``, ``adapt_pos3d``, ``reference_points``, ``query_embedding``,
``cls_branches`` and ``reg_branches.I.task_heads`` keep their names, and so do
the neck's keys (the published ``CPFPN`` and :class:`~.neck.UsedLevelsFPN`).

:func:`attach_part_loading` installs a load-state-dict pre-hook, so the
renaming and the check run on every route that ends in ``load_state_dict``
(``load_from``, ``resume``, ``init_cfg``'s ``Pretrained``). The hook logs one
coverage line per part and refuses a part the checkpoint names but does not
cover whole (missing tensors, wrong shapes, or keys it cannot place): non-strict
loading would otherwise leave it partly random with only a warning. A part the
checkpoint does not mention at all (a backbone-only ``load_from``) keeps its
initialisation and says so.
"""
from __future__ import annotations

import re
from typing import Callable

from mmengine.logging import print_log
from torch import nn

_LAYER = re.compile(r'transformer\.decoder\.layers\.(\d+)\.'
                    r'(attentions\.[01]|ffns\.0|norms\.\d+)\.(.+)')
_ATTN = {'attentions.0': 'self_attn', 'attentions.1': 'cross_attn', 'ffns.0': 'ffn'}
_SHARED_REG = re.compile(r'reg_branches\.(\d+)\.reg_branch\.(\d+)\.(.+)')
_PREFIXES = {
    'transformer.decoder.post_norm.': 'decoder.post_norm.',
    'position_encoder.0.': 'position_encoder.mlp.0.',
    'position_encoder.2.': 'position_encoder.mlp.2.',
    'fpe.conv_reduce.': 'position_encoder.fpe.reduce.',
    'fpe.conv_expand.': 'position_encoder.fpe.expand.',
}
#: published head entries that are settings, not weights
DROPPED = frozenset({'code_weights'})


def published_head_key(key: str) -> str | None:
    """Kit name of a published ``PETRv2Head`` key (relative to the head), or ``None``."""
    m = _LAYER.fullmatch(key)
    if m:
        part = _ATTN.get(m[2], m[2])
        return f'decoder.layers.{m[1]}.{part}.{m[3]}'
    m = _SHARED_REG.fullmatch(key)
    if m:
        # published: (Linear, ReLU, Dropout) x 2; kit: (Linear, ReLU) x 2
        idx = int(m[2])
        if idx % 3:
            return None
        return f'reg_branches.{m[1]}.shared.{idx // 3 * 2}.{m[3]}'
    for old, new in _PREFIXES.items():
        if key.startswith(old):
            return new + key[len(old):]
    return None


def _counted(name: str) -> bool:
    return not name.endswith('num_batches_tracked')


def attach_part_loading(module: nn.Module, part: str, allow_partial: bool,
                        rename: Callable[[str], str | None] | None = None) -> None:
    """Rename published keys of ``module`` on load, log coverage, refuse a partial part.

    Args:
        module: the part (neck, head) that receives the keys.
        part: its name in messages when it is loaded without a prefix.
        allow_partial: accept a checkpoint that covers the part partly.
        rename: published key -> kit key (relative to the part), ``None`` to keep.
    """

    def hook(mod, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
             error_msgs):
        mine = [k for k in state_dict if k.startswith(prefix)]
        name = prefix.rstrip('.') or part
        own = {n: t for n, t in mod.state_dict().items() if _counted(n)}
        if not mine:
            print_log(f'{name}: 0 of {len(own)} tensors loaded: the checkpoint has none for '
                      'it, it keeps its initialisation', logger='current')
            return
        renamed = dropped = 0
        for key in mine:
            rel = key[len(prefix):]
            if rel in DROPPED and rel not in own and rename is not None:
                state_dict.pop(key)
                dropped += 1
                continue
            new = rename(rel) if rename is not None else None
            if new is not None and new != rel:
                state_dict[prefix + new] = state_dict.pop(key)
                renamed += 1
        loaded = {n for n, t in own.items() if prefix + n in state_dict
                  and tuple(state_dict[prefix + n].shape) == tuple(t.shape)}
        names = set(mod.state_dict())
        unplaced = [k[len(prefix):] for k in state_dict
                    if k.startswith(prefix) and k[len(prefix):] not in names]
        note = f' ({renamed} renamed from the published PETRv2 naming)' if renamed else ''
        print_log(f'{name}: {len(loaded)} of {len(own)} tensors loaded{note}'
                  + (f', {len(unplaced)} checkpoint tensors not placed' if unplaced else ''),
                  logger='current')
        if (len(loaded) < len(own) or unplaced) and not allow_partial:
            absent = [n for n in own if n not in loaded]
            raise ValueError(
                f'{name}: the checkpoint covers {len(loaded)} of {len(own)} tensors (missing '
                f'or wrong shape, e.g. {absent[:3]}; not placed: {unplaced[:3]}); the part '
                'would stay partly random. Check the checkpoint, its key prefix (expected '
                f'{prefix!r}) and the model settings, or set allow_partial_weights=True in '
                'this part\'s config to load it anyway.')

    module._register_load_state_dict_pre_hook(hook, with_module=True)
