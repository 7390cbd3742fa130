"""PETRv2 for MMDetection3D 1.x: importing this package registers the model,
its task utilities, the multi-frame nuScenes dataset and the image transforms
in mmdet3d's registries (``custom_imports = dict(imports=['bevboost_petr'])``).
"""
import logging

from . import neck, task_utils, vovnet  # noqa: F401  (registration)
from .petrv2 import PETRv2
from .petrv2_head import PETRv2Head
from .dataset import PETRv2NuScenesDataset
from .transforms import BEVRandomRotScale, MultiViewResizeCropFlip

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ['PETRv2', 'PETRv2Head', 'PETRv2NuScenesDataset', 'MultiViewResizeCropFlip',
           'BEVRandomRotScale']
