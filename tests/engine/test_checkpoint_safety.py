"""A checkpoint cannot change HistoryBuffer's process-wide statistics methods."""
import numpy as np
import torch
from mmengine.logging import HistoryBuffer, MessageHub

import bevboost.engine.checkpoint_safety  # noqa: F401  (installs the fences)

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
