"""Find mmdetection3d's ``projects/BEVFusion`` in the user's checkout."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

#: environment variable naming the mmdetection3d checkout (the folder holding ``projects/``)
ENV_VAR = 'MMDET3D_ROOT'

HOW_TO = (
    'BEVFusion configs use projects/BEVFusion from an mmdetection3d checkout, which the '
    'mmdet3d wheel does not include. Do:\n'
    '  git clone -b v1.4.0 https://github.com/open-mmlab/mmdetection3d $HOME/mmdetection3d\n'
    f'  export {ENV_VAR}=$HOME/mmdetection3d\n'
    '  # CUDA machines: build the project ops (bev_pool, voxelization)\n'
    '  (cd $MMDET3D_ROOT && python projects/BEVFusion/setup.py develop)\n'
    'See docs/bevfusion.md.')


class BEVFusionUnavailableError(ImportError):
    """projects/BEVFusion cannot be imported; the message says how to fix it."""


def _has_project(root: Path) -> bool:
    return (root / 'projects' / 'BEVFusion' / 'bevfusion' / '__init__.py').is_file()


def find_checkout() -> Path | None:
    """The mmdetection3d checkout to use: ``$MMDET3D_ROOT``, else one already importable."""
    env = os.environ.get(ENV_VAR)
    if env:
        root = Path(env).expanduser().resolve()
        if not _has_project(root):
            raise BEVFusionUnavailableError(
                f'{ENV_VAR}={env} has no projects/BEVFusion/bevfusion/__init__.py.\n{HOW_TO}')
        return root
    try:
        spec = importlib.util.find_spec('projects')
    except (ImportError, ValueError):
        spec = None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        root = Path(loc).parent
        if _has_project(root):
            return root
    return None
