"""The teacher interface: frozen 2D feature extractors distilled into lidar students
(docs/implementation.md#students-and-teachers; their cache: docs/data.md#teacher-feature-cache).

A teacher gives, for one camera of a scan, pixel features on a patch grid ``(D, h, w)`` (stride ``s``:
``h = H / s``, ``w = W / s``) and the bilinear upsampling of that grid to pixels, and, for a list of classes,
text embeddings over a prompt ensemble (CLIP, Radford et al., ICML 2021):

    e_c = normalize( mean_{t in templates, p in phrases(c)} normalize(text(t.format(p))) )

Templates and class phrases are data (``data/prompts.json``); :func:`zero_shot_classifier` builds the ``(C, D)``
classifier of a dataset's classes. Each teacher has a stable :attr:`Teacher.identity` (name, configuration and
checkpoint hash), the key of the benchmark's feature cache (``bench/data/features.py``).

Inputs are typed by the protocols :class:`ScanInput` and :class:`CameraInput` (and the narrower
:class:`PairedCameraInput`, :class:`RenderedCameraInput`), which the benchmark's ``Scan`` and ``CameraView``
satisfy structurally; ``models`` never imports the benchmark.

Feature computation is split in two, so that data-loader worker processes can do the CPU half:

    scan_features(scan) = encode(preprocessor()(scan))

:meth:`Teacher.preprocessor` returns a small picklable callable (no network weights) that turns a scan into the
teacher's input tensor on the CPU, for all its cameras; :meth:`Teacher.encode` maps that tensor to the patch-grid
features ``(n_cameras, D, h, w)`` float32 on :attr:`Teacher.device`.

Upsampling (MaskCLIP's, Zhou et al., ECCV 2022): ``torch.nn.functional.interpolate(mode="bilinear",
align_corners=False)``, i.e. pixel ``(r, c)`` of an ``H x W`` image reads the patch grid at
``((r + 0.5) h / H - 0.5, (c + 0.5) w / W - 0.5)``, clamped to the grid. :meth:`Teacher.sample` evaluates the same
interpolation at paired pixels only, without materialising the ``(D, H, W)`` map.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import torch
import torch.nn.functional as F

PROMPTS_FILE = "prompts.json"


class CameraInput(Protocol):
    """One camera image as a teacher reads it (the benchmark's ``CameraView`` satisfies it).

    Attributes:
        name: camera channel, e.g. ``"CAM_FRONT"``.
        image: ``(H, W, 3)`` uint8 RGB image (may be read lazily on access).
        size: ``(H, W)`` of the image, available without reading it.
    """

    @property
    def name(self) -> str: ...

    @property
    def image(self) -> np.ndarray: ...

    @property
    def size(self) -> tuple[int, int]: ...


class PairedCameraInput(CameraInput, Protocol):
    """A camera with its point-to-pixel pairing: ``(M, 3)`` int64 rows ``(point index, row, col)``."""

    @property
    def pairing(self) -> np.ndarray: ...


class RenderedCameraInput(CameraInput, Protocol):
    """A rendered camera (synthetic world): class and instance id of every pixel, ``None`` when not rendered.

    Attributes:
        class_map: ``(H, W)`` uint8 class per pixel (a teacher-documented value where the ray hits nothing).
        instance_map: ``(H, W)`` integer instance id per pixel (0 = no instance).
    """

    @property
    def class_map(self) -> np.ndarray | None: ...

    @property
    def instance_map(self) -> np.ndarray | None: ...


class ScanInput(Protocol):
    """A scan as a teacher reads it: an id unique within its dataset and its camera views, in order."""

    @property
    def scan_id(self) -> str: ...

    @property
    def cameras(self) -> Sequence[CameraInput]: ...


@dataclass(frozen=True)
class SingleCameraScan:
    """A :class:`ScanInput` holding one camera of another scan (same ``scan_id``)."""

    scan_id: str
    cameras: tuple[CameraInput, ...]


def camera_view(scan: ScanInput, camera: int | str) -> CameraInput:
    """Camera ``camera`` of ``scan``: by index into ``scan.cameras`` or by name.

    Raises:
        KeyError: no camera has that name.
    """
    if isinstance(camera, int):
        return scan.cameras[camera]
    for view in scan.cameras:
        if view.name == camera:
            return view
    names = [view.name for view in scan.cameras]
    raise KeyError(f"scan {scan.scan_id} has no camera {camera!r}; it has {names}")


def patch_grid(image_size: tuple[int, int], stride: int) -> tuple[int, int]:
    """Patch grid ``(h, w) = (H / stride, W / stride)`` of an ``(H, W)`` image; both must be multiples of it."""
    height, width = image_size
    if height % stride or width % stride:
        raise ValueError(f"image size {height}x{width} is not a multiple of the teacher's stride {stride}")
    return height // stride, width // stride


@lru_cache(maxsize=1)
def _prompt_data() -> dict[str, Any]:
    return json.loads(resources.files("models.teachers").joinpath("data").joinpath(PROMPTS_FILE).read_text())


def prompt_templates() -> tuple[str, ...]:
    """The prompt ensemble's templates (``data/prompts.json``), each with one ``{}`` for the class phrase."""
    return tuple(_prompt_data()["templates"])


def class_phrases(dataset: str) -> dict[str, tuple[str, ...]]:
    """Class name -> phrases of ``dataset`` (``"nuscenes"`` or ``"semantickitti"``), in the label order."""
    table = _prompt_data()["classes"]
    if dataset not in table:
        raise ValueError(f"no class phrases for dataset {dataset!r}; known: {', '.join(table)}")
    return {name: tuple(phrases) for name, phrases in table[dataset].items()}


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (read in ``chunk``-byte pieces)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def stable_hash(*parts: object) -> int:
    """A 63-bit integer from the ``repr`` of ``parts``, identical across processes and machines (SHA-256)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


def upsample(patch: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of a ``(D, h, w)`` (or ``(B, D, h, w)``) patch grid to ``size = (H, W)`` pixels."""
    batched = patch.ndim == 4
    out = F.interpolate(patch if batched else patch[None], size=size, mode="bilinear", align_corners=False)
    return out if batched else out[0]


def sample(
    patch: torch.Tensor, rows: np.ndarray | torch.Tensor, cols: np.ndarray | torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """Features ``(M, D)`` at pixels ``(rows, cols)`` of an ``H x W`` image: ``upsample(patch)[:, rows, cols].T``.

    Uses ``grid_sample(align_corners=False, padding_mode="border")`` at normalised coordinates
    ``x = 2 (c + 0.5) / W - 1``, ``y = 2 (r + 0.5) / H - 1``, which is the source position of
    :func:`upsample` with the same clamping at the borders.
    """
    height, width = size
    rows_t = torch.as_tensor(np.asarray(rows), dtype=patch.dtype, device=patch.device)
    cols_t = torch.as_tensor(np.asarray(cols), dtype=patch.dtype, device=patch.device)
    grid = torch.stack([2 * (cols_t + 0.5) / width - 1, 2 * (rows_t + 0.5) / height - 1], dim=-1)
    out = F.grid_sample(patch[None], grid[None, None], mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, 0].T


class Teacher(ABC):
    """A frozen 2D teacher. Subclasses implement :meth:`preprocessor`, :meth:`encode`, :attr:`identity` and
    :meth:`_embed_prompts`; every feature method goes through ``encode(preprocessor()(scan))``.

    Attributes:
        name: short name (``"synthetic"``, ``"clip"``).
        dim: feature dimension ``D`` of pixel features and text embeddings.
        stride: pixels per patch side of the patch grid.
        device: where features are computed and returned.
        has_text: whether the teacher has a text tower (:meth:`text_embeddings`, the zero-shot protocol); a
            text-free teacher (DINOv2) sets it False and its runs are refused the zero-shot protocol.
    """

    name: str = ""
    has_text: bool = True
    dim: int = 0
    stride: int = 16
    device: torch.device = torch.device("cpu")

    @property
    @abstractmethod
    def identity(self) -> str:
        """Stable string naming the teacher, its configuration and its weights (a file-name-safe cache key)."""

    @abstractmethod
    def preprocessor(self) -> Callable[[ScanInput], torch.Tensor]:
        """The CPU half: a small picklable callable (no network weights), scan -> input tensor of :meth:`encode`.

        It may run in a ``torch.utils.data.DataLoader`` worker process; it reads every camera of the scan, in
        order, and returns a CPU tensor whose first axis is the camera.
        """

    @abstractmethod
    def encode(self, prepared: torch.Tensor) -> torch.Tensor:
        """The device half: patch-grid features ``(n_cameras, D, h, w)`` float32 on :attr:`device` of a
        :meth:`preprocessor` output."""

    @abstractmethod
    def _embed_prompts(self, phrase: str, prompts: Sequence[str]) -> torch.Tensor:
        """Raw text embeddings ``(P, D)`` of ``prompts``, all built from the class phrase ``phrase``."""

    def grid_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """Patch grid ``(h, w)`` of an ``(H, W)`` image; ``H`` and ``W`` must be multiples of :attr:`stride`."""
        return patch_grid(image_size, self.stride)

    def scan_features(self, scan: ScanInput) -> torch.Tensor:
        """Features ``(n_cameras, D, h, w)`` of every camera of ``scan``: ``encode(preprocessor()(scan))``."""
        return self.encode(self.preprocessor()(scan))

    def camera_features(self, scan: ScanInput, camera: int | str) -> torch.Tensor:
        """Patch-grid features ``(D, h, w)`` float32 of camera ``camera`` (index or name) alone."""
        view = camera_view(scan, camera)
        return self.scan_features(SingleCameraScan(scan.scan_id, (view,)))[0]

    def pixel_features(self, scan: ScanInput, camera: int | str) -> torch.Tensor:
        """Features ``(D, H, W)`` of every pixel of a camera image: :meth:`camera_features` upsampled."""
        return upsample(self.camera_features(scan, camera), camera_view(scan, camera).size)

    def paired_features(self, scan: ScanInput, camera: int | str) -> tuple[np.ndarray, torch.Tensor]:
        """The camera's pairing: point indices ``(M,)`` and the features ``(M, D)`` of their pixels.

        The camera must be a :class:`PairedCameraInput` (have a ``pairing``).
        """
        view = cast(PairedCameraInput, camera_view(scan, camera))
        feats = self.camera_features(scan, camera)
        return view.pairing[:, 0], sample(feats, view.pairing[:, 1], view.pairing[:, 2], view.size)

    @torch.no_grad()
    def text_embeddings(
        self, classes: Sequence[str | Sequence[str]], templates: Sequence[str] | None = None
    ) -> torch.Tensor:
        """Prompt-ensemble text embeddings ``(C, D)``, unit rows.

        ``e_c = normalize(mean_{t, p} normalize(text(t.format(p))))`` over the templates ``t`` and the phrases
        ``p`` of class ``c`` (a class is one phrase or a sequence of synonyms).

        Args:
            classes: per class, a phrase or a sequence of phrases.
            templates: format strings with one ``{}`` (default :func:`prompt_templates`).
        """
        templates = prompt_templates() if templates is None else tuple(templates)
        if not templates or any("{}" not in t for t in templates):
            raise ValueError("templates must be a non-empty sequence of strings that each contain '{}'")
        rows = []
        for entry in classes:
            phrases = (entry,) if isinstance(entry, str) else tuple(entry)
            if not phrases:
                raise ValueError("every class needs at least one phrase")
            embedded = [F.normalize(self._embed_prompts(p, [t.format(p) for t in templates]), dim=-1) for p in phrases]
            rows.append(F.normalize(torch.cat(embedded).mean(dim=0), dim=0))
        return torch.stack(rows)


def zero_shot_classifier(
    teacher: Teacher, dataset: str = "nuscenes", templates: Sequence[str] | None = None
) -> torch.Tensor:
    """Text embeddings ``(C, D)`` of ``dataset``'s classes (phrases from ``data/prompts.json``), label order."""
    return teacher.text_embeddings(list(class_phrases(dataset).values()), templates)


def zero_shot_predict(features: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """Class per row: ``argmax_c normalize(f) . e_c`` (docs/method.md#zero-shot)."""
    return (F.normalize(features.float(), dim=-1) @ classifier.float().T).argmax(dim=-1)
