"""mmengine command-line seam: how ``--cfg-options`` values are parsed.

Checked on mmengine 0.10.4-0.10.7 (``tests/seams/test_mmengine_seams.py``).
``DictAction._parse_iterable(text)`` (a private staticmethod) turns one ``key=value``
value into what ``tools/train.py --cfg-options`` merges (numbers, booleans, ``None``,
nested lists/tuples); the kit's CLI parses values exactly as mmengine's own launch does.
"""
from __future__ import annotations

from typing import Any


def parse_cfg_option_value(text: str) -> Any:
    """One ``--cfg-options`` value as mmengine's ``DictAction`` parses it (it asserts on
    unbalanced brackets)."""
    from mmengine.config import DictAction
    return DictAction._parse_iterable(text)
