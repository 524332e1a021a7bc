"""Procedural street scenes: ground regions and the analytic primitives standing on them.

A scene is one street along the ego x axis (ego frame: x forward, y left, z up, ground ``z = 0``), with
lanes, an optional median and cross street, sidewalks, lots (terrain, other_flat, driveways), buildings, walls,
poles, trees and hedges, and the movable objects of the 16 nuScenes-lidarseg classes. Object sizes are drawn
around the mean box sizes of nuScenes annotations (length x width x height, metres): car 4.6 x 1.95 x 1.73,
truck 6.9 x 2.5 x 2.8, bus 11.2 x 2.9 x 3.5, trailer 12.3 x 2.9 x 3.9, construction vehicle 6.4 x 2.7 x 3.2,
motorcycle 2.1 x 0.8 x 1.5, bicycle 1.7 x 0.6 x 1.3, pedestrian 0.7 x 0.7 x 1.8, traffic cone 0.4 x 0.4 x 1.0
(cones here 0.5-0.9 m), barrier 2.5 x 0.5 x 1.0. Counts and probabilities are the fields of
:class:`StreetStats`; the two presets are :data:`NUSCENES_STREETS` (dense city, Boston/Singapore-like) and
:data:`OOD_STREETS` (suburban, narrower roads, more vegetation, fewer large vehicles).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bench.data.classes import NUSCENES_CLASSES
from bench.data.synthetic.raycast import BOX, CONE, CYLINDER, SPHERE, Primitives

C = {name: i for i, name in enumerate(NUSCENES_CLASSES)}
"""Class name -> index in the 16-class nuScenes space used by the synthetic world."""


@dataclass(frozen=True)
class StreetStats:
    """Street statistics; ranges are (low, high) of uniform draws, counts are Poisson means.

    Attributes:
        road_lanes: number of lanes, uniform integer in the range (3.5 m each).
        sidewalk_width: sidewalk width per side.
        median_prob: probability of a median (other_flat or terrain strip) between the two directions.
        cross_street_prob: probability of a perpendicular cross street.
        extent: the street is modelled for ``|x| <= extent`` metres.
        building_prob: probability that a frontage segment holds a building (else vegetation/wall/open lot).
        building_length, building_depth, building_height, setback: building footprint, height, distance from
            the sidewalk.
        back_row_prob: probability of a second row of (taller) buildings behind a frontage building.
        lot_types: relative weights of the ground in front of buildings and in open lots
            (terrain, other_flat, driveable_surface).
        tree_row_prob: probability of street trees along a sidewalk; ``tree_spacing`` between them.
        hedge_prob, wall_prob: probability that an open segment is lined with a hedge / wall.
        pole_spacing: distance between street lights.
        moving: mean number of vehicles in the lanes; ``moving_mix`` their class weights
            (car, truck, bus, trailer, construction_vehicle, motorcycle, bicycle).
        parked_per_side: mean number of parked vehicles per side (cars, some trucks/motorcycles).
        pedestrians: mean number of pedestrians; ``parked_bicycles`` of bicycles on sidewalks.
        construction_prob: probability of a construction zone (cones, barriers, a construction vehicle).
        barrier_row_prob, cone_group_prob: probability of a row of barriers / a group of cones elsewhere.
        crossing_prob: probability that a pedestrian crosses the road instead of walking on a sidewalk.
        verge_prob, verge_width: probability and width of a grass verge (terrain) between road and sidewalk.
        bushes: mean number of bushes per side on lots and verges.
    """

    road_lanes: tuple[int, int] = (2, 5)
    sidewalk_width: tuple[float, float] = (2.0, 4.5)
    median_prob: float = 0.3
    cross_street_prob: float = 0.4
    extent: float = 80.0
    building_prob: float = 0.6
    building_length: tuple[float, float] = (10.0, 35.0)
    building_depth: tuple[float, float] = (10.0, 25.0)
    building_height: tuple[float, float] = (5.0, 28.0)
    setback: tuple[float, float] = (0.0, 6.0)
    back_row_prob: float = 0.4
    lot_types: tuple[float, float, float] = (0.75, 0.04, 0.21)
    tree_row_prob: float = 0.6
    tree_spacing: tuple[float, float] = (7.0, 16.0)
    hedge_prob: float = 0.5
    wall_prob: float = 0.4
    pole_spacing: float = 25.0
    moving: float = 6.0
    moving_mix: tuple[float, ...] = (0.68, 0.1, 0.08, 0.06, 0.02, 0.04, 0.02)
    parked_per_side: float = 3.5
    pedestrians: float = 3.5
    parked_bicycles: float = 0.5
    construction_prob: float = 0.2
    barrier_row_prob: float = 0.35
    cone_group_prob: float = 0.6
    crossing_prob: float = 0.15
    verge_prob: float = 0.5
    verge_width: tuple[float, float] = (1.0, 2.5)
    bushes: float = 4.0


NUSCENES_STREETS = StreetStats()
"""Dense city streets (the default world)."""

OOD_STREETS = StreetStats(
    road_lanes=(2, 3),
    sidewalk_width=(1.5, 3.0),
    median_prob=0.05,
    cross_street_prob=0.25,
    building_prob=0.55,
    building_length=(8.0, 20.0),
    building_depth=(8.0, 14.0),
    building_height=(4.0, 12.0),
    setback=(2.0, 10.0),
    back_row_prob=0.15,
    lot_types=(0.75, 0.05, 0.2),
    tree_row_prob=0.8,
    tree_spacing=(5.0, 12.0),
    hedge_prob=0.6,
    wall_prob=0.3,
    moving=3.0,
    moving_mix=(0.80, 0.05, 0.01, 0.01, 0.01, 0.04, 0.08),
    parked_per_side=8.0,
    pedestrians=4.0,
    parked_bicycles=2.0,
    construction_prob=0.15,
    barrier_row_prob=0.2,
    cone_group_prob=0.2,
)
"""Suburban streets (the out-of-distribution variant)."""

_LOT_CLASSES = (C["terrain"], C["other_flat"], C["driveable_surface"])

GROUND_ALBEDO = {
    C["driveable_surface"]: (0.27, 0.27, 0.29),
    C["other_flat"]: (0.55, 0.50, 0.44),
    C["sidewalk"]: (0.62, 0.61, 0.58),
    C["terrain"]: (0.42, 0.48, 0.24),
}
GROUND_REFLECTIVITY = {
    C["driveable_surface"]: 0.12,
    C["other_flat"]: 0.22,
    C["sidewalk"]: 0.2,
    C["terrain"]: 0.28,
}


@dataclass
class Ground:
    """The ground plane's regions; :meth:`classify` maps ground points to (class, instance).

    Attributes:
        road_y: y of the road centreline (ego frame).
        road_half: half width of the road.
        sidewalk: sidewalk width on the left (+y) and right (-y) side (verge included).
        verge: width of the grass verge at the road side of each sidewalk (0 = none).
        median_half: half width of the median (0 = none); ``median_class`` its class.
        cross_x, cross_half: x of the cross street's centreline and its half width (``cross_half = 0``: none).
        lot_edges: per side (0 = left, 1 = right), sorted x boundaries of the lot segments.
        lot_class: per side, class of each segment (``len(lot_edges[s]) + 1`` entries).
        lot_instance: per side, instance id of each segment.
        lane_lines: y of the painted lane boundaries (for shading).
    """

    road_y: float
    road_half: float
    sidewalk: tuple[float, float]
    verge: tuple[float, float]
    median_half: float
    median_class: int
    cross_x: float
    cross_half: float
    lot_edges: list[np.ndarray]
    lot_class: list[np.ndarray]
    lot_instance: list[np.ndarray]
    lane_lines: np.ndarray

    ROAD_INSTANCE = 1
    SIDEWALK_INSTANCE = (2, 3)
    MEDIAN_INSTANCE = 4
    VERGE_INSTANCE = (5, 6)

    def classify(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class and instance of ground points ``(x, y)``."""
        yy = y - self.road_y
        ay = np.abs(yy)
        side = (yy < 0).astype(np.int64)
        label = np.empty(x.shape, dtype=np.int64)
        inst = np.empty(x.shape, dtype=np.int64)
        for s in (0, 1):
            m = side == s
            seg = np.searchsorted(self.lot_edges[s], x[m])
            label[m] = self.lot_class[s][seg]
            inst[m] = self.lot_instance[s][seg]
            walk = m & (ay < self.road_half + self.sidewalk[s])
            label[walk] = C["sidewalk"]
            inst[walk] = self.SIDEWALK_INSTANCE[s]
            grass = m & (ay < self.road_half + self.verge[s])
            label[grass] = C["terrain"]
            inst[grass] = self.VERGE_INSTANCE[s]
        if self.cross_half > 0:
            dx = np.abs(x - self.cross_x)
            cross_walk = (dx < self.cross_half + min(self.sidewalk)) & (ay >= self.road_half)
            label[cross_walk] = C["sidewalk"]
            inst[cross_walk] = self.SIDEWALK_INSTANCE[0]
            road = (ay < self.road_half) | (dx < self.cross_half)
        else:
            road = ay < self.road_half
        label[road] = C["driveable_surface"]
        inst[road] = self.ROAD_INSTANCE
        if self.median_half > 0:
            med = (ay < self.median_half) & ~((self.cross_half > 0) & (np.abs(x - self.cross_x) < self.cross_half))
            label[med] = self.median_class
            inst[med] = self.MEDIAN_INSTANCE
        return label, inst


