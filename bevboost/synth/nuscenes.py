"""Synthetic nuScenes-style dataset: the embedded default for the kit's jobs.

``synthesize_nuscenes(out)`` writes what mmdet3d's ``NuScenesDataset`` and
``NuScenesMetric`` (nuscenes-devkit evaluation) read, with no download::

    OUT/samples/CAM_*/<log>__CAM_*__<us>.jpg     6 cameras, q90 JPEGs
    OUT/samples/LIDAR_TOP/<log>__LIDAR_TOP__<us>.pcd.bin   float32 (N, 5)
    OUT/sweeps/LIDAR_TOP/...pcd.bin               intermediate LiDAR sweeps
    OUT/<version>/*.json                          the 13 nuScenes tables
    OUT/nuscenes_infos_{train,val}.pkl            mmdet3d 1.x infos

Scenes get real nuScenes scene names (``v1.0-mini``: mini_train / mini_val)
because the devkit picks evaluation scenes by name. Info keys follow
mmdet3d 1.x (``images``, ``lidar_points``, ``lidar_sweeps``, ``ego2global``,
``instances`` with ``bbox_3d`` = LiDAR-frame gravity centre, l, w, h, yaw;
timestamps in seconds; ``img_path``/``lidar_path`` are file names that the
dataset's ``data_prefix`` completes). Extra keys for two-frame models:

* ``prev`` / ``next``: neighbouring sample tokens ('' at scene ends).
* ``scene_token``.
* ``cam_sweeps``: list (newest first; empty on a scene's first sample) of
  dicts camera -> ``img_path`` (file name, in the same folder as that
  camera's current image), ``timestamp``, ``sample_data_token``,
  ``cam2img``, ``cam2ego``, ``ego2global`` (of that frame) and
  ``lidar2cam`` mapping the *current* LiDAR frame into that past camera, so
  PETRv2 can align the previous frame without further pose arithmetic.

Configs using the ``v1.0-mini`` layout must pass
``metainfo=dict(version='v1.0-mini')`` to ``NuScenesDataset``: its class
default is ``v1.0-trainval`` and the info file's value does not override it.
"""
from __future__ import annotations

import json
import logging
import math
import pickle
from pathlib import Path
from typing import Callable

import numpy as np

from bevboost.synth import world
from bevboost.synth.render import NoiseBank, render_camera, render_lidar

logger = logging.getLogger(__name__)

MINI_TRAIN = ('scene-0061', 'scene-0553', 'scene-0655', 'scene-0757',
              'scene-0796', 'scene-1077', 'scene-1094', 'scene-1100')
MINI_VAL = ('scene-0103', 'scene-0916')
VERSIONS = ('v1.0-mini', 'v1.0-trainval')
_ATTRIBUTES = ('vehicle.moving', 'vehicle.stopped', 'vehicle.parked', 'cycle.with_rider',
               'cycle.without_rider', 'pedestrian.sitting_lying_down',
               'pedestrian.standing', 'pedestrian.moving')
_KEYFRAME_DT = 0.5
_SWEEP_DT = 0.05
_EPOCH_US = 1531883530_000000


class _Tokens:
    """Deterministic 32-hex tokens."""

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng([seed, 7919])

    def __call__(self) -> str:
        return self._rng.bytes(16).hex()


