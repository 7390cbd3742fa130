"""Rendering of synthetic camera images and LiDAR sweeps.

Images are a sky/ground backdrop, shaded 3D boxes and 1/f^1.6 fractal noise
(the spectrum of natural images): that gives JPEGs of nuScenes-like size
(~200-250 KB at q90 for 1600x900) and decode cost, which flat colours would not.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from bevboost.synth.world import CLASS_NAMES, LIDAR_HEIGHT, SceneObject, rot_z

#: class colours (RGB) so a detector has an appearance cue per class
_COLOURS = np.array([
    (200, 40, 40), (40, 90, 200), (150, 150, 40), (230, 170, 20), (230, 120, 0),
    (30, 180, 60), (160, 30, 160), (240, 210, 170), (250, 100, 0), (210, 210, 210)],
    dtype=np.float32)
#: box faces as corner indices (see SceneObject.corners)
_FACES = ((0, 1, 2, 3), (4, 5, 6, 7), (0, 1, 5, 4), (1, 2, 6, 5), (2, 3, 7, 6), (3, 0, 4, 7))
_SHADE = (0.5, 1.0, 0.85, 0.7, 0.6, 0.75)


def fractal_noise(rng: np.random.Generator, height: int, width: int,
                  beta: float) -> np.ndarray:
    """Unit-variance noise with a 1/f^beta amplitude spectrum (periodic)."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    f = np.sqrt(fx ** 2 + fy ** 2)
    f[0, 0] = 1.0
    shape = (height, width // 2 + 1)
    spec = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / f ** beta
    spec[0, 0] = 0.0
    field = np.fft.irfft2(spec, s=(height, width))
    return (field / field.std()).astype(np.float32)


class NoiseBank:
    """Noise fields of one scene; images take shifted views (cheap, seamless)."""

    def __init__(self, rng: np.random.Generator, height: int, width: int) -> None:
        self.luma = fractal_noise(rng, height, width, 1.6)
        self.chroma = np.stack([fractal_noise(rng, height, width, 1.9) for _ in range(2)], -1)
        sky = np.array([205.0, 185.0, 160.0]) + rng.normal(0, 12, 3)
        ground = np.array([95.0, 95.0, 92.0]) + rng.normal(0, 8, 3)
        rows = np.arange(height, dtype=np.float32)[:, None]
        horizon = height / 2.0
        t_sky = np.clip(rows / horizon, 0, 1) * 0.25 + 0.75
        t_ground = np.clip((rows - horizon) / horizon, 0, 1)
        back = np.where(rows < horizon, t_sky * sky[None, :], ground[None, :] * (0.8 + 0.4 * t_ground))
        self.backdrop = np.broadcast_to(back[:, None, :], (height, width, 3)).astype(np.float32)

    def texture(self, dy: int, dx: int, amp: float) -> np.ndarray:
        luma = np.roll(self.luma, (dy, dx), axis=(0, 1))
        chroma = np.roll(self.chroma, (dx, dy), axis=(0, 1))
        out = np.empty(luma.shape + (3,), np.float32)
        out[..., 0] = luma + chroma[..., 0] / 8
        out[..., 1] = luma + chroma[..., 1] / 8
        out[..., 2] = luma - (chroma[..., 0] + chroma[..., 1]) / 8
        out *= amp
        return out


def render_camera(bank: NoiseBank, objects: list[SceneObject], t: float,
                  global2cam: np.ndarray, cam2img: np.ndarray,
                  shift: tuple[int, int]) -> np.ndarray:
    """One RGB uint8 image of the boxes seen by a camera at time ``t``."""
    img = bank.backdrop.copy()
    height, width = img.shape[:2]
    drawn = []
    for obj in objects:
        corners = obj.corners(t)
        cam = (global2cam[:3, :3] @ corners.T).T + global2cam[:3, 3]
        if cam[:, 2].min() < 0.5 or cam[:, 2].mean() > 80:
            continue
        uv = (cam2img @ cam.T).T
        uv = uv[:, :2] / uv[:, 2:3]
        if uv[:, 0].max() < 0 or uv[:, 0].min() > width or uv[:, 1].min() > height:
            continue
        drawn.append((cam[:, 2].mean(), obj, cam, uv))
    for _, obj, cam, uv in sorted(drawn, key=lambda d: -d[0]):
        colour = _COLOURS[CLASS_NAMES.index(obj.label)]
        centre = cam.mean(axis=0)
        for face, shade in zip(_FACES, _SHADE):
            pts = cam[list(face)]
            normal = np.cross(pts[1] - pts[0], pts[2] - pts[0])
            if np.dot(normal, pts.mean(axis=0) - centre) < 0:
                normal = -normal
            if np.dot(normal, pts.mean(axis=0)) >= 0:  # faces away from the camera
                continue
            poly = np.round(uv[list(face)] * 16).astype(np.int32)
            cv2.fillConvexPoly(img, poly, (colour * shade).tolist(), cv2.LINE_AA, shift=4)
            cv2.polylines(img, [poly], True, (20.0, 20.0, 20.0), 2, cv2.LINE_AA, shift=4)
    img += bank.texture(shift[0], shift[1], 52.0)
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8)


def render_lidar(rng: np.random.Generator, objects: list[SceneObject], t: float,
                 global2lidar: np.ndarray, density: float = 1.0
                 ) -> tuple[np.ndarray, dict[int, int]]:
    """(N, 5) float32 points (x, y, z, intensity, ring) and points per object index.

    Ground rings plus points on the surface of every box within 60 m, so
    ``num_lidar_pts`` is positive for every annotated box.
    """
    rings = np.radians(np.linspace(-30.0, -1.5, 24))
    azimuths = np.linspace(-math.pi, math.pi, int(560 * density), endpoint=False)
    elev, azi = np.meshgrid(rings, azimuths, indexing='ij')
    dist = LIDAR_HEIGHT / np.tan(-elev)
    keep = dist < 70.0
    dist, azi, ring = dist[keep], azi[keep], np.broadcast_to(
        np.arange(len(rings))[:, None], elev.shape)[keep]
    ground = np.stack([dist * np.cos(azi), dist * np.sin(azi),
                       np.full_like(dist, -LIDAR_HEIGHT) + rng.normal(0, 0.02, dist.shape)], -1)
    parts = [np.concatenate([ground, rng.uniform(0, 30, (len(ground), 1)),
                             ring[:, None].astype(np.float64)], 1)]
    counts: dict[int, int] = {}
    for idx, obj in enumerate(objects):
        centre, yaw, _ = obj.state(t)
        local_centre = global2lidar[:3, :3] @ centre + global2lidar[:3, 3]
        d = float(np.linalg.norm(local_centre[:2]))
        if d > 60.0:
            continue
        n = int(np.clip(3000.0 * density / max(d, 1.0), 3, 400))
        unit = rng.uniform(-0.5, 0.5, (n, 3))
        face = rng.integers(0, 3, n)
        unit[np.arange(n), face] = np.sign(unit[np.arange(n), face]) * 0.49
        local = unit * obj.size_lwh
        world = (rot_z(yaw) @ local.T).T + centre
        pts = (global2lidar[:3, :3] @ world.T).T + global2lidar[:3, 3]
        parts.append(np.concatenate([pts, rng.uniform(20, 120, (n, 1)),
                                     rng.integers(0, 32, (n, 1)).astype(np.float64)], 1))
        counts[idx] = n
    return np.concatenate(parts).astype(np.float32), counts