@dataclass
class World:
    """A generated scene: ground regions and primitives."""

    ground: Ground
    prims: Primitives


@dataclass
class _Builder:
    rng: np.random.Generator
    kind: list[int] = field(default_factory=list)
    params: list[list[float]] = field(default_factory=list)
    label: list[int] = field(default_factory=list)
    instance: list[int] = field(default_factory=list)
    albedo: list[tuple[float, float, float]] = field(default_factory=list)
    reflect: list[float] = field(default_factory=list)
    next_instance: int = 100

    def new_instance(self) -> int:
        self.next_instance += 1
        return self.next_instance

    def add(self, kind: int, params: list[float], cls: int, inst: int, albedo, reflect: float) -> None:
        self.kind.append(kind)
        self.params.append(list(params) + [0.0] * (7 - len(params)))
        self.label.append(cls)
        self.instance.append(inst)
        self.albedo.append(tuple(float(a) for a in np.clip(albedo, 0.0, 1.0)))
        self.reflect.append(reflect)

    def box(self, cls, inst, cx, cy, z0, length, width, height, yaw, albedo, reflect) -> None:
        self.add(BOX, [cx, cy, z0 + height / 2, length / 2, width / 2, height / 2, yaw], cls, inst, albedo, reflect)

    def build(self) -> Primitives:
        return Primitives(
            kind=np.array(self.kind, dtype=np.int64),
            params=np.array(self.params, dtype=np.float64).reshape(-1, 7),
            label=np.array(self.label, dtype=np.int64),
            instance=np.array(self.instance, dtype=np.int64),
            albedo=np.array(self.albedo, dtype=np.float64).reshape(-1, 3),
            reflectivity=np.array(self.reflect, dtype=np.float64),
        )