def _split_names(scenes: int, version: str) -> tuple[list[str], list[str]]:
    n_val = 1 if scenes <= 5 else max(2, scenes // 5)
    if version == 'v1.0-mini':
        if not 2 <= scenes <= 10:
            raise ValueError(f'scenes must be in [2, 10] for v1.0-mini, got {scenes}; '
                             "use version='v1.0-trainval' for more")
        return list(MINI_TRAIN[:scenes - n_val]), list(MINI_VAL[:n_val])
    from bevboost._optional import require
    splits = require('nuscenes', 'v1.0-trainval scene names').utils.splits
    if scenes < 2:
        raise ValueError(f'scenes must be >= 2, got {scenes}')
    return list(splits.train[:scenes - n_val]), list(splits.val[:n_val])


def _tf(mat: np.ndarray) -> list[list[float]]:
    return np.asarray(mat, dtype=np.float64).tolist()


def _pose_record(token: str, ts: int, tf: np.ndarray) -> dict:
    return dict(token=token, timestamp=ts, rotation=world.quat_from_matrix(tf[:3, :3]),
                translation=tf[:3, 3].tolist())


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


class _Writer:
    """Builds tables and infos while writing sensor files."""

    def __init__(self, out: Path, height: int, width: int, quality: int,
                 lidar_sweeps: int, tokens: _Tokens) -> None:
        self.out, self.height, self.width = out, height, width
        self.quality, self.lidar_sweeps, self.tok = quality, lidar_sweeps, tokens
        self._instances: dict[str, dict] = {}
        self.tables: dict[str, list[dict]] = {k: [] for k in (
            'category', 'attribute', 'visibility', 'instance', 'sensor', 'calibrated_sensor',
            'ego_pose', 'log', 'scene', 'sample', 'sample_data', 'sample_annotation', 'map')}
        self.cat_token = {}
        for idx, (label, spec) in enumerate(world.CLASSES.items()):
            self.cat_token[label] = tokens()
            self.tables['category'].append(dict(token=self.cat_token[label], name=spec[0],
                                                description=label, index=idx))
        self.attr_token = {name: tokens() for name in _ATTRIBUTES}
        self.tables['attribute'] = [dict(token=t, name=n, description=n)
                                    for n, t in self.attr_token.items()]
        self.tables['visibility'] = [dict(token=str(i + 1), level=lvl, description=lvl)
                                     for i, lvl in enumerate(('v0-40', 'v40-60', 'v60-80', 'v80-100'))]
        self.sensor_token = {ch: tokens() for ch in (*world.CAMERAS, 'LIDAR_TOP')}
        self.tables['sensor'] = [dict(token=t, channel=ch, modality='lidar' if ch == 'LIDAR_TOP'
                                      else 'camera') for ch, t in self.sensor_token.items()]
        for sub in (*[f'samples/{c}' for c in world.CAMERAS], 'samples/LIDAR_TOP', 'sweeps/LIDAR_TOP'):
            (out / sub).mkdir(parents=True, exist_ok=True)

    def _sample_data(self, chain: dict, channel: str, sample: str, calib: str, ts: int,
                     tf: np.ndarray, filename: str, key: bool) -> str:
        token = self.tok()
        self.tables['ego_pose'].append(_pose_record(token, ts, tf))
        prev = chain.get(channel)
        rec = dict(token=token, sample_token=sample, ego_pose_token=token,
                   calibrated_sensor_token=calib, timestamp=ts, is_key_frame=key,
                   fileformat='pcd' if channel == 'LIDAR_TOP' else 'jpg', filename=filename,
                   height=0 if channel == 'LIDAR_TOP' else self.height,
                   width=0 if channel == 'LIDAR_TOP' else self.width,
                   prev=prev['token'] if prev else '', next='')
        if prev:
            prev['next'] = token
        chain[channel] = rec
        self.tables['sample_data'].append(rec)
        return token

    def scene(self, index: int, name: str, n_samples: int, seed: int,
              progress: Callable[[], None]) -> list[dict]:
        """Write one scene; return its infos."""
        import simplejpeg
        rng = np.random.default_rng([seed, index])
        scene = world.make_scene(rng, index, (n_samples - 1) * _KEYFRAME_DT)
        bank = NoiseBank(rng, self.height, self.width)
        log_name = f'n015-2018-07-{11 + index % 18:02d}-11-07-57+0800'
        log_tok, scene_tok, map_tok = self.tok(), self.tok(), self.tok()
        self.tables['log'].append(dict(token=log_tok, logfile=log_name, vehicle='n015',
                                       date_captured='2018-07-18', location='singapore-onenorth'))
        self.tables['map'].append(dict(token=map_tok, log_tokens=[log_tok],
                                       category='semantic_prior', filename=''))
        l2e = world.lidar2ego()
        calib = {}
        for ch in (*world.CAMERAS, 'LIDAR_TOP'):
            tf = l2e if ch == 'LIDAR_TOP' else world.cam2ego(ch)
            k = [] if ch == 'LIDAR_TOP' else _tf(world.intrinsics(ch, self.width, self.height))
            calib[ch] = self.tok()
            self.tables['calibrated_sensor'].append(dict(
                token=calib[ch], sensor_token=self.sensor_token[ch], camera_intrinsic=k,
                rotation=world.quat_from_matrix(tf[:3, :3]), translation=tf[:3, 3].tolist()))
        base_us = _EPOCH_US + index * 100_000_000
        infos, samples, chain, last_ann = [], [], {}, {}
        for k in range(n_samples):
            t = k * _KEYFRAME_DT
            ts = base_us + int(round(t * 1e6))
            sample_tok = self.tok()
            e2g = scene.ego2global(t)
            l2g = e2g @ l2e
            for j in range(self.lidar_sweeps, 0, -1):  # oldest sweep first in the chain
                ts_j = ts - int(round(j * _SWEEP_DT * 1e6))
                e2g_j = scene.ego2global(t - j * _SWEEP_DT)
                pts, _ = render_lidar(rng, scene.objects, t - j * _SWEEP_DT,
                                      np.linalg.inv(e2g_j @ l2e), density=0.5)
                fname = f'sweeps/LIDAR_TOP/{log_name}__LIDAR_TOP__{ts_j}.pcd.bin'
                pts.tofile(self.out / fname)
                self._sample_data(chain, 'LIDAR_TOP', sample_tok, calib['LIDAR_TOP'], ts_j,
                                  e2g_j, fname, False)
            sweeps = []
            for rec in reversed(self.tables['sample_data'][-self.lidar_sweeps:] if self.lidar_sweeps else []):
                e2g_j = scene.ego2global((rec['timestamp'] - base_us) / 1e6)
                s2l = np.linalg.inv(l2g) @ e2g_j @ l2e  # sweep lidar -> current lidar
                l2s = np.eye(4)
                l2s[:3, :3], l2s[:3, 3] = s2l[:3, :3].T, -s2l[:3, 3]  # mmdet3d's convention
                sweeps.append(dict(
                    lidar_points=dict(lidar_path=rec['filename'], lidar2ego=_tf(l2e),
                                      lidar2sensor=_tf(l2s)),
                    ego2global=_tf(e2g_j), timestamp=rec['timestamp'] / 1e6,
                    sample_data_token=rec['token']))
            pts, counts = render_lidar(rng, scene.objects, t, np.linalg.inv(l2g))
            lidar_name = f'{log_name}__LIDAR_TOP__{ts}.pcd.bin'
            pts.tofile(self.out / 'samples/LIDAR_TOP' / lidar_name)
            lidar_sd = self._sample_data(chain, 'LIDAR_TOP', sample_tok, calib['LIDAR_TOP'], ts,
                                         e2g, f'samples/LIDAR_TOP/{lidar_name}', True)
            images = {}
            for c_idx, ch in enumerate(world.CAMERAS):
                c2e = world.cam2ego(ch)
                k_mat = world.intrinsics(ch, self.width, self.height)
                shift = (int(37 * c_idx), int(211 * c_idx + 25 * t * scene.ego_speed))
                img = render_camera(bank, scene.objects, t, np.linalg.inv(e2g @ c2e), k_mat, shift)
                fname = f'{log_name}__{ch}__{ts}.jpg'
                (self.out / 'samples' / ch / fname).write_bytes(simplejpeg.encode_jpeg(
                    img, quality=self.quality, colorspace='RGB', colorsubsampling='420'))
                sd = self._sample_data(chain, ch, sample_tok, calib[ch], ts, e2g,
                                       f'samples/{ch}/{fname}', True)
                images[ch] = dict(img_path=fname, cam2img=_tf(k_mat), sample_data_token=sd,
                                  timestamp=ts / 1e6, cam2ego=_tf(c2e),
                                  lidar2cam=_tf(np.linalg.inv(c2e) @ l2e))
            instances = []
            g2l = np.linalg.inv(l2g)
            for o_idx, obj in enumerate(scene.objects):
                centre, yaw, vel = obj.state(t)
                if o_idx not in counts or np.linalg.norm(centre[:2] - e2g[:2, 3]) > 55.0:
                    continue
                ann_tok = self.tok()
                prev = last_ann.get(o_idx)
                if prev is not None and prev['sample_token'] != samples[-1]['token']:
                    prev = None  # the object left the range in between: new track segment
                ann = dict(token=ann_tok, sample_token=sample_tok, instance_token='',
                           visibility_token='4', translation=centre.tolist(),
                           size=[float(obj.size_lwh[1]), float(obj.size_lwh[0]), float(obj.size_lwh[2])],
                           rotation=world.quat_from_matrix(world.rot_z(yaw)),
                           attribute_tokens=[self.attr_token[obj.attribute]] if obj.attribute else [],
                           prev=prev['token'] if prev else '', next='',
                           num_lidar_pts=int(counts[o_idx]), num_radar_pts=0)
                if prev:
                    prev['next'] = ann_tok
                    ann['instance_token'] = prev['instance_token']
                    inst = self._instances[ann['instance_token']]
                    inst['nbr_annotations'] += 1
                    inst['last_annotation_token'] = ann_tok
                else:
                    ann['instance_token'] = self.tok()
                    self._instances[ann['instance_token']] = dict(
                        token=ann['instance_token'], category_token=self.cat_token[obj.label],
                        nbr_annotations=1, first_annotation_token=ann_tok,
                        last_annotation_token=ann_tok)
                last_ann[o_idx] = ann
                self.tables['sample_annotation'].append(ann)
                c_l = g2l[:3, :3] @ centre + g2l[:3, 3]
                yaw_l = _wrap(yaw - scene.ego_yaw + math.pi / 2)
                label = world.CLASS_NAMES.index(obj.label)
                instances.append(dict(
                    bbox_3d=[*c_l.tolist(), *obj.size_lwh.tolist(), yaw_l],
                    bbox_label_3d=label, bbox_label=label,
                    velocity=(g2l[:3, :3] @ vel)[:2].tolist(),
                    num_lidar_pts=int(counts[o_idx]), num_radar_pts=0, bbox_3d_isvalid=True))
            sample = dict(token=sample_tok, timestamp=ts, scene_token=scene_tok,
                          prev=samples[-1]['token'] if samples else '', next='')
            if samples:
                samples[-1]['next'] = sample_tok
            samples.append(sample)
            cam_sweeps = []
            if infos:
                prev_info = infos[-1]
                prev_e2g = np.asarray(prev_info['ego2global'])
                cam_sweeps.append({ch: dict(
                    img_path=cam['img_path'], timestamp=cam['timestamp'],
                    sample_data_token=cam['sample_data_token'], cam2img=cam['cam2img'],
                    cam2ego=cam['cam2ego'], ego2global=prev_info['ego2global'],
                    lidar2cam=_tf(np.linalg.inv(prev_e2g @ np.asarray(cam['cam2ego'])) @ l2g))
                    for ch, cam in prev_info['images'].items()})
            infos.append(dict(
                token=sample_tok, timestamp=ts / 1e6, scene_token=scene_tok,
                prev=sample['prev'], next='', ego2global=_tf(e2g),
                lidar_points=dict(num_pts_feats=5, lidar_path=lidar_name, lidar2ego=_tf(l2e),
                                  sample_data_token=lidar_sd),
                lidar_sweeps=sweeps, images=images, cam_sweeps=cam_sweeps,
                instances=instances))
            if len(infos) > 1:
                infos[-2]['next'] = sample_tok
            progress()
        self.tables['sample'].extend(samples)
        self.tables['scene'].append(dict(
            token=scene_tok, log_token=log_tok, nbr_samples=n_samples, name=name,
            first_sample_token=samples[0]['token'], last_sample_token=samples[-1]['token'],
            description=f'synthetic scene {index}'))
        return infos


def synthesize_nuscenes(out_dir: str | Path, scenes: int = 2, samples_per_scene: int = 8,
                        seed: int = 0, image_size: tuple[int, int] = (900, 1600),
                        lidar_sweeps: int = 2, jpeg_quality: int = 90,
                        version: str = 'v1.0-mini',
                        progress: Callable[[int, int], None] | None = None) -> Path:
    """Write a synthetic nuScenes tree to ``out_dir`` and return its path.

    Args:
        out_dir: data root to create (existing files are overwritten).
        scenes: number of scenes (2-10 for ``v1.0-mini``); one (two from 6
            scenes on) goes to the val split, the rest to train.
        samples_per_scene: keyframes per scene, 0.5 s apart.
        seed: everything is a deterministic function of it.
        image_size: (height, width); intrinsics scale with the width. Use a
            small size such as (225, 400) for fast tests.
        lidar_sweeps: non-keyframe LiDAR sweeps (20 Hz) before each keyframe.
        jpeg_quality: JPEG quality of the camera images.
        version: ``'v1.0-mini'`` or ``'v1.0-trainval'`` (scene names of that split).
        progress: called as ``progress(done, total)`` after each sample.
    """
    if not isinstance(scenes, int) or isinstance(scenes, bool):
        raise TypeError(f'scenes must be an int, got {scenes!r}')
    if not isinstance(samples_per_scene, int) or samples_per_scene < 1:
        raise ValueError(f'samples_per_scene must be a positive int, got {samples_per_scene!r}')
    if version not in VERSIONS:
        raise ValueError(f'version must be one of {VERSIONS}, got {version!r}')
    height, width = (int(v) for v in image_size)
    if height < 32 or width < 32 or height % 2 or width % 2:
        raise ValueError(f'image_size must be even and >= 32, got {image_size!r}')
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f'jpeg_quality must be in [1, 100], got {jpeg_quality!r}')
    if lidar_sweeps < 0:
        raise ValueError(f'lidar_sweeps must be >= 0, got {lidar_sweeps!r}')
    train_names, val_names = _split_names(scenes, version)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    writer = _Writer(out, height, width, jpeg_quality, lidar_sweeps, _Tokens(seed))
    total, done = scenes * samples_per_scene, 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    split_infos: dict[str, list[dict]] = {'train': [], 'val': []}
    names = [('train', n) for n in train_names] + [('val', n) for n in val_names]
    for index, (split, name) in enumerate(names):
        split_infos[split].extend(writer.scene(index, name, samples_per_scene, seed, tick))
    writer.tables['instance'] = list(writer._instances.values())
    table_dir = out / version
    table_dir.mkdir(exist_ok=True)
    for table, rows in writer.tables.items():
        (table_dir / f'{table}.json').write_text(json.dumps(rows))
    metainfo = dict(dataset='nuscenes', version=version, info_version='1.1',
                    categories={c: i for i, c in enumerate(world.CLASS_NAMES)})
    for split, infos in split_infos.items():
        for idx, info in enumerate(infos):
            info['sample_idx'] = idx
        with open(out / f'nuscenes_infos_{split}.pkl', 'wb') as f:
            pickle.dump(dict(metainfo=metainfo, data_list=infos), f)
    logger.info('wrote %d samples (%d train, %d val) of %s to %s', total,
                len(split_infos['train']), len(split_infos['val']), version, out)
    return out
