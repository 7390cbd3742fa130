"""Adapter for mmdetection3d's ``projects/BEVFusion`` (not shipped in the mmdet3d wheel).

Configs import :mod:`bevboost_bevfusion.project`, which finds the user's
mmdetection3d checkout (``MMDET3D_ROOT``), puts it on ``sys.path``, swaps in
the pure-PyTorch :func:`~bevboost_bevfusion.bev_pool.bev_pool` when the
compiled ``bev_pool_ext`` was not built, and imports
``projects.BEVFusion.bevfusion`` -- or fails with one message saying what to
do. Importing this package itself needs neither the checkout nor mmdet3d.
"""
import logging

from .bev_pool import bev_pool, bev_pool_backward, bev_pool_forward
from .locate import ENV_VAR, BEVFusionUnavailableError, find_checkout

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ['bev_pool', 'bev_pool_forward', 'bev_pool_backward', 'ENV_VAR',
           'BEVFusionUnavailableError', 'find_checkout']