def _jitter(rng: np.random.Generator, rgb, amount: float = 0.08) -> np.ndarray:
    return np.asarray(rgb) * (1.0 + rng.uniform(-amount, amount)) + rng.uniform(-amount, amount, 3) * 0.5


_CAR_COLOURS = np.array(
    [[0.9, 0.9, 0.9], [0.1, 0.1, 0.12], [0.6, 0.62, 0.65], [0.65, 0.1, 0.1], [0.15, 0.25, 0.55], [0.3, 0.3, 0.3]]
)


def _vehicle(b: _Builder, kind: str, x: float, y: float, yaw: float) -> None:
    """Add one vehicle of class ``kind`` centred at ``(x, y)`` with heading ``yaw``."""
    rng = b.rng
    inst = b.new_instance()
    c, s = np.cos(yaw), np.sin(yaw)

    def at(dx: float, dy: float = 0.0) -> tuple[float, float]:
        return x + c * dx - s * dy, y + s * dx + c * dy

    def scale() -> float:
        return rng.uniform(0.9, 1.1)

    if kind == "car":
        length, width, height = 4.6 * scale(), 1.95 * scale(), 1.6 * scale()
        col = _jitter(rng, _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))], 0.05)
        b.box(C["car"], inst, x, y, 0.3, length, width, height * 0.45, yaw, col, 0.3)
        cx, cy = at(-0.1 * length)
        b.box(C["car"], inst, cx, cy, 0.3 + height * 0.45, length * 0.5, width * 0.88, height * 0.5, yaw,
              col * 0.6, 0.2)  # fmt: skip
        for sx in (0.32, -0.32):
            for sy in (0.42, -0.42):
                wx, wy = at(sx * length, sy * width)
                b.box(C["car"], inst, wx, wy, 0.0, 0.65, 0.25, 0.6, yaw, (0.05, 0.05, 0.05), 0.05)
    elif kind in ("truck", "trailer_combo"):
        cab_len, width = 2.2 * scale(), 2.5 * scale()
        cargo_len = 5.0 * scale() if kind == "truck" else 0.0
        trailer_len = 12.0 * scale() if kind == "trailer_combo" else 0.0
        total = cab_len + cargo_len + trailer_len
        col = _jitter(rng, (0.85, 0.85, 0.85) if rng.random() < 0.6 else (0.2, 0.3, 0.6), 0.05)
        front = total / 2  # distance of the vehicle's front from (x, y)
        cx, cy = at(front - cab_len / 2)
        b.box(C["truck"], inst, cx, cy, 0.4, cab_len, width, 2.6 * scale(), yaw, col, 0.35)
        wx, wy = at(front - cab_len / 2 - 0.6)
        b.box(C["truck"], inst, wx, wy, 0.0, cab_len + 1.2, width * 0.9, 0.6, yaw, (0.06, 0.06, 0.06), 0.05)
        if cargo_len:
            cx, cy = at(front - cab_len - cargo_len / 2)
            b.box(C["truck"], inst, cx, cy, 0.6, cargo_len, width, 3.0 * scale(), yaw, _jitter(rng, col), 0.35)
            wx, wy = at(front - cab_len - cargo_len / 2)
            b.box(C["truck"], inst, wx, wy, 0.0, cargo_len * 0.8, width * 0.9, 0.6, yaw, (0.06,) * 3, 0.05)
        if trailer_len:
            t_inst = b.new_instance()
            tx, ty = at(front - cab_len - trailer_len / 2 + 0.5)
            b.box(C["trailer"], t_inst, tx, ty, 1.1, trailer_len, 2.55, 2.9 * scale(), yaw,
                  _jitter(rng, (0.8, 0.8, 0.78)), 0.35)  # fmt: skip
            wx, wy = at(front - cab_len - trailer_len * 0.8)
            b.box(C["trailer"], t_inst, wx, wy, 0.0, 2.5, 2.3, 1.1, yaw, (0.06, 0.06, 0.06), 0.05)
    elif kind == "trailer":
        t_len = 10.0 * scale()
        col = _jitter(rng, (0.75, 0.75, 0.72))
        b.box(C["trailer"], inst, x, y, 1.0, t_len, 2.55, 3.0 * scale(), yaw, col, 0.35)
        wx, wy = at(-0.3 * t_len)
        b.box(C["trailer"], inst, wx, wy, 0.0, 2.5, 2.3, 1.0, yaw, (0.06, 0.06, 0.06), 0.05)
        sx, sy = at(0.35 * t_len)
        b.box(C["trailer"], inst, sx, sy, 0.0, 0.3, 2.0, 1.0, yaw, (0.2, 0.2, 0.2), 0.1)
    elif kind == "bus":
        length = (11.2 if rng.random() < 0.85 else 17.0) * scale()
        col = _jitter(rng, [(0.8, 0.15, 0.1), (0.9, 0.9, 0.9), (0.2, 0.4, 0.7)][rng.integers(3)], 0.05)
        b.box(C["bus"], inst, x, y, 0.35, length, 2.9 * scale(), 3.1 * scale(), yaw, col, 0.35)
        b.box(C["bus"], inst, x, y, 0.0, length * 0.85, 2.6, 0.5, yaw, (0.06, 0.06, 0.06), 0.05)
    elif kind == "construction_vehicle":
        col = _jitter(rng, (0.92, 0.68, 0.1), 0.05)
        length, width = 6.0 * scale(), 2.7 * scale()
        b.box(C["construction_vehicle"], inst, x, y, 0.0, length * 0.8, width, 1.2, yaw, (0.12, 0.12, 0.12), 0.1)
        b.box(C["construction_vehicle"], inst, x, y, 1.2, length * 0.55, width * 0.95, 1.1, yaw, col, 0.45)
        cx, cy = at(-0.1 * length, 0.15 * width)
        b.box(C["construction_vehicle"], inst, cx, cy, 2.3, 1.6, 1.5, 1.5, yaw, _jitter(rng, col), 0.4)
        ax, ay = at(0.45 * length)
        b.box(C["construction_vehicle"], inst, ax, ay, 1.4, length * 0.5, 0.5, 0.6, yaw, col, 0.45)
        bx, by = at(0.75 * length)
        b.box(C["construction_vehicle"], inst, bx, by, 0.0, 0.8, 1.4, 1.6, yaw, (0.3, 0.3, 0.3), 0.3)
    elif kind in ("motorcycle", "bicycle"):
        cls = C[kind]
        length = (2.1 if kind == "motorcycle" else 1.7) * scale()
        width = 0.75 if kind == "motorcycle" else 0.5
        col = _jitter(rng, _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))], 0.05)
        body_h = 0.75 if kind == "motorcycle" else 0.6
        b.box(cls, inst, x, y, 0.25, length * 0.6, width * 0.7, body_h, yaw, col, 0.3)
        for sx in (0.36, -0.36):
            wx, wy = at(sx * length)
            b.box(cls, inst, wx, wy, 0.0, 0.65, 0.12, 0.65, yaw, (0.05, 0.05, 0.05), 0.1)
        if rng.random() < 0.6:  # a rider belongs to the vehicle's box in nuScenes-lidarseg
            rx, ry = at(-0.05 * length)
            b.add(CYLINDER, [rx, ry, 0.8, 1.55, 0.22], cls, inst, _jitter(rng, (0.2, 0.2, 0.25)), 0.15)
            b.add(SPHERE, [rx, ry, 1.67, 0.13], cls, inst, (0.6, 0.6, 0.6), 0.2)
    else:
        raise ValueError(f"unknown vehicle kind {kind!r}")


