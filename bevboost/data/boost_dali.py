"""The ``dali`` boost: the fast loader decoding with NVIDIA DALI (``mixed`` on CUDA)."""
from __future__ import annotations

from typing import Any

from mmengine.config import Config

from bevboost.boosts import Boost, BoostCard, register_boost
from bevboost.data.boost_fast_decode import FastDecodeBoost, apply_fast_decode, verify_fast_loader


@register_boost
class DaliBoost(Boost):
    card = BoostCard(
        name='dali',
        contract_model='camera', fragment='dali.py',
        docs='docs/data.md#decoding-where-cuda-lives-main-process-decode',
        summary=('decode camera JPEGs with NVIDIA DALI: mixed (GPU) in the '
                              'training process on CUDA, CPU DALI in the workers elsewhere'),
        changes=FastDecodeBoost.card.changes,
        expected_effect=('offloads decode to the GPU (mixed); CPU DALI is no faster than '
                         'fast-decode'),
        exact=False, requires=('nvidia.dali',), order=21, strategies=('*',))

    def apply(self, cfg: Config, **options: Any) -> None:
        apply_fast_decode(cfg, backend='dali', decode=options.get('decode', 'auto'))

    def verify(self, runner: Any, **options: Any) -> str:
        return verify_fast_loader(runner, backend='dali')
