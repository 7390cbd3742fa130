"""nuScenes with PETRv2's two-frame camera input, on mmdet3d's ``NuScenesDataset``.

Each sample gets the cameras of an earlier frame added to its ``images`` dict
(``CAM_FRONT__prev`` ...) with ``lidar2cam`` mapping the *current* LiDAR frame
into the earlier camera. The earlier frame comes from the info's
``cam_sweeps`` when present (the kit's synthetic data writes it, with the
ego-motion already folded into ``lidar2cam``); otherwise from the previous
sample of the same scene, re-expressed through both ego poses.
Any multi-view loader that walks ``images`` (mmdet3d's
``LoadMultiViewImageFromFiles``, the kit's fast decoders) then loads both
frames, and the model sees ego-motion-aligned geometry.

Each sample also carries ``prev_time_gap``: seconds between the frames, the
mean over the cameras of (current - earlier) camera timestamps like the
published ``with_time`` head (sample timestamps when cameras have none;
``empty_time_gap`` when a scene's first sample repeats its own frame).
"""
from __future__ import annotations

import copy
import logging
import os.path as osp

import numpy as np

from mmdet3d.datasets import NuScenesDataset
from mmdet3d.registry import DATASETS

logger = logging.getLogger(__name__)

PREV_SUFFIX = '__prev'


def _lidar2global(info: dict) -> np.ndarray:
    return np.asarray(info['ego2global'], dtype=np.float64) @ np.asarray(
        info['lidar_points']['lidar2ego'], dtype=np.float64)


@DATASETS.register_module()
class PETRv2NuScenesDataset(NuScenesDataset):
    """``NuScenesDataset`` whose samples carry ``num_prev_frames`` earlier camera sets.

    Args:
        num_prev_frames: 0 (single frame, PETR) or 1 (PETRv2).
        prev_offset: how many samples back the earlier frame is (1 = 0.5 s in nuScenes).
        max_time_gap: seconds; a farther neighbour is treated as another scene and
            the current frame is repeated (as PETRv2 does for a scene's first sample).
        empty_time_gap: ``prev_time_gap`` of a sample without an earlier frame
            (the published loader uses its mean sweep gap there, 1.245 s).
    """

    def __init__(self, *args, num_prev_frames: int = 1, prev_offset: int = 1,
                 max_time_gap: float = 2.0, empty_time_gap: float = 0.5, **kwargs) -> None:
        if not empty_time_gap > 0:
            raise ValueError(f'empty_time_gap must be > 0 seconds, got {empty_time_gap}')
        self.empty_time_gap = float(empty_time_gap)
        if num_prev_frames not in (0, 1):
            raise ValueError(f'num_prev_frames must be 0 or 1, got {num_prev_frames}')
        if prev_offset < 1:
            raise ValueError(f'prev_offset must be >= 1, got {prev_offset}')
        self.num_prev_frames, self.prev_offset, self.max_time_gap = (
            num_prev_frames, prev_offset, float(max_time_gap))
        super().__init__(*args, **kwargs)

    def _time_gap(self, cur_images: dict, prev_images: dict, cur_ts, prev_ts) -> float:
        gaps = [float(c['timestamp']) - float(prev_images[k]['timestamp'])
                for k, c in cur_images.items()
                if isinstance(c, dict) and c.get('timestamp') is not None
                and isinstance(prev_images.get(k), dict)
                and prev_images[k].get('timestamp') is not None]
        gap = float(np.mean(gaps)) if gaps else (
            float(cur_ts) - float(prev_ts) if cur_ts is not None and prev_ts is not None else 0.0)
        return gap if gap > 0 else self.empty_time_gap

    def _find_prev(self, infos: list[dict], i: int) -> dict:
        cur = infos[i]
        j = i - self.prev_offset
        if j < 0:
            return cur
        prev = infos[j]
        same_scene = cur.get('scene_token', None) == prev.get('scene_token', None)
        dt = float(cur.get('timestamp', 0.0)) - float(prev.get('timestamp', 0.0))
        return prev if same_scene and 0 < dt <= self.max_time_gap else cur

    def parse_data_info(self, info: dict) -> dict:
        info = super().parse_data_info(info)
        if (self.num_prev_frames == 0 or not self.modality.get('use_camera', False)
                or 'cam_sweeps' not in info or not isinstance(info, dict)):
            return info
        sweeps = info['cam_sweeps']
        sweep = sweeps[min(self.prev_offset, len(sweeps)) - 1] if sweeps else {}
        extra = {}
        for cam, cur in info['images'].items():
            if cam in sweep:
                prefix = self.data_prefix.get(cam, self.data_prefix.get('img', ''))
                src = sweep[cam]
                extra[cam + PREV_SUFFIX] = dict(
                    img_path=osp.join(prefix, src['img_path']), cam2img=src['cam2img'],
                    lidar2cam=src['lidar2cam'], timestamp=src.get('timestamp'))
            else:  # a scene's first sample: repeat the current frame
                extra[cam + PREV_SUFFIX] = copy.deepcopy(cur)
        info['prev_time_gap'] = self._time_gap(
            info['images'], sweep, info.get('timestamp'), sweep.get('timestamp')
        ) if sweep else self.empty_time_gap
        info['images'].update(extra)
        info['has_prev_frame'] = bool(sweep)
        return info

    def load_data_list(self) -> list[dict]:
        infos = super().load_data_list()
        if self.num_prev_frames == 0 or not self.modality.get('use_camera', False):
            return infos
        fallback = 0
        for i, info in enumerate(infos):
            if 'has_prev_frame' in info:  # already taken from cam_sweeps
                fallback += not info['has_prev_frame']
                continue
            prev = self._find_prev(infos, i)
            fallback += prev is info
            cur2global = _lidar2global(info)
            prev2cur = np.linalg.inv(cur2global) @ _lidar2global(prev)
            cur_to_prev_lidar = np.linalg.inv(prev2cur)
            extra = {}
            for cam, cam_info in prev['images'].items():
                if PREV_SUFFIX in cam or 'img_path' not in cam_info:
                    continue
                item = copy.deepcopy(cam_info)
                item['lidar2cam'] = (np.asarray(cam_info['lidar2cam'], dtype=np.float64)
                                     @ cur_to_prev_lidar).tolist()
                extra[cam + PREV_SUFFIX] = item
            info['prev_time_gap'] = self._time_gap(
                info['images'], prev['images'], info.get('timestamp'), prev.get('timestamp')
            ) if prev is not info else self.empty_time_gap
            info['images'].update(extra)
            info['has_prev_frame'] = prev is not info
        logger.info('PETRv2 dataset: %d samples, %d without an earlier frame', len(infos), fallback)
        return infos