def _pedestrian(b: _Builder, x: float, y: float) -> None:
    rng = b.rng
    inst = b.new_instance()
    height = rng.normal(1.72, 0.1)
    radius = rng.uniform(0.2, 0.27)
    col = _jitter(rng, rng.uniform(0.05, 0.7, 3), 0.05)
    b.add(CYLINDER, [x, y, 0.0, height * 0.86, radius], C["pedestrian"], inst, col, 0.15)
    b.add(SPHERE, [x, y, height * 0.93, 0.11], C["pedestrian"], inst, (0.75, 0.6, 0.5), 0.2)


def _tree(b: _Builder, x: float, y: float, scale: float = 1.0) -> None:
    rng = b.rng
    inst = b.new_instance()
    trunk_h = rng.uniform(1.8, 3.5) * scale
    crown = rng.uniform(1.6, 3.4) * scale
    veg = C["vegetation"]
    b.add(CYLINDER, [x, y, 0.0, trunk_h + 0.5 * crown, rng.uniform(0.12, 0.3)], veg, inst, (0.33, 0.24, 0.15), 0.3)
    green = _jitter(rng, (0.16, 0.42, 0.12), 0.15)
    b.add(SPHERE, [x, y, trunk_h + crown * 0.8, crown], veg, inst, green, 0.4)
    if rng.random() < 0.5:
        off = rng.uniform(-0.6, 0.6, 2) * crown
        b.add(SPHERE, [x + off[0], y + off[1], trunk_h + crown * 1.3, crown * 0.7], veg, inst, green * 0.9, 0.4)


