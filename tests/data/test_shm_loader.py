"""Shared-memory ring loader: batches as torch's DataLoader gives them, zero-copy, lifecycle."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate

from bevboost.data.shm_loader import ShmRingLoader

ROOT = Path(__file__).parents[2]
PARENT = os.getpid()


class Toy:
    """uint8 multi-view images; ``die_at`` SIGKILLs the ring worker that loads that index."""

    def __init__(self, n: int = 12, sleep: float = 0.0, die_at: int | None = None) -> None:
        self.n, self.sleep, self.die_at = n, sleep, die_at

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        if i == self.die_at and os.getpid() != PARENT:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(self.sleep)
        return {'inputs': {'img': torch.full((2, 3, 8, 16), i, dtype=torch.uint8)},
                'data_samples': {'idx': i}}


class Jpegs(Toy):
    """Encoded-bytes payload: a list of variable-length ``bytes`` per sample."""

    def __getitem__(self, i: int) -> dict:
        views = [bytes([i, v]) * (50 + 7 * i + v) for v in range(3)]
        return {'inputs': {'img': views}, 'data_samples': {'idx': i}}


class EncodedInMetainfo(Toy):
    """What ``FastLoadMultiViewImageFromFiles(decode='main')`` + ``Pack3DDetInputs`` give."""

    def __getitem__(self, i: int) -> dict:
        from mmengine.structures import BaseDataElement
        blobs = [bytes([i, v]) * (40 + 5 * i + v) for v in range(2)]
        sample = BaseDataElement(metainfo=dict(img_jpeg=dict(blobs=blobs, plans=[i, i])))
        return {'inputs': {}, 'data_samples': sample}


def _ring_mappers(marker: str) -> set[int]:
    """PIDs of live processes mapping a ring whose memfd name contains ``marker``."""
    found = set()
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/maps') as f:
                if marker in f.read():
                    found.add(int(entry))
        except OSError:  # gone, or not ours
            pass
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie holds no memory and no mapping)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def _wait_gone(pids, marker: str, within: float = 5.0) -> tuple[set, set]:
    deadline = time.monotonic() + within
    while True:
        alive, mappers = {p for p in pids if _alive(p)}, _ring_mappers(marker)
        if (not alive and not mappers) or time.monotonic() > deadline:
            return alive, mappers
        time.sleep(0.1)


def test_encoded_bytes_in_a_data_samples_metainfo_travel_through_the_ring():
    with ShmRingLoader(EncodedInMetainfo(5), batch_size=2, num_workers=2) as loader:
        batches = list(loader)
        lo, hi = loader._ring.ctypes.data, loader._ring.ctypes.data + loader._ring.nbytes
    reference = list(torch.utils.data.DataLoader(EncodedInMetainfo(5), batch_size=2,
                                                 collate_fn=pseudo_collate))
    for ours, ref in zip(batches, reference, strict=True):
        for s_ours, s_ref in zip(ours['data_samples'], ref['data_samples'], strict=True):
            assert s_ours.img_jpeg['plans'] == s_ref.img_jpeg['plans']
            for got, want in zip(s_ours.img_jpeg['blobs'], s_ref.img_jpeg['blobs'], strict=True):
                assert isinstance(got, np.ndarray) and lo <= got.ctypes.data < hi
                assert got.tobytes() == want


def test_a_sample_without_any_payload_path_is_a_clear_error():
    class NoImages(Toy):
        def __getitem__(self, i):
            return {'inputs': {'points': torch.zeros(3)}}
    with pytest.raises(ValueError, match='payload_keys'):
        iter(ShmRingLoader(NoImages(2), batch_size=1, num_workers=1))


@pytest.mark.parametrize('dataset', [Toy(10), Jpegs(7)], ids=['uint8', 'encoded-bytes'])
def test_batches_equal_torch_dataloader_and_are_ring_views(dataset):
    reference = list(torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=0,
                                                 collate_fn=pseudo_collate))
    with ShmRingLoader(dataset, batch_size=3, num_workers=2) as loader:
        assert len(loader) == len(reference)
        for _ in range(2):  # two epochs reuse the ring
            for ours, ref in zip(loader, reference, strict=True):
                assert ours['data_samples'] == ref['data_samples']
                flat = [ours['inputs']['img']]
                ref_flat = [ref['inputs']['img']]
                while isinstance(flat[0], (list, tuple)):  # pseudo_collate: views x samples
                    flat = [x for sub in flat for x in sub]
                    ref_flat = [x for sub in ref_flat for x in sub]
                ring_lo = loader._ring.ctypes.data
                ring_hi = ring_lo + loader._ring.nbytes
                for got, want in zip(flat, ref_flat, strict=True):
                    want = np.frombuffer(want, np.uint8) if isinstance(want, bytes) else want
                    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
                    ptr = got.data_ptr() if isinstance(got, torch.Tensor) else got.ctypes.data
                    assert ring_lo <= ptr < ring_hi  # a view of the ring, not a copy


def test_ring_has_no_name_and_only_this_process_tree_maps_it():
    loader = ShmRingLoader(Toy(4), batch_size=2, num_workers=1)
    it = iter(loader)
    next(it)
    marker = f'bevboost-ring-{os.getpid()}'
    assert not [p for p in os.listdir('/dev/shm') if p.startswith('bevboost')]
    assert _ring_mappers(marker) == {os.getpid(), *loader.worker_pids}
    loader.close()
    assert _ring_mappers(marker) == set()


def test_killed_worker_raises_and_leaks_nothing():
    loader = ShmRingLoader(Toy(8, die_at=5), batch_size=2, num_workers=2, timeout=0.5)
    with pytest.raises(RuntimeError, match=r'died: \[\(\d, -9\)\]'):
        list(loader)
    loader.close()
    assert _ring_mappers(f'bevboost-ring-{os.getpid()}') == set()


def test_worker_exception_carries_the_worker_traceback():
    class Bad(Toy):
        def __getitem__(self, i):
            if i == 3:
                return self.load_broken_annotation(i)
            return super().__getitem__(i)

        def load_broken_annotation(self, i):
            raise KeyError(f'boom {i}')

    loader = ShmRingLoader(Bad(6), batch_size=2, num_workers=1)
    with pytest.raises(RuntimeError) as info:
        list(loader)
    text = str(info.value)
    assert 'batch [2, 3]' in text and 'Traceback (most recent call last)' in text
    assert 'in load_broken_annotation' in text and "KeyError: 'boom 3'" in text
    assert loader.worker_pids == []  # the failed iterator stopped its workers
    loader.close()


def test_second_iterator_closes_the_first():
    with ShmRingLoader(Toy(12, sleep=0.01), batch_size=2, num_workers=2) as loader:
        first = iter(loader)
        next(first)
        old_pids = loader.worker_pids
        second = iter(loader)
        assert not any(_alive(p) for p in old_pids)  # one live worker set per loader
        with pytest.raises(RuntimeError, match='newer iter'):
            next(first)
        seen = [i for batch in second for i in batch['data_samples']['idx']]
        assert seen == list(range(12))


def test_close_stops_a_live_iterator():
    loader = ShmRingLoader(Toy(100, sleep=0.01), batch_size=2, num_workers=2)
    it = iter(loader)
    next(it)
    pids = loader.worker_pids
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    loader.close()
    assert not any(_alive(p) for p in pids)
    with pytest.raises(RuntimeError, match='was closed'):
        next(it)


CHILD = '''
import os, sys, time, torch
sys.path.insert(0, {root!r})
from bevboost.data.shm_loader import ShmRingLoader
class Slow:
    def __len__(self): return 10 ** 6
    def __getitem__(self, i):
        time.sleep(0.02)
        return {{'inputs': {{'img': torch.zeros(2, 3, 64, 64, dtype=torch.uint8)}}}}
loader = ShmRingLoader(Slow(), batch_size=2, num_workers=2)
for i, _ in enumerate(loader):
    if i == 2:
        print(' '.join(map(str, loader.worker_pids)), flush=True)
'''


@pytest.mark.parametrize('sig', [signal.SIGKILL, signal.SIGTERM, signal.SIGINT],
                         ids=['SIGKILL', 'SIGTERM', 'SIGINT'])
def test_main_process_death_leaves_no_worker_and_no_mapping(tmp_path, sig):
    script = tmp_path / 'run.py'
    script.write_text(textwrap.dedent(CHILD.format(root=str(ROOT))))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
        marker = f'bevboost-ring-{proc.pid}'
        assert len(workers) == 2 and _ring_mappers(marker) == {proc.pid, *workers}
        proc.send_signal(sig)
        proc.wait(timeout=20)
        alive, mappers = _wait_gone(workers, marker)
        assert alive == set() and mappers == set()
    finally:
        proc.kill()
        proc.wait()


def test_bad_arguments():
    with pytest.raises(ValueError, match='batch_size'):
        ShmRingLoader(Toy(), batch_size=0)
    with pytest.raises(ValueError, match='num_workers'):
        ShmRingLoader(Toy(), num_workers=0)
    with pytest.raises(ValueError, match='slots'):
        ShmRingLoader(Toy(), slots=1)
    with ShmRingLoader(Toy(4), batch_size=2, num_workers=1, slot_mib=0.0001) as loader:
        with pytest.raises(RuntimeError, match='slot_mib'):
            list(loader)


class _PidSpy:
    """A hook that records the ring's worker PIDs during training; ``fail_at`` raises there."""

    def __new__(cls, fail_at: int | None = None):
        from mmengine.hooks import Hook

        class Spy(Hook):
            pids: set = set()

            def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
                self.pids |= set(runner.train_loop.dataloader.worker_pids)
                if batch_idx == fail_at:
                    raise RuntimeError('step failed')
        spy = Spy()
        spy.pids = set()
        return spy


