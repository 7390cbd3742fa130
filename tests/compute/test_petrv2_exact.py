"""Each exact compute boost on the tiny PETRv2: losses and parameters after a few steps
match mmengine's Runner on the same config without the boost."""
from __future__ import annotations

import pytest
import torch
from mmengine.hooks import Hook

from bevboost.testing.compute_helpers import LossRecorder
from bevboost.testing.runner_helpers import params_of

pytestmark = [pytest.mark.mmdet3d, pytest.mark.slow]

STEPS = 3

#: boost spec -> (num_workers of both runs, loss rtol, parameter tolerance); the parameter
#: tolerance bounds ||params - baseline params|| / ||baseline params - initial params||:
#: how far apart the runs ended relative to how far training moved the weights.
CASES = {
    # one fused AdamW kernel vs torch's per-tensor loop: the same formula, rounded alike
    'fused-optim': (0, 1e-6, 1e-3),
    # oneDNN's NHWC convolutions and BatchNorm sum in another order: float32 rounding
    # (~1e-7 relative) in the gradients, which AdamW's normalised steps spread further
    'channels-last': (0, 1e-5, 1e-2),
    # dynamo + AOTAutograd graphs of backbone and neck (eager kernels: see test_compile.py)
    "compile=backbone:backend='aot_eager'": (0, 1e-6, 1e-3),
    # the same batches from one persistent worker: bitwise
    'loader:prefetch_factor=4': (1, 0.0, 0.0),
}


def comparable(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Parameters minus the attention key bias, whose true gradient is zero.

    softmax(q.(k + b)) = softmax(q.k + q.b) and q.b is the same for every key, so
    d loss / d b_key is exactly 0: what backward computes there is float rounding
    noise, and Adam normalises that noise to steps of size ~lr. Any change of
    summation order (a fused kernel, NHWC convolutions) changes the noise, so
    that slice is not comparable between two runs; every other value is.
    """
    out = {}
    for name, value in params.items():
        if name.endswith('attn.in_proj_bias'):
            dim = value.numel() // 3
            value = torch.cat([value[:dim], value[2 * dim:]])  # query and value parts
        out[name] = value
    return out


class InitialParams(Hook):
    priority = 'LOWEST'

    def before_train(self, runner):
        self.params = comparable(params_of(runner))


def _run(cfg):
    """Train; returns (initial params, final params, losses), comparable parts only."""
    from bevboost.runner_utils import build_runner
    runner = build_runner(cfg)
    losses, initial = LossRecorder(), InitialParams()
    runner.register_hook(losses)
    runner.register_hook(initial)
    runner.train()
    return runner, initial.params, comparable(params_of(runner)), torch.stack(losses.losses)


def _flat(params: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([params[n].flatten().double() for n in sorted(params)])


@pytest.fixture(scope='module')
def baselines(synth_root, tmp_path_factory):
    """Baseline runs without any boost, by num_workers (built lazily)."""
    from tests.compute.conftest import _petr_fixtures
    tiny_config = _petr_fixtures().tiny_config
    cache = {}

    def get(num_workers):
        if num_workers not in cache:
            torch.set_num_threads(1)
            cfg = tiny_config(synth_root, tmp_path_factory.mktemp('base'), max_iters=STEPS,
                              num_workers=num_workers, batch_size=1)
            cache[num_workers] = _run(cfg)[1:]
        return cache[num_workers]
    return get, tiny_config


@pytest.mark.parametrize('spec', sorted(CASES))
def test_boost_matches_baseline(spec, baselines, synth_root, tmp_path):
    from bevboost.boosts import apply_boosts, get_boost, parse_variant
    get_baseline, tiny_config = baselines
    num_workers, loss_rtol, param_tol = CASES[spec]
    base_init, base_params, base_losses = get_baseline(num_workers)
    cfg = tiny_config(synth_root, tmp_path, max_iters=STEPS, num_workers=num_workers,
                      batch_size=1)
    runner, init, params, losses = _run(apply_boosts(cfg, [spec]))
    name, options = parse_variant(spec)
    assert get_boost(name).verify(runner, **options)  # in effect (raises otherwise)
    assert all(torch.equal(init[n], base_init[n]) for n in init)  # same starting point
    moved = (_flat(base_params) - _flat(base_init)).norm()
    apart = (_flat(params) - _flat(base_params)).norm()
    torch.testing.assert_close(losses, base_losses, rtol=loss_rtol, atol=0)
    assert apart <= param_tol * moved, f'runs ended {apart / moved:.3g} of the distance apart'