def _cone(b: _Builder, x: float, y: float) -> None:
    inst = b.new_instance()
    h = b.rng.uniform(0.5, 0.9)
    b.box(C["traffic_cone"], inst, x, y, 0.0, 0.42, 0.42, 0.04, 0.0, (0.1, 0.1, 0.1), 0.2)
    b.add(CONE, [x, y, 0.04, h, 0.17], C["traffic_cone"], inst, (1.0, 0.42, 0.05), 0.85)


def _barrier(b: _Builder, x: float, y: float, yaw: float) -> None:
    rng = b.rng
    inst = b.new_instance()
    length = rng.uniform(2.0, 3.2)
    if rng.random() < 0.6:  # concrete jersey barrier
        albedo, h, w = _jitter(rng, (0.72, 0.72, 0.68)), rng.uniform(0.8, 1.1), 0.6
        b.box(C["barrier"], inst, x, y, 0.0, length, w, h * 0.4, yaw, albedo, 0.35)
        b.box(C["barrier"], inst, x, y, h * 0.4, length, w * 0.45, h * 0.6, yaw, albedo, 0.35)
    else:  # plastic / metal barrier
        albedo = (0.95, 0.95, 0.95) if rng.random() < 0.5 else (0.95, 0.35, 0.1)
        b.box(C["barrier"], inst, x, y, 0.0, length, 0.45, rng.uniform(0.9, 1.2), yaw, albedo, 0.5)


