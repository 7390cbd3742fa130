"""A checkpoint cannot change HistoryBuffer's process-wide statistics methods."""
import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub

import bevboost.engine.checkpoint_safety  # noqa: F401  (installs the fences)

#: torch.load(weights_only=True) of an mmengine checkpoint needs the allow-list (torch 2.4)
WEIGHTS_ONLY = pytest.mark.torch_min((2, 4), 'the weights_only allow-list (add_safe_globals)')

_multiarray = np.core.multiarray if hasattr(np, 'core') else np._core.multiarray


def _crafted_checkpoint(path, methods):
    """A message hub whose buffer pickles ``methods`` as its statistics, as an old or
    hostile writer would (mmengine's own __getstate__ writes the class-wide dict)."""
    hub = MessageHub('crafted-ckpt-writer')
    hub.update_scalar('train/loss', 1.5)
    patched = HistoryBuffer.__getstate__
    HistoryBuffer.__getstate__ = lambda self: dict(self.__dict__, statistics_methods=methods)
    try:
        torch.save({'message_hub': hub.state_dict()}, path)
    finally:
        HistoryBuffer.__getstate__ = patched


@WEIGHTS_ONLY
def test_checkpoint_cannot_replace_mean_for_the_process(tmp_path):
    HistoryBuffer()  # registers the defaults
    before = dict(HistoryBuffer._statistics_methods)
    assert before['mean'] is HistoryBuffer.mean
    # allow-listed callables (numpy's array reconstruction) in place of 'mean' and a new name
    _crafted_checkpoint(tmp_path / 'x.pth', {'mean': _multiarray.scalar,
                                             'evil': _multiarray._reconstruct})
    state = torch.load(tmp_path / 'x.pth', weights_only=True)
    hub = MessageHub('crafted-ckpt-reader')
    hub.load_state_dict(state['message_hub'])
    assert HistoryBuffer._statistics_methods == before  # nothing replaced, nothing added
    buf = hub.get_scalar('train/loss')
    assert buf.mean() == 1.5 and buf.statistics('mean') == 1.5


@WEIGHTS_ONLY
def test_users_registered_method_is_kept_not_the_checkpoints(tmp_path):
    def p90(self, window_size=None):
        return float(np.percentile(self._log_history, 90))

    HistoryBuffer._statistics_methods['p90'] = p90
    try:
        _crafted_checkpoint(tmp_path / 'x.pth', {'p90': _multiarray.scalar})
        state = torch.load(tmp_path / 'x.pth', weights_only=True)
        hub = MessageHub('crafted-ckpt-reader-2')
        hub.load_state_dict(state['message_hub'])
        assert HistoryBuffer._statistics_methods['p90'] is p90
        assert hub.get_scalar('train/loss').statistics('p90') == 1.5
    finally:
        HistoryBuffer._statistics_methods.pop('p90')


def _half_written_checkpoint(tmp_path):
    """A first run's checkpoint, then cut in half (a full disk, a killed copy)."""
    from bevboost.runner_utils import runner_from_cfg
    from bevboost.testing.toy import toy_config
    from mmengine.config import Config
    first = runner_from_cfg(Config(toy_config(str(tmp_path / 'first'), max_iters=2)))
    first.train()
    first.save_checkpoint(str(tmp_path), 'good.pth')
    good = tmp_path / 'good.pth'
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(good.read_bytes()[:good.stat().st_size // 2])
    return cut


def test_runner_route_names_a_truncated_checkpoint(tmp_path):
    """Under a Runner (tools/train.py, scripts) a boosted config refuses a truncated
    ``load_from``/``resume`` checkpoint by its path before mmengine's loader reads it;
    mmengine alone fails on the same file with an error that names no file."""
    import pytest
    from mmengine.config import Config
    from mmengine.runner import Runner

    from bevboost.testing.toy import toy_config
    cut = _half_written_checkpoint(tmp_path)
    plain = Runner.from_cfg(Config(toy_config(str(tmp_path / 'plain'), load_from=str(cut))))
    with pytest.raises(Exception) as mmengine_error:
        plain.train()
    assert str(cut) not in str(mmengine_error.value)
    for key, extra in (('load_from', {}), ('resume', dict(resume=True))):
        cfg = toy_config(str(tmp_path / key), load_from=str(cut),
                         bevboost_boosts=dict(measure=dict()), **extra)
        runner = Runner.from_cfg(Config(cfg))
        with pytest.raises(ValueError, match=rf"{key}: checkpoint '{cut}' is truncated"):
            runner.train()
    # resume=True without load_from: the work dir's latest checkpoint is the one checked
    work_dir = tmp_path / 'auto'
    work_dir.mkdir()
    (work_dir / 'iter_2.pth').write_bytes(cut.read_bytes())
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_2.pth'))
    runner = Runner.from_cfg(Config(toy_config(str(work_dir), resume=True,
                                               bevboost_boosts=dict(measure=dict()))))
    with pytest.raises(ValueError, match=r"resume \(latest in .*\): checkpoint .*iter_2.pth"):
        runner.train()
