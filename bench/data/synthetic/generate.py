"""Render one synthetic scene: the lidar scan, six camera images with their class/instance/depth maps, and the
point-to-pixel pairing computed exactly as for real data (:func:`bench.data.scan.project_points`).

Lidar returns: ``p = o + (t + n) d`` with ``n ~ N(0, range_noise^2)``; a return is kept when a surface is hit
within ``max_range`` and it survives the ``dropout`` draw. Intensity (0..255 like nuScenes):
``I = 100 rho (0.3 + 0.7 |cos i|) + N(0, 1.5^2)`` with ``rho`` the surface reflectivity (painted lane markings
``rho = 0.6``) and ``i`` the incidence angle.

Camera shading: ``rgb = albedo (0.45 + 0.55 max(0, n . s))`` for the sun direction ``s``, with procedural
texture (lane markings, windows, foliage noise), a sky gradient where nothing is hit, and haze
``rgb <- rgb e^{-z/250} + haze (1 - e^{-z/250})``. Cameras sit away from the lidar (sensors.py), so
projecting lidar points into the image pairs some of them with pixels of occluding surfaces, as in nuScenes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from bench.data.classes import IGNORE_INDEX, NUSCENES_CLASSES
from bench.data.scan import CameraView, Scan, project_points
from bench.data.synthetic.raycast import BOX, GROUND, NO_HIT, RayBundle, cast
from bench.data.synthetic.sensors import NUSCENES_RIG, OOD_RIG, CameraSpec, LidarSpec, Rig
from bench.data.synthetic.world import (
    GROUND_ALBEDO,
    GROUND_REFLECTIVITY,
    NUSCENES_STREETS,
    OOD_STREETS,
    C,
    StreetStats,
    World,
    build_world,
)

SUN = np.array([0.4, 0.3, 0.85]) / np.linalg.norm([0.4, 0.3, 0.85])
HAZE = np.array([0.72, 0.76, 0.8])
HAZE_DISTANCE = 250.0
MARKING_ALBEDO = 0.85
MARKING_REFLECTIVITY = 0.6


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that defines a synthetic scene besides its seed.

    Attributes:
        rig: lidar and cameras.
        streets: street statistics.
        min_depth: pairing depth threshold (metres), as for real data.
        margin: pairing image margin (pixels), as for real data.
    """

    rig: Rig = field(default_factory=lambda: NUSCENES_RIG)
    streets: StreetStats = field(default_factory=lambda: NUSCENES_STREETS)
    min_depth: float = 1.0
    margin: float = 1.0


VARIANTS: dict[str, SyntheticConfig] = {
    "nuscenes": SyntheticConfig(NUSCENES_RIG, NUSCENES_STREETS),
    "ood": SyntheticConfig(OOD_RIG, OOD_STREETS),
}
"""The in-distribution world (nuScenes-like sensor and streets) and the out-of-distribution one."""

_VARIANT_STREAM = {"nuscenes": 0, "ood": 1}


@lru_cache(maxsize=16)
def _lidar_bundle(spec: LidarSpec) -> RayBundle:
    return spec.bundle()


@lru_cache(maxsize=64)
def _camera_bundle(spec: CameraSpec) -> RayBundle:
    return spec.bundle()


