"""Fixtures for the compute-boost tests: one torch thread, the tiny PETRv2 on synthetic data."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PETR_CONFTEST = Path(__file__).resolve().parents[1] / 'petr' / 'conftest.py'


def _petr_fixtures():
    spec = importlib.util.spec_from_file_location('_petr_conftest', PETR_CONFTEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: the 2-core CI box is shared with loader workers and other jobs."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope='session')
def synth_root(tmp_path_factory) -> Path:
    synth = pytest.importorskip('bevboost.synth')
    out = tmp_path_factory.mktemp('synth_nuscenes_compute')
    return synth.synthesize_nuscenes(out, scenes=2, samples_per_scene=4, image_size=(128, 352))


@pytest.fixture
def make_tiny_config():
    """The petr tests' ``tiny_config`` (the bundled tiny config, iteration-based)."""
    return _petr_fixtures().tiny_config
