"""Stand-in for BEVFusion's compiled ``voxel_layer`` built on mmcv's own voxel ops.

mmcv ships CPU and CUDA kernels for the same four functions the project
compiles again; only the calling conventions differ (tensors vs lists, a
returned vs an out-parameter voxel count). Used when the project's ops were
not built, so ``projects.BEVFusion.bevfusion`` imports on CPU-only machines.
"""
from __future__ import annotations

import types
from typing import Sequence

import torch
from torch import Tensor

_FUNCS = ('hard_voxelize_forward', 'dynamic_voxelize_forward',
          'dynamic_point_to_voxel_forward', 'dynamic_point_to_voxel_backward')


def _ext():
    from mmcv.utils import ext_loader
    return ext_loader.load_ext('_ext', list(_FUNCS))


def hard_voxelize(points: Tensor, voxels: Tensor, coors: Tensor, num_points_per_voxel: Tensor,
                  voxel_size: Sequence[float], coors_range: Sequence[float], max_points: int,
                  max_voxels: int, NDim: int = 3, deterministic: bool = True) -> int:  # noqa: N803
    voxel_num = torch.zeros(size=(), dtype=torch.long)
    _ext().hard_voxelize_forward(points, torch.tensor(voxel_size, dtype=torch.float),
                                 torch.tensor(coors_range, dtype=torch.float), voxels, coors,
                                 num_points_per_voxel, voxel_num, max_points=max_points,
                                 max_voxels=max_voxels, NDim=NDim, deterministic=deterministic)
    return int(voxel_num)


def dynamic_voxelize(points: Tensor, coors: Tensor, voxel_size: Sequence[float],
                     coors_range: Sequence[float], NDim: int = 3) -> None:  # noqa: N803
    _ext().dynamic_voxelize_forward(points, torch.tensor(voxel_size, dtype=torch.float),
                                    torch.tensor(coors_range, dtype=torch.float), coors, NDim)


def dynamic_point_to_voxel_forward(feats: Tensor, coors: Tensor, reduce_type: str = 'max'):
    return _ext().dynamic_point_to_voxel_forward(feats, coors, reduce_type)


def dynamic_point_to_voxel_backward(grad_feats: Tensor, grad_voxel_feats: Tensor, feats: Tensor,
                                    voxel_feats: Tensor, point2voxel_map: Tensor,
                                    voxel_points_count: Tensor, reduce_type: str) -> None:
    _ext().dynamic_point_to_voxel_backward(grad_feats, grad_voxel_feats, feats, voxel_feats,
                                           point2voxel_map, voxel_points_count, reduce_type)


def make_module(name: str) -> types.ModuleType:
    """A module object exposing the four functions under the compiled module's name."""
    mod = types.ModuleType(name, 'mmcv-backed stand-in installed by bevboost_bevfusion')
    for fn in (hard_voxelize, dynamic_voxelize, dynamic_point_to_voxel_forward,
               dynamic_point_to_voxel_backward):
        setattr(mod, fn.__name__, fn)
    return mod
