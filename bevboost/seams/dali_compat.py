"""Which CUDA major the installed NVIDIA DALI was built for, against torch's CUDA.

DALI ships one distribution per CUDA major (``nvidia-dali-cuda110``, ``-cuda120``,
``-cuda130``); the kit's extras follow them (``bevboost[dali-cuda110]``, ...). A DALI built
for another CUDA major than torch's loads, but its GPU (``mixed``) decode then needs a
driver for both, and two CUDA runtimes share the process. Nothing here imports DALI: the
installed distribution's name says its CUDA major (importlib.metadata), and
:func:`check_dali_matches_torch` runs once, where DALI is first used.
Checked with nvidia-dali-cuda130 2.4.0 and torch 2.13.0 (CPU), 2.1.2+cu121.
"""
from __future__ import annotations

import functools
import importlib.metadata
import logging

logger = logging.getLogger(__name__)

#: CUDA major -> DALI distribution built for it
DALI_DISTRIBUTIONS = {11: 'nvidia-dali-cuda110', 12: 'nvidia-dali-cuda120',
                      13: 'nvidia-dali-cuda130'}


def installed_dali() -> dict[str, int]:
    """Installed DALI distributions -> the CUDA major each was built for."""
    found = {}
    for major, dist in DALI_DISTRIBUTIONS.items():
        try:
            importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        found[dist] = major
    return found


def torch_cuda_major() -> int | None:
    """CUDA major torch was built with (``torch.version.cuda``); None for a CPU build."""
    import torch
    cuda = torch.version.cuda
    return int(cuda.split('.')[0]) if cuda else None


def dali_extra_for_torch() -> str:
    """The kit's DALI extra that matches this torch (CPU builds: the newest)."""
    major = torch_cuda_major()
    return f'dali-cuda{major}0' if major in DALI_DISTRIBUTIONS else 'dali-cuda130'


def dali_mismatch() -> str | None:
    """Why the installed DALI does not fit torch's CUDA, or None when it does.

    A CPU build of torch fits any DALI (CPU decoding); no DALI installed is
    :func:`bevboost._optional.require`'s business.
    """
    found = installed_dali()
    if len(found) > 1:
        return (f'several DALI builds are installed ({", ".join(sorted(found))}); keep the one '
                f"for torch's CUDA: pip install 'bevboost[{dali_extra_for_torch()}]'")
    major = torch_cuda_major()
    if not found or major is None:
        return None
    (dist, dali_major), = found.items()
    if dali_major == major:
        return None
    import torch
    return (f'{dist} is built for CUDA {dali_major} but torch {torch.__version__} uses CUDA '
            f'{torch.version.cuda}: its GPU decode needs a driver for CUDA {dali_major} too. '
            f"Install the matching build: pip uninstall {dist} && pip install "
            f"'bevboost[{dali_extra_for_torch()}]'")


@functools.lru_cache(maxsize=None)
def check_dali_matches_torch() -> str | None:
    """Log (once per process) a warning when the installed DALI does not fit torch's CUDA."""
    problem = dali_mismatch()
    if problem:
        logger.warning('DALI: %s', problem)
    return problem
