"""Shared-memory ring loader: order, zero-copy, no /dev/shm leaks, worker death."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from bevboost.data.shm_loader import ShmRingLoader


class Toy:
    def __init__(self, n: int = 12, sleep: float = 0.0, die_at: int | None = None) -> None:
        self.n, self.sleep, self.die_at = n, sleep, die_at

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        if i == self.die_at and torch.utils.data.get_worker_info() is None and os.getpid() != PARENT:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(self.sleep)
        return {'inputs': {'img': torch.full((2, 3, 8, 16), i, dtype=torch.uint8)},
                'data_samples': {'idx': i}}


PARENT = os.getpid()


def _bevboost_shm() -> set[str]:
    return {p for p in os.listdir('/dev/shm') if p.startswith('bevboost')}


def test_batches_in_order_and_zero_copy():
    with ShmRingLoader(Toy(10), batch_size=4, num_workers=2) as loader:
        assert len(loader) == 3
        for _ in range(2):  # two epochs reuse the ring
            seen = []
            for batch in loader:
                imgs = batch['inputs']['img']
                assert imgs[0].dtype == torch.uint8
                base = imgs[0].untyped_storage().data_ptr()
                assert base == imgs[-1].untyped_storage().data_ptr()  # one shared buffer
                seen += [int(x[0, 0, 0, 0]) for x in imgs]
                assert seen[-len(imgs):] == list(batch['data_samples']['idx'])
            assert seen == list(range(10))


def test_ring_is_private_and_never_named():
    loader = ShmRingLoader(Toy(4), batch_size=2, num_workers=1)
    it = iter(loader)
    next(it)
    assert _bevboost_shm() == set()  # unlinked as soon as mapped
    loader.close()


def test_segment_mode_is_0600(monkeypatch):
    from multiprocessing import shared_memory
    modes = []
    real_unlink = shared_memory.SharedMemory.unlink

    def spy(self):
        modes.append(os.stat(f'/dev/shm/{self.name}').st_mode & 0o777)
        real_unlink(self)

    monkeypatch.setattr(shared_memory.SharedMemory, 'unlink', spy)
    with ShmRingLoader(Toy(2), batch_size=1, num_workers=1) as loader:
        list(loader)
    assert modes == [0o600]


def test_killed_worker_raises_and_leaks_nothing():
    loader = ShmRingLoader(Toy(8, die_at=5), batch_size=2, num_workers=2, timeout=0.5)
    with pytest.raises(RuntimeError, match='died'):
        list(loader)
    loader.close()
    assert _bevboost_shm() == set()


def test_worker_exception_names_the_batch():
    class Bad(Toy):
        def __getitem__(self, i):
            if i == 3:
                raise KeyError('boom')
            return super().__getitem__(i)
    with ShmRingLoader(Bad(6), batch_size=2, num_workers=1) as loader:
        with pytest.raises(RuntimeError, match=r"batch \[2, 3\].*boom"):
            list(loader)


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGKILL])
def test_interrupted_main_process_leaks_nothing(tmp_path, sig):
    script = tmp_path / 'run.py'
    script.write_text(textwrap.dedent(f'''
        import sys, time, torch
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        from bevboost.data.shm_loader import ShmRingLoader
        class Slow:
            def __len__(self): return 1000
            def __getitem__(self, i):
                time.sleep(0.05)
                return {{'inputs': {{'img': torch.zeros(2, 3, 64, 64, dtype=torch.uint8)}}}}
        with ShmRingLoader(Slow(), batch_size=2, num_workers=2) as loader:
            for i, _ in enumerate(loader):
                if i == 1:
                    print('running', flush=True)
    '''))
    before = _bevboost_shm()
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == 'running'
    proc.send_signal(sig)
    proc.wait(timeout=20)
    time.sleep(0.5)
    assert _bevboost_shm() - before == set()


def test_bad_arguments():
    with pytest.raises(ValueError, match='batch_size'):
        ShmRingLoader(Toy(), batch_size=0)
    with pytest.raises(ValueError, match='num_workers'):
        ShmRingLoader(Toy(), num_workers=0)
