"""DDP: NCCL on the device (gloo on the CPU), one-process group, one DDP step.

A one-process group proves the backend loads and its collectives run on this
machine; the DDP-wrapped model's gradient after one backward must equal the
plain model's on the same data (world size 1: all-reduce averages one copy).
"""
from __future__ import annotations

import gc
import socket

from bevboost.doctor.core import CheckFailed, Context, Outcome, Skip, register


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _grads(model, x, y):
    loss = (model(x) - y).pow(2).mean()
    loss.backward()
    return [p.grad.detach().clone() for p in model.parameters()]


@register('ddp', 'one-process torch.distributed group (NCCL on CUDA, gloo on cpu): '
          'all_reduce of a device tensor, and the gradient of a DDP-wrapped model vs the '
          'plain model on the same data',
          'exact: all_reduce sum equals the tensor (world size 1); DDP gradients allclose '
          '(rtol 1e-6) to the plain model\'s')
def check_ddp(ctx: Context, device) -> Outcome:
    import copy

    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel
    if not dist.is_available():
        raise Skip('torch.distributed is not available in this torch build')
    if dist.is_initialized():
        raise Skip('a process group is already initialised in this process')
    backend = 'nccl' if device.type == 'cuda' else 'gloo'
    if backend == 'nccl' and not dist.is_nccl_available():
        raise CheckFailed('NCCL is not available in this torch build (DDP on GPUs needs it)')
    dist.init_process_group(backend, init_method=f'tcp://127.0.0.1:{_free_port()}', rank=0,
                            world_size=1)
    ddp = None
    try:
        value = torch.arange(1024, dtype=torch.float32, device=device)
        reduced = value.clone()
        dist.all_reduce(reduced)
        if not torch.equal(reduced, value):
            raise CheckFailed(f'{backend} all_reduce changed a one-rank tensor')
        torch.manual_seed(0)
        plain = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1)).to(device)
        ddp = DistributedDataParallel(copy.deepcopy(plain),
                                      device_ids=[device.index] if backend == 'nccl' else None)
        gen = torch.Generator().manual_seed(3)
        x, y = torch.randn(16, 8, generator=gen).to(device), torch.randn(16, 1, generator=gen)
        y = y.to(device)
        for a, b in zip(_grads(plain, x, y), _grads(ddp, x, y)):
            if not torch.allclose(a, b, rtol=1e-6, atol=1e-8):
                raise CheckFailed(f'DDP gradient differs from the plain model by '
                                  f'{(a - b).abs().max().item():.3g}')
        version = ''
        if backend == 'nccl':
            v = torch.cuda.nccl.version()  # a tuple in torch 2.x, an int in older releases
            version = '.'.join(map(str, v)) if isinstance(v, tuple) else str(v)
    finally:
        # the DDP wrapper goes first: freed after the group is destroyed, its reducer drops
        # the last reference to the gloo group, whose destructor then joins the group's
        # threads while holding the GIL (a hang seen once on a 2-core machine)
        ddp = None
        gc.collect()
        dist.destroy_process_group()
    return Outcome(f'{backend}{" " + version if version else ""}: group of 1 opened, '
                   'all_reduce + DDP gradients ok', dict(backend=backend, nccl=version or None))
