"""``ShmRingRunner``: an mmengine Runner that builds ``ShmRingLoader`` dataloaders.

mmengine's ``Runner.build_dataloader`` always instantiates torch's DataLoader
from a config dict, so the shm loader is switched on by a runner whose
``build_dataloader`` honours ``dataloader.shm_ring = dict(slots=..., device=...)``.
The ``shm`` boost sets ``runner_type='ShmRingRunner'`` and that key.
"""
from __future__ import annotations

import copy
from typing import Any

from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from bevboost.data.shm_loader import ShmRingLoader

#: dataloader config key carrying the ShmRingLoader options
SHM_KEY = 'shm_ring'


def build_shm_dataloader(dataloader: dict, seed: int | None = None,
                         diff_rank_seed: bool = False) -> Any:
    """Build like mmengine, then hand dataset, sampler and collate to the ring loader."""
    cfg = copy.deepcopy(dataloader)
    options = dict(cfg.pop(SHM_KEY) or {})
    num_workers = max(1, int(cfg.pop('num_workers', 2)))
    for key in ('persistent_workers', 'pin_memory', 'prefetch_factor'):
        cfg.pop(key, None)
    plain = Runner.build_dataloader(dict(cfg, num_workers=0), seed=seed,
                                    diff_rank_seed=diff_rank_seed)
    return ShmRingLoader(plain.dataset, batch_size=plain.batch_size, num_workers=num_workers,
                         sampler=plain.sampler, collate_fn=plain.collate_fn,
                         drop_last=plain.drop_last, seed=seed or 0, **options)


@RUNNERS.register_module()
class ShmRingRunner(Runner):
    """Runner whose dataloaders with a ``shm_ring`` key use :class:`ShmRingLoader`."""

    @staticmethod
    def build_dataloader(dataloader: Any, seed: int | None = None,
                         diff_rank_seed: bool = False) -> Any:
        if isinstance(dataloader, dict) and SHM_KEY in dataloader:
            return build_shm_dataloader(dataloader, seed, diff_rank_seed)
        return Runner.build_dataloader(dataloader, seed=seed, diff_rank_seed=diff_rank_seed)
