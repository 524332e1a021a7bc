"""Vectorised ray casting against analytic primitives: a ground plane, yaw-rotated boxes, vertical cylinders,
spheres and vertical cones.

Rays of one sensor share an origin and are grouped into *tiles* (contiguous blocks of neighbouring rays). Each
tile is a cone (unit axis ``a``, half-angle ``theta``); a primitive with bounding sphere (centre ``c``, radius
``r``) seen from the origin ``o`` can only be hit by rays of tiles with
``angle(a, c - o) <= theta + asin(r / |c - o|)``. Only those rays are intersected with it, so the cost scales
with the image area each primitive covers, not with rays x primitives.

Intersection formulas (``p(t) = o + t d``, smallest ``t > EPS`` wins):

- plane ``z = 0``: ``t = -o_z / d_z`` for ``d_z < 0``;
- box (centre ``c``, half sizes ``h``, yaw ``psi``): slab method in the box frame (Kay & Kajiya 1986);
- vertical cylinder (axis ``(c_x, c_y)``, radius ``r``, ``z0 <= z <= z1``): the side from
  ``(o'_x + t d_x)^2 + (o'_y + t d_y)^2 = r^2``, plus the top cap ``z = z1``;
- sphere: ``|o + t d - c|^2 = r^2``;
- vertical cone (base centre ``(c_x, c_y, z0)``, base radius ``r``, height ``h``, apex ``a = z0 + h``,
  ``k = r / h``): ``x'^2 + y'^2 = k^2 (a - z)^2`` with ``z0 <= z <= a``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = 1e-4
"""Smallest accepted ray parameter (metres along a unit direction)."""

BOX, CYLINDER, SPHERE, CONE = 0, 1, 2, 3
"""Primitive kinds. Parameters (row of :attr:`Primitives.params`):
BOX ``cx cy cz hx hy hz yaw``; CYLINDER ``cx cy z0 z1 r``; SPHERE ``cx cy cz r``; CONE ``cx cy z0 h r``."""

NO_HIT = -1
"""Primitive index of a ray that hits nothing."""
GROUND = -2
"""Primitive index of a ray that hits the ground plane."""


@dataclass
class Primitives:
    """A scene's primitives as parallel arrays (``P`` rows).

    Attributes:
        kind: ``(P,)`` int kind (``BOX``, ``CYLINDER``, ``SPHERE``, ``CONE``).
        params: ``(P, 7)`` float64 parameters (see the kind constants).
        label: ``(P,)`` class index of each primitive.
        instance: ``(P,)`` instance id (several primitives of one object share it).
        albedo: ``(P, 3)`` float RGB reflectance in [0, 1].
        reflectivity: ``(P,)`` lidar reflectivity in [0, 1].
    """

    kind: np.ndarray
    params: np.ndarray
    label: np.ndarray
    instance: np.ndarray
    albedo: np.ndarray
    reflectivity: np.ndarray

    def __len__(self) -> int:
        return len(self.kind)

    def bounding_spheres(self) -> np.ndarray:
        """``(P, 4)`` centre and radius of a sphere enclosing each primitive."""
        p = self.params
        out = np.zeros((len(self), 4))
        box = self.kind == BOX
        out[box, :3] = p[box, :3]
        out[box, 3] = np.linalg.norm(p[box, 3:6], axis=1)
        for kind in (CYLINDER, CONE):
            m = self.kind == kind
            if kind == CYLINDER:
                z0, z1 = p[m, 2], p[m, 3]
            else:
                z0, z1 = p[m, 2], p[m, 2] + p[m, 3]
            out[m, 0], out[m, 1], out[m, 2] = p[m, 0], p[m, 1], 0.5 * (z0 + z1)
            out[m, 3] = np.hypot(0.5 * (z1 - z0), p[m, 4])
        sph = self.kind == SPHERE
        out[sph] = p[sph, :4]
        return out


@dataclass
class RayBundle:
    """Rays of one sensor, ordered so that every tile is a contiguous block.

    Attributes:
        origin: ``(3,)`` common origin.
        dirs: ``(R, 3)`` unit directions, tile-contiguous.
        order: ``(R,)`` position of each ray in the sensor's row-major grid (``dirs = grid[order]``).
        tile_start, tile_len: ``(T,)`` first ray and number of rays of each tile.
        tile_axis: ``(T, 3)`` unit axis of each tile.
        tile_angle: ``(T,)`` half-angle (radians) of the cone around the axis containing the tile's rays.
    """

    origin: np.ndarray
    dirs: np.ndarray
    order: np.ndarray
    tile_start: np.ndarray
    tile_len: np.ndarray
    tile_axis: np.ndarray
    tile_angle: np.ndarray

    @classmethod
    def from_grid(cls, origin: np.ndarray, grid: np.ndarray, tile: tuple[int, int]) -> RayBundle:
        """Build a bundle from an ``(H, W, 3)`` grid of unit directions cut into ``tile`` = (rows, cols) tiles."""
        h, w, _ = grid.shape
        rows, cols = np.divmod(np.arange(h * w), w)
        n_tc = -(-w // tile[1])
        tile_id = (rows // tile[0]) * n_tc + cols // tile[1]
        order = np.argsort(tile_id, kind="stable")
        dirs = grid.reshape(-1, 3)[order]
        counts = np.bincount(tile_id)
        counts = counts[counts > 0]
        start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        axis = np.add.reduceat(dirs, start, axis=0)
        axis /= np.linalg.norm(axis, axis=1, keepdims=True)
        cos = np.einsum("ij,ij->i", dirs, np.repeat(axis, counts, axis=0))
        angle = np.arccos(np.clip(np.minimum.reduceat(cos, start), -1.0, 1.0)) + 1e-6
        return cls(np.asarray(origin, float), dirs, order, start, counts, axis, angle)


@dataclass
class Hits:
    """Result of :func:`cast` for a bundle (tile-contiguous order, like ``RayBundle.dirs``).

    Attributes:
        t: ``(R,)`` distance along the ray (``inf`` where nothing is hit).
        prim: ``(R,)`` index of the primitive hit, ``GROUND`` or ``NO_HIT``.
        normal: ``(R, 3)`` unit surface normal at the hit (zeros where nothing is hit).
    """

    t: np.ndarray
    prim: np.ndarray
    normal: np.ndarray


def _gather(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(s, s + n)`` for every ``(s, n)`` without a Python loop."""
    total = int(lens.sum())
    offsets = np.repeat(starts - (np.cumsum(lens) - lens), lens)
    return offsets + np.arange(total)


