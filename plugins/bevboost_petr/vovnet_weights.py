"""Published VoVNetV2 weights into the kit's :class:`~.vovnet.VoVNet`.

PETRv2 starts from V2-99 weights pretrained with DD3D / FCOS3D; those
checkpoints use the naming of DD3D's ``vovnet.py`` (kept by PETR's
``vovnet_cp.py``)::

    stem.stem_1/conv.weight                          -> stem.0.0.weight
    stem.stem_1/norm.running_mean                    -> stem.0.1.running_mean
    stage4.OSA4_1.layers.0.OSA4_1_0/conv.weight      -> stages.2.1.layers.0.0.weight
    stage4.OSA4_1.concat.OSA4_1_concat/norm.bias     -> stages.2.1.concat.1.bias
    stage4.OSA4_1.ese.fc.weight                      -> stages.2.1.ese.fc.weight

(stages 3-5 start with a max-pool, so their blocks sit one index later).
Without the renaming, non-strict loading (``load_from``) silently leaves the
backbone random. A load-state-dict pre-hook renames the keys on every route
that ends in ``load_state_dict`` (``load_from``, ``resume``, ``init_cfg``'s
``Pretrained``), logs the coverage and refuses an incomplete backbone.
"""
from __future__ import annotations

import re

from mmengine.logging import print_log
from torch import nn

_STEM = re.compile(r'stem\.stem_(\d+)/(conv|norm)\.(\w+)')
_BLOCK = re.compile(r'stage(\d)\.OSA(\d)_(\d+)\.(?:'
                    r'layers\.(\d+)\.OSA\d_\d+_\d+/(conv|norm)'
                    r'|concat\.OSA\d_\d+_concat/(conv|norm)'
                    r'|ese\.(fc))\.(\w+)')
_SUBLAYER = {'conv': '0', 'norm': '1'}


def published_to_kit(key: str) -> str | None:
    """Kit name of a published VoVNet key (no prefix), or ``None`` if it is not one."""
    m = _STEM.fullmatch(key)
    if m:
        return f'stem.{int(m[1]) - 1}.{_SUBLAYER[m[2]]}.{m[3]}'
    m = _BLOCK.fullmatch(key)
    if not m or m[1] != m[2]:
        return None
    stage = int(m[1]) - 2
    block = int(m[3]) - 1 + (stage > 0)  # a max-pool leads stages 3..5
    head = f'stages.{stage}.{block}'
    layer, layer_part, concat_part, fc, leaf = m[4], m[5], m[6], m[7], m[8]
    if layer is not None:
        return f'{head}.layers.{layer}.{_SUBLAYER[layer_part]}.{leaf}'
    if concat_part is not None:
        return f'{head}.concat.{_SUBLAYER[concat_part]}.{leaf}'
    return f'{head}.ese.{fc}.{leaf}'


def _counted(name: str) -> bool:
    # BatchNorm's step counter is not a weight; DD3D's frozen BN does not even save it
    return not name.endswith('num_batches_tracked')


def attach_published_key_loading(backbone: nn.Module, allow_partial: bool) -> None:
    """Rename published keys on load, log ``backbone: N of M tensors loaded``, fail below M."""

    def hook(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
             error_msgs):
        renamed = 0
        for key in [k for k in state_dict if k.startswith(prefix)]:
            new = published_to_kit(key[len(prefix):])
            if new is not None:
                state_dict[prefix + new] = state_dict.pop(key)
                renamed += 1
        own = {n: t for n, t in module.state_dict().items() if _counted(n)}
        loaded = [n for n, t in own.items() if prefix + n in state_dict
                  and tuple(state_dict[prefix + n].shape) == tuple(t.shape)]
        name = prefix.rstrip('.') or type(module).__name__
        note = f' ({renamed} renamed from the published VoVNet naming)' if renamed else ''
        print_log(f'{name}: {len(loaded)} of {len(own)} tensors loaded{note}', logger='current')
        if len(loaded) < len(own) and not allow_partial:
            absent = [n for n in own if n not in set(loaded)]
            raise ValueError(
                f'{name}: the checkpoint covers {len(loaded)} of {len(own)} backbone tensors '
                f'(missing or wrong shape, e.g. {absent[:3]}); the backbone would stay partly '
                f'random. Check the checkpoint and its key prefix (expected {prefix!r}), or set '
                'allow_partial_weights=True on the backbone to load it anyway.')

    backbone._register_load_state_dict_pre_hook(hook, with_module=True)
