"""The calibrated synthetic teacher (DESIGN.md section 3): CLIP-like pixel features from rendered class maps.

Geometry. One orthonormal set of directions in ``R^D`` (QR of a seeded Gaussian matrix): a shared direction
``u0``, one direction per super-group ``a``, group ``g`` and class ``c`` (the 16 nuScenes classes and ``sky``),
and a modality-gap direction ``m``. Class prototypes are hierarchical unit vectors

    h_c = sqrt(w_a) e_a(c) + sqrt(w_g) e_g(c) + sqrt(w_c) e_c,     p_c = sqrt(beta) u0 + sqrt(1 - beta) h_c

so ``p_c . p_c' = beta + (1 - beta) (w_a [same super-group] + w_g [same group])``: vehicles sit near vehicles,
flat surfaces near flat surfaces, and every feature shares the cone around ``u0`` that CLIP features occupy.

Pixel features of a camera, on the stride-``s`` patch grid (``s = 16`` like ViT-B/16), before the bilinear
upsampling to pixels (:func:`~models.teachers.base.upsample`):

    f(P) = sqrt(beta) u0 + sqrt(1 - beta) mean_{x in P} h_{class(x)}
           + sigma (r_inst mean_{x in P} o_{instance(x)} + r_smooth B z(P) + r_white n(P))

- the per-pixel prototypes are averaged over the patch, and the grid is upsampled bilinearly, so features
  blur across object edges and small objects are diluted, as MaskCLIP's dense CLIP features are;
- ``o_k ~ N(0, I/D)``: an offset per object instance (seeded by scene and instance id);
- ``z``: a spatially smooth Gaussian field (white noise blurred with a Gaussian of ``smooth_length`` patches,
  unit variance) in the semantic subspace ``B`` spanned by the super-group, group and class directions, so the
  structured noise moves features towards other classes (zero-shot errors), like CLIP's;
- ``n ~ N(0, I/D)``: white noise per patch.

Text: a prompt ``q`` built from a phrase of class ``c`` embeds as
``t = p_c + gap m + sigma_phrase B zeta(phrase) + sigma_prompt nu(q)`` with seeded Gaussian ``zeta`` (per phrase,
shared by every template: a bias ensembling cannot remove) and ``nu ~ N(0, I/D)`` (per prompt).

Only ``beta`` (``common``) and ``sigma`` (``noise``) are calibrated, by :mod:`models.teachers.calibrate`, so that
a class-balanced sample of paired pixel features measures the paper's CLIP values ``U = 1.54``, ``T = 0.73``
(METHOD.md section 4); every other number is a documented choice in :class:`SyntheticTeacherParams`, stored with
the calibrated ones in ``data/synthetic_teacher.json``.

Determinism: the features of a camera depend only on the parameters, the scene id and the camera name.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.data.classes import IGNORE_INDEX, NUSCENES_CLASSES
from bench.data.scan import Scan
from models.teachers.base import Teacher, class_phrases, sample, stable_hash

PARAMS_FILE = "synthetic_teacher.json"

SKY = "sky"
"""The 17th prototype, for pixels whose ray hits nothing (``class_map == IGNORE_INDEX``)."""

HIERARCHY: dict[str, tuple[str, str]] = {
    "car": ("thing", "vehicle"),
    "truck": ("thing", "vehicle"),
    "bus": ("thing", "vehicle"),
    "trailer": ("thing", "vehicle"),
    "construction_vehicle": ("thing", "vehicle"),
    "bicycle": ("thing", "two_wheeler"),
    "motorcycle": ("thing", "two_wheeler"),
    "pedestrian": ("thing", "human"),
    "barrier": ("thing", "road_object"),
    "traffic_cone": ("thing", "road_object"),
    "driveable_surface": ("stuff", "flat"),
    "other_flat": ("stuff", "flat"),
    "sidewalk": ("stuff", "flat"),
    "terrain": ("stuff", "flat"),
    "manmade": ("stuff", "structure"),
    "vegetation": ("stuff", "nature"),
    SKY: ("background", "sky"),
}
"""Class -> (super-group, group): the semantic hierarchy of the prototypes (choice, after the nuScenes taxonomy)."""


@dataclass(frozen=True)
class SyntheticTeacherParams:
    """Every number of the synthetic teacher (see the module docstring for the formulas).

    Attributes:
        common: ``beta``, weight of the shared direction ``u0`` in every prototype (calibrated).
        noise: ``sigma``, overall scale of instance offsets, smooth field and white noise (calibrated).
        dim: feature dimension ``D`` (CLIP ViT-B/16: 512).
        stride: patch size in pixels (ViT-B/16: 16).
        seed: seed of the directions (prototypes, gap) and of every noise stream.
        hierarchy_weights: ``(w_a, w_g, w_c)``, squared weights of super-group, group and class directions in
            ``h_c`` (sum 1).
        instance_ratio: ``r_inst``.
        smooth_ratio: ``r_smooth``.
        white_ratio: ``r_white``.
        smooth_length: standard deviation, in patches, of the Gaussian that smooths the field ``z``.
        gap: length of the modality-gap shift of text embeddings along ``m``.
        phrase_noise: ``sigma_phrase``, per-phrase semantic bias of text embeddings.
        prompt_noise: ``sigma_prompt``, per-prompt isotropic noise of text embeddings.
        targets: the calibration targets ``{"U": ..., "T": ...}`` (recorded, not used to compute features).
        calibration: provenance written by the calibration script (sample, measured values).
    """

    common: float
    noise: float
    dim: int = 512
    stride: int = 16
    seed: int = 0
    hierarchy_weights: tuple[float, float, float] = (0.15, 0.30, 0.55)
    instance_ratio: float = 0.5
    smooth_ratio: float = 1.0
    white_ratio: float = 1.0
    smooth_length: float = 1.5
    gap: float = 1.0
    phrase_noise: float = 0.1
    prompt_noise: float = 0.3
    targets: dict[str, float] = field(default_factory=lambda: {"U": 1.54, "T": 0.73})
    calibration: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.common < 1.0:
            raise ValueError(f"common must lie in [0, 1); got {self.common}")
        if self.noise < 0:
            raise ValueError(f"noise must be non-negative; got {self.noise}")
        if abs(sum(self.hierarchy_weights) - 1.0) > 1e-9 or min(self.hierarchy_weights) < 0:
            raise ValueError(f"hierarchy_weights must be non-negative and sum to 1; got {self.hierarchy_weights}")

    def to_json(self) -> str:
        """The parameters as indented JSON (the format of ``data/synthetic_teacher.json``)."""
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SyntheticTeacherParams:
        """Parameters from a dict as written by :meth:`to_json`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown synthetic teacher parameters: {unknown}")
        data = dict(data)
        if "hierarchy_weights" in data:
            data["hierarchy_weights"] = tuple(data["hierarchy_weights"])
        return cls(**data)

    def physics_key(self) -> dict[str, Any]:
        """The parameters that determine features and text embeddings (everything but the provenance)."""
        return {k: v for k, v in asdict(self).items() if k not in ("targets", "calibration")}


