"""A toy task with a real CPU data pipeline, for the bench's own tests.

``ToyDecode`` burns a fixed amount of CPU per sample (like image decoding) so
stall, worker CPU and per-stage timings have something to measure without
any dataset on disk. :func:`toy_bench_config` is what tests and the
benchmark suite run ``bevboost bench`` on.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from mmengine.registry import TRANSFORMS

from bevboost.testing.toy import toy_config


@TRANSFORMS.register_module()
class ToyDecode:
    """Spend ``work`` iterations of float math per sample, then pass it on."""

    def __init__(self, work: int = 200, size: int = 64) -> None:
        if work < 0 or size < 1:
            raise ValueError(f'work must be >= 0 and size >= 1, got {work!r}, {size!r}')
        self.work = work
        self.size = size

    def __call__(self, results: dict) -> dict:
        buf = np.full((self.size, self.size), 0.5, dtype=np.float32)
        for _ in range(self.work // 10):
            buf = np.tanh(buf @ buf * 1e-2)
        results['inputs'] = results['inputs'] + torch.from_numpy(buf[0, :1]) * 0
        return results


def toy_bench_config(work_dir: str | Path, *, decode_work: int = 200, num_workers: int = 0,
                     max_iters: int = 20, batch_size: int = 4) -> dict:
    """Toy regression config whose loader runs ``ToyDecode`` per sample."""
    cfg = toy_config(str(work_dir), max_iters=max_iters, batch_size=batch_size,
                     num_samples=64, lr=0.01)
    cfg['train_dataloader'].update(
        num_workers=num_workers, persistent_workers=False)
    cfg['train_dataloader']['dataset']['pipeline'] = [dict(type='ToyDecode', work=decode_work)]
    cfg['custom_imports'] = dict(imports=['bevboost.testing.toy',
                                          'bevboost.bench.toy'],
                                 allow_failed_imports=False)
    return cfg


def write_toy_bench_config(path: str | Path, **kwargs) -> Path:
    """Write :func:`toy_bench_config` as an mmengine config file."""
    from mmengine.config import Config
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = toy_bench_config(str(path.parent / 'work_dirs'), **kwargs)
    Config(cfg).dump(str(path))
    return path
