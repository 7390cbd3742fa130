"""PETRv2 parts brought to the published model: multi-view sine encoding,
per-task regression heads, decoder checkpointing."""
from __future__ import annotations

import math

import pytest
import torch

pytestmark = pytest.mark.mmdet3d


@pytest.fixture(scope='module', autouse=True)
def _registered():
    import bevboost_petr  # noqa: F401
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet3d')


def _petr_sine3d(mask: torch.Tensor, num_feats: int, temperature: int = 10000) -> torch.Tensor:
    """PETR's ``SinePositionalEncoding3D.forward`` (normalize=True), transcribed."""
    not_mask = 1 - mask.to(torch.int)
    n_embed = not_mask.cumsum(1, dtype=torch.float32)
    y_embed = not_mask.cumsum(2, dtype=torch.float32)
    x_embed = not_mask.cumsum(3, dtype=torch.float32)
    eps, scale = 1e-6, 2 * math.pi
    n_embed = n_embed / (n_embed[:, -1:, :, :] + eps) * scale
    y_embed = y_embed / (y_embed[:, :, -1:, :] + eps) * scale
    x_embed = x_embed / (x_embed[:, :, :, -1:] + eps) * scale
    dim_t = torch.arange(num_feats, dtype=torch.float32)
    dim_t = temperature ** (2 * (dim_t // 2) / num_feats)
    b, n, h, w = mask.size()
    parts = []
    for embed in (n_embed, y_embed, x_embed):
        p = embed[..., None] / dim_t
        parts.append(torch.stack((p[..., 0::2].sin(), p[..., 1::2].cos()), dim=4)
                     .view(b, n, h, w, -1))
    return torch.cat(parts, dim=4).permute(0, 1, 4, 2, 3)


def test_multiview_sine_encoding_matches_petr():
    from bevboost_petr.position_encoding import MultiViewSinePE
    mask = torch.zeros(2, 5, 6, 9, dtype=torch.bool)
    mask[0, :, 4:, :] = True  # padded rows
    mask[1, 2, :, 7:] = True  # one view padded on the right
    out = MultiViewSinePE(16)(mask)
    assert out.shape == (2, 5, 48, 6, 9)
    torch.testing.assert_close(out, _petr_sine3d(mask, 16), rtol=1e-5, atol=1e-5)


def _decoder(with_cp: bool):
    from bevboost_petr.decoder import CheckpointedDetrDecoder
    torch.manual_seed(0)
    return CheckpointedDetrDecoder(
        num_layers=2, return_intermediate=True, with_cp=with_cp,
        layer_cfg=dict(self_attn_cfg=dict(embed_dims=32, num_heads=4),
                       cross_attn_cfg=dict(embed_dims=32, num_heads=4),
                       ffn_cfg=dict(embed_dims=32, feedforward_channels=64, ffn_drop=0.0))).train()


def _count_ffn_calls(decoder) -> list:
    calls: list[int] = []
    ffn = decoder.layers[0].ffn
    forward = ffn.forward

    def counted(*args, **kwargs):
        calls.append(1)
        return forward(*args, **kwargs)

    ffn.forward = counted
    return calls


def test_decoder_checkpointing_recomputes_layers_and_keeps_results():
    torch.manual_seed(1)
    q, qp = torch.randn(2, 7, 32), torch.randn(2, 7, 32)
    k, kp = torch.randn(2, 30, 32), torch.randn(2, 30, 32)
    mask = torch.zeros(2, 30, dtype=torch.bool)
    mask[:, -4:] = True
    results = {}
    for with_cp in (False, True):
        dec = _decoder(with_cp)
        calls = _count_ffn_calls(dec)
        out = dec(q, k, k, qp, kp, mask)
        out.square().sum().backward()
        results[with_cp] = (out.detach(), [p.grad.clone() for p in dec.parameters()], len(calls))
    assert results[False][2] == 1 and results[True][2] == 2  # forward, then recomputed
    torch.testing.assert_close(results[True][0], results[False][0])
    for g_cp, g in zip(results[True][1], results[False][1]):
        torch.testing.assert_close(g_cp, g)
    # inference never checkpoints
    dec = _decoder(True).eval()
    calls = _count_ffn_calls(dec)
    with torch.no_grad():
        dec(q, k, k, qp, kp, mask)
    assert len(calls) == 1


def test_task_regression_branch_groups_and_bad_groups():
    from mmengine.config import Config
    from mmdet3d.registry import MODELS
    from bevboost_petr.petrv2_head import TaskRegBranch
    branch = TaskRegBranch(32, 2, (2, 1, 3, 2, 2))
    x = torch.randn(3, 5, 32)
    before = branch(x).detach()
    assert before.shape == (3, 5, 10)
    with torch.no_grad():
        branch.task_heads[2][-1].bias += 1.0  # the third group: codes 3..5
    moved = (branch(x).detach() - before).abs().amax(dim=(0, 1)) > 0.5
    assert moved.tolist() == [False] * 3 + [True] * 3 + [False] * 4
    cfg = Config.fromfile('configs/_base_/models/petrv2_tiny.py', import_custom_modules=False)
    with pytest.raises(ValueError, match='group_reg_dims'):
        MODELS.build(dict(cfg.model.pts_bbox_head, group_reg_dims=(2, 2)))