def default_params_path() -> Path:
    """The committed calibrated parameters, ``models/teachers/data/synthetic_teacher.json``."""
    return Path(str(resources.files("models.teachers").joinpath("data").joinpath(PARAMS_FILE)))


def load_params(path: str | Path | None = None) -> SyntheticTeacherParams:
    """Read parameters written by the calibration script (default: the committed file)."""
    path = default_params_path() if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"synthetic teacher parameters not found: {path} (run python -m models.teachers.calibrate)"
        )
    return SyntheticTeacherParams.from_dict(json.loads(path.read_text()))


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, math.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _smooth(field_: np.ndarray, sigma: float) -> np.ndarray:
    """Blur ``(K, h, w)`` along both grid axes (reflect padding), rescaled to unit variance in the interior."""
    if sigma <= 0:
        return field_
    k = _gaussian_kernel(sigma)
    pad = len(k) // 2
    out = field_
    for axis in (1, 2):
        widths = [(0, 0)] * 3
        widths[axis] = (pad, pad)
        padded = np.pad(out, widths, mode="reflect" if out.shape[axis] > pad else "edge")
        moved = np.moveaxis(padded, axis, -1)
        windows = np.lib.stride_tricks.sliding_window_view(moved, len(k), axis=-1)
        out = np.moveaxis(windows @ k, -1, axis)
    return out / float(np.sum(k**2))  # each axis multiplies the variance by sum(k^2): std by sum(k^2) in all


