"""Camera data path: stock mmdet3d-style loading vs the kit, side by side in one run.

Run: ``pytest benchmarks/test_bench_data.py -s`` (a few minutes on 2 CPU cores).

* CPU time per camera image (``time.process_time``, medians over interleaved
  rounds, order alternating) against the real stock path: the model's own
  loader (mmdet3d's ``LoadMultiViewImageFromFiles`` from the wheel for PETR,
  BEVFusion's ``BEVLoadMultiViewImageFromFiles``; ``to_float32=True``) + its
  resize transform (PETR ``ResizeCropFlipImage`` at 320x800, BEVFusion
  ``ImageAug3D`` at 256x704); the ``projects/`` classes from an mmdetection3d
  checkout with ``MMDET3D_ROOT``, else their step-for-step stand-ins in
  ``tests/data/stock_aug.py``; train and test. Kit paths, as the
  ``fast-decode`` boost rewrites the pair: full decode (folded), reduced
  decode (accuracy-trading), the main-process decode split into its worker and
  main (CPU form) sides; and the floor, a bare reduced decode (read each file,
  libjpeg-turbo at the kit's DCT scale, nothing else). Goals: >= 8x less CPU
  per image with reduced decode, train included; the kit <= 1.3x the bare
  decode. Also the bytes per sample crossing the worker boundary and cores per GPU.
* Loader where transfer matters: ``ShmRingLoader`` vs torch's ``DataLoader``
  (2 workers, mmengine's ``pseudo_collate``) on uint8 320x800 x 12 views with
  a negligible decode and on the 12 views' JPEG bytes: samples per CPU-second
  (main process + workers, ``getrusage``) and wall samples/s, interleaved
  rounds. Goal: >= 1.3x. And the decode-bound case (the kit's decode in the
  workers, fixed 25 ms fake compute step), where the ring cannot help: a guard.
"""
from __future__ import annotations

import copy
import logging
import pickle
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bevboost.data.shm_loader import ShmRingLoader
from bevboost.synth import synthesize_nuscenes
from bevboost.data.transforms import FastLoadMultiViewImageFromFiles

logger = logging.getLogger(__name__)
FINAL = (320, 800)
ROUNDS = 5
COMPUTE_S = 0.025


@pytest.fixture(scope='module')
def samples(tmp_path_factory) -> list[dict]:
    root = synthesize_nuscenes(tmp_path_factory.mktemp('bench_nus'), scenes=2,
                               samples_per_scene=3, lidar_sweeps=0)
    with open(root / 'nuscenes_infos_train.pkl', 'rb') as f:
        infos = pickle.load(f)['data_list']
    return [dict(token=i['token'],
                 images={c: dict(v, img_path=str(root / 'samples' / c / v['img_path']))
                         for c, v in i['images'].items()}) for i in infos]


#: the models' own resize/crop transforms, as their configs set them (train, test)
STOCK_AUGS = {
    'petrv2-320x800': {
        train: dict(type='ResizeCropFlipImage', training=train, data_aug_conf=dict(
            resize_lim=(0.47, 0.625), final_dim=(320, 800), bot_pct_lim=(0.0, 0.0),
            rot_lim=(0.0, 0.0), H=900, W=1600, rand_flip=True)) for train in (True, False)},
    'bevfusion-256x704': {
        train: dict(type='ImageAug3D', final_dim=(256, 704),
                    resize_lim=(0.38, 0.55) if train else (0.48, 0.48), bot_pct_lim=(0.0, 0.0),
                    rot_lim=(-5.4, 5.4) if train else (0.0, 0.0), rand_flip=train,
                    is_train=train) for train in (True, False)},
}
#: stock CPU-ms / reduced-decode CPU-ms must stay above these: 0.8x the lowest speedup measured
#: on a 2-core CPU in any run, full `pytest benchmarks` runs included, which measure lower than
#: this file alone (docs/data.md: 6.3x, 8.8x, 5.3x, 7.5x). The goal, >= 8x with training
#: included, is met only at test time on this CPU (see docs/data.md for why)
MIN_SPEEDUP = {('petrv2-320x800', 'train'): 5.0, ('petrv2-320x800', 'test'): 7.0,
               ('bevfusion-256x704', 'train'): 4.2, ('bevfusion-256x704', 'test'): 6.0}