def _markings(world: World, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Painted lane lines (dashed, 0.15 m wide, 3 m on / 6 m off) and solid road edge lines."""
    g = world.ground
    mark = np.zeros(x.shape, dtype=bool)
    for ly in g.lane_lines:
        mark |= (np.abs(y - ly) < 0.075) & (np.mod(x, 9.0) < 3.0)
    mark |= np.abs(np.abs(y - g.road_y) - (g.road_half - 0.3)) < 0.075
    if g.cross_half > 0:
        mark &= np.abs(x - g.cross_x) > g.cross_half
    return mark


@dataclass
class _Surface:
    label: np.ndarray
    instance: np.ndarray
    albedo: np.ndarray
    reflectivity: np.ndarray


def _surface(world: World, prim: np.ndarray, points: np.ndarray, normals: np.ndarray) -> _Surface:
    """Class, instance, albedo and reflectivity at hit points (``prim >= 0`` or ``GROUND``)."""
    n = len(prim)
    label = np.full(n, IGNORE_INDEX, dtype=np.int64)
    inst = np.zeros(n, dtype=np.int64)
    albedo = np.zeros((n, 3))
    refl = np.zeros(n)
    obj = prim >= 0
    p = world.prims
    label[obj] = p.label[prim[obj]]
    inst[obj] = p.instance[prim[obj]]
    albedo[obj] = p.albedo[prim[obj]]
    refl[obj] = p.reflectivity[prim[obj]]
    gnd = prim == GROUND
    gx, gy = points[gnd, 0], points[gnd, 1]
    g_label, g_inst = world.ground.classify(gx, gy)
    label[gnd], inst[gnd] = g_label, g_inst
    g_alb = np.zeros((len(gx), 3))
    g_refl = np.zeros(len(gx))
    for cls, rgb in GROUND_ALBEDO.items():
        m = g_label == cls
        g_alb[m] = rgb
        g_refl[m] = GROUND_REFLECTIVITY[cls]
    mark = (g_label == C["driveable_surface"]) & _markings(world, gx, gy)
    g_alb[mark] = MARKING_ALBEDO
    g_refl[mark] = MARKING_REFLECTIVITY
    rough = g_label != C["driveable_surface"]
    g_alb[rough] *= (1.0 + 0.12 * np.sin(3.1 * gx[rough]) * np.sin(2.7 * gy[rough]))[:, None]
    albedo[gnd], refl[gnd] = g_alb, g_refl
    # Foliage: low-frequency brightness noise.
    veg = label == C["vegetation"]
    q = points[veg]
    albedo[veg] *= (1.0 + 0.3 * np.sin(4.1 * q[:, 0] + 2.3 * q[:, 2]) * np.sin(3.7 * q[:, 1] + 1.9 * q[:, 2]))[:, None]
    # Windows on the vertical faces of buildings taller than 3 m.
    wall = obj & (label == C["manmade"]) & (np.abs(normals[:, 2]) < 0.5)
    wall[wall] &= (p.kind[prim[wall]] == BOX) & (p.params[prim[wall], 5] > 1.5)
    q, nr = points[wall], normals[wall]
    u = -nr[:, 1] * q[:, 0] + nr[:, 0] * q[:, 1]
    window = (np.mod(u / 3.0, 1.0) > 0.3) & (np.mod(q[:, 2] / 3.3, 1.0) > 0.35) & (q[:, 2] > 1.5)
    idx = np.flatnonzero(wall)[window]
    albedo[idx] = albedo[idx] * 0.35 + np.array([0.05, 0.08, 0.12])
    return _Surface(label, inst, np.clip(albedo, 0.0, 1.0), refl)


def _to_grid(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    out = np.empty_like(values)
    out[order] = values
    return out


def render_lidar(world: World, lidar: LidarSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Cast the lidar; returns points ``(N, 4)`` float32 in the lidar frame and labels ``(N,)`` int64."""
    bundle = _lidar_bundle(lidar)
    hits = cast(bundle, world.prims, max_range=lidar.max_range)
    # Back to the sensor's natural order: beam by beam, azimuth increasing.
    t = _to_grid(hits.t, bundle.order)
    prim = _to_grid(hits.prim, bundle.order)
    normal = _to_grid(hits.normal, bundle.order)
    dirs = _to_grid(bundle.dirs, bundle.order)
    r = t + rng.normal(0.0, lidar.range_noise, len(t))
    keep = (prim != NO_HIT) & (r <= lidar.max_range) & (rng.random(len(t)) >= lidar.dropout)
    r, prim, normal, dirs = r[keep], prim[keep], normal[keep], dirs[keep]
    pts = bundle.origin + r[:, None] * dirs
    surf = _surface(world, prim, pts, normal)
    cos_inc = np.abs(np.einsum("ij,ij->i", dirs, normal))
    intensity = 100.0 * surf.reflectivity * (0.3 + 0.7 * cos_inc) + rng.normal(0.0, 1.5, len(r))
    xyz = pts - bundle.origin
    points = np.concatenate([xyz, np.clip(intensity, 0.0, 255.0)[:, None]], axis=1).astype(np.float32)
    return points, surf.label


def render_camera(world: World, camera: CameraSpec) -> dict[str, np.ndarray]:
    """Render one camera: ``image`` (H, W, 3) uint8, ``class_map`` uint8, ``instance_map`` int32,
    ``depth`` float32 (camera-frame z; 0 where nothing is hit)."""
    bundle = _camera_bundle(camera)
    hits = cast(bundle, world.prims)
    hit = hits.prim != NO_HIT
    pts = bundle.origin + np.where(hit, hits.t, 0.0)[:, None] * bundle.dirs
    surf = _surface(world, hits.prim, pts, hits.normal)
    light = 0.45 + 0.55 * np.clip(hits.normal @ SUN, 0.0, 1.0)
    rgb = surf.albedo * light[:, None]
    fog = np.exp(-np.where(hit, hits.t, 0.0) / HAZE_DISTANCE)[:, None]
    rgb = rgb * fog + HAZE * (1.0 - fog)
    elev = np.clip(bundle.dirs[:, 2], 0.0, 1.0)[:, None]
    sky = np.array([0.78, 0.84, 0.9]) * (1.0 - elev) + np.array([0.35, 0.55, 0.85]) * elev
    rgb = np.where(hit[:, None], rgb, sky)
    forward = camera.camera_to_ego()[:3, 2]
    depth = np.where(hit, hits.t * (bundle.dirs @ forward), 0.0)
    shape = (camera.height, camera.width)
    return {
        "image": _to_grid((np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), bundle.order).reshape(*shape, 3),
        "class_map": _to_grid(surf.label.astype(np.uint8), bundle.order).reshape(shape),
        "instance_map": _to_grid(surf.instance.astype(np.int32), bundle.order).reshape(shape),
        "depth": _to_grid(depth.astype(np.float32), bundle.order).reshape(shape),
    }


def generate_scene(seed: int, variant: str = "nuscenes", config: SyntheticConfig | None = None) -> Scan:
    """Generate one synthetic scene deterministically.

    Args:
        seed: scene seed; the same ``(seed, variant, config)`` always gives identical arrays.
        variant: ``"nuscenes"`` (in-distribution) or ``"ood"`` (64-beam sensor, suburban streets).
        config: overrides the variant's sensors/statistics (e.g. a lower camera resolution).

    Returns:
        A :class:`~bench.data.scan.Scan` in the 16-class nuScenes space whose cameras carry the rendered
        image, class map, instance map and depth.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown synthetic variant {variant!r}; known variants: {', '.join(VARIANTS)}")
    cfg = config if config is not None else VARIANTS[variant]
    rng = np.random.default_rng([int(seed), _VARIANT_STREAM[variant]])
    world = build_world(rng, cfg.streets)
    points, labels = render_lidar(world, cfg.rig.lidar, rng)
    cameras = []
    for spec in cfg.rig.cameras:
        maps = render_camera(world, spec)
        calib = cfg.rig.calibration(spec)
        proj = project_points(points, calib, min_depth=cfg.min_depth, margin=cfg.margin)
        cameras.append(
            CameraView(
                name=spec.name,
                calibration=calib,
                pairing=proj.pairing(),
                class_map=maps["class_map"],
                instance_map=maps["instance_map"],
                depth=maps["depth"],
                _image=maps["image"],
            )
        )
    return Scan(
        scan_id=f"{variant}-{seed:06d}", points=points, labels=labels, cameras=cameras, classes=NUSCENES_CLASSES
    )
