"""``torch.compile`` on the device through the kit's scoped compile (:class:`CompileTimingHook`
compiles a named submodule's forward in place), against the same model eager.

``nn.Module.compile`` itself leaves torch's built-in containers (``nn.Sequential``)
untraced on torch 2.13 (the kit compiles through an extra frame of its own), so the check
also asserts that dynamo captured a graph at all.
"""
from __future__ import annotations

import contextlib
import copy
import statistics
import time
from types import SimpleNamespace

from bevboost.doctor.core import CheckFailed, Context, Outcome, Skip, register

ITERS = 5
RTOL, ATOL = 1e-4, 1e-6


def dynamo_graphs() -> int:
    """Graphs dynamo has captured in this process so far (the torch-internal read lives in
    :func:`bevboost.seams.torch_compat.dynamo_graph_count`; tests/doctor and tests/seams
    pin it)."""
    from bevboost.seams.torch_compat import dynamo_graph_count
    return dynamo_graph_count()


def _probe(device):
    import torch
    from torch import nn

    class Backbone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3, padding=1)
            self.fc = nn.Linear(16, 8)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).mean((2, 3)))

    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = Backbone()
            self.head = nn.Linear(8, 1)

        def forward(self, x):
            return self.head(self.backbone(x))

    torch.manual_seed(0)
    return Probe().to(device)


def _train(model, device) -> tuple[list[float], list[float]]:
    """(losses, seconds per iteration) of a few SGD steps on fixed data."""
    import torch
    from bevboost.doctor.core import synchronize
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, 32, 32, generator=gen).to(device)
    y = torch.randn(4, 1, generator=gen).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses, times = [], []
    for _ in range(ITERS):
        start = time.perf_counter()
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        synchronize(device)
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
    return losses, times


@contextlib.contextmanager
def _full_fp32():
    """TF32 off for the comparison: eager and compiled code may pick different cuDNN kernels,
    and TF32's 10-bit mantissa would then differ by ~1e-3, far above compile's own rounding."""
    import torch
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@register('compile', 'CompileTimingHook scoped compile (in place, inductor) of a '
          f'probe backbone on the device, {ITERS} SGD steps vs the same model eager',
          f'losses and weights allclose(rtol={RTOL}, atol={ATOL}); dynamo captured >= 1 graph')
def check_compile(ctx: Context, device) -> Outcome:
    import torch

    from bevboost.boosts import get_boost
    from bevboost.compute.compile_model import CompileTimingHook, is_compiled_module
    if device.type == 'cpu':
        why = get_boost('compile').unavailable_reason()
        if why:
            raise Skip(why)
    eager = _probe(device)
    compiled = copy.deepcopy(eager)
    torch.compiler.reset()  # compile afresh: the time reported is a real compile
    graphs = dynamo_graphs()
    CompileTimingHook(modules=['backbone']).before_train(SimpleNamespace(model=compiled))
    if not is_compiled_module(compiled.backbone):
        raise CheckFailed('CompileTimingHook left the backbone uncompiled')
    with _full_fp32():
        ref_losses, ref_times = _train(eager, device)
        losses, times = _train(compiled, device)
    captured = dynamo_graphs() - graphs
    if captured < 1:
        raise CheckFailed('dynamo captured no graph: the compiled module ran eagerly')
    if not torch.allclose(torch.tensor(losses), torch.tensor(ref_losses), rtol=RTOL, atol=ATOL):
        raise CheckFailed(f'compiled losses {losses} vs eager {ref_losses}')
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        if not torch.allclose(a, b, rtol=RTOL, atol=ATOL):
            raise CheckFailed(f'{name} differs after {ITERS} steps: max |d| '
                              f'{(a - b).abs().max().item():.3g}')
    steady = statistics.median(times[1:])
    compile_s = times[0] - steady
    return Outcome(f'compile {compile_s:.1f} s; step {steady * 1e3:.2f} ms vs eager '
                   f'{statistics.median(ref_times[1:]) * 1e3:.2f} ms; {captured} graph(s)',
                   dict(compile_s=compile_s, steady_ms=steady * 1e3,
                        eager_ms=statistics.median(ref_times[1:]) * 1e3, graphs=captured,
                        max_loss_diff=max(abs(a - b) for a, b in zip(losses, ref_losses))))
