"""DALI's CUDA build against torch's: the installed distributions, the extras, the warning."""
from __future__ import annotations

import importlib.metadata
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from bevboost._optional import install_hint
from bevboost.seams import dali_compat as dc

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh_check():
    dc.check_dali_matches_torch.cache_clear()
    yield
    dc.check_dali_matches_torch.cache_clear()


def test_installed_dali_is_what_pip_installed():
    names = {d.metadata['Name'].lower() for d in importlib.metadata.distributions()}
    assert set(dc.installed_dali()) == names & set(dc.DALI_DISTRIBUTIONS.values())
    assert dc.torch_cuda_major() == (int(torch.version.cuda.split('.')[0])
                                     if torch.version.cuda else None)


def test_every_cuda_major_has_an_extra_installing_its_dali_build():
    tomllib = pytest.importorskip('tomllib', reason='reading pyproject.toml needs Python 3.11+')
    extras = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project'][
        'optional-dependencies']
    for major, dist in dc.DALI_DISTRIBUTIONS.items():
        pinned = extras[f'dali-cuda{major}0']
        assert len(pinned) == 1 and pinned[0].startswith(dist), (major, pinned)


@pytest.mark.parametrize('torch_cuda, installed, expected', [
    ('12.1', {'nvidia-dali-cuda120': 12}, None),
    (None, {'nvidia-dali-cuda130': 13}, None),  # CPU torch: CPU decoding fits any build
    ('12.1', {}, None),                         # no DALI: require() names the extra
    ('12.1', {'nvidia-dali-cuda130': 13}, "CUDA 13 but torch .* uses CUDA 12.1.*pip uninstall "
                                          r"nvidia-dali-cuda130 && pip install "
                                          r"'bevboost\[dali-cuda120\]'"),
    ('11.8', {'nvidia-dali-cuda120': 12}, r"bevboost\[dali-cuda110\]"),
    ('12.1', {'nvidia-dali-cuda120': 12, 'nvidia-dali-cuda130': 13},
     r"several DALI builds .*bevboost\[dali-cuda120\]"),
])
def test_mismatch_is_named_with_the_fix(monkeypatch, torch_cuda, installed, expected):
    monkeypatch.setattr(torch.version, 'cuda', torch_cuda)
    monkeypatch.setattr(dc, 'installed_dali', lambda: dict(installed))
    problem = dc.dali_mismatch()
    if expected is None:
        assert problem is None
    else:
        assert problem is not None
        assert re.search(expected, problem), problem


def test_missing_dali_hint_names_the_extra_for_torchs_cuda(monkeypatch):
    monkeypatch.setattr(torch.version, 'cuda', '11.8')
    assert install_hint('nvidia.dali') == \
        "pip install 'bevboost[dali-cuda110]'  (provides nvidia-dali-cuda110)"
    monkeypatch.setattr(torch.version, 'cuda', None)
    assert 'bevboost[dali-cuda130]' in install_hint('nvidia.dali')


def test_warning_logged_once_per_process(monkeypatch, fresh_check, caplog):
    monkeypatch.setattr(torch.version, 'cuda', '12.4')
    monkeypatch.setattr(dc, 'installed_dali', lambda: {'nvidia-dali-cuda130': 13})
    with caplog.at_level(logging.WARNING, logger='bevboost.seams.dali_compat'):
        dc.check_dali_matches_torch()
        dc.check_dali_matches_torch()
    assert [r.getMessage().startswith('DALI: nvidia-dali-cuda130') for r in caplog.records] \
        == [True]


@pytest.mark.dali
def test_the_real_dali_decoder_checks_at_first_use(monkeypatch, fresh_check, caplog):
    """Where DALI is used (its first pipeline build), not at import."""
    import cv2

    from bevboost.data.decode import DaliDecoder
    (dist, major), = dc.installed_dali().items()
    other = next(m for m in dc.DALI_DISTRIBUTIONS if m != major)
    monkeypatch.setattr(torch.version, 'cuda', f'{other}.0')  # pretend torch's CUDA differs
    ok, jpeg = cv2.imencode('.jpg', np.full((16, 24, 3), 128, np.uint8))
    decoder = DaliDecoder('cpu', batch_size=1)
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger='bevboost.seams.dali_compat'):
        (img,) = decoder([jpeg.tobytes()], None)
    assert img.shape == (16, 24, 3)
    assert any(f'{dist} is built for CUDA {major}' in r.getMessage() for r in caplog.records)