#: the same for the worker side of main-process decode: measured 168x-290x with this file run
#: alone, 130x and 141x (BEVFusion train, its first case) in full `pytest benchmarks` runs, after
#: the compute benchmarks in the same process; a ~0.1 ms path moves with the process's state
MIN_WORKER_SIDE_SPEEDUP = 104.0
#: the pixel tolerance of reduced decode vs the stock chain (held in tests/data/test_fold.py)
TOLERANCE = 'every view: mean |diff| <= 1.0 grey levels, p99 <= 8'
STEP_S = 0.5  # a training step to feed, for the cores-per-GPU figure
IMAGES_PER_GPU_STEP = {'petrv2-320x800': 12, 'bevfusion-256x704': 4 * 6}  # 1 x 6 cams x 2 frames


#: the stock loader each model's config uses
STOCK_LOADERS = {'petrv2-320x800': 'LoadMultiViewImageFromFiles',
                 'bevfusion-256x704': 'BEVLoadMultiViewImageFromFiles'}
#: kit CPU-ms / bare reduced decode CPU-ms (read + libjpeg-turbo at the kit's DCT scale, nothing
#: else): the goal is <= 1.3x. Held as the decode's share of the kit's CPU (bare / kit), which
#: must stay above 0.8x the lowest median share measured in nine runs of this file on a 2-core
#: CPU (kit 1.23x, 1.03x, 1.31x, 1.19x bare; docs/data.md)
MIN_DECODE_SHARE = {('petrv2-320x800', 'train'): 0.65, ('petrv2-320x800', 'test'): 0.77,
                    ('bevfusion-256x704', 'train'): 0.61, ('bevfusion-256x704', 'test'): 0.67}


def stock_chain(model: str, aug_cfg: dict):
    """The model's stock loader (mmdet3d's from the wheel, or BEVFusion's from the checkout /
    its stand-in; ``to_float32=True`` as configs use it) + the model's own resize transform."""
    from mmdet3d.datasets.transforms import LoadMultiViewImageFromFiles
    from tests.data.stock_aug import stock_transform
    if STOCK_LOADERS[model] == 'LoadMultiViewImageFromFiles':
        load = LoadMultiViewImageFromFiles(to_float32=True, num_views=6)
    else:
        load = stock_transform(STOCK_LOADERS[model])(to_float32=True, color_type='color')
    aug = stock_transform(aug_cfg['type'])(**{k: v for k, v in aug_cfg.items() if k != 'type'})
    return lambda results: aug(load(results))


def kit_chain(model: str, aug_cfg: dict, **options):
    """What the fast-decode boost makes of the same pair (``rewrite_pipeline``), built."""
    from mmengine.dataset import Compose
    from bevboost.data.fold import rewrite_pipeline
    pipe = [dict(type=STOCK_LOADERS[model], to_float32=True), dict(aug_cfg)]
    rewrite_pipeline(pipe, dict(backend='cpu', **options))
    assert [p['type'] for p in pipe] == ['FastLoadMultiViewImageFromFiles'], pipe
    return Compose(pipe)


