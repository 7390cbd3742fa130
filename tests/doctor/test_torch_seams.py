"""The one torch-internal read of the doctor, pinned: a torch upgrade fails here first."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from bevboost.doctor.compile_check import dynamo_graphs


class _Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.tanh(self.fc(x))


def test_dynamo_graph_counter_counts_a_compiled_module():
    torch.compiler.reset()
    before = dynamo_graphs()
    model = _Custom()
    model.compile(backend='eager')  # graph capture only: no code generation
    model(torch.ones(2, 4))
    assert dynamo_graphs() == before + 1


def test_dynamo_does_not_trace_a_torch_container_compiled_in_place():
    """Why the compile check counts graphs: ``nn.Sequential.compile()`` marks the module
    compiled yet runs it eagerly on torch 2.13 (2.1 and 2.14.1 trace it). The check's graph
    count is right either way."""
    from bevboost.seams.torch_compat import TORCH_VERSION
    if TORCH_VERSION[:2] != (2, 13):
        pytest.skip('torch 2.13 skips containers compiled in place; 2.1 and 2.14.1 trace them')
    from bevboost.compute.compile_model import is_compiled_module
    torch.compiler.reset()
    before = dynamo_graphs()
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh())
    model.compile(backend='eager')
    model(torch.ones(2, 4))
    assert is_compiled_module(model)
    assert dynamo_graphs() == before
