"""Published V2-99 weights load into the kit's VoVNet through load_from and init_cfg.

The checkpoint is a state dict with the published key names and shapes, taken
from a transcription of the published module tree (``published_vovnet.py``,
random weights, no download). Loading is judged by what the network computes:
the kit's VoVNet must reproduce the published network's stage4/stage5 outputs.
"""
from __future__ import annotations


import pytest
import torch
from torch import nn

from published_vovnet import TINY, V99, PublishedVoVNet

pytestmark = pytest.mark.mmdet3d


@pytest.fixture(scope='module', autouse=True)
def _registered():
    import bevboost_petr  # noqa: F401
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet3d')


class _Detector(nn.Module):
    """Just the ``img_backbone`` attribute of PETRv2, as ``load_from`` sees it."""

    def __init__(self, **backbone):
        super().__init__()
        from bevboost_petr.vovnet import VoVNet
        self.img_backbone = VoVNet(**backbone)


def _published(spec: dict, seed: int = 0) -> PublishedVoVNet:
    torch.manual_seed(seed)
    net = PublishedVoVNet(spec)
    for m in net.modules():  # non-trivial BN statistics, so a mix-up shows in the outputs
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def _save(state: dict, path, prefix: str) -> str:
    torch.save({'state_dict': {prefix + k: v for k, v in state.items()}}, path)
    return str(path)



def _weights(state: dict) -> int:
    return sum(not k.endswith('num_batches_tracked') for k in state)


@pytest.mark.usefixtures('one_torch_thread')
def test_published_v299_checkpoint_loads_completely_via_load_from(tmp_path, mm_log):
    from mmengine.runner.checkpoint import load_checkpoint
    published = _published(V99)
    state = published.state_dict()
    assert 'stage4.OSA4_1.layers.0.OSA4_1_0/conv.weight' in state  # the published naming
    assert 'stage4.OSA4_9.concat.OSA4_9_concat/norm.running_var' in state
    path = _save(state, tmp_path / 'v99.pth', 'img_backbone.')
    model = _Detector(spec_name='V-99-eSE', norm_eval=True).eval()
    load_checkpoint(model, path, map_location='cpu', strict=False, logger='current')  # load_from
    total = _weights(state)
    assert f'img_backbone: {total} of {total} tensors loaded ({len(state)} renamed from the ' \
           'published VoVNet naming)' in mm_log
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = published(x)
        got = model.img_backbone(x)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_incomplete_backbone_fails_unless_the_config_opts_out(tmp_path, mm_log):
    from mmengine.runner.checkpoint import load_checkpoint
    state = {k: v for k, v in _published(TINY).state_dict().items()
             if not k.startswith('stage5.')}
    path = _save(state, tmp_path / 'partial.pth', 'img_backbone.')
    with pytest.raises(ValueError, match='covers .* backbone tensors'):
        load_checkpoint(_Detector(spec_name='V-tiny-eSE'), path, strict=False)
    load_checkpoint(_Detector(spec_name='V-tiny-eSE', allow_partial_weights=True), path,
                    strict=False)
    full = _weights(_published(TINY).state_dict())
    assert any(m.startswith(f'img_backbone: {_weights(state)} of {full} tensors loaded')
               for m in mm_log), mm_log
    # a checkpoint saved under another prefix covers nothing, and says so
    other = _save(_published(TINY).state_dict(), tmp_path / 'dd3d.pth', 'backbone.bottom_up.')
    with pytest.raises(ValueError, match="covers 0 of"):
        load_checkpoint(_Detector(spec_name='V-tiny-eSE'), other, strict=False)


def test_published_checkpoint_loads_through_init_cfg_pretrained(tmp_path):
    from bevboost_petr.vovnet import VoVNet
    published = _published(TINY, seed=3)
    path = _save(published.state_dict(), tmp_path / 'dd3d.pth', 'backbone.bottom_up.')
    net = VoVNet('V-tiny-eSE', init_cfg=dict(type='Pretrained', checkpoint=path,
                                             prefix='backbone.bottom_up.'))
    net.init_weights()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for e, g in zip(published(x), net.eval()(x)):
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_kit_checkpoints_still_load_and_unknown_keys_are_left_alone():
    from bevboost_petr.vovnet_weights import published_to_kit
    from bevboost_petr.vovnet import VoVNet
    src = VoVNet('V-tiny-eSE')
    dst = VoVNet('V-tiny-eSE')
    dst.load_state_dict(src.state_dict())  # kit naming, strict
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)
        assert published_to_kit(k) is None
    assert published_to_kit('stage4.OSA5_1.ese.fc.weight') is None  # stage/block mismatch
