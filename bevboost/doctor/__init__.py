"""``bevboost doctor``: prove each GPU path of the kit on this machine against its CPU form.

A fixed list of checks (:data:`CHECKS`, in this order): JPEG decode with
nvJPEG and DALI ``mixed``, the main-process decode preprocessor, fp16 AMP
with a GradScaler, NVML sampling, the shm ring's pinned copy, compile, the
fork rule and DDP. Each runs its GPU form on the CUDA device under test and
its CPU form on ``cpu``, on the same inputs, and compares with a reference
(docs/doctor.md lists what and the tolerance). Without CUDA every GPU form is
``skipped`` with the reason and the CPU forms must pass.
"""
from __future__ import annotations

# importing a check module registers its checks: this order is the table's
from bevboost.doctor import decode_checks  # noqa: F401
from bevboost.doctor import amp_check  # noqa: F401
from bevboost.doctor import nvml_check  # noqa: F401
from bevboost.doctor import shm_check  # noqa: F401
from bevboost.doctor import compile_check  # noqa: F401
from bevboost.doctor import fork_check  # noqa: F401
from bevboost.doctor import ddp_check  # noqa: F401
from bevboost.doctor.core import CHECKS, FAILED, OK, SKIPPED, Check, Outcome, Result
from bevboost.doctor.runner import Report, format_table, run_checks, write_json

__all__ = ['CHECKS', 'FAILED', 'OK', 'SKIPPED', 'Check', 'Outcome', 'Report', 'Result',
           'format_table', 'run_checks', 'write_json']
