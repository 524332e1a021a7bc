"""The synthetic world written as a nuScenes dataroot (nuscenes-devkit layout, nuScenes-lidarseg labels).

A fixture generator for tests and benchmarks of everything that reads nuScenes: any number of scenes per
official split and keyframes per scene, loadable by ``nuscenes.nuscenes.NuScenes(version, dataroot)`` and by
:class:`bench.data.nuscenes.NuScenesDataset`, whose points, labels and pairings then equal the synthetic scans'.

``python -m bench.data.synthetic.nuscenes_format --out DIR --scenes mini_train=2,mini_val=1 --keyframes 2``
(see ``--help``), or :func:`write_nuscenes_dataroot` from Python.

Layout written under ``root`` (as in a real nuScenes download; several versions can share one root)::

    <version>/{attribute,calibrated_sensor,category,ego_pose,instance,log,map,sample,
               sample_annotation,sample_data,scene,sensor,visibility}.json  (+ lidarseg.json)
    samples/LIDAR_TOP/<logfile>__LIDAR_TOP__<timestamp>.pcd.bin     float32 x y z intensity ring
    samples/CAM_*/<logfile>__CAM_*__<timestamp>.jpg                 the rendered RGB image (JPEG, quality 95)
    lidarseg/<version>/<lidar sample_data token>_lidarseg.bin       uint8 fine class index per point
    maps/<map token>.png                                            8 x 8 blank map mask (the devkit opens one)

Contents and the choices behind them:

- **Scenes**: for ``scenes={"mini_train": 2, "mini_val": 1}`` the first 2 names of the devkit's
  ``create_splits_scenes()["mini_train"]`` and the first of ``["mini_val"]``, so the official split lists
  find them. A split must fit the version as in the devkit's ``create_splits_logs`` (``mini_*`` in a
  ``*-mini`` version, ``train``/``val``/``train_detect``/``train_track`` in ``*-trainval``, ``test`` in
  ``*-test``). A scene named by two requested splits is written once.
- **Keyframes**: keyframe ``k`` of scene ``scene-NNNN`` is ``generate_scene(keyframe_seed(seed, name, k),
  variant, config)`` with ``keyframe_seed = seed * 10**7 + NNNN * 10**3 + k`` (readable, distinct for
  ``k < 1000``). The content of a scene therefore depends only on ``(seed, scene name, variant, config)``,
  not on which other scenes are written: v1.0-mini and v1.0-trainval written with the same seed into one root
  share their ``samples/`` files, as real nuScenes does. Each keyframe is a separate synthetic world (there
  is no motion between keyframes and no sweeps); samples are linked by ``prev``/``next``, scenes carry
  ``first/last_sample_token`` and ``nbr_samples``; every sample_data ``is_key_frame``.
- **Time**: microseconds; scene ``NNNN`` starts at ``1535000000000000 + NNNN * 10**9`` (2018-08-23 + NNNN *
  1000 s), keyframes 0.5 s apart (nuScenes' 2 Hz). The lidar and the six camera sample_data of a keyframe
  share its timestamp.
- **Sensors**: LIDAR_TOP and the six camera channels of :data:`bench.data.nuscenes.NUSCENES_CAMERAS`, matched
  by name with the synthetic rig's cameras (both rigs of :data:`~bench.data.synthetic.VARIANTS` use these
  names). calibrated_sensor (one per scene and channel, as per log in nuScenes): LIDAR_TOP at the rig's lidar
  position with the identity rotation (the synthetic lidar frame has the ego frame's axes, so the points are
  written unchanged); each camera's ``camera_to_ego`` as translation + quaternion ``[w, x, y, z]`` (w >= 0)
  and its intrinsic ``K``. sample_data ``width``/``height`` are the rendered image size.
- **Ego poses**: one ego_pose per sample_data with the sample_data's token (as in nuScenes), all seven of a
  keyframe identical, so the devkit's lidar -> ego -> global -> ego -> camera chain reduces to the rig's
  ``lidar_to_camera``. Each scene drives from a start drawn in ``[50, 150]^2`` m with a random heading, 5 m
  per keyframe, turning by a fixed random rate in [-0.1, 0.1] rad per keyframe. Translations stay moderate
  because the devkit moves points through global coordinates in float32 (the error grows with the distance
  from the origin): a point whose pixel coordinate lies within ~1e-3 px of a rounding boundary can land on
  the neighbouring pixel. Measured at the default resolution over 30 keyframes: 85 of 693 929 pairings
  (1.2e-4) differ from the synthetic scan's own float64 projection, all by one pixel; 1.4e-5 with identity
  ego poses, 6e-4 at 1 km.
- **Labels** (nuScenes-lidarseg, when ``lidarseg=True``): category.json holds the 32 fine classes with their
  official ``index`` (:data:`~bench.data.classes.NUSCENES_FINE_CLASSES`); each of the 16 coarse classes is
  written as one fine class that maps back to it (:data:`COARSE_TO_FINE`), ignored points as ``noise``
  (index 0). With ``lidarseg=False`` no lidarseg.json nor label file is written (the devkit then loads no
  labels), category.json is the same.
- **Points**: the synthetic ``x y z intensity`` and the ring index (0 = lowest beam, Velodyne's convention),
  recovered from each point's elevation (range noise moves a return along its ray, so the elevation is the
  beam's).
- **Empty tables**: instance and sample_annotation are empty (no boxes); attribute holds the eight nuScenes
  attributes and visibility its four levels, log one record per scene (location ``"synthetic"``), map one
  record for all logs (the devkit needs at least one map record and its PNG file).
- **Determinism**: every token is the first 32 hex digits of ``sha256("<seed>/<kind>/<key>")``; JSON is
  written with sorted records and fixed formatting, images by PIL with fixed settings, so the same arguments
  give byte-identical files.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from pyquaternion import Quaternion
from tqdm import tqdm

from bench.data.classes import IGNORE_INDEX, NUSCENES_CLASSES, NUSCENES_FINE_CLASSES
from bench.data.nuscenes import LIDAR_CHANNEL, NUSCENES_CAMERAS
from bench.data.scan import Scan
from bench.data.synthetic.generate import VARIANTS, SyntheticConfig, generate_scene
from bench.data.synthetic.sensors import LidarSpec

DEFAULT_SCENES: dict[str, int] = {"mini_train": 2, "mini_val": 1}
"""Scenes per split written by default (3 scenes x 2 keyframes)."""
MAX_KEYFRAMES = 1000
"""Keyframes per scene are below this (the keyframe index is the last three digits of the seed)."""
KEYFRAME_INTERVAL_US = 500_000
"""Time between keyframes (nuScenes samples keyframes at 2 Hz)."""
TIME_ORIGIN_US = 1_535_000_000_000_000
"""Timestamp of the start of ``scene-0000`` (2018-08-23 04:53:20 UTC); scene ``NNNN`` starts NNNN * 1000 s later."""
SCENE_TIME_US = 1_000_000_000
JPEG_QUALITY = 95

COARSE_TO_FINE: dict[str, str] = {
    "barrier": "movable_object.barrier",
    "bicycle": "vehicle.bicycle",
    "bus": "vehicle.bus.rigid",
    "car": "vehicle.car",
    "construction_vehicle": "vehicle.construction",
    "motorcycle": "vehicle.motorcycle",
    "pedestrian": "human.pedestrian.adult",
    "traffic_cone": "movable_object.trafficcone",
    "trailer": "vehicle.trailer",
    "truck": "vehicle.truck",
    "driveable_surface": "flat.driveable_surface",
    "other_flat": "flat.other",
    "sidewalk": "flat.sidewalk",
    "terrain": "flat.terrain",
    "manmade": "static.manmade",
    "vegetation": "static.vegetation",
}
"""The fine nuScenes-lidarseg class each coarse class is written as (each maps back to its coarse class)."""
IGNORE_FINE_CLASS = "noise"
"""The fine class of points labelled :data:`~bench.data.classes.IGNORE_INDEX` (fine index 0)."""

ATTRIBUTES: tuple[str, ...] = (
    "vehicle.moving",
    "vehicle.stopped",
    "vehicle.parked",
    "cycle.with_rider",
    "cycle.without_rider",
    "pedestrian.sitting_lying_down",
    "pedestrian.standing",
    "pedestrian.moving",
)
"""The nuScenes attribute names (no annotation uses them; written so that tools listing them find them)."""
VISIBILITY_LEVELS: tuple[tuple[str, str, str], ...] = (
    ("1", "v0-40", "visibility of whole object is between 0 and 40%"),
    ("2", "v40-60", "visibility of whole object is between 40 and 60%"),
    ("3", "v60-80", "visibility of whole object is between 60 and 80%"),
    ("4", "v80-100", "visibility of whole object is between 80 and 100%"),
)
TABLES: tuple[str, ...] = (
    "attribute",
    "calibrated_sensor",
    "category",
    "ego_pose",
    "instance",
    "log",
    "map",
    "sample",
    "sample_annotation",
    "sample_data",
    "scene",
    "sensor",
    "visibility",
)
"""The tables ``NuScenes(version, dataroot)`` loads (``lidarseg`` comes on top when labels are written)."""

_SPLIT_VERSION_SUFFIX = {
    "train": "trainval",
    "val": "trainval",
    "train_detect": "trainval",
    "train_track": "trainval",
    "mini_train": "mini",
    "mini_val": "mini",
    "test": "test",
}


def token(seed: int, kind: str, key: str) -> str:
    """Deterministic 32-hex-digit token of record ``key`` of table ``kind``."""
    return hashlib.sha256(f"{seed}/{kind}/{key}".encode()).hexdigest()[:32]


def scene_number(name: str) -> int:
    """``NNNN`` of an official scene name ``scene-NNNN``."""
    prefix, _, number = name.partition("-")
    if prefix != "scene" or not number.isdigit():
        raise ValueError(f"not an official nuScenes scene name: {name!r} (expected 'scene-NNNN')")
    return int(number)


def keyframe_seed(seed: int, scene_name: str, keyframe: int) -> int:
    """The ``generate_scene`` seed of keyframe ``keyframe`` of scene ``scene_name``:
    ``seed * 10**7 + NNNN * 10**3 + keyframe``."""
    if not 0 <= keyframe < MAX_KEYFRAMES:
        raise ValueError(f"keyframe index {keyframe} outside 0..{MAX_KEYFRAMES - 1}")
    return seed * 10**7 + scene_number(scene_name) * 10**3 + keyframe


def fixture_scene_names(scenes: Mapping[str, int], version: str) -> dict[str, list[str]]:
    """Scene names written for ``scenes`` (split -> count): the first ``count`` names of each official split.

    Raises:
        ValueError: unknown split, a count above the split's size, or a split that does not fit ``version``.
    """
    # lazy: the nuScenes devkit's package import loads cv2, matplotlib and sklearn (~2 s)
    from nuscenes.utils.splits import create_splits_scenes

    official = create_splits_scenes(verbose=False)
    out = {}
    for split, count in scenes.items():
        if split not in official:
            raise ValueError(f"unknown nuScenes split {split!r}; known splits: {', '.join(official)}")
        suffix = _SPLIT_VERSION_SUFFIX[split]
        if not version.endswith(suffix):
            raise ValueError(f"split {split!r} belongs to a '*-{suffix}' version, not {version!r} (devkit rule)")
        if not 0 <= count <= len(official[split]):
            raise ValueError(f"{count} scenes requested from split {split!r}, which has {len(official[split])}")
        out[split] = list(official[split][:count])
    return out


def fine_labels(labels: np.ndarray) -> np.ndarray:
    """Coarse labels (0..15, :data:`~bench.data.classes.IGNORE_INDEX`) -> uint8 fine nuScenes-lidarseg indices."""
    lut = np.full(256, NUSCENES_FINE_CLASSES.index(IGNORE_FINE_CLASS), dtype=np.uint8)
    for coarse, fine in COARSE_TO_FINE.items():
        lut[NUSCENES_CLASSES.index(coarse)] = NUSCENES_FINE_CLASSES.index(fine)
    lut[IGNORE_INDEX] = NUSCENES_FINE_CLASSES.index(IGNORE_FINE_CLASS)
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError("labels outside 0..255")
    return lut[labels]


def ring_index(points: np.ndarray, lidar: LidarSpec) -> np.ndarray:
    """Beam of every point (0 = lowest), from its elevation in the lidar frame."""
    elev = np.degrees(np.arctan2(points[:, 2], np.hypot(points[:, 0], points[:, 1])))
    low, high = lidar.elevation_deg
    step = (high - low) / max(lidar.beams - 1, 1)
    return np.clip(np.rint((elev - low) / step), 0, lidar.beams - 1)


def ego_poses(seed: int, scene_name: str, keyframes: int) -> list[tuple[list[float], list[float]]]:
    """``(translation, rotation [w, x, y, z])`` of the ego at every keyframe of a scene (module docstring)."""
    rng = np.random.default_rng([seed, scene_number(scene_name), 7])
    x, y = rng.uniform(50.0, 150.0, 2)
    yaw = rng.uniform(-np.pi, np.pi)
    turn = rng.uniform(-0.1, 0.1)
    poses = []
    for _ in range(keyframes):
        rotation = [float(np.cos(yaw / 2.0)), 0.0, 0.0, float(np.sin(yaw / 2.0))]
        poses.append(([round(float(x), 4), round(float(y), 4), 0.0], rotation))
        x, y, yaw = x + 5.0 * np.cos(yaw), y + 5.0 * np.sin(yaw), yaw + turn
    return poses


def _quaternion(rotation: np.ndarray) -> list[float]:
    q = Quaternion(matrix=rotation)
    q = -q if q.w < 0 else q
    return [float(v) for v in q.elements]


def _write_json(path: Path, records: list[dict]) -> None:
    path.write_text(json.dumps(records, indent=1) + "\n")


def _blank_png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(path, format="PNG")


class _Writer:
    """Accumulates the tables while keyframes are written."""

    def __init__(self, root: Path, version: str, seed: int, config: SyntheticConfig, lidarseg: bool) -> None:
        self.root, self.version, self.seed, self.config, self.lidarseg = root, version, seed, config, lidarseg
        self.tables: dict[str, list[dict]] = {name: [] for name in (*TABLES, "lidarseg")}
        specs = {spec.name: spec for spec in config.rig.cameras}
        if sorted(specs) != sorted(NUSCENES_CAMERAS):
            raise ValueError(f"the synthetic rig's cameras {sorted(specs)} are not nuScenes' {list(NUSCENES_CAMERAS)}")
        self.cameras = [specs[name] for name in NUSCENES_CAMERAS]
        self.channels = (LIDAR_CHANNEL, *NUSCENES_CAMERAS)
        self.sensor_tokens = {ch: token(seed, "sensor", ch) for ch in self.channels}

    def tok(self, kind: str, key: str) -> str:
        return token(self.seed, kind, key)

    def static_tables(self, log_tokens: Sequence[str]) -> None:
        t = self.tables
        t["sensor"] = [
            {"token": self.sensor_tokens[ch], "channel": ch, "modality": "lidar" if ch == LIDAR_CHANNEL else "camera"}
            for ch in self.channels
        ]
        t["category"] = [
            {"token": self.tok("category", name), "name": name, "description": name, "index": index}
            for index, name in enumerate(NUSCENES_FINE_CLASSES)
        ]
        t["attribute"] = [
            {"token": self.tok("attribute", name), "name": name, "description": name} for name in ATTRIBUTES
        ]
        t["visibility"] = [{"token": tk, "level": lvl, "description": d} for tk, lvl, d in VISIBILITY_LEVELS]
        map_token = self.tok("map", "synthetic")
        filename = f"maps/{map_token}.png"
        _blank_png(self.root / filename)
        t["map"] = [
            {"token": map_token, "log_tokens": list(log_tokens), "category": "semantic_prior", "filename": filename}
        ]

    def scene(self, name: str, keyframes: int, variant: str, progress: tqdm) -> str:
        """Generate and write the keyframes of scene ``name``; returns its log token."""
        t = self.tables
        number = scene_number(name)
        start = TIME_ORIGIN_US + number * SCENE_TIME_US
        date = datetime.datetime.fromtimestamp(start / 1e6, tz=datetime.timezone.utc)
        logfile = f"synthetic-s{self.seed}-{date:%Y-%m-%d}-{name}"
        log_token = self.tok("log", name)
        t["log"].append(
            {
                "token": log_token,
                "logfile": logfile,
                "vehicle": "synthetic",
                "date_captured": f"{date:%Y-%m-%d}",
                "location": "synthetic",
            }
        )
        cs_tokens = {ch: self.tok("calibrated_sensor", f"{name}/{ch}") for ch in self.channels}
        lidar = self.config.rig.lidar
        t["calibrated_sensor"].append(
            {
                "token": cs_tokens[LIDAR_CHANNEL],
                "sensor_token": self.sensor_tokens[LIDAR_CHANNEL],
                "translation": [float(v) for v in lidar.position],
                "rotation": [1.0, 0.0, 0.0, 0.0],
                "camera_intrinsic": [],
            }
        )
        for spec in self.cameras:
            cam_to_ego = spec.camera_to_ego()
            t["calibrated_sensor"].append(
                {
                    "token": cs_tokens[spec.name],
                    "sensor_token": self.sensor_tokens[spec.name],
                    "translation": [float(v) for v in cam_to_ego[:3, 3]],
                    "rotation": _quaternion(cam_to_ego[:3, :3]),
                    "camera_intrinsic": spec.intrinsic().tolist(),
                }
            )
        sample_tokens = [self.tok("sample", f"{name}/{k}") for k in range(keyframes)]
        sd_tokens = [
            {ch: self.tok("sample_data", f"{name}/{k}/{ch}") for ch in self.channels} for k in range(keyframes)
        ]
        scene_token = self.tok("scene", name)
        poses = ego_poses(self.seed, name, keyframes)
        seeds = [keyframe_seed(self.seed, name, k) for k in range(keyframes)]
        for k in range(keyframes):
            timestamp = start + k * KEYFRAME_INTERVAL_US
            scan = generate_scene(seeds[k], variant, self.config)
            t["sample"].append(
                {
                    "token": sample_tokens[k],
                    "timestamp": timestamp,
                    "prev": sample_tokens[k - 1] if k > 0 else "",
                    "next": sample_tokens[k + 1] if k + 1 < keyframes else "",
                    "scene_token": scene_token,
                }
            )
            for ch in self.channels:
                sd = sd_tokens[k][ch]
                ext = "pcd.bin" if ch == LIDAR_CHANNEL else "jpg"
                filename = f"samples/{ch}/{logfile}__{ch}__{timestamp}.{ext}"
                spec = None if ch == LIDAR_CHANNEL else self.cameras[NUSCENES_CAMERAS.index(ch)]
                t["ego_pose"].append(
                    {"token": sd, "timestamp": timestamp, "rotation": poses[k][1], "translation": poses[k][0]}
                )
                t["sample_data"].append(
                    {
                        "token": sd,
                        "sample_token": sample_tokens[k],
                        "ego_pose_token": sd,
                        "calibrated_sensor_token": cs_tokens[ch],
                        "timestamp": timestamp,
                        "fileformat": "pcd" if spec is None else "jpg",
                        "is_key_frame": True,
                        "height": 0 if spec is None else spec.height,
                        "width": 0 if spec is None else spec.width,
                        "filename": filename,
                        "prev": sd_tokens[k - 1][ch] if k > 0 else "",
                        "next": sd_tokens[k + 1][ch] if k + 1 < keyframes else "",
                    }
                )
                self._write_file(scan, ch, filename, sd)
            progress.update(1)
        t["scene"].append(
            {
                "token": scene_token,
                "log_token": log_token,
                "nbr_samples": keyframes,
                "first_sample_token": sample_tokens[0],
                "last_sample_token": sample_tokens[-1],
                "name": name,
                "description": f"synthetic world (bench.data.synthetic, variant {variant}), generate_scene seeds "
                f"{seeds[0]}..{seeds[-1]}",
            }
        )
        return log_token

    def _write_file(self, scan: Scan, channel: str, filename: str, sd_token: str) -> None:
        path = self.root / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        if channel != LIDAR_CHANNEL:
            Image.fromarray(scan.camera(channel).image).save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
            return
        ring = ring_index(scan.points, self.config.rig.lidar)
        np.column_stack([scan.points, ring]).astype(np.float32).tofile(path)
        if self.lidarseg:
            rel = f"lidarseg/{self.version}/{sd_token}_lidarseg.bin"
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            fine_labels(scan.labels).tofile(self.root / rel)
            self.tables["lidarseg"].append({"token": sd_token, "sample_data_token": sd_token, "filename": rel})

    def write_tables(self) -> None:
        folder = self.root / self.version
        folder.mkdir(parents=True, exist_ok=True)
        for name in TABLES:
            _write_json(folder / f"{name}.json", self.tables[name])
        if self.lidarseg:
            _write_json(folder / "lidarseg.json", self.tables["lidarseg"])


def write_nuscenes_dataroot(
    root: str | Path,
    version: str = "v1.0-mini",
    scenes: Mapping[str, int] | None = None,
    keyframes: int = 2,
    lidarseg: bool = True,
    seed: int = 0,
    variant: str = "nuscenes",
    config: SyntheticConfig | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write synthetic scenes as a nuScenes dataroot (layout and choices: the module docstring).

    Args:
        root: dataroot folder (created; may already hold other versions).
        version: table folder name, e.g. ``"v1.0-mini"`` or ``"v1.0-trainval"``; its suffix must fit the
            splits (devkit rule).
        scenes: official split -> number of scenes (the first names of the split); default
            :data:`DEFAULT_SCENES`.
        keyframes: keyframes per scene, ``1 .. MAX_KEYFRAMES - 1``.
        lidarseg: write nuScenes-lidarseg labels (``lidarseg.json`` and ``lidarseg/<version>/*.bin``).
        seed: base seed; keyframe seeds are :func:`keyframe_seed`, tokens :func:`token` of it.
        variant: synthetic world variant (``"nuscenes"`` or ``"ood"``).
        config: overrides the variant's generation parameters (e.g. a lower camera resolution for tests).
        overwrite: replace an existing ``<version>/`` (and ``lidarseg/<version>/``) instead of refusing.
        progress: show a progress bar over keyframes.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: bad split, count, version, keyframe count or variant.
        FileExistsError: ``<root>/<version>`` exists and ``overwrite`` is false.
    """
    root = Path(root)
    scenes = DEFAULT_SCENES if scenes is None else scenes
    if variant not in VARIANTS:
        raise ValueError(f"unknown synthetic variant {variant!r}; known variants: {', '.join(VARIANTS)}")
    if not 1 <= keyframes < MAX_KEYFRAMES:
        raise ValueError(f"keyframes must be in 1..{MAX_KEYFRAMES - 1}, got {keyframes}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    names: list[str] = []
    for split_names in fixture_scene_names(scenes, version).values():
        names += [n for n in split_names if n not in names]
    if not names:
        raise ValueError(f"no scene requested ({dict(scenes)})")
    cfg = config if config is not None else VARIANTS[variant]
    for folder in (root / version, root / "lidarseg" / version):
        if folder.exists():
            if not overwrite:
                raise FileExistsError(f"{folder} already exists (pass overwrite=True / --overwrite to replace it)")
            shutil.rmtree(folder)
    root.mkdir(parents=True, exist_ok=True)
    writer = _Writer(root, version, seed, cfg, lidarseg)
    log_tokens = []
    with tqdm(total=len(names) * keyframes, desc=f"nuScenes fixture {version}", disable=not progress) as bar:
        for name in names:
            log_tokens.append(writer.scene(name, keyframes, variant, bar))
    writer.static_tables(log_tokens)
    writer.write_tables()
    return root


def dataroot_files(root: str | Path, version: str) -> list[Path]:
    """Every file a written ``version`` consists of: its tables, sample files, label files and map masks."""
    root = Path(root)
    tables = root / version
    files = sorted(tables.glob("*.json"))
    for name, key in (("sample_data", "filename"), ("map", "filename"), ("lidarseg", "filename")):
        path = tables / f"{name}.json"
        if path.is_file():
            files += [root / record[key] for record in json.loads(path.read_text())]
    return files


def _parse_scenes(text: str) -> dict[str, int]:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        split, sep, count = part.partition("=")
        if not sep or not count.strip().isdigit():
            raise argparse.ArgumentTypeError(f"expected SPLIT=COUNT[,SPLIT=COUNT...], got {part!r}")
        out[split.strip()] = int(count)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.data.synthetic.nuscenes_format",
        description="Write the synthetic world as a nuScenes dataroot (nuscenes-devkit layout and tables, "
        "nuScenes-lidarseg labels) that NuScenes(version, dataroot) and bench.data.nuscenes.NuScenesDataset "
        "load. Scenes take the official names of the requested splits; each keyframe is one synthetic scene.",
    )
    parser.add_argument("--out", required=True, type=Path, help="dataroot folder to write")
    parser.add_argument("--version", default="v1.0-mini", help="table folder, e.g. v1.0-mini (default), v1.0-trainval")
    parser.add_argument(
        "--scenes",
        type=_parse_scenes,
        default=dict(DEFAULT_SCENES),
        help="scenes per official split, e.g. mini_train=2,mini_val=1 (default) or train=10,val=2 "
        "with --version v1.0-trainval",
    )
    parser.add_argument("--keyframes", type=int, default=2, help="keyframes per scene, 0.5 s apart (default 2)")
    parser.add_argument("--no-lidarseg", action="store_true", help="write no nuScenes-lidarseg labels")
    parser.add_argument("--seed", type=int, default=0, help="base seed of scenes and tokens (default 0)")
    parser.add_argument("--variant", choices=tuple(VARIANTS), default="nuscenes", help="synthetic world variant")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing <out>/<version>")
    args = parser.parse_args(argv)
    try:
        root = write_nuscenes_dataroot(
            args.out,
            version=args.version,
            scenes=args.scenes,
            keyframes=args.keyframes,
            lidarseg=not args.no_lidarseg,
            seed=args.seed,
            variant=args.variant,
            overwrite=args.overwrite,
            progress=True,
        )
    except (ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    names = fixture_scene_names(args.scenes, args.version)
    size = sum(p.stat().st_size for p in dataroot_files(root, args.version))
    split_text = ", ".join(f"{split} {len(n)}" for split, n in names.items())
    scene_count = len({n for ns in names.values() for n in ns})
    print(
        f"wrote {root}/{args.version}: {scene_count} scenes ({split_text}), {scene_count * args.keyframes} keyframes, "
        f"{'with' if not args.no_lidarseg else 'without'} lidarseg, {size / 1e6:.1f} MB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
