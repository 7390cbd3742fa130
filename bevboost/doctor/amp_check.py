"""fp16 with a GradScaler on the device: an injected inf is skipped, counted, the scale
halves and iteration schedulers hold; bf16 support reported.

The path is the kit's :class:`~bevboost.engine.amp.BoostAmpOptimWrapper` and its
:class:`~bevboost.engine.accumulation.OptimizerStepSchedulerHook`; the reference
for the learning rate is mmengine's own ``LinearLR`` stepped once per applied step.
"""
from __future__ import annotations

import logging
import math
from types import SimpleNamespace

from bevboost.doctor.core import CheckFailed, Context, Outcome, register

#: iterations run, and the one whose gradients are made infinite
ITERS, INF_AT = 5, 2
#: GradScaler's default backoff factor (dynamic loss scale): the scale halves on overflow
BACKOFF = 0.5
#: how the check builds the wrapper: mmengine's default dynamic loss scale
WRAPPER_KWARGS = dict(loss_scale='dynamic', dtype='float16')


def _inject(grad):
    """What an fp16 overflow leaves in a gradient."""
    return grad * math.inf


def _linear_lr(optimizer):
    from mmengine.optim.scheduler import LinearLR
    return LinearLR(optimizer, start_factor=0.25, by_epoch=False, begin=0, end=8)


def _fp16_run(device):
    import torch
    from torch import nn

    from bevboost.engine.accumulation import OptimizerStepSchedulerHook
    from bevboost.engine.amp import BoostAmpOptimWrapper
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 1)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    wrapper = BoostAmpOptimWrapper(device_type=device.type, optimizer=optimizer,
                                   **WRAPPER_KWARGS)
    runner = SimpleNamespace(optim_wrapper=wrapper, param_schedulers=[_linear_lr(optimizer)])
    hook = OptimizerStepSchedulerHook()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 16, generator=gen).to(device)
    y = torch.randn(8, 1, generator=gen).to(device)
    seen = {}
    for i in range(ITERS):
        hook.before_train_iter(runner, i)
        handle = model[0].weight.register_hook(_inject) if i == INF_AT else None
        before = [p.detach().clone() for p in model.parameters()]
        scale_before = wrapper.loss_scale
        with wrapper.optim_context(model):
            out = model(x)
            loss = (out.float() - y).pow(2).mean()
        wrapper.update_params(loss)
        if handle is not None:
            handle.remove()
            seen.update(out_dtype=out.dtype, scale_before=scale_before,
                        scale_after=wrapper.loss_scale,
                        held=all(torch.equal(a, b) for a, b in zip(before, model.parameters())))
        hook.after_train_iter(runner, i)
    return wrapper, runner, model, seen


def _bf16_ok(device) -> tuple[bool, str]:
    """Whether a bf16 autocast step runs through the wrapper here (and the device says so)."""
    import torch
    from torch import nn

    from bevboost.engine.amp import BoostAmpOptimWrapper
    if device.type == 'cuda' and not torch.cuda.is_bf16_supported():
        return False, 'not supported by this GPU'
    model = nn.Linear(16, 1).to(device)
    wrapper = BoostAmpOptimWrapper(dtype='bfloat16', device_type=device.type,
                                   optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    with wrapper.optim_context(model):
        out = model(torch.ones(4, 16, device=device))
    wrapper.update_params(out.float().mean())
    if out.dtype != torch.bfloat16 or wrapper.applied_steps != 1:
        return False, f'autocast gave {out.dtype}, {wrapper.applied_steps} applied step(s)'
    return True, 'runs'


@register('amp', 'BoostAmpOptimWrapper fp16 + GradScaler on the device: an inf injected into '
          'the gradients of one step; LinearLR stepped by OptimizerStepSchedulerHook',
          'exact: the step skipped (weights bit-identical), skipped_steps=1, applied=4, the '
          'scale halves, the LR equals mmengine LinearLR after 4 steps; outputs float16')
def check_amp(ctx: Context, device) -> Outcome:
    import torch
    quiet = logging.getLogger('bevboost.engine.amp')
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the CPU form's "fp16 on CPU is slow" notice and the skip
    try:
        wrapper, runner, model, seen = _fp16_run(device)
        bf16, bf16_why = _bf16_ok(device)
    finally:
        quiet.setLevel(level)
    if not wrapper.loss_scaler.is_enabled() or seen.get('out_dtype') != torch.float16:
        raise CheckFailed(f'fp16 autocast is not on (outputs {seen.get("out_dtype")}, scaler '
                          f'enabled={wrapper.loss_scaler.is_enabled()})')
    if (wrapper.skipped_steps, wrapper.applied_steps) != (1, ITERS - 1):
        raise CheckFailed(f'{wrapper.skipped_steps} skipped / {wrapper.applied_steps} applied '
                          f'steps, expected 1 / {ITERS - 1} (one inf injected)')
    if not seen['held']:
        raise CheckFailed('the weights changed on the step with infinite gradients')
    if seen['scale_after'] != seen['scale_before'] * BACKOFF:
        raise CheckFailed(f'loss scale {seen["scale_before"]:g} -> {seen["scale_after"]:g} on '
                          f'overflow, expected it to halve')
    reference = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1)
    ref_sched = _linear_lr(reference)
    for _ in range(ITERS - 1):
        reference.step()
        ref_sched.step()
    lr, ref_lr = wrapper.param_groups[0]['lr'], reference.param_groups[0]['lr']
    sched = runner.param_schedulers[0]
    if sched.last_step != ITERS - 1 or not math.isclose(lr, ref_lr, rel_tol=1e-12):
        raise CheckFailed(f'scheduler at step {sched.last_step} (lr {lr:.6g}); mmengine LinearLR '
                          f'after {ITERS - 1} applied steps: lr {ref_lr:.6g}')
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise CheckFailed('non-finite weights after the run')
    return Outcome(f'inf skipped+counted, scale {seen["scale_before"]:g}->'
                   f'{seen["scale_after"]:g}, lr held; bf16 {"yes" if bf16 else "no"}',
                   dict(skipped_steps=wrapper.skipped_steps, applied_steps=wrapper.applied_steps,
                        scale_before=seen['scale_before'], scale_after=seen['scale_after'],
                        lr=lr, bf16_supported=bf16, bf16=bf16_why))
