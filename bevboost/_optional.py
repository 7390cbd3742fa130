"""Probes for optional dependencies that import nothing heavy.

Every optional dependency of the kit (DALI, mmdet3d, NVML, ...) is reached
through :func:`require`, which raises one :class:`MissingDependencyError`
naming the extra to install. Nothing falls back silently.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
from types import ModuleType

#: import name -> (pip extra that provides it, human readable name)
_EXTRAS: dict[str, tuple[str, str]] = {
    'nvidia.dali': ('dali', 'nvidia-dali'),
    'mmdet3d': ('mmdet3d', 'mmdet3d'),
    'mmdet': ('mmdet3d', 'mmdet'),
    'mmcv': ('mmdet3d', 'mmcv'),
    'pynvml': ('bench', 'nvidia-ml-py'),
    'matplotlib': ('bench', 'matplotlib'),
    'simplejpeg': ('data', 'simplejpeg'),
    'tqdm': ('bench', 'tqdm'),
}


class MissingDependencyError(ImportError):
    """An optional dependency is not installed; the message names the extra."""


@functools.lru_cache(maxsize=None)
def is_available(module: str) -> bool:
    """Return True when ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # parent package missing
        return False


def install_hint(module: str) -> str:
    extra, dist = _EXTRAS.get(module, (None, module))
    if module == 'nvidia.dali':  # one DALI build per CUDA major: the one for torch's CUDA
        from bevboost.seams.dali_compat import DALI_DISTRIBUTIONS, dali_extra_for_torch
        extra = dali_extra_for_torch()
        dist = DALI_DISTRIBUTIONS[int(extra[len('dali-cuda'):-1])]
    if extra is None:
        return f'pip install {dist}'
    return f"pip install 'bevboost[{extra}]'  (provides {dist})"


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` or raise one clear error naming the extra to install.

    Args:
        module: import name, e.g. ``'nvidia.dali'``.
        feature: what the caller wanted it for, shown in the error.
    """
    if not is_available(module):
        raise MissingDependencyError(
            f'{feature} needs the optional dependency {module!r}, which is not '
            f'installed. Install it with: {install_hint(module)}')
    return importlib.import_module(module)


@functools.lru_cache(maxsize=None)
def cuda_available() -> bool:
    """True when torch sees a CUDA device (torch is imported lazily)."""
    import torch
    return torch.cuda.is_available()


def missing_requirements(*names: str) -> list[str]:
    """Names of the unmet requirements among ``names``.

    ``'cuda'`` means a visible CUDA device; any other name is an import name.
    """
    missing = []
    for name in names:
        ok = cuda_available() if name == 'cuda' else is_available(name)
        if not ok:
            missing.append('CUDA' if name == 'cuda' else _EXTRAS.get(name, (None, name))[1])
    return missing
