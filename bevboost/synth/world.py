"""Geometry of the synthetic nuScenes-style world: rig, ego motion, objects.

Frames follow nuScenes: global and ego are x-forward/y-left/z-up, the LiDAR
is x-right/y-forward/z-up (ego rotated by -90 deg about z), cameras are
x-right/y-down/z-forward. Transforms are 4x4 float64 "a2b" matrices mapping
points in frame a to frame b.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

#: camera channels in the order mmdet3d's nuScenes converter writes them
CAMERAS = ('CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT',
           'CAM_BACK', 'CAM_BACK_LEFT', 'CAM_BACK_RIGHT')
#: channel -> (yaw in ego [deg], mount xyz in ego [m], focal length at 1600 px)
_RIG = {
    'CAM_FRONT': (0.0, (1.70, 0.00, 1.51), 1266.0),
    'CAM_FRONT_RIGHT': (-55.0, (1.55, -0.49, 1.49), 1260.0),
    'CAM_FRONT_LEFT': (55.0, (1.52, 0.49, 1.51), 1257.0),
    'CAM_BACK': (180.0, (0.03, 0.00, 1.57), 809.0),
    'CAM_BACK_LEFT': (110.0, (1.04, 0.48, 1.56), 1256.0),
    'CAM_BACK_RIGHT': (-110.0, (1.04, -0.48, 1.55), 1259.0),
}
LIDAR_HEIGHT = 1.84

#: detection class -> (nuScenes category, mean size l, w, h [m], sampling weight,
#: max speed [m/s], attribute when moving, attribute when still)
CLASSES = {
    'car': ('vehicle.car', (4.6, 1.9, 1.7), 0.34, 8.0, 'vehicle.moving', 'vehicle.parked'),
    'truck': ('vehicle.truck', (7.0, 2.5, 2.9), 0.08, 6.0, 'vehicle.moving', 'vehicle.parked'),
    'trailer': ('vehicle.trailer', (10.0, 2.9, 3.8), 0.03, 4.0, 'vehicle.moving', 'vehicle.parked'),
    'bus': ('vehicle.bus.rigid', (11.0, 2.9, 3.5), 0.04, 6.0, 'vehicle.moving', 'vehicle.stopped'),
    'construction_vehicle': ('vehicle.construction', (6.5, 2.8, 3.2), 0.03, 0.0,
                             'vehicle.moving', 'vehicle.parked'),
    'bicycle': ('vehicle.bicycle', (1.7, 0.6, 1.3), 0.05, 4.0,
                'cycle.with_rider', 'cycle.without_rider'),
    'motorcycle': ('vehicle.motorcycle', (2.1, 0.8, 1.5), 0.05, 6.0,
                   'cycle.with_rider', 'cycle.without_rider'),
    'pedestrian': ('human.pedestrian.adult', (0.7, 0.7, 1.75), 0.20, 1.5,
                   'pedestrian.moving', 'pedestrian.standing'),
    'traffic_cone': ('movable_object.trafficcone', (0.4, 0.4, 1.0), 0.10, 0.0, '', ''),
    'barrier': ('movable_object.barrier', (0.5, 2.5, 1.0), 0.08, 0.0, '', ''),
}
CLASS_NAMES = tuple(CLASSES)


def rot_z(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def make_tf(rot: np.ndarray, trans) -> np.ndarray:
    tf = np.eye(4)
    tf[:3, :3] = rot
    tf[:3, 3] = trans
    return tf


def quat_from_matrix(rot: np.ndarray) -> list[float]:
    """Rotation matrix -> nuScenes quaternion ``[w, x, y, z]`` (w >= 0)."""
    m = np.asarray(rot, dtype=np.float64)
    tr = np.trace(m)
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = math.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k]) * 2
        q = [0.0] * 4
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    q = np.array(q)
    q /= np.linalg.norm(q)
    if q[0] < 0:
        q = -q
    return q.tolist()


def lidar2ego() -> np.ndarray:
    return make_tf(rot_z(-math.pi / 2), (0.94, 0.0, LIDAR_HEIGHT))


def cam2ego(channel: str) -> np.ndarray:
    yaw_deg, xyz, _ = _RIG[channel]
    yaw = math.radians(yaw_deg)
    forward = np.array([math.cos(yaw), math.sin(yaw), 0.0])
    right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    return make_tf(np.stack([right, down, forward], axis=1), xyz)


def intrinsics(channel: str, width: int, height: int) -> np.ndarray:
    """Pinhole matrix for ``width`` x ``height`` images (focal scales with width)."""
    f = _RIG[channel][2] * width / 1600.0
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


@dataclasses.dataclass
class SceneObject:
    """A box moving at constant velocity in the global frame."""
    label: str
    size_lwh: np.ndarray
    start_xy: np.ndarray
    yaw: float
    speed: float

    def state(self, t: float) -> tuple[np.ndarray, float, np.ndarray]:
        """(gravity centre, yaw, velocity) in the global frame at ``t`` seconds."""
        heading = np.array([math.cos(self.yaw), math.sin(self.yaw)])
        xy = self.start_xy + heading * self.speed * t
        centre = np.array([xy[0], xy[1], self.size_lwh[2] / 2.0])
        vel = np.array([*(heading * self.speed), 0.0])
        return centre, self.yaw, vel

    def corners(self, t: float) -> np.ndarray:
        """(8, 3) global corners; 0-3 bottom, 4-7 top."""
        centre, yaw, _ = self.state(t)
        l, w, h = self.size_lwh
        x = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * l / 2
        y = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * w / 2
        z = np.array([-1, -1, -1, -1, 1, 1, 1, 1]) * h / 2
        return (rot_z(yaw) @ np.stack([x, y, z])).T + centre

    @property
    def attribute(self) -> str:
        moving, still = CLASSES[self.label][4:6]
        return moving if self.speed > 0.2 else still


@dataclasses.dataclass
class Scene:
    """Ego trajectory and objects of one synthetic scene."""
    ego_start: np.ndarray
    ego_yaw: float
    ego_speed: float
    objects: list[SceneObject]

    def ego2global(self, t: float) -> np.ndarray:
        heading = np.array([math.cos(self.ego_yaw), math.sin(self.ego_yaw), 0.0])
        return make_tf(rot_z(self.ego_yaw), self.ego_start + heading * self.ego_speed * t)


def make_scene(rng: np.random.Generator, index: int, duration: float) -> Scene:
    """Random ego path and 14-26 non-overlapping objects around it."""
    ego_start = np.array([300.0 + 250.0 * index, 900.0 + 40.0 * index, 0.0])
    ego_yaw = float(rng.uniform(-math.pi, math.pi))
    ego_speed = float(rng.uniform(0.0, 6.0))
    mid = ego_start + ego_speed * duration / 2 * np.array([math.cos(ego_yaw), math.sin(ego_yaw), 0])
    labels = list(CLASSES)
    weights = np.array([CLASSES[c][2] for c in labels])
    objects: list[SceneObject] = []
    target = int(rng.integers(14, 27))
    for _ in range(target * 20):
        if len(objects) >= target:
            break
        label = labels[int(rng.choice(len(labels), p=weights / weights.sum()))]
        size = np.array(CLASSES[label][1]) * rng.uniform(0.9, 1.1, size=3)
        rng_m = float(rng.uniform(6.0, 42.0))
        bearing = float(rng.uniform(-math.pi, math.pi))
        xy = mid[:2] + rng_m * np.array([math.cos(ego_yaw + bearing), math.sin(ego_yaw + bearing)])
        lateral = abs(rng_m * math.sin(bearing))
        if lateral < 3.5 + size[1]:  # keep the ego lane free
            continue
        if any(np.linalg.norm(xy - o.start_xy) < (size[0] + o.size_lwh[0]) / 2 + 1.0
               for o in objects):
            continue
        moves = CLASSES[label][3] > 0 and rng.random() < 0.4
        speed = float(rng.uniform(0.5, CLASSES[label][3])) if moves else 0.0
        yaw = ego_yaw + (math.pi if rng.random() < 0.3 else 0.0) + float(rng.normal(0, 0.1))
        if not moves and rng.random() < 0.3:
            yaw = float(rng.uniform(-math.pi, math.pi))
        xy = xy - speed * duration / 2 * np.array([math.cos(yaw), math.sin(yaw)])
        objects.append(SceneObject(label, size, xy, yaw, speed))
    return Scene(ego_start, ego_yaw, ego_speed, objects)
