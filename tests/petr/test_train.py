"""The tiny PETRv2 trains through mmengine's Runner on CPU and evaluates with NuScenesMetric."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.mmdet3d, pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs' / 'petrv2'


def _train(cfg):
    from bevboost.runner_utils import build_runner
    runner = build_runner(cfg)
    runner.train()
    losses, _ = runner.message_hub.get_scalar('train/loss').data
    return runner, np.asarray(losses, dtype=np.float64)


def test_tiny_petrv2_loss_decreases_and_nuscenes_metric_runs(
        synth_root, tmp_work_dir, make_tiny_config):
    cfg = make_tiny_config(synth_root, tmp_work_dir, max_iters=30)
    runner, losses = _train(cfg)
    assert len(losses) == 30 and np.isfinite(losses).all()
    assert losses[-5:].mean() < 0.9 * losses[:5].mean(), losses
    metrics = runner.val()
    keys = {k.rsplit('/', 1)[-1] for k in metrics}
    assert {'mAP', 'NDS'} <= keys
    nds = next(v for k, v in metrics.items() if k.endswith('/NDS'))
    assert 0.0 <= nds <= 1.0


#: boosted tiny configs -> (boost name, extra config options)
BOOSTED = {
    'petrv2_tiny_synth_amp-bf16.py': ('amp', dict(batch_size=1, max_iters=2)),
    'petrv2_tiny_synth_accum2.py': ('accum', dict(max_iters=4)),
    'petrv2_tiny_synth_fast-decode.py': ('fast-decode', dict(max_iters=3)),
    'petrv2_tiny_synth_shm.py': ('shm', dict(max_iters=3, num_workers=1)),
}


@pytest.mark.parametrize('config', sorted(BOOSTED))
def test_tiny_petrv2_trains_with_boost(config, synth_root, tmp_work_dir, make_tiny_config):
    from bevboost.boosts import available_boosts
    boost, options = BOOSTED[config]
    if boost not in available_boosts():
        pytest.skip(f'boost {boost!r} is not registered in this build yet')
    cfg = make_tiny_config(synth_root, tmp_work_dir, config=CONFIG_DIR / config, **options)
    runner, losses = _train(cfg)
    assert boost in runner.cfg.bevboost_applied
    assert len(losses) == runner.train_loop.max_iters and np.isfinite(losses).all()