def build_world(rng: np.random.Generator, stats: StreetStats = NUSCENES_STREETS) -> World:
    """Draw one street scene.

    Args:
        rng: the random generator (the only source of randomness).
        stats: street statistics.
    """
    b = _Builder(rng)
    lanes = int(rng.integers(stats.road_lanes[0], stats.road_lanes[1] + 1))
    road_half = lanes * 3.5 / 2
    median_half = rng.uniform(0.8, 2.0) if (lanes >= 3 and rng.random() < stats.median_prob) else 0.0
    road_half += median_half
    # Ego drives in a lane on the right half (left-hand traffic flips the side), lanes are 3.5 m wide.
    ego_side = 1.0 if rng.random() < 0.7 else -1.0
    lanes_per_dir = max(1, lanes // 2)
    ego_lane = int(rng.integers(lanes_per_dir))
    road_y = ego_side * (median_half + 1.75 + 3.5 * ego_lane)
    lane_centres = []
    for side in (1.0, -1.0):
        for k in range(lanes_per_dir if side == 1.0 else lanes - lanes_per_dir):
            lane_centres.append(road_y + side * (median_half + 1.75 + 3.5 * k))
    lane_lines = np.array([road_y + side * (median_half + 3.5 * k) for side in (1.0, -1.0) for k in range(1, lanes)])
    verge = tuple(float(rng.uniform(*stats.verge_width)) if rng.random() < stats.verge_prob else 0.0 for _ in "lr")
    sidewalk = tuple(v + rng.uniform(*stats.sidewalk_width) for v in verge)
    cross = rng.random() < stats.cross_street_prob
    cross_x = rng.uniform(-40.0, 50.0) if cross else 0.0
    cross_half = rng.uniform(4.0, 8.0) if cross else 0.0
    ext = stats.extent

    def in_cross(x0: float, x1: float, pad: float = 0.0) -> bool:
        return cross and x1 > cross_x - cross_half - pad and x0 < cross_x + cross_half + pad

    # Frontage: buildings, walls, hedges and open lots on each side.
    lot_edges: list[np.ndarray] = []
    lot_class: list[np.ndarray] = []
    lot_instance: list[np.ndarray] = []
    lot_p = np.asarray(stats.lot_types) / np.sum(stats.lot_types)
    for s, sign in enumerate((1.0, -1.0)):
        front = road_half + sidewalk[s]
        edges, classes, insts = [], [C["terrain"]], [b.new_instance()]
        x = -ext - rng.uniform(0, 10)
        while x < ext:
            length = rng.uniform(*stats.building_length)
            x1 = x + length
            pad = max(sidewalk) + 1.0
            if in_cross(x, x1, pad=pad):
                edges.append(cross_x - cross_half - pad)
                classes.append(C["terrain"])
                insts.append(b.new_instance())
                x = cross_x + cross_half + pad
                edges.append(x)
                classes.append(C["terrain"])
                insts.append(b.new_instance())
                continue
            lot = _LOT_CLASSES[rng.choice(3, p=lot_p)]
            edges.append(x1)
            classes.append(lot)
            insts.append(b.new_instance())
            if rng.random() < stats.building_prob:
                setback = rng.uniform(*stats.setback)
                depth = rng.uniform(*stats.building_depth)
                height = rng.uniform(*stats.building_height)
                yc = road_y + sign * (front + setback + depth / 2)
                albedo = _jitter(rng, [(0.75, 0.7, 0.6), (0.55, 0.35, 0.28), (0.6, 0.62, 0.65),
                                       (0.85, 0.83, 0.78)][rng.integers(4)], 0.06)  # fmt: skip
                b.box(C["manmade"], b.new_instance(), (x + x1) / 2, yc, 0.0, length - rng.uniform(0, 3),
                      depth, height, rng.normal(0, 0.02), albedo, 0.3)  # fmt: skip
                if rng.random() < stats.back_row_prob:
                    h2 = height * rng.uniform(1.0, 2.0)
                    y2 = road_y + sign * (front + setback + depth + rng.uniform(3, 15) + 10)
                    b.box(C["manmade"], b.new_instance(), (x + x1) / 2, y2, 0.0, length, 20.0, h2, 0.0,
                          _jitter(rng, albedo), 0.3)  # fmt: skip
            else:
                yl = road_y + sign * (front + rng.uniform(0.3, 2.0))
                r = rng.random()
                if r < stats.hedge_prob:
                    b.box(C["vegetation"], b.new_instance(), (x + x1) / 2, yl, 0.0, length * rng.uniform(0.6, 1),
                          rng.uniform(0.8, 1.6), rng.uniform(0.8, 2.2), 0.0,
                          _jitter(rng, (0.14, 0.38, 0.1), 0.1), 0.4)  # fmt: skip
                elif r < stats.hedge_prob + stats.wall_prob:
                    b.box(C["manmade"], b.new_instance(), (x + x1) / 2, yl, 0.0, length, 0.3,
                          rng.uniform(1.0, 2.8), 0.0, _jitter(rng, (0.6, 0.58, 0.55)), 0.3)  # fmt: skip
                for _ in range(rng.poisson(3.0)):
                    xt = rng.uniform(x, x1)
                    _tree(b, xt, road_y + sign * (front + rng.uniform(3.0, 15.0)), rng.uniform(0.9, 1.5))
            x = x1 + rng.uniform(0.0, 4.0)
            edges.append(x)
            classes.append(C["terrain"] if rng.random() < 0.9 else C["other_flat"])
            insts.append(b.new_instance())
        lot_edges.append(np.array(edges))
        lot_class.append(np.array(classes))
        lot_instance.append(np.array(insts))

        # Street furniture and trees along the sidewalk.
        kerb = road_y + sign * (road_half + 0.6)
        x = -ext + rng.uniform(0, stats.pole_spacing)
        while x < ext:
            if not in_cross(x, x, pad=2.0):
                inst = b.new_instance()
                h = rng.uniform(6.0, 9.0)
                b.add(CYLINDER, [x, kerb, 0.0, h, 0.12], C["manmade"], inst, (0.45, 0.45, 0.48), 0.4)
                b.box(C["manmade"], inst, x, kerb - sign * 0.8, h - 0.3, 0.5, 1.6, 0.3, 0.0, (0.3, 0.3, 0.3), 0.4)
            x += stats.pole_spacing * rng.uniform(0.7, 1.3)
        for _ in range(rng.poisson(1.5)):  # traffic signs
            xs = rng.uniform(-ext, ext)
            inst = b.new_instance()
            b.add(CYLINDER, [xs, kerb, 0.0, 2.8, 0.05], C["manmade"], inst, (0.5, 0.5, 0.5), 0.4)
            b.box(C["manmade"], inst, xs, kerb, 2.2, 0.08, 0.7, 0.7, 0.0, (0.8, 0.1, 0.1), 0.9)
        for _ in range(rng.poisson(stats.bushes)):
            xb = rng.uniform(-ext, ext)
            yb = road_y + sign * (road_half + (verge[s] / 2 if verge[s] else sidewalk[s] + rng.uniform(1.0, 6.0)))
            if not in_cross(xb, xb, pad=3.0):
                inst = b.new_instance()
                rad = rng.uniform(0.4, 1.0)
                green = _jitter(rng, (0.2, 0.45, 0.12), 0.15)
                b.add(SPHERE, [xb, yb, rad * 0.6, rad], C["vegetation"], inst, green, 0.4)
        if rng.random() < stats.tree_row_prob:
            x = -ext + rng.uniform(0, 8)
            y_tree = road_y + sign * (road_half + (verge[s] / 2 if verge[s] else min(1.2, sidewalk[s] / 2)))
            while x < ext:
                if not in_cross(x, x, pad=3.0):
                    _tree(b, x, y_tree)
                x += rng.uniform(*stats.tree_spacing)

    # Occupied stretches per lane / parking strip so vehicles do not overlap; the ego occupies its own spot.
    occupied: dict[float, list[tuple[float, float]]] = {}

    def free(key: float, x0: float, x1: float) -> bool:
        spans = occupied.setdefault(round(key, 2), [])
        if any(x0 < b1 + 1.0 and x1 > b0 - 1.0 for b0, b1 in spans):
            return False
        spans.append((x0, x1))
        return True

    free(0.0, -3.5, 6.0)
    lengths = {"car": 4.6, "truck": 7.5, "bus": 12.0, "trailer_combo": 17.0, "trailer": 11.0,
               "construction_vehicle": 7.0, "motorcycle": 2.1, "bicycle": 1.7}  # fmt: skip
    moving_kinds = ("car", "truck", "bus", "trailer_combo", "construction_vehicle", "motorcycle", "bicycle")
    mix = np.asarray(stats.moving_mix) / np.sum(stats.moving_mix)
    for _ in range(rng.poisson(stats.moving)):
        kind = moving_kinds[rng.choice(len(moving_kinds), p=mix)]
        lane = lane_centres[rng.integers(len(lane_centres))]
        x = rng.uniform(-ext * 0.75, ext * 0.75)
        half = lengths[kind] / 2
        if in_cross(x - half, x + half, pad=1.0) or not free(lane, x - half, x + half):
            continue
        heading = 0.0 if (lane - road_y) * ego_side > 0 else np.pi
        _vehicle(b, kind, x, lane + rng.normal(0, 0.2), heading + rng.normal(0, 0.02))
    if cross:  # traffic on the cross street
        for _ in range(rng.poisson(1.5)):
            y = road_y + rng.uniform(road_half + 4, 40) * rng.choice((-1.0, 1.0))
            lane_x = cross_x + rng.choice((-1.75, 1.75))
            if free(1000.0 + lane_x, y - 2.5, y + 2.5):
                _vehicle(b, "car", lane_x, y, np.pi / 2)
    parked_kinds = ("car", "truck", "motorcycle", "trailer")
    parked_p = np.array([0.84, 0.06, 0.06, 0.04])
    for sign in (1.0, -1.0):
        strip = road_y + sign * (road_half - 1.2)
        for _ in range(rng.poisson(stats.parked_per_side)):
            kind = parked_kinds[rng.choice(4, p=parked_p)]
            x = rng.uniform(-ext * 0.8, ext * 0.8)
            half = lengths[kind] / 2
            if in_cross(x - half, x + half, pad=2.0) or not free(strip, x - half, x + half):
                continue
            _vehicle(b, kind, x, strip + rng.normal(0, 0.1), rng.choice((0.0, np.pi)) + rng.normal(0, 0.03))

    # People and bicycles on the sidewalks (some crossing the road).
    for _ in range(rng.poisson(stats.pedestrians)):
        sign = rng.choice((-1.0, 1.0))
        s = 0 if sign > 0 else 1
        x = rng.uniform(-ext * 0.6, ext * 0.6)
        if rng.random() < stats.crossing_prob:
            y = road_y + rng.uniform(-road_half, road_half)
        else:
            y = road_y + sign * (road_half + rng.uniform(0.4, sidewalk[s] - 0.3))
        group = 1 + rng.poisson(0.5)
        for _ in range(group):
            _pedestrian(b, x + rng.normal(0, 0.5) if group > 1 else x, y + rng.normal(0, 0.3) if group > 1 else y)
    for _ in range(rng.poisson(stats.parked_bicycles)):
        sign = rng.choice((-1.0, 1.0))
        x = rng.uniform(-ext * 0.6, ext * 0.6)
        for k in range(1 + rng.poisson(1.0)):
            _vehicle(b, "bicycle", x + 0.8 * k, road_y + sign * (road_half + 0.5), np.pi / 2 + rng.normal(0, 0.1))

    # Construction zone: a closed stretch along one road edge, cones and barriers around a machine.
    if rng.random() < stats.construction_prob:
        sign = rng.choice((-1.0, 1.0))
        x0 = rng.choice((-1.0, 1.0)) * rng.uniform(15, 50)
        zone_len = rng.uniform(12, 25)
        y_edge = road_y + sign * (road_half - 1.5)
        if free(y_edge, x0, x0 + zone_len):
            for xc in np.arange(x0, x0 + zone_len, rng.uniform(2.0, 3.5)):
                _cone(b, xc, y_edge - sign * 1.8)
            for xb in np.arange(x0 + 1.5, x0 + zone_len - 1.5, 3.2):
                _barrier(b, xb, y_edge + sign * 0.6, 0.0)
            _vehicle(b, "construction_vehicle", x0 + zone_len / 2, y_edge - sign * 0.2, rng.uniform(0, np.pi))
            for _ in range(rng.poisson(1.0)):
                _pedestrian(b, rng.uniform(x0, x0 + zone_len), y_edge)
    if rng.random() < stats.barrier_row_prob:
        if median_half > 0:
            y_row = road_y
        else:
            y_row = road_y + rng.choice((-1.0, 1.0)) * (road_half + rng.uniform(0.3, 1.0))
        x0 = rng.uniform(-40, 20)
        for xb in np.arange(x0, x0 + rng.uniform(8, 30), rng.uniform(2.6, 3.4)):
            if not in_cross(xb, xb, pad=1.0):
                _barrier(b, xb, y_row, rng.normal(0, 0.03))
    if rng.random() < stats.cone_group_prob:
        sign = rng.choice((-1.0, 1.0))
        x0 = rng.uniform(-30, 30)
        y0 = road_y + sign * (road_half - rng.uniform(0.3, 2.5))
        for k in range(2 + rng.poisson(2.0)):
            _cone(b, x0 + 1.5 * k, y0 + rng.normal(0, 0.15))

    ground = Ground(
        road_y=road_y,
        road_half=road_half,
        sidewalk=sidewalk,
        verge=verge,
        median_half=median_half,
        median_class=C["other_flat"] if rng.random() < 0.6 else C["terrain"],
        cross_x=cross_x,
        cross_half=cross_half,
        lot_edges=lot_edges,
        lot_class=lot_class,
        lot_instance=lot_instance,
        lane_lines=lane_lines,
    )
    return World(ground=ground, prims=b.build())