class SyntheticTeacher(Teacher):
    """Pixel features and text embeddings of the synthetic world (module docstring).

    Args:
        params: the teacher's parameters (:func:`load_params` for the committed, calibrated ones).
        device: where features are returned.
    """

    name = "synthetic"

    def __init__(self, params: SyntheticTeacherParams, device: torch.device | str = "cpu") -> None:
        self.params = params
        self.dim = params.dim
        self.stride = params.stride
        self.device = torch.device(device)
        self.class_names: tuple[str, ...] = (*NUSCENES_CLASSES, SKY)
        supers = sorted({a for a, _ in HIERARCHY.values()})
        groups = sorted({g for _, g in HIERARCHY.values()})
        n_dirs = 1 + len(supers) + len(groups) + len(self.class_names) + 1
        if n_dirs > params.dim:
            raise ValueError(f"dim {params.dim} is smaller than the {n_dirs} directions the teacher needs")
        rng = np.random.default_rng([params.seed, stable_hash("directions")])
        q, _ = np.linalg.qr(rng.standard_normal((params.dim, n_dirs)))
        dirs = q.T  # (n_dirs, D) orthonormal rows
        self.u0 = dirs[0]
        self.gap_direction = dirs[-1]
        e_super = dict(zip(supers, dirs[1 : 1 + len(supers)], strict=True))
        e_group = dict(zip(groups, dirs[1 + len(supers) : 1 + len(supers) + len(groups)], strict=True))
        e_class = dirs[1 + len(supers) + len(groups) : -1]
        self.semantic_basis = dirs[1:-1]  # (K, D): super-groups, groups, classes
        w_a, w_g, w_c = params.hierarchy_weights
        self.hierarchy = np.stack(
            [
                math.sqrt(w_a) * e_super[HIERARCHY[c][0]]
                + math.sqrt(w_g) * e_group[HIERARCHY[c][1]]
                + math.sqrt(w_c) * e
                for c, e in zip(self.class_names, e_class, strict=True)
            ]
        )  # (17, D) unit rows h_c
        self.prototypes = math.sqrt(params.common) * self.u0 + math.sqrt(1 - params.common) * self.hierarchy
        self._phrase_class = {
            p: c for c, phrases in class_phrases("nuscenes").items() for p in (c, c.replace("_", " "), *phrases)
        }

    @classmethod
    def from_file(cls, params_file: str | Path | None = None, device: torch.device | str = "cpu") -> SyntheticTeacher:
        """The teacher with parameters read from ``params_file`` (default: the committed calibration)."""
        return cls(load_params(params_file), device)

    @property
    def identity(self) -> str:
        """``synthetic-<first 12 hex digits of SHA-256 of the feature-determining parameters>``."""
        key = json.dumps(self.params.physics_key(), sort_keys=True)
        return f"synthetic-{hashlib.sha256(key.encode()).hexdigest()[:12]}"

    def components(self, scan_id: str, camera_name: str, class_map: np.ndarray, instance_map: np.ndarray):
        """The two parts of the patch grid: ``semantic = mean_P h_class`` and ``noise`` (both ``(D, h, w)`` float64).

        ``f = sqrt(beta) u0 + sqrt(1 - beta) semantic + sigma noise`` (the calibration varies ``beta`` and
        ``sigma`` without recomputing these).
        """
        p = self.params
        h, w = self.grid_size(class_map.shape)
        s = self.stride
        n_cls = len(self.class_names)
        cls = np.where(class_map == IGNORE_INDEX, n_cls - 1, class_map).astype(np.int64)
        if cls.max() >= n_cls:
            raise ValueError(f"class map of {scan_id}/{camera_name} has values outside 0..{n_cls - 2} and ignore")
        patch = (np.arange(h * s)[:, None] // s) * w + np.arange(w * s)[None, :] // s  # (H, W) patch index
        area = float(s * s)
        frac = np.bincount((patch * n_cls + cls).ravel(), minlength=h * w * n_cls).reshape(h * w, n_cls) / area
        semantic = (frac @ self.hierarchy).T.reshape(p.dim, h, w)

        rng = np.random.default_rng([p.seed, stable_hash("camera", scan_id, camera_name)])
        z = _smooth(rng.standard_normal((len(self.semantic_basis), h, w)), p.smooth_length)
        z /= math.sqrt(len(self.semantic_basis))
        noise = p.smooth_ratio * np.einsum("kd,khw->dhw", self.semantic_basis, z)
        noise += p.white_ratio * rng.standard_normal((p.dim, h, w)) / math.sqrt(p.dim)

        inst = instance_map.astype(np.int64)
        ids, inverse = np.unique(inst, return_inverse=True)
        keep = ids != 0
        if keep.any():
            ifrac = (
                np.bincount((patch.ravel() * len(ids) + inverse.ravel()), minlength=h * w * len(ids)).reshape(
                    h * w, len(ids)
                )[:, keep]
                / area
            )
            offsets = np.stack(
                [
                    np.random.default_rng([p.seed, stable_hash("instance", scan_id, int(k))]).standard_normal(p.dim)
                    for k in ids[keep]
                ]
            ) / math.sqrt(p.dim)
            noise += p.instance_ratio * (ifrac @ offsets).T.reshape(p.dim, h, w)
        return semantic, noise

    def combine(self, semantic: np.ndarray, noise: np.ndarray, axis: int = 0) -> np.ndarray:
        """``sqrt(beta) u0 + sqrt(1 - beta) semantic + sigma noise`` with the feature axis at ``axis``."""
        shape = [1] * semantic.ndim
        shape[axis] = -1
        u0 = self.u0.reshape(shape)
        return (
            math.sqrt(self.params.common) * u0
            + math.sqrt(1 - self.params.common) * semantic
            + self.params.noise * noise
        )

    def camera_features(self, scan: Scan, camera: int | str) -> torch.Tensor:
        """Patch-grid features ``(D, h, w)`` float32 of a synthetic camera (needs its ``class_map``)."""
        view = scan.cameras[camera] if isinstance(camera, int) else scan.camera(camera)
        if view.class_map is None or view.instance_map is None:
            raise ValueError(f"camera {view.name} of {scan.scan_id} has no rendered class/instance map")
        semantic, noise = self.components(scan.scan_id, view.name, view.class_map, view.instance_map)
        return torch.from_numpy(self.combine(semantic, noise).astype(np.float32)).to(self.device)

    def _embed_prompts(self, phrase: str, prompts: Sequence[str]) -> torch.Tensor:
        """``t = p_c + gap m + sigma_phrase B zeta(phrase) + sigma_prompt nu(prompt)`` per prompt (module docstring)."""
        if phrase not in self._phrase_class:
            raise ValueError(
                f"the synthetic teacher knows the nuScenes classes and their phrases in prompts.json; got {phrase!r}"
            )
        p = self.params
        c = self.class_names.index(self._phrase_class[phrase])
        k = len(self.semantic_basis)
        zeta = np.random.default_rng([p.seed, stable_hash("phrase", phrase)]).standard_normal(k) / math.sqrt(k)
        base = self.prototypes[c] + p.gap * self.gap_direction + p.phrase_noise * zeta @ self.semantic_basis
        rows = [
            base
            + p.prompt_noise
            * np.random.default_rng([p.seed, stable_hash("prompt", q)]).standard_normal(p.dim)
            / math.sqrt(p.dim)
            for q in prompts
        ]
        return torch.from_numpy(np.stack(rows).astype(np.float32)).to(self.device)


@dataclass
class PairedComponents:
    """Semantic and noise components (``(M, D)`` float64 each) of paired pixels, with their point labels."""

    semantic: np.ndarray
    noise: np.ndarray
    labels: np.ndarray
    scene_seeds: list[int]


def balanced_scene_seeds(seed: int, n_scenes: int) -> list[int]:
    """Scene seeds of :func:`sample_balanced_features`: ``n_scenes`` distinct seeds in ``[0, 10^6)`` drawn with
    ``seed`` (outside the synthetic val/test splits, which start at ``10^6``)."""
    drawn = np.random.default_rng([seed, stable_hash("scenes")]).choice(10**6, n_scenes, replace=False)
    return sorted(int(s) for s in drawn)


def paired_components(
    teacher: SyntheticTeacher,
    n_per_class: int,
    seed: int,
    n_scenes: int = 64,
    variant: str = "nuscenes",
    progress: bool = False,
) -> PairedComponents:
    """Components of a class-balanced sample of paired pixels (the data of :func:`sample_balanced_features`).

    Scenes :func:`balanced_scene_seeds` are generated; every (point, camera) pairing with a labelled point is a
    candidate labelled by its *point's* class (so parallax errors count, as for real data); up to
    ``n_per_class`` candidates per class are drawn with ``geomstruct.sampling.balanced_sample(seed)``.
    """
    from tqdm import tqdm

    from bench.data.synthetic import generate_scene
    from geomstruct.sampling import balanced_sample

    seeds = balanced_scene_seeds(seed, n_scenes)
    maps: list[tuple[str, str, np.ndarray, np.ndarray]] = []
    pairs: list[np.ndarray] = []  # rows: camera slot, row, col, label
    for scene_seed in tqdm(seeds, desc="synthetic scenes", disable=not progress):
        scan = generate_scene(scene_seed, variant)
        for view in scan.cameras:
            labels = scan.labels[view.pairing[:, 0]]
            ok = labels != IGNORE_INDEX
            slot = np.full(int(ok.sum()), len(maps))
            pairs.append(np.stack([slot, view.pairing[ok, 1], view.pairing[ok, 2], labels[ok]], axis=1))
            maps.append((scan.scan_id, view.name, view.class_map, view.instance_map))
    table = np.concatenate(pairs)
    chosen = balanced_sample(table[:, 3], n_per_class, seed, classes=range(len(NUSCENES_CLASSES))).indices
    table = table[chosen]
    semantic = np.zeros((len(table), teacher.dim))
    noise = np.zeros((len(table), teacher.dim))
    for slot in np.unique(table[:, 0]):
        rows = np.flatnonzero(table[:, 0] == slot)
        scan_id, name, class_map, instance_map = maps[slot]
        sem, noi = teacher.components(scan_id, name, class_map, instance_map)
        size = class_map.shape
        r, c = table[rows, 1], table[rows, 2]
        semantic[rows] = sample(torch.from_numpy(sem), r, c, size).numpy()
        noise[rows] = sample(torch.from_numpy(noi), r, c, size).numpy()
    return PairedComponents(semantic, noise, table[:, 3].astype(np.int64), seeds)


def sample_balanced_features(
    n_per_class: int,
    seed: int,
    n_scenes: int = 64,
    variant: str = "nuscenes",
    teacher: SyntheticTeacher | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """A class-balanced sample of the teacher's paired pixel features, to check its calibration.

    Args:
        n_per_class: pairs drawn per class (all of them for a class with fewer in the ``n_scenes`` scenes; the
            rarest synthetic classes have a few hundred per 64 scenes).
        seed: selects the scenes (:func:`balanced_scene_seeds`) and the draw.
        n_scenes: scenes generated (about 0.7 s each on a CPU core).
        variant: synthetic world variant.
        teacher: default: the committed calibrated teacher.

    Returns:
        ``features`` ``(M, D)`` float32 with unit rows and ``labels`` ``(M,)`` int64 (point classes).
    """
    teacher = SyntheticTeacher.from_file() if teacher is None else teacher
    comp = paired_components(teacher, n_per_class, seed, n_scenes, variant, progress)
    feats = torch.from_numpy(teacher.combine(comp.semantic, comp.noise, axis=1))
    return F.normalize(feats, dim=1).numpy().astype(np.float32), comp.labels
