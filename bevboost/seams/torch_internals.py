"""torch seams: private torch functions and attributes the kit uses.

Checked on torch 2.1.2, 2.4, 2.5, 2.6, 2.13.0 and 2.14.1 (``tests/seams/``).

* ``GradScaler._found_inf_per_device(optimizer)``: whether the last unscale found
  inf/NaN, per device (read before ``update()`` resets it).
* ``torch._amp_foreach_non_finite_check_and_unscale_(tensors, found_inf, inv_scale)``:
  GradScaler's fused finiteness check; with ``inv_scale`` 1.0 it leaves values unchanged.
* ``torch.utils.data._utils.worker._worker_info``: what ``get_worker_info()`` returns
  in a worker process (the ring loader's workers are not torch's).
* A DataLoader iterator's ``_shutdown_workers()`` and a DataLoader's ``_iterator``
  (persistent workers).
"""
from __future__ import annotations

from typing import Any

import torch


def scaler_found_inf(scaler: Any, optimizer: Any) -> bool:
    """Whether the scaler's last unscale of ``optimizer`` found inf/NaN on any device."""
    return any(bool(v.item()) for v in scaler._found_inf_per_device(optimizer).values())


def fused_all_finite(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """One bool tensor: every tensor (same device and dtype) is finite, in one fused pass.

    Raises ``RuntimeError``/``NotImplementedError`` where the build lacks the kernel for
    this device or dtype (callers fall back to per-tensor ``isfinite``).
    """
    found_inf = torch.zeros(1, device=device)
    torch._amp_foreach_non_finite_check_and_unscale_(tensors, found_inf,
                                                     torch.ones(1, device=device))
    return found_inf[0] == 0


def publish_worker_info(**info: Any) -> None:
    """Make ``torch.utils.data.get_worker_info()`` answer ``info`` in this process."""
    from torch.utils.data._utils import worker as torch_worker
    torch_worker._worker_info = torch_worker.WorkerInfo(**info)


def shutdown_workers(iterator: Any) -> bool:
    """Stop the worker processes of a DataLoader iterator (or of the loader's persistent
    iterator); True when there was one to stop."""
    shutdown = getattr(iterator, '_shutdown_workers', None)
    if shutdown is None:
        return False
    shutdown()
    return True


def loader_iterator(obj: Any) -> Any:
    """The torch iterator a DataLoader (persistent workers) or a wrapper of one holds."""
    return getattr(obj, '_iterator', None)


def forget_loader_iterator(loader: Any) -> None:
    """Make a DataLoader with persistent workers start new ones on its next ``iter()``."""
    if getattr(loader, '_iterator', None) is not None:
        loader._iterator = None


#: every way into CUDA a DataLoader worker could take (``torch.cuda``'s public entry points
#: and the C probe ``torch._C._cuda_getDeviceCount`` behind ``is_available``)
CUDA_ENTRY_POINTS = ('is_available', 'init', '_lazy_init', 'device_count', 'current_device')


def trap_cuda_entry_points(trap: Any) -> None:
    """Replace every way into CUDA in this process by ``trap`` (for a forked worker that
    must never touch CUDA: the fork rule's check). Irreversible: only in a throwaway worker."""
    for name in CUDA_ENTRY_POINTS:
        setattr(torch.cuda, name, trap)
    torch._C._cuda_getDeviceCount = trap