@pytest.mark.parametrize('fail_at', [None, 2], ids=['finishes', 'raises'])
def test_iteration_based_runner_closes_its_ring_loader(tmp_path, fail_at):
    from bevboost.data.runner import ShmRingRunner
    from bevboost.testing.toy import toy_config
    cfg = toy_config(str(tmp_path), batch_size=4, max_iters=5)
    cfg['train_dataloader'].update(num_workers=2, collate_fn=dict(type='pseudo_collate'),
                                   shm_ring=dict(payload_keys=[('inputs',)]))
    spy = _PidSpy(fail_at)
    cfg['custom_hooks'] = [spy]
    runner = ShmRingRunner(**cfg)
    if fail_at is None:
        runner.train()
    else:
        with pytest.raises(RuntimeError, match='step failed'):
            runner.train()
    loader = runner.train_loop.dataloader
    assert isinstance(loader, ShmRingLoader) and len(spy.pids) == 2
    assert not any(_alive(p) for p in spy.pids) and loader.worker_pids == []
    assert _ring_mappers(f'bevboost-ring-{os.getpid()}') == set()


@pytest.mark.mmdet3d
def test_tiny_petrv2_trains_with_main_process_decode_through_the_ring(tmp_path):
    """fast-decode, decode='main' ('auto' on CUDA), + shm: the JPEG bytes ride the ring."""
    from mmengine.hooks import Hook

    from bevboost.boosts import apply_boosts
    from bevboost.data.main_decode import MainProcessDecodePreprocessor
    from bevboost.synth import synthesize_nuscenes
    from bevboost.runner_utils import build_runner
    from tests.petr.conftest import TINY_CONFIG, tiny_config
    root = synthesize_nuscenes(tmp_path / 'nus', scenes=2, samples_per_scene=2,
                               image_size=(128, 352))
    (tmp_path / 'work').mkdir()
    cfg = tiny_config(root, tmp_path / 'work', max_iters=3, config=TINY_CONFIG, num_workers=2)
    cfg = apply_boosts(cfg, {'fast-decode': dict(backend='cpu', decode='main'), 'shm': {}})
    cfg.train_cfg.val_interval = 10 ** 9
    seen = []

    class BlobSpy(Hook):
        def before_train_iter(self, runner, batch_idx, data_batch=None):
            ring = runner.train_dataloader._ring
            blob = data_batch['data_samples'][0].img_jpeg['blobs'][0]
            seen.append(isinstance(blob, np.ndarray)
                        and ring.ctypes.data <= blob.ctypes.data < ring.ctypes.data + ring.nbytes)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runner = build_runner(cfg)
        runner.register_hook(BlobSpy())
        runner.train()
    finally:
        torch.set_num_threads(before)
    assert isinstance(runner.train_dataloader, ShmRingLoader) and seen == [True] * 3
    assert isinstance(runner.model.data_preprocessor, MainProcessDecodePreprocessor)
    losses = np.asarray(runner.message_hub.get_scalar('train/loss').data[0], np.float64)
    assert len(losses) == 3 and np.isfinite(losses).all()
