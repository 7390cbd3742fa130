"""``loader``: persistent workers, pinned memory (CUDA only) and prefetch depth for training.

Worker processes that survive the epoch end skip re-forking and re-importing
the dataset every epoch; pinned host memory lets ``.cuda(non_blocking=True)``
copy asynchronously; ``prefetch_factor`` sets how many batches each worker
keeps ready. All are torch DataLoader options mmengine passes through, and
all three need worker processes: with ``num_workers=0`` the boost refuses.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from mmengine.config import Config

from bevboost.boosts import Boost, BoostCard, BoostNotInEffect, register_boost
from bevboost.compute._common import log

LOADER_KEY = 'train_dataloader'
#: key the shm boost sets on the loader config (bevboost.data.runner.SHM_KEY)
SHM_KEY = 'shm_ring'


def _count(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool):
        raise TypeError(f'loader: {name} must be an integer, got {value!r}')
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise TypeError(f'loader: {name} must be an integer, got {value!r}') from None
    if out < low:
        raise ValueError(f'loader: {name} must be >= {low}, got {value!r}')
    return out


def resolve_pin_memory(pin_memory: bool | str) -> bool:
    """``'auto'``: pin when a CUDA device exists; asking for it without one is logged, not done."""
    if pin_memory not in ('auto', True, False):
        raise ValueError(f"loader: pin_memory must be 'auto', True or False, got {pin_memory!r}")
    if pin_memory is False:
        return False
    if torch.cuda.is_available():
        return True
    log('loader: pin_memory left off: no CUDA device here (pinned host memory only speeds up '
        'host-to-GPU copies)', logging.WARNING if pin_memory is True else logging.INFO)
    return False


def apply_loader(cfg: Config, num_workers: int | str | None = None,
                 persistent_workers: bool = True, pin_memory: bool | str = 'auto',
                 prefetch_factor: int | str | None = None) -> None:
    """Set the worker options of ``train_dataloader``.

    Args:
        num_workers: worker processes; default: the config's own.
        persistent_workers: keep workers alive across epochs.
        pin_memory: ``'auto'`` (with CUDA only), True or False.
        prefetch_factor: batches each worker loads ahead; default: torch's (2).
    """
    loader = cfg.get(LOADER_KEY)
    if not isinstance(loader, dict):
        raise ValueError(f'loader: the config has no {LOADER_KEY} dict to change')
    if SHM_KEY in loader:
        log('loader: not applied: the shm boost replaces torch\'s DataLoader with the shm ring '
            'loader, which has its own workers and slots and ignores these options',
            logging.WARNING)
        return
    workers = _count('num_workers', loader.get('num_workers', 0) if num_workers is None
                     else num_workers, 0)
    if workers == 0:
        raise ValueError(f'loader: {LOADER_KEY}.num_workers is 0; persistent_workers and '
                         'prefetch_factor need worker processes (torch rejects them without). '
                         'Pass loader=N to train with N workers.')
    if not isinstance(persistent_workers, bool):
        raise TypeError(f'loader: persistent_workers must be True or False, '
                        f'got {persistent_workers!r}')
    loader.num_workers = workers
    loader.persistent_workers = persistent_workers
    loader.pin_memory = resolve_pin_memory(pin_memory)
    if prefetch_factor is not None:
        loader.prefetch_factor = _count('prefetch_factor', prefetch_factor, 1)


@register_boost
class LoaderBoost(Boost):
    card = BoostCard(
        name='loader',
        contract_options=dict(num_workers=1, prefetch_factor=3), fragment='loader.py',
        docs='docs/compute.md#the-cards',
        summary='train loader with persistent workers, pinned memory (CUDA only) and a chosen '
                'prefetch depth; loader=N also sets N workers',
        changes=(f'{LOADER_KEY}.num_workers', f'{LOADER_KEY}.persistent_workers',
                 f'{LOADER_KEY}.pin_memory', f'{LOADER_KEY}.prefetch_factor'),
        expected_effect='no re-fork stall at epoch starts; asynchronous host-to-GPU copies '
                        '(unmeasured here); same batches when num_workers is unchanged',
        exact=True, order=35, strategies=('*',))  # after shm, to see that it replaced the loader
    primary_option = 'num_workers'

    def apply(self, cfg: Config, **options: Any) -> None:
        apply_loader(cfg, **options)

    def verify(self, runner: Any, **options: Any) -> str:
        loader = runner.train_dataloader
        if type(loader).__name__ == 'ShmRingLoader':
            return 'not applied: the shm ring loader replaces the DataLoader (see shm)'
        if not isinstance(loader, torch.utils.data.DataLoader):
            raise BoostNotInEffect(f'loader: the train loader is a {type(loader).__name__}, '
                                   'not a torch DataLoader; its worker options do not apply')
        want_persistent = options.get('persistent_workers', True)
        if loader.num_workers == 0 or loader.persistent_workers != want_persistent:
            raise BoostNotInEffect(f'loader: num_workers={loader.num_workers}, '
                                   f'persistent_workers={loader.persistent_workers}')
        if loader.pin_memory and not torch.cuda.is_available():
            raise BoostNotInEffect('loader: pin_memory is on without a CUDA device')
        prefetch = options.get('prefetch_factor')
        if prefetch is not None and loader.prefetch_factor != int(prefetch):
            raise BoostNotInEffect(f'loader: prefetch_factor={loader.prefetch_factor}, '
                                   f'asked for {prefetch}')
        return (f'DataLoader num_workers={loader.num_workers} persistent_workers='
                f'{loader.persistent_workers} pin_memory={loader.pin_memory} '
                f'prefetch_factor={loader.prefetch_factor}')
