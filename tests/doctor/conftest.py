"""Shared inputs for the doctor's tests: one synthetic frame set per session."""
from __future__ import annotations

import pytest

from bevboost.doctor.core import Context


@pytest.fixture(scope='session')
def doctor_ctx():
    ctx = Context()
    yield ctx
    ctx.close()


def rows(report, check: str) -> dict:
    """form -> Result of one check in a report."""
    return {r.form: r for r in report.results if r.check == check}
