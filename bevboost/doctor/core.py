"""The doctor's frame: checks, their two forms, results, the table and the JSON.

A check is one function ``fn(ctx, device) -> Outcome`` run twice: its GPU
form on the CUDA device under test, its CPU form on ``cpu``, on the same
inputs (:class:`Context` builds them once). It raises :class:`CheckFailed`
when the path's result disagrees with its reference, :class:`Skip` when it
cannot run here (the reason says why); a missing optional dependency is a
skip naming the extra, any other exception a failure.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import statistics
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bevboost._optional import MissingDependencyError
from bevboost.seams.torch_compat import TorchTooOldError

logger = logging.getLogger(__name__)

OK, SKIPPED, FAILED = 'ok', 'skipped', 'failed'
#: the kit's decode tolerance: mean |difference| of uint8 pixels between two decoders
#: (IDCT and chroma upsampling differ between libjpeg-turbo, nvJPEG and DALI)
PIXEL_MEAN_TOL = 2.0


class CheckFailed(Exception):
    """The path ran and its result disagrees with the reference."""


class Skip(Exception):
    """The form cannot run here; the message is the reason."""


@dataclasses.dataclass
class Outcome:
    """What a form that passed measured: a short figure for the table, numbers for the JSON."""

    figure: str
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    what: str
    tolerance: str
    fn: Callable[['Context', Any], Outcome]
    #: why the CPU form does not exist (None: it does)
    no_cpu_form: str | None = None


@dataclasses.dataclass
class Result:
    check: str
    form: str  # 'gpu' or 'cpu'
    device: str
    status: str
    figure: str = ''
    reason: str = ''
    seconds: float = 0.0
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)


CHECKS: dict[str, Check] = {}


def register(name: str, what: str, tolerance: str, no_cpu_form: str | None = None):
    """Add a check to the fixed list (in registration order)."""
    def wrap(fn):
        if name in CHECKS:
            raise ValueError(f'doctor check {name!r} registered twice')
        CHECKS[name] = Check(name, what, tolerance, fn, no_cpu_form)
        return fn
    return wrap


class Context:
    """Inputs every check shares, built on first use and removed by :meth:`close`."""

    def __init__(self) -> None:
        self._tmp: Path | None = None
        self._nus: Path | None = None

    @property
    def tmp(self) -> Path:
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix='bevboost-doctor-'))
        return self._tmp

    def nus_root(self) -> Path:
        """A synthetic nuScenes tree: 2 samples x 6 cameras of 1600x900 JPEGs."""
        if self._nus is None:
            from bevboost.synth import synthesize_nuscenes
            self._nus = synthesize_nuscenes(self.tmp / 'nus', scenes=2, samples_per_scene=1,
                                            lidar_sweeps=0, seed=0)
        return self._nus

    def frames(self) -> list[bytes]:
        """The 12 camera JPEGs (1600x900) of :meth:`nus_root`, in a fixed order."""
        root = self.nus_root() / 'samples'
        return [p.read_bytes() for p in sorted(root.glob('CAM_*/*.jpg'))]

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = self._nus = None


def synchronize(device) -> None:
    if getattr(device, 'type', str(device)).startswith('cuda'):
        import torch
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[], Any], device, repeats: int = 3) -> float:
    """Median wall time of ``fn`` in ms after one warm-up call, CUDA-synchronised."""
    fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def pixel_diff(images: Sequence[Any], reference: Sequence[np.ndarray]) -> dict[str, float]:
    """Mean and max |difference| of uint8 HxWx3 images (tensors 3xHxW on any device or arrays)
    against ``reference``; :class:`CheckFailed` when a shape differs."""
    if len(images) != len(reference):
        raise CheckFailed(f'{len(images)} images for {len(reference)} reference images')
    means, maxes = [], []
    for i, (img, ref) in enumerate(zip(images, reference)):
        if hasattr(img, 'permute'):  # a 3xHxW tensor
            img = img.permute(1, 2, 0).cpu().numpy()
        img, ref = np.asarray(img), np.asarray(ref)
        if img.shape != ref.shape:
            raise CheckFailed(f'image {i}: shape {img.shape} != reference {ref.shape}')
        d = np.abs(img.astype(np.int16) - ref.astype(np.int16))
        means.append(float(d.mean()))
        maxes.append(int(d.max()))
    return {'pixel_mean_abs_diff': max(means), 'pixel_max_abs_diff': max(maxes)}


def check_pixels(diff: dict[str, float], tol: float = PIXEL_MEAN_TOL, what: str = '') -> None:
    if not diff['pixel_mean_abs_diff'] <= tol:
        raise CheckFailed(f'{what}pixels differ from the reference by a mean of '
                          f'{diff["pixel_mean_abs_diff"]:.2f} > {tol} (max '
                          f'{diff["pixel_max_abs_diff"]})')


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = ' '.join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + '...'


def run_form(check: Check, ctx: Context, device, form: str) -> Result:
    """One form of one check, with its status; never raises for what the check finds."""
    result = Result(check.name, form, str(device), FAILED)
    start = time.perf_counter()
    try:
        outcome = check.fn(ctx, device)
    except Skip as exc:
        result.status, result.reason = SKIPPED, _one_line(exc)
    except (MissingDependencyError, TorchTooOldError) as exc:  # what this machine lacks
        result.status, result.reason = SKIPPED, _one_line(exc)
    except CheckFailed as exc:
        result.reason = _one_line(exc)
    except Exception as exc:  # a crash in the path under test is a failure of that path
        logger.debug('doctor: %s (%s) raised', check.name, form, exc_info=True)
        where = traceback.extract_tb(exc.__traceback__)[-1]
        result.reason = (f'{type(exc).__name__}: {_one_line(exc)} '
                         f'({Path(where.filename).name}:{where.lineno})')
    else:
        if not isinstance(outcome, Outcome):
            raise TypeError(f'doctor check {check.name!r} returned {outcome!r}, not an Outcome')
        result.status, result.figure, result.metrics = OK, outcome.figure, outcome.metrics
    result.seconds = round(time.perf_counter() - start, 3)
    logger.info('doctor: %-14s %-3s %-7s %s', check.name, form, result.status,
                result.figure or result.reason)
    return result