def bare_decode(model: str, aug_cfg: dict):
    """Read each file and decode it at the DCT scale the kit picks for the largest resize
    the transform can draw (1/2 for these configs), nothing more: the floor."""
    import simplejpeg
    from bevboost.data.decode import reduction_for
    from bevboost.data.fold import fold_options
    opts = fold_options(aug_cfg)
    colorspace = 'RGB' if STOCK_LOADERS[model].startswith('BEV') else 'BGR'

    def decode(results: dict) -> dict:
        imgs = []
        for cam in results['images'].values():
            with open(cam['img_path'], 'rb') as f:
                data = f.read()
            h, w = simplejpeg.decode_jpeg_header(data)[:2]
            fh, fw = opts['final_dim']
            top = max(opts['resize_lim']) if opts['resize_lim'] else max(fh / h, fw / w)
            d = reduction_for((h, w), (int(h * top), int(w * top)), 1.25)
            imgs.append(simplejpeg.decode_jpeg(data, colorspace=colorspace,
                                               min_height=-(-h // d), min_width=-(-w // d)))
        return dict(img=imgs)
    return decode


def _cpu_ms_per_image(fn, samples: list[dict]) -> float:
    t0 = time.process_time()
    n = 0
    for s in samples:
        out = fn(copy.deepcopy(s))
        n += len(out['img_jpeg']['blobs'] if 'img_jpeg' in out else out['img'])
    return (time.process_time() - t0) * 1e3 / n


def _paths(model: str, aug_cfg: dict) -> dict:
    from bevboost.data.main_decode import BatchDecoder
    worker_side = kit_chain(model, aug_cfg, decode='main')
    decoder = BatchDecoder('cpu')

    def main_cpu_form(results):  # what the training process does per sample without a GPU
        job = results['img_jpeg']
        return dict(img=decoder(job['blobs'], job['plans'], torch.device('cpu'),
                                job['channel_order'], job['max_upsample']))
    full = kit_chain(model, aug_cfg, decode='worker')
    full.transforms[0].dct_scaling, full.transforms[0].max_upsample = False, 1.0
    return {
        'stock (exact)': stock_chain(model, aug_cfg),
        'kit full decode': full,
        'kit reduced decode': kit_chain(model, aug_cfg, decode='worker'),
        'bare reduced decode': bare_decode(model, aug_cfg),
        'main-decode, worker side': worker_side,
        'main-decode, main side (CPU form)': lambda r: main_cpu_form(worker_side(r)),
    }


@pytest.mark.mmdet3d
@pytest.mark.parametrize('phase', ['train', 'test'])
@pytest.mark.parametrize('model', sorted(STOCK_AUGS))
def test_cpu_ms_per_image_vs_stock(samples, benchmark, model, phase):
    """CPU-ms per camera image, every path side by side in interleaved rounds."""
    paths = _paths(model, STOCK_AUGS[model][phase == 'train'])
    for fn in paths.values():
        _cpu_ms_per_image(fn, samples[:1])  # warm-up
    ms = {name: [] for name in paths}
    for r in range(ROUNDS):
        for name in (list(paths) if r % 2 == 0 else list(paths)[::-1]):  # order alternating
            ms[name].append(_cpu_ms_per_image(paths[name], samples))
    med = {name: statistics.median(v) for name, v in ms.items()}
    spread = {name: max(v) - min(v) for name, v in ms.items()}
    # per round, side by side: the kit's CPU over the bare decode's
    over_bare = [k / b for k, b in zip(ms['kit reduced decode'], ms['bare reduced decode'])]
    over_bare_med = statistics.median(over_bare)
    benchmark.pedantic(paths['kit reduced decode'], args=(copy.deepcopy(samples[0]),),
                       rounds=3, iterations=1)
    speedup = med['stock (exact)'] / med['kit reduced decode']
    cores = {name: med[name] * IMAGES_PER_GPU_STEP[model] / (STEP_S * 1e3) for name in med}
    benchmark.extra_info.update(cpu_ms_per_image=med, spread_ms=spread, speedup=speedup,
                                kit_over_bare_decode=dict(median=over_bare_med,
                                                          low=min(over_bare),
                                                          high=max(over_bare)),
                                cores_per_gpu_at_step_s=dict(step_s=STEP_S, **cores),
                                reduced_decode_tolerance=TOLERANCE)
    for name in paths:
        logger.warning('%s %s: %-34s %7.2f CPU-ms/image (spread %.2f) %6.1fx  %.2f cores/GPU '
                       'at %.1f s/step', model, phase, name, med[name], spread[name],
                       med['stock (exact)'] / med[name], cores[name], STEP_S)
    logger.warning('%s %s: kit / bare reduced decode %.2fx (rounds %.2f-%.2f)', model, phase,
                   over_bare_med, min(over_bare), max(over_bare))
    assert speedup >= MIN_SPEEDUP[(model, phase)], f'{model} {phase}: {speedup:.1f}x'
    worker_side = med['stock (exact)'] / med['main-decode, worker side']
    assert worker_side >= MIN_WORKER_SIDE_SPEEDUP, f'{model} {phase}: {worker_side:.0f}x'
    # full decode still folds the resize (no float32, no PIL): it must beat the stock path too
    assert med['kit full decode'] < med['stock (exact)']
    floor = MIN_DECODE_SHARE[(model, phase)]
    assert 1 / over_bare_med >= floor, (
        f'{model} {phase}: kit {over_bare_med:.2f}x a bare decode; floor {1 / floor:.2f}x')


@pytest.mark.mmdet3d
@pytest.mark.parametrize('model', sorted(STOCK_AUGS))
def test_bytes_per_sample_across_the_worker_boundary(samples, benchmark, model):
    """Pickled image payload of one sample, as a DataLoader worker sends it."""
    paths = _paths(model, STOCK_AUGS[model][True])
    sizes = {}
    for name, key in (('stock (exact)', 'float32'), ('kit reduced decode', 'uint8'),
                      ('main-decode, worker side', 'encoded')):
        out = paths[name](copy.deepcopy(samples[0]))
        sizes[key] = len(pickle.dumps(out.get('img_jpeg', out.get('img')), protocol=5))
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    benchmark.extra_info.update(bytes_per_sample=sizes)
    logger.warning('%s bytes/sample across the worker boundary: %s', model,
                   ', '.join(f'{k} {v / 2**20:.2f} MiB' for k, v in sizes.items()))
    assert abs(sizes['float32'] / sizes['uint8'] - 4) < 0.05
    assert sizes['encoded'] < sizes['uint8']


class CameraDataset:
    """Kit transform + multi-view uint8 tensor, cycled to ``length`` samples."""

    def __init__(self, samples: list[dict], length: int) -> None:
        self.samples, self.length = samples, length
        self.load = FastLoadMultiViewImageFromFiles(final_dim=FINAL)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        out = self.load(dict(self.samples[i % len(self.samples)]))
        return {'inputs': {'img': torch.from_numpy(np.stack(out['img']))}, 'idx': i}


def _run(loader) -> tuple[float, float]:
    waits, n = [], 0
    start = time.perf_counter()
    it = iter(loader)
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            break
        waits.append(time.perf_counter() - t0)
        imgs = batch['inputs']['img']
        n += len(imgs)
        time.sleep(COMPUTE_S)  # fixed fake compute step (a GPU leaves the CPU idle)
    elapsed = time.perf_counter() - start
    return n / elapsed, statistics.median(waits[1:]) * 1e3  # first batch is start-up


def test_loader_throughput_and_wait(samples, benchmark):
    ds = CameraDataset(samples, 48)
    torch_loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    shm_loader = ShmRingLoader(ds, batch_size=2, num_workers=2)
    res = {'torch': [], 'shm': []}
    try:
        for _ in range(3):
            res['torch'].append(_run(torch_loader))
            res['shm'].append(_run(shm_loader))
        benchmark.pedantic(lambda: _run(shm_loader), rounds=1, iterations=1)
    finally:
        shm_loader.close()
    med = {k: (statistics.median(v[0] for v in r), statistics.median(v[1] for v in r))
           for k, r in res.items()}
    ratio = med['shm'][0] / med['torch'][0]
    benchmark.extra_info.update(torch_samples_s=med['torch'][0], torch_wait_ms=med['torch'][1],
                                shm_samples_s=med['shm'][0], shm_wait_ms=med['shm'][1],
                                ratio=ratio)
    logger.warning('samples/s: torch %.1f (wait %.2f ms), shm %.1f (wait %.2f ms) -> %.2fx',
                   med['torch'][0], med['torch'][1], med['shm'][0], med['shm'][1], ratio)
    # Decode-bound: on a 2-core machine this loop waits on JPEG decoding in the workers, which
    # the ring does not speed up (measured 0.96x to 1.13x). The ring's gain is in transfer: see
    # test_shm_ring_vs_torch_dataloader_where_transfer_matters. Guard against regressions only.
    assert ratio > 0.8, f'shm ring loader {ratio:.2f}x the default DataLoader'


# ---- the shm ring where transfer matters: uint8 320x800 x 12 views, and encoded JPEG bytes ----
#: ring samples per CPU-second over torch's DataLoader must stay above these: 0.8x the lowest
#: medians measured on a 2-core CPU (docs/data.md): uint8 2.28x, in a fresh-clone CI run where
#: torch's side cost 9.5 CPU-ms per sample against 11.2-13.8 in earlier runs (2.92x-3.5x over 9
#: runs on a quiet machine); encoded JPEG bytes 2.23x on a machine loaded by other jobs. The
#: goal is >= 1.3x
MIN_RING_SPEEDUP = {'uint8-12x320x800': 1.8, 'encoded-12-jpegs': 1.8}
RING_VIEWS = 12


class _TransferDataset:
    """Samples whose cost is their size: a cached uint8 decode, or the JPEG bytes as read."""

    def __init__(self, payload: str, jpegs: list[bytes], length: int = 48) -> None:
        self.payload, self.jpegs, self.length = payload, jpegs, length
        self.decoded = np.random.default_rng(0).integers(
            0, 255, (RING_VIEWS, *FINAL, 3), dtype=np.uint8)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        if self.payload == 'uint8-12x320x800':
            img = torch.from_numpy(self.decoded.copy())  # the cheapest possible decode
        else:
            img = [bytes(bytearray(b)) for b in self.jpegs]  # as read from disk
        return {'inputs': {'img': img}, 'data_samples': {'idx': i}}


def _epoch_cost(loader, staging: np.ndarray) -> tuple[float, float]:
    """(samples/s, CPU-ms per sample summed over the main process and its workers) of one epoch.

    The main process copies each payload once (the host-to-device stand-in). Workers are
    not persistent, so their CPU time is in ``RUSAGE_CHILDREN`` once the epoch has joined
    them; CPU time per sample, unlike wall time, holds steady on a shared machine.
    """
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    n, start = 0, time.perf_counter()
    for batch in loader:
        imgs = batch['inputs']['img']
        parts = imgs if isinstance(imgs, list) and not isinstance(imgs[0], (list, tuple)) else [
            x for view in imgs for x in view]  # pseudo_collate: views x samples
        for part in parts:
            flat = np.frombuffer(part, np.uint8) if isinstance(part, bytes) else np.asarray(
                part).reshape(-1).view(np.uint8)
            staging[:flat.size] = flat
        n += len(batch['data_samples']['idx'])
    wall = time.perf_counter() - start
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(getattr(b, f) - getattr(a, f) for a, b in ((self0, self1), (kids0, kids1))
              for f in ('ru_utime', 'ru_stime'))
    return n / wall, cpu * 1e3 / n


@pytest.mark.parametrize('payload', sorted(MIN_RING_SPEEDUP))
def test_shm_ring_vs_torch_dataloader_where_transfer_matters(samples, benchmark, payload):
    from mmengine.dataset import pseudo_collate
    jpegs = [Path(c['img_path']).read_bytes() for s in samples[:2] for c in s['images'].values()]
    # ~1 s per round: workers fork and the ring maps once per epoch, a fixed cost that shorter
    # epochs inflate (real epochs are thousands of samples)
    ds = _TransferDataset(payload, jpegs[:RING_VIEWS], 96 if payload.startswith('uint8') else 192)
    staging = np.empty(RING_VIEWS * FINAL[0] * FINAL[1] * 3, np.uint8)
    loaders = {'torch': torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2,
                                                    collate_fn=pseudo_collate),
               'shm': ShmRingLoader(ds, batch_size=2, num_workers=2)}
    res: dict[str, list[tuple[float, float]]] = {'torch': [], 'shm': []}
    try:
        for name, loader in loaders.items():  # warm-up: imports, first page faults
            _epoch_cost(loader, staging)
        for r in range(ROUNDS):  # interleaved, order alternating
            for name in (('torch', 'shm') if r % 2 == 0 else ('shm', 'torch')):
                res[name].append(_epoch_cost(loaders[name], staging))
        benchmark.pedantic(_epoch_cost, args=(loaders['shm'], staging), rounds=1, iterations=1)
    finally:
        loaders['shm'].close()
    rate = {k: statistics.median(x[0] for x in v) for k, v in res.items()}
    cpu = {k: statistics.median(x[1] for x in v) for k, v in res.items()}
    cpu_spread = {k: (min(x[1] for x in v), max(x[1] for x in v)) for k, v in res.items()}
    ratio = cpu['torch'] / cpu['shm']  # samples per CPU-second, ring over torch
    benchmark.extra_info.update(torch_samples_s=rate['torch'], shm_samples_s=rate['shm'],
                                torch_cpu_ms_per_sample=cpu['torch'],
                                shm_cpu_ms_per_sample=cpu['shm'], ratio=ratio)
    logger.warning('%s CPU-ms/sample: torch %.2f (%.2f-%.2f), shm ring %.2f (%.2f-%.2f) -> %.2fx '
                   'samples per CPU-second; wall samples/s torch %.0f, shm %.0f', payload,
                   cpu['torch'], *cpu_spread['torch'], cpu['shm'], *cpu_spread['shm'], ratio,
                   rate['torch'], rate['shm'])
    assert ratio >= MIN_RING_SPEEDUP[payload], (
        f'shm ring {ratio:.2f}x torch DataLoader on {payload}; floor {MIN_RING_SPEEDUP[payload]}x')