def _box(o: np.ndarray, d: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(p[6]), np.sin(p[6])
    rel = o - p[:3]
    # Rotate into the box frame (inverse yaw).
    ox = c * rel[0] + s * rel[1]
    oy = -s * rel[0] + c * rel[1]
    dx = c * d[:, 0] + s * d[:, 1]
    dy = -s * d[:, 0] + c * d[:, 1]
    dl = np.stack([dx, dy, d[:, 2]], axis=1)
    dl = np.where(np.abs(dl) < 1e-12, 1e-12, dl)
    ol = np.array([ox, oy, rel[2]])
    inv = 1.0 / dl
    t1 = (-p[3:6] - ol) * inv
    t2 = (p[3:6] - ol) * inv
    tnear = np.minimum(t1, t2)
    tfar = np.maximum(t1, t2)
    axis = np.argmax(tnear, axis=1)
    t_in = tnear[np.arange(len(d)), axis]
    t_out = tfar.min(axis=1)
    t = np.where((t_out >= t_in) & (t_in > EPS), t_in, np.inf)
    sign = -np.sign(dl[np.arange(len(d)), axis])
    nl = np.zeros((len(d), 3))
    nl[np.arange(len(d)), axis] = sign
    normal = np.stack([c * nl[:, 0] - s * nl[:, 1], s * nl[:, 0] + c * nl[:, 1], nl[:, 2]], axis=1)
    return t, normal


def _cylinder(o: np.ndarray, d: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cx, cy, z0, z1, r = p[:5]
    ox, oy = o[0] - cx, o[1] - cy
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2.0 * (ox * d[:, 0] + oy * d[:, 1])
    cc = ox * ox + oy * oy - r * r
    disc = b * b - 4.0 * a * cc
    with np.errstate(invalid="ignore", divide="ignore"):
        t_side = (-b - np.sqrt(disc)) / (2.0 * a)
        z = o[2] + t_side * d[:, 2]
        side_ok = (disc > 0) & (t_side > EPS) & (z >= z0) & (z <= z1)
        t_side = np.where(side_ok, t_side, np.inf)
        t_cap = (z1 - o[2]) / d[:, 2]
    xc = ox + t_cap * d[:, 0]
    yc = oy + t_cap * d[:, 1]
    cap_ok = (d[:, 2] < 0) & (t_cap > EPS) & (xc * xc + yc * yc <= r * r)
    t_cap = np.where(cap_ok, t_cap, np.inf)
    t = np.minimum(t_side, t_cap)
    normal = np.zeros((len(d), 3))
    side = t_side <= t_cap
    normal[:, 0] = np.where(side, (ox + t * d[:, 0]) / r, 0.0)
    normal[:, 1] = np.where(side, (oy + t * d[:, 1]) / r, 0.0)
    normal[:, 2] = np.where(side, 0.0, 1.0)
    return t, normal


def _sphere(o: np.ndarray, d: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rel = o - p[:3]
    b = d @ rel
    cc = rel @ rel - p[3] ** 2
    disc = b * b - cc
    with np.errstate(invalid="ignore"):
        t = -b - np.sqrt(disc)
    t = np.where((disc > 0) & (t > EPS), t, np.inf)
    with np.errstate(invalid="ignore"):
        normal = (rel + t[:, None] * d) / p[3]
    return t, normal


def _cone(o: np.ndarray, d: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cx, cy, z0, h, r = p[:5]
    apex = z0 + h
    k2 = (r / h) ** 2
    ox, oy, oz = o[0] - cx, o[1] - cy, apex - o[2]
    a = d[:, 0] ** 2 + d[:, 1] ** 2 - k2 * d[:, 2] ** 2
    b = 2.0 * (ox * d[:, 0] + oy * d[:, 1] + k2 * oz * d[:, 2])
    cc = ox * ox + oy * oy - k2 * oz * oz
    disc = b * b - 4.0 * a * cc
    t = np.full(len(d), np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        sq = np.sqrt(disc)
        for root in ((-b - sq) / (2.0 * a), (-b + sq) / (2.0 * a)):
            z = o[2] + root * d[:, 2]
            ok = (disc > 0) & (root > EPS) & (z >= z0) & (z <= apex) & (root < t)
            t = np.where(ok, root, t)
    hit = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
    normal = np.stack([hit[:, 0] - cx, hit[:, 1] - cy, k2 * (apex - hit[:, 2])], axis=1)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    return t, normal


_INTERSECT = {BOX: _box, CYLINDER: _cylinder, SPHERE: _sphere, CONE: _cone}


def cast(bundle: RayBundle, prims: Primitives, max_range: float = np.inf) -> Hits:
    """Closest hit of every ray of ``bundle`` with the ground plane ``z = 0`` and ``prims``.

    Args:
        bundle: the rays.
        prims: the scene's primitives.
        max_range: primitives whose bounding sphere lies entirely beyond this distance are skipped.
    """
    o, d = bundle.origin, bundle.dirs
    n = len(d)
    t_best = np.full(n, np.inf)
    prim = np.full(n, NO_HIT, dtype=np.int64)
    normal = np.zeros((n, 3))
    down = d[:, 2] < -1e-9
    t_ground = np.where(down, -o[2] / np.where(down, d[:, 2], -1.0), np.inf)
    ground = np.isfinite(t_ground)
    t_best[ground] = t_ground[ground]
    prim[ground] = GROUND
    normal[ground, 2] = 1.0
    if len(prims) == 0:
        return Hits(t_best, prim, normal)

    spheres = prims.bounding_spheres()
    v = spheres[:, :3] - o
    dist = np.linalg.norm(v, axis=1)
    radius = spheres[:, 3]
    inside = dist <= radius
    half = np.where(inside, np.pi, np.arcsin(np.clip(radius / np.maximum(dist, 1e-9), 0.0, 1.0)))
    cos_between = bundle.tile_axis @ (v / np.maximum(dist, 1e-9)[:, None]).T
    limit = np.minimum(bundle.tile_angle[:, None] + half[None, :], np.pi)
    visible = cos_between >= np.cos(limit)
    for i in np.flatnonzero(dist - radius < max_range):
        tiles = np.flatnonzero(visible[:, i])
        if len(tiles) == 0:
            continue
        idx = _gather(bundle.tile_start[tiles], bundle.tile_len[tiles])
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            t, nrm = _INTERSECT[int(prims.kind[i])](o, d[idx], prims.params[i])
        closer = t < t_best[idx]
        if not closer.any():
            continue
        sel = idx[closer]
        t_best[sel] = t[closer]
        prim[sel] = i
        normal[sel] = nrm[closer]
    return Hits(t_best, prim, normal)
