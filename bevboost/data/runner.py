"""``ShmRingRunner``: an mmengine Runner that builds and closes ``ShmRingLoader`` dataloaders.

mmengine's ``Runner.build_dataloader`` always instantiates torch's DataLoader
from a config dict, so the shm loader is switched on by a runner whose
``build_dataloader`` honours ``dataloader.shm_ring = dict(slots=..., device=...)``.
The ``shm`` boost sets ``runner_type='ShmRingRunner'`` and that key.

An iteration-based loop never exhausts its loader, so the runner closes every
ring loader it built when ``train``/``val``/``test`` returns or raises: no
worker or mapping outlives the run.
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
                         diff_rank_seed: bool = False) -> ShmRingLoader:
    """Build like mmengine, then hand dataset, sampler, collate and worker seeding to the ring."""
    cfg = copy.deepcopy(dataloader)
    options = dict(cfg.pop(SHM_KEY) or {})
    num_workers = max(1, int(cfg.pop('num_workers', 2)))
    for key in ('persistent_workers', 'pin_memory', 'prefetch_factor'):
        cfg.pop(key, None)
    # built with the real worker count (never iterated) so mmengine's worker_init_fn
    # gets the num_workers it derives per-rank seeds from
    plain = Runner.build_dataloader(dict(cfg, num_workers=num_workers), seed=seed,
                                    diff_rank_seed=diff_rank_seed)
    return ShmRingLoader(plain.dataset, batch_size=plain.batch_size, num_workers=num_workers,
                         sampler=plain.sampler, collate_fn=plain.collate_fn,
                         drop_last=plain.drop_last, seed=seed or 0,
                         worker_init_fn=plain.worker_init_fn, **options)


@RUNNERS.register_module()
class ShmRingRunner(Runner):
    """Runner whose dataloaders with a ``shm_ring`` key use :class:`ShmRingLoader`."""

    @staticmethod
    def build_dataloader(dataloader: Any, seed: int | None = None,
                         diff_rank_seed: bool = False) -> Any:
        if isinstance(dataloader, dict) and SHM_KEY in dataloader:
            return build_shm_dataloader(dataloader, seed, diff_rank_seed)
        return Runner.build_dataloader(dataloader, seed=seed, diff_rank_seed=diff_rank_seed)

    def close_ring_loaders(self) -> None:
        """Stop the workers and unmap the rings of every loader this runner's loops hold."""
        from bevboost.seams.mmengine_runner import built_loops
        for loop in built_loops(self):
            loader = getattr(loop, 'dataloader', None)
            if isinstance(loader, ShmRingLoader):
                loader.close()

    def train(self) -> Any:
        try:
            return super().train()
        finally:
            self.close_ring_loaders()

    def val(self) -> Any:
        try:
            return super().val()
        finally:
            self.close_ring_loaders()

    def test(self) -> Any:
        try:
            return super().test()
        finally:
            self.close_ring_loaders()
