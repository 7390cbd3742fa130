"""Import ``projects.BEVFusion.bevfusion`` (registers BEVFusion in mmdet3d) or fail clearly.

Named in BEVFusion configs' ``custom_imports``. Without a compiled
``bev_pool_ext`` the pure-PyTorch :mod:`bevboost_bevfusion.bev_pool` is
installed in its place, and without a compiled ``voxel_layer`` mmcv's voxel
ops stand in (:mod:`.voxel_shim`), so the project imports and its camera
branch runs on any device. Training the LiDAR branch still needs CUDA
(sparse-convolution backward).
"""
from __future__ import annotations

import importlib
import logging
import sys
import types
from pathlib import Path

from .bev_pool import CompiledExtShim
from . import voxel_shim
from .locate import HOW_TO, BEVFusionUnavailableError, find_checkout

logger = logging.getLogger(__name__)

_OPS = 'projects.BEVFusion.bevfusion.ops'


def _compiled(folder: Path, stem: str) -> bool:
    return any(folder.glob(f'{stem}*.so')) or any(folder.glob(f'{stem}*.pyd'))


def _install_shims(root: Path) -> list[str]:
    """Register stand-ins for the project's compiled modules that were not built."""
    ops_dir = root / 'projects' / 'BEVFusion' / 'bevfusion' / 'ops'
    installed = []
    name = f'{_OPS}.bev_pool.bev_pool_ext'
    if not _compiled(ops_dir / 'bev_pool', 'bev_pool_ext') and name not in sys.modules:
        shim = types.ModuleType(name, 'pure-PyTorch stand-in installed by bevboost_bevfusion')
        shim.bev_pool_forward = CompiledExtShim.bev_pool_forward
        shim.bev_pool_backward = CompiledExtShim.bev_pool_backward
        sys.modules[name] = shim
        installed.append('bev_pool_ext -> pure-PyTorch bev_pool')
    name = f'{_OPS}.voxel.voxel_layer'
    if not _compiled(ops_dir / 'voxel', 'voxel_layer') and name not in sys.modules:
        sys.modules[name] = voxel_shim.make_module(name)
        installed.append('voxel_layer -> mmcv voxel ops')
    for what in installed:
        logger.info('BEVFusion compiled op not built, using %s', what)
    return installed


def import_bevfusion() -> types.ModuleType:
    """Return ``projects.BEVFusion.bevfusion``, importing it from the checkout."""
    root = find_checkout()
    if root is None:
        raise BEVFusionUnavailableError(f'mmdetection3d projects/BEVFusion not found.\n{HOW_TO}')
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    _install_shims(root)
    try:
        return importlib.import_module('projects.BEVFusion.bevfusion')
    except ImportError as exc:
        raise BEVFusionUnavailableError(
            f'importing projects.BEVFusion.bevfusion from {root} failed: {exc}.\n'
            + HOW_TO) from exc


bevfusion = import_bevfusion()
