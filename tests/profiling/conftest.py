"""Shared fixtures: toy runners with the measurement hooks."""
from __future__ import annotations

import pytest

import bevboost  # noqa: F401  (registers hooks and boosts)
from bevboost.bench.toy import toy_bench_config


@pytest.fixture
def toy_cfg(tmp_work_dir):
    def make(**kwargs):
        return toy_bench_config(str(tmp_work_dir), decode_work=kwargs.pop('decode_work', 50),
                                **kwargs)
    return make


def find_hook(runner, name: str):
    return next(h for h in runner.hooks if type(h).__name__ == name)
