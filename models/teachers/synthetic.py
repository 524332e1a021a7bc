"""The calibrated synthetic teacher (docs/method.md#calibrated-teacher): CLIP-like pixel features from rendered
class maps.

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

Only ``beta`` (``common``) and ``sigma`` (``noise``) are calibrated, by the benchmark's
``python -m bench.study.teacher_calibration`` (it needs the synthetic world, so it lives in ``bench``), so that a
class-balanced sample of paired pixel features measures the paper's CLIP values ``U = 1.54``, ``T = 0.73``
(docs/method.md#the-papers-claims); every other number is a documented choice in :class:`SyntheticTeacherParams`,
stored with the calibrated ones in ``data/synthetic_teacher.json``.

Inputs: a camera's rendered ``class_map`` (labels ``0 .. 15`` in the order of :data:`CLASSES`, :data:`NO_HIT_CLASS`
where the ray hits nothing) and ``instance_map`` (:class:`~models.teachers.base.RenderedCameraInput`). The whole
grid is computed in numpy by :class:`SyntheticPreprocessor` (the teacher's CPU half, picklable for data-loader
workers); :meth:`SyntheticTeacher.encode` only moves it to the device.

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

from models.teachers.base import CameraInput, ScanInput, Teacher, class_phrases, patch_grid, stable_hash

PARAMS_FILE = "synthetic_teacher.json"

CLASSES: tuple[str, ...] = tuple(class_phrases("nuscenes"))
"""The 16 nuScenes classes in label order (the keys of ``data/prompts.json``): class-map value ``k`` is
``CLASSES[k]`` (the same as the benchmark's ``bench.data.classes.NUSCENES_CLASSES``)."""

NO_HIT_CLASS: int = 255
"""Class-map value of pixels whose ray hits nothing (the benchmark's ignore label,
``bench.data.classes.IGNORE_INDEX``); they take the :data:`SKY` prototype."""

SKY = "sky"
"""The 17th prototype, for pixels whose ray hits nothing (``class_map == NO_HIT_CLASS``)."""

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
            f"synthetic teacher parameters not found: {path} (run python -m bench.study.teacher_calibration)"
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


@dataclass(frozen=True, eq=False)
class SyntheticPreprocessor:
    """The synthetic teacher's CPU half: the patch-grid features of every camera of a scan, in numpy.

    Holds the parameters and the directions it needs (a few hundred kB to pickle, for data-loader workers);
    ``__call__(scan)`` is ``(n_cameras, D, h, w)`` float32 on the CPU, ``f`` of the module docstring.

    Attributes:
        params: the teacher's parameters.
        u0: ``(D,)`` shared direction.
        hierarchy: ``(17, D)`` unit rows ``h_c`` (:data:`CLASSES`, then :data:`SKY`).
        semantic_basis: ``(K, D)`` orthonormal super-group, group and class directions ``B``.
    """

    params: SyntheticTeacherParams
    u0: np.ndarray
    hierarchy: np.ndarray
    semantic_basis: np.ndarray

    def components(
        self, scan_id: str, camera_name: str, class_map: np.ndarray, instance_map: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The two parts of the patch grid: ``semantic = mean_P h_class`` and ``noise`` (both ``(D, h, w)`` float64).

        ``f = sqrt(beta) u0 + sqrt(1 - beta) semantic + sigma noise`` (the calibration varies ``beta`` and
        ``sigma`` without recomputing these).
        """
        p = self.params
        h, w = patch_grid((class_map.shape[0], class_map.shape[1]), p.stride)
        s = p.stride
        n_cls = len(self.hierarchy)
        cls = np.where(class_map == NO_HIT_CLASS, n_cls - 1, class_map).astype(np.int64)
        if cls.max() >= n_cls:
            raise ValueError(f"class map of {scan_id}/{camera_name} has values outside 0..{n_cls - 2} and no-hit")
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

    def camera(self, scan_id: str, view: CameraInput) -> np.ndarray:
        """Patch-grid features ``(D, h, w)`` float32 of one camera; it needs ``class_map`` and ``instance_map``
        (:class:`~models.teachers.base.RenderedCameraInput`)."""
        class_map = getattr(view, "class_map", None)
        instance_map = getattr(view, "instance_map", None)
        if class_map is None or instance_map is None:
            raise ValueError(f"camera {view.name} of {scan_id} has no rendered class/instance map")
        semantic, noise = self.components(scan_id, view.name, class_map, instance_map)
        return self.combine(semantic, noise).astype(np.float32)

    def __call__(self, scan: ScanInput) -> torch.Tensor:
        """Features ``(n_cameras, D, h, w)`` float32 (CPU) of every camera of ``scan``, in order."""
        if not len(scan.cameras):
            raise ValueError(f"scan {scan.scan_id} has no camera")
        return torch.from_numpy(np.stack([self.camera(scan.scan_id, view) for view in scan.cameras]))


@dataclass(frozen=True)
class SyntheticOptions:
    """The options of the synthetic teacher a run's configuration sets: none (``teacher: {name: synthetic}``); its
    parameters are the committed calibration."""


class SyntheticTeacher(Teacher):
    """Pixel features and text embeddings of the synthetic world (module docstring).

    Features are computed by :meth:`preprocessor` (:class:`SyntheticPreprocessor`, on the CPU);
    :meth:`encode` moves them to :attr:`device`.

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
        self.class_names: tuple[str, ...] = (*CLASSES, SKY)
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

    def preprocessor(self) -> SyntheticPreprocessor:
        """The CPU half, with the current :attr:`params` (:class:`SyntheticPreprocessor`)."""
        return SyntheticPreprocessor(self.params, self.u0, self.hierarchy, self.semantic_basis)

    def encode(self, prepared: torch.Tensor) -> torch.Tensor:
        """The :class:`SyntheticPreprocessor` output ``(n_cameras, D, h, w)`` float32, moved to :attr:`device`."""
        if prepared.ndim != 4 or prepared.shape[1] != self.dim:
            raise ValueError(f"prepared features must be (n_cameras, {self.dim}, h, w); got {tuple(prepared.shape)}")
        return prepared.to(self.device, dtype=torch.float32)

    def components(
        self, scan_id: str, camera_name: str, class_map: np.ndarray, instance_map: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`SyntheticPreprocessor.components`: ``semantic`` and ``noise`` ``(D, h, w)`` float64."""
        return self.preprocessor().components(scan_id, camera_name, class_map, instance_map)

    def combine(self, semantic: np.ndarray, noise: np.ndarray, axis: int = 0) -> np.ndarray:
        """:meth:`SyntheticPreprocessor.combine`: ``sqrt(beta) u0 + sqrt(1 - beta) semantic + sigma noise``."""
        return self.preprocessor().combine(semantic, noise, axis)

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
