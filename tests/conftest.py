"""Test tiers and hygiene.

Markers ``gpu``, ``dali``, ``mmdet3d`` and ``torch_min((major, minor), what)`` are
skipped automatically, with the reason listing every missing requirement, when this
machine lacks them (``torch_min``: an older torch, see bevboost/seams/torch_compat.py); CI
runs everything except ``gpu``. Tests must not leave files behind in
/dev/shm (checked after every test).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from bevboost._optional import missing_requirements
from bevboost.seams.torch_compat import torch_at_least, version_text

#: marker -> requirements (``'cuda'`` or import names)
TIER_REQUIREMENTS = {
    'gpu': ('cuda',),
    'dali': ('nvidia.dali',),
    'mmdet3d': ('mmdet3d', 'mmcv', 'mmdet'),
}

SHM_DIR = Path('/dev/shm')


def pytest_collection_modifyitems(config, items):
    for item in items:
        needs: list[str] = []
        for marker, reqs in TIER_REQUIREMENTS.items():
            if item.get_closest_marker(marker) is not None:
                needs.extend(reqs)
        missing = missing_requirements(*dict.fromkeys(needs))
        floor = item.get_closest_marker('torch_min')
        if floor is not None:
            version, what = floor.args
            if not torch_at_least(*version):
                missing.append(f'torch>={version_text(version)} for {what}')
        if missing:
            item.add_marker(pytest.mark.skip(reason=f"Requires: [{' + '.join(missing)}]"))


def _bevboost_shm_entries() -> set[str]:
    if not SHM_DIR.is_dir():
        return set()
    return {p.name for p in SHM_DIR.iterdir() if p.name.startswith('bevboost')}


@pytest.fixture(autouse=True)
def no_shm_leaks():
    """Fail a test that leaves a bevboost shared-memory segment behind."""
    before = _bevboost_shm_entries()
    yield
    leaked = _bevboost_shm_entries() - before
    for name in leaked:  # clean up so one leak does not fail every later test
        try:
            os.unlink(SHM_DIR / name)
        except OSError:
            pass
    assert not leaked, f'test leaked /dev/shm segments: {sorted(leaked)}'


@pytest.fixture
def tmp_work_dir(tmp_path):
    d = tmp_path / 'work_dir'
    d.mkdir()
    return d


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def mm_log():
    """Messages sent to mmengine's current logger (what a Runner's console shows)."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    handler = _Records()
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)
