"""Published PETRv2 detector checkpoints load whole into the bundled V2-99 model.

The checkpoint is built from the published layout without downloading
anything: backbone keys from the transcribed published VoVNet
(``published_vovnet.py``), neck and head keys and shapes from
``data/published_petrv2_800x320_keys.txt`` (listed from the published
``CPFPN`` / ``PETRv2Head`` / ``PETRTransformer`` built with the published
800x320 config). Every tensor is random, so "placed" is checked by value:
each tensor of the kit's model must equal one checkpoint tensor, whatever the
key map says.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from published_vovnet import V99, PublishedVoVNet

pytestmark = pytest.mark.mmdet3d

REPO = Path(__file__).resolve().parents[2]
TABLE = Path(__file__).parent / 'data' / 'published_petrv2_800x320_keys.txt'


@pytest.fixture(scope='module', autouse=True)
def _registered():
    import bevboost_petr  # noqa: F401
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet3d')



def published_neck_head(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the published neck/head names and shapes."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for line in TABLE.read_text().splitlines():
        if not line or line.startswith('#'):
            continue
        key, shape = line.split()
        dims = [] if shape == '-' else [int(d) for d in shape.split('x')]
        state[key] = torch.rand(dims, generator=gen) - 0.5
    return state


def _v99_model(**head):
    from mmengine.config import Config
    from mmdet3d.registry import MODELS
    cfg = Config.fromfile(str(REPO / 'configs/_base_/models/petrv2_vov99.py'),
                          import_custom_modules=False)
    cfg.model.pop('data_preprocessor')
    cfg.model.pts_bbox_head.update(head)
    return MODELS.build(cfg.model)


def _fingerprints(state: dict) -> dict[tuple, str]:
    return {(tuple(v.shape), v.double().sum().item(), v.double().abs().max().item()): k
            for k, v in state.items()}


def test_key_table_is_the_published_layout():
    state = published_neck_head()
    assert len(state) == 340
    assert 'pts_bbox_head.transformer.decoder.layers.5.attentions.1.attn.in_proj_weight' in state
    assert 'pts_bbox_head.fpe.conv_reduce.weight' in state
    assert 'pts_bbox_head.reg_branches.5.reg_branch.3.weight' in state
    assert state['pts_bbox_head.position_encoder.0.weight'].shape == (1024, 192, 1, 1)


@pytest.mark.usefixtures('one_torch_thread')
def test_published_checkpoint_loads_whole_into_the_v299_model(tmp_path, mm_log):
    from mmengine.runner.checkpoint import load_checkpoint
    torch.manual_seed(0)
    backbone = {'img_backbone.' + k: v.uniform_(-1, 1) if v.is_floating_point() else v
                for k, v in PublishedVoVNet(V99).state_dict().items()}
    published = {**backbone, **published_neck_head()}
    path = tmp_path / 'petrv2_published.pth'
    torch.save({'state_dict': published}, path)
    model = _v99_model()
    load_checkpoint(model, str(path), map_location='cpu', strict=False, logger='current')
    assert 'img_backbone: 527 of 527 tensors loaded (626 renamed from the published VoVNet ' \
           'naming)' in mm_log
    assert 'img_neck: 6 of 6 tensors loaded' in mm_log
    assert 'pts_bbox_head: 333 of 333 tensors loaded (142 renamed from the published PETRv2 ' \
           'naming)' in mm_log
    # every tensor of the model came from the checkpoint (by value, not by name)
    source = _fingerprints({k: v for k, v in published.items()
                            if not k.endswith('num_batches_tracked')})
    own = {k: v for k, v in model.state_dict().items() if not k.endswith('num_batches_tracked')}
    unmatched = [k for fp, k in _fingerprints(own).items() if fp not in source]
    assert len(own) == 527 + 6 + 333 and unmatched == []
    # and every checkpoint weight went somewhere (code_weights is a loss setting)
    placed = set(_fingerprints(own))
    left = [k for fp, k in source.items() if fp not in placed]
    assert left == ['pts_bbox_head.code_weights']


def test_strict_torch_load_and_head_init_cfg_take_the_published_names(tmp_path, mm_log):
    from bevboost_petr.petrv2_head import PETRv2Head  # noqa: F401  (registered)
    from mmdet3d.registry import MODELS
    from mmengine.config import Config
    state = {k[len('pts_bbox_head.'):]: v for k, v in published_neck_head(seed=1).items()
             if k.startswith('pts_bbox_head.')}
    cfg = Config.fromfile(str(REPO / 'configs/_base_/models/petrv2_vov99.py'),
                          import_custom_modules=False)
    head_cfg = dict(cfg.model.pts_bbox_head, train_cfg=cfg.model.train_cfg)
    head = MODELS.build(head_cfg)
    head.load_state_dict(dict(state), strict=True)  # torch's own route, strict
    w = 'transformer.decoder.layers.3.attentions.1.attn.in_proj_weight'
    torch.testing.assert_close(head.decoder.layers[3].cross_attn.attn.in_proj_weight, state[w],
                               rtol=0, atol=0)
    path = tmp_path / 'detector.pth'
    torch.save({'state_dict': {'pts_bbox_head.' + k: v for k, v in state.items()}}, path)
    head = MODELS.build(dict(head_cfg, init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                                     prefix='pts_bbox_head.')))
    head.init_weights()
    w = 'fpe.conv_expand.weight'
    torch.testing.assert_close(head.position_encoder.fpe.expand.weight, state[w], rtol=0, atol=0)
    assert 'pts_bbox_head: 333 of 333 tensors loaded (142 renamed from the published PETRv2 ' \
           'naming)' in mm_log


def _small_head(**kw):
    """A 256-wide 6-layer head (the published structure) with few queries, fast to build."""
    from mmdet3d.registry import MODELS
    from mmengine.config import Config
    cfg = Config.fromfile(str(REPO / 'configs/_base_/models/petrv2_vov99.py'),
                          import_custom_modules=False)
    return MODELS.build(dict(cfg.model.pts_bbox_head, train_cfg=cfg.model.train_cfg, **kw))


class _Detector(torch.nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.pts_bbox_head = _small_head(**kw)


def test_head_with_other_names_is_refused_not_loaded_half_random(tmp_path, mm_log):
    from mmengine.runner.checkpoint import load_checkpoint
    state = {k: v for k, v in published_neck_head().items() if k.startswith('pts_bbox_head.')}
    # the names of another transformer implementation: a quarter of the head unplaceable
    renamed = {k.replace('.attentions.1.', '.cross_attn_x.'): v for k, v in state.items()}
    path = tmp_path / 'other.pth'
    torch.save({'state_dict': renamed}, path)
    with pytest.raises(ValueError, match=r'pts_bbox_head: the checkpoint covers 309 of 333'):
        load_checkpoint(_Detector(), str(path), strict=False)
    # a missing tensor is refused too, and an opt-out loads what there is and says so
    partial = dict(state)
    partial.pop('pts_bbox_head.fpe.conv_reduce.bias')
    torch.save({'state_dict': partial}, path)
    with pytest.raises(ValueError, match=r'covers 332 of 333'):
        load_checkpoint(_Detector(), str(path), strict=False)
    load_checkpoint(_Detector(allow_partial_weights=True), str(path), strict=False)
    assert any(m.startswith('pts_bbox_head: 332 of 333 tensors loaded') for m in mm_log)


def test_a_checkpoint_without_the_head_keeps_it_initialised_and_says_so(tmp_path, mm_log):
    from mmengine.runner.checkpoint import load_checkpoint
    path = tmp_path / 'backbone_only.pth'
    torch.save({'state_dict': {'img_backbone.stem.stem_1/conv.weight': torch.zeros(1)}}, path)
    det = _Detector()
    before = det.pts_bbox_head.input_proj.weight.clone()
    load_checkpoint(det, str(path), strict=False)
    assert 'pts_bbox_head: 0 of 333 tensors loaded: the checkpoint has none for it, it keeps ' \
           'its initialisation' in mm_log
    assert torch.equal(det.pts_bbox_head.input_proj.weight, before)


def test_kit_checkpoints_round_trip_unchanged():
    src, dst = _Detector(), _Detector()
    dst.load_state_dict(src.state_dict(), strict=True)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


def test_published_head_into_a_head_without_with_time_warns(caplog):
    state = {k[len('pts_bbox_head.'):]: v for k, v in published_neck_head().items()
             if k.startswith('pts_bbox_head.')}
    with caplog.at_level(logging.WARNING, logger='bevboost_petr.petrv2_head'):
        _small_head(with_time=True).load_state_dict(dict(state))
        assert not caplog.records
        _small_head(with_time=False).load_state_dict(dict(state))
    assert 'velocities come out multiplied by the gap' in caplog.text


def test_runner_load_checkpoint_used_by_load_from_and_resume_refuses_too(tmp_path):
    """``Runner.load_from`` and ``Runner.resume`` both load through ``Runner.load_checkpoint``."""
    from mmengine.runner import Runner
    state = {k: v for k, v in published_neck_head().items() if k.startswith('pts_bbox_head.')}
    good, bad = tmp_path / 'good.pth', tmp_path / 'bad.pth'
    torch.save({'state_dict': state, 'meta': {}}, good)
    torch.save({'state_dict': {k.replace('.ffns.0.', '.ffn_x.'): v for k, v in state.items()},
                'meta': {}}, bad)
    runner = Runner(model=_Detector(), work_dir=str(tmp_path / 'work'))
    runner.load_checkpoint(str(good))
    torch.testing.assert_close(runner.model.pts_bbox_head.decoder.post_norm.weight,
                               state['pts_bbox_head.transformer.decoder.post_norm.weight'],
                               rtol=0, atol=0)
    with pytest.raises(ValueError, match='covers 309 of 333'):
        runner.load_checkpoint(str(bad))
