"""SLidR's data augmentations on a :class:`~bench.data.scene.Scene`, seeded, pure, and exact on the point-pixel pairing.

SLidR (Sautier et al., CVPR 2022; code ``github.com/valeoai/SLidR``) augments every training sample after the
pairing was computed (``pretrain/dataloader_nuscenes.py``, ``NuScenesMatchDataset.__getitem__``): first the cloud
transforms, then the mixed (cloud + image + pairing) transforms, in the order of its config
(``config/slidr_minkunet.yaml``)::

    transforms_clouds : ["Rotation", "FlipAxis"]
    transforms_mixed  : ["DropCuboids", "ResizedCrop", "FlipHorizontal"]
    crop_size         : [224, 416]
    crop_ratio        : [1.5555555555555556, 1.8888888888888888]    # (14 / 9, 17 / 9)

The transforms themselves are in ``utils/transforms.py`` (classes ``Rotation_z``, ``FlipAxis``, ``DropCuboids``,
``ResizedCrop``, ``FlipHorizontal``); every parameter below is a field of :class:`Augmentation` whose default is
SLidR's value. :func:`augment` applies them in SLidR's order:

1. ``Rotation_z``: ``theta ~ U[0, 2 pi)``, ``xyz' = R_z(theta) xyz`` with
   ``R_z = [[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]]``.
2. ``FlipAxis``: for ``a`` in ``(x, y)``, independently with probability ``p = 0.5``: ``a' = -a``.
   Steps 1-2 move the points only; the pairs are unchanged (the pairing was computed before: a point keeps its
   pixel). Intensity is never changed.
3. ``DropCuboids``: on the transformed cloud, ``e = max(xyz) - min(xyz)`` (per axis), ``f ~ U[0, 0.2)``,
   ``half = e f / 2``, ``c`` = the ``xyz`` of a uniformly drawn point; every point with
   ``c - half < xyz < c + half`` (strict, all three axes) is removed with its label and its pairs, and the
   surviving pairs are re-indexed to the surviving points. SLidR skips the drop (keeps the sample unchanged) when
   any camera would keep fewer than 1024 pairs.
4. ``ResizedCrop``: per camera, a crop ``(top i, left j, height h, width w)`` of the ``H x W`` image drawn by
   torchvision's ``RandomResizedCrop.get_params(scale=(0.3, 1.0), ratio=(14/9, 17/9))`` -- up to 10 attempts of
   ``A = H W s``, ``s ~ U(scale)``, ``r = exp(U(log ratio))``, ``w = round(sqrt(A r))``, ``h = round(sqrt(A / r))``,
   accepted when ``0 < w <= W`` and ``0 < h <= H``, then ``i ~ U{0..H-h}``, ``j ~ U{0..W-w}``; else the central
   crop of the ratio range -- resized to ``H' x W' = 224 x 416``. A pair at pixel ``(r, c)`` moves to
   ``r' = round((r - i) H' / h)``, ``c' = round((c - j) W' / w)`` and survives when ``0 <= r' < H'`` and
   ``0 <= c' < W'``. SLidR redraws the crop until more than 1024 pairs, or more than 75% of the camera's pairs,
   survive.
5. ``FlipHorizontal``: per camera, with probability 0.5, the (cropped) image is mirrored: ``c' <- W' - 1 - c'``.

Teacher features (an approximation of SLidR). SLidR runs its 2D network on the augmented (cropped, resized,
flipped) image. Here the teacher's features come from a cache of patch grids of the *uncropped, unflipped*
images (:class:`bench.data.features.FeatureCache`), so the augmented scene keeps, for every surviving pair, its pixel
in the ORIGINAL image: ``pairs`` stays ``(point index, camera, row, col)`` with ``(row, col)`` the original pixel
and ``image_sizes`` the original sizes, and :meth:`Scene.pair_features` reads MaskCLIP's (bilinear) features of
the uncropped image at the pixel the pair had before the crop. The crop and the flip therefore decide WHICH pairs
survive and their coordinates in the augmented image (:attr:`AugmentRecord.pixels`, kept for anything that needs
them), but not the features read: the teacher does not see the crop's rescaling (its receptive field is the
uncropped image's) nor the mirror. The original pixel is the crop pixel mapped back through the inverse
flip/resize/crop up to SLidR's rounding: ``i + r' h / H'`` is within ``h / (2 H')`` pixels of ``r`` (same for
columns).

Other deviations, none changing a kept pair: one seeded ``numpy.random.Generator`` drives every draw (SLidR mixes
``numpy.random``, ``random`` and ``torch``'s global generators, so the numbers differ for the same seed); pairs
keep their input order (SLidR's ``ResizedCrop`` regroups them by camera); a camera without pairs accepts its first
crop (SLidR divides by zero there and loops forever) and after ``crop_max_tries`` rejected crops the one keeping
the most pairs is used (SLidR loops until success).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from bench.data.scene import Scene
from models.teachers.base import stable_hash


@dataclass(frozen=True)
class Augmentation:
    """Which of SLidR's augmentations run, with their parameters; defaults are SLidR's (``utils/transforms.py``
    and ``config/slidr_minkunet.yaml`` of ``valeoai/SLidR``).

    Attributes:
        rotation: ``Rotation_z`` on (``transforms_clouds: "Rotation"``).
        max_angle: ``theta ~ U[0, max_angle)`` radians (``Rotation_z``: ``np.random.random() * 2 * np.pi``).
        flip_axis: ``FlipAxis`` on (``transforms_clouds: "FlipAxis"``).
        flip_axis_p: probability of negating x, and independently y (``FlipAxis(p=0.5)``).
        drop_cuboids: ``DropCuboids`` on (``transforms_mixed: "DropCuboids"``).
        cuboid_max_fraction: cuboid side ``= f * extent`` per axis, ``f ~ U[0, cuboid_max_fraction)``
            (``crop_range = np.random.random() * 0.2``).
        cuboid_min_pairs: the drop is undone when a camera keeps fewer pairs (``< 1024``).
        resized_crop: ``ResizedCrop`` on (``transforms_mixed: "ResizedCrop"``).
        crop_size: ``(H', W')`` of the resized crop (``crop_size: [224, 416]``).
        crop_scale: crop area over image area, ``U(crop_scale)`` (``image_crop_range=[0.3, 1.0]``).
        crop_ratio: crop width over height, log-uniform (``crop_ratio: [14/9, 17/9]``).
        crop_attempts: draws inside one ``RandomResizedCrop.get_params`` call before its central-crop fallback
            (torchvision: 10).
        crop_min_pairs: a crop is accepted when more pairs survive (``sum_indexes > 1024``) ...
        crop_min_fraction: ... or more than this fraction of the camera's pairs (``> 0.75``).
        crop_max_tries: crops drawn at most per camera before the best one is taken (not in SLidR: it loops
            until success).
        flip_horizontal: ``FlipHorizontal`` on (``transforms_mixed: "FlipHorizontal"``).
        flip_horizontal_p: probability of mirroring each camera's image (``FlipHorizontal(p=0.5)``).
    """

    rotation: bool = True
    max_angle: float = 2 * math.pi
    flip_axis: bool = True
    flip_axis_p: float = 0.5
    drop_cuboids: bool = True
    cuboid_max_fraction: float = 0.2
    cuboid_min_pairs: int = 1024
    resized_crop: bool = True
    crop_size: tuple[int, int] = (224, 416)
    crop_scale: tuple[float, float] = (0.3, 1.0)
    crop_ratio: tuple[float, float] = (14.0 / 9.0, 17.0 / 9.0)
    crop_attempts: int = 10
    crop_min_pairs: int = 1024
    crop_min_fraction: float = 0.75
    crop_max_tries: int = 100
    flip_horizontal: bool = True
    flip_horizontal_p: float = 0.5

    def __post_init__(self) -> None:
        for name in ("crop_size", "crop_scale", "crop_ratio"):  # YAML gives lists
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.crop_size) != 2 or min(self.crop_size) < 1:
            raise ValueError(f"crop_size must be two positive integers, got {self.crop_size}")
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1]:
            raise ValueError(f"crop_scale must be (low, high) with 0 < low <= high, got {self.crop_scale}")
        if len(self.crop_ratio) != 2 or not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must be (low, high) with 0 < low <= high, got {self.crop_ratio}")
        for name in ("flip_axis_p", "flip_horizontal_p", "crop_min_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.cuboid_max_fraction < 0 or self.crop_attempts < 1 or self.crop_max_tries < 1:
            raise ValueError("cuboid_max_fraction must be >= 0, crop_attempts and crop_max_tries >= 1")

    @classmethod
    def off(cls) -> Augmentation:
        """Every transform off: :func:`augment` returns a copy of the scene."""
        return cls(**{f.name: False for f in fields(cls) if f.type == "bool"})

    @property
    def enabled(self) -> bool:
        """Whether any transform is on."""
        return any(getattr(self, f.name) for f in fields(self) if f.type == "bool")


@dataclass
class AugmentRecord:
    """What :func:`augment` did to a scene (``n_cam`` cameras, ``N`` points and ``M`` pairs of the output).

    Attributes:
        source_points: ``(N,)`` int64 index of every output point in the input scene's ``points``.
        source_pairs: ``(M,)`` int64 index of every output pair in the input scene's ``pairs`` (an output pair has
            the input pair's camera and original pixel, and its point index re-indexed by ``source_points``).
        pixels: ``(M, 2)`` int64 ``(row, col)`` of every output pair in its camera's augmented (cropped, resized,
            flipped) image.
        augmented_sizes: ``(H', W')`` of every camera's augmented image (the original size without the crop).
        crops: ``(n_cam, 4)`` int64 ``(top, left, height, width)`` of every crop in the original image (the whole
            image without the crop).
        flips: ``(n_cam,)`` bool, whether the augmented image is mirrored.
        cloud_transform: ``(3, 3)`` float64 ``A`` with ``xyz_out = A xyz_in`` before the drop
            (``A = diag(s_x, s_y, 1) R_z(theta)``); the inverse is ``A.T``.
        cuboid: ``(2, 3)`` float32 lower and upper corners of the removed cuboid in the output frame, ``None``
            when no cuboid was removed (transform off, or skipped by the ``cuboid_min_pairs`` rule).
    """

    source_points: np.ndarray
    source_pairs: np.ndarray
    pixels: np.ndarray
    augmented_sizes: tuple[tuple[int, int], ...]
    crops: np.ndarray
    flips: np.ndarray
    cloud_transform: np.ndarray
    cuboid: np.ndarray | None


@dataclass(kw_only=True)
class AugmentedScene(Scene):
    """A :class:`~bench.data.scene.Scene` after :func:`augment`: the Scene fields keep their meaning (``pairs`` in
    original-image pixels, ``image_sizes`` and ``grids`` of the uncropped images, so :meth:`pair_features` reads
    the cached teacher), plus :attr:`augmentation`, the record of what was done."""

    augmentation: AugmentRecord


def scene_seed(seed: int, step: int, scan_id: str) -> int:
    """A 63-bit seed for :func:`augment` depending only on ``(seed, step, scan_id)`` (stable across processes)."""
    return stable_hash("augment", seed, step, scan_id)


def rotation_z(theta: float) -> np.ndarray:
    """``(3, 3)`` rotation by ``theta`` radians about z (SLidR ``Rotation_z``)."""
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def cloud_matrix(cfg: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """SLidR's ``transforms_clouds`` as one ``(3, 3)`` matrix: ``Rotation_z`` then ``FlipAxis`` (draws: the angle,
    then the x flip, then the y flip)."""
    matrix = np.eye(3)
    if cfg.rotation:
        matrix = rotation_z(float(rng.random()) * cfg.max_angle) @ matrix
    if cfg.flip_axis:
        for axis in range(2):
            if rng.random() < cfg.flip_axis_p:
                matrix[axis] = -matrix[axis]
    return matrix


def drop_cuboid(
    xyz: np.ndarray, pairs: np.ndarray, n_cameras: int, cfg: Augmentation, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    """SLidR ``DropCuboids``: the mask of kept points ``(N,)`` and the removed cuboid's corners ``(2, 3)`` (``None``
    with an all-true mask when skipped: fewer than ``cfg.cuboid_min_pairs`` pairs left in some camera).

    ``xyz`` is the ``(N, 3)`` float32 transformed cloud; see the module docstring for the rule.
    """
    keep = np.ones(len(xyz), dtype=bool)
    if len(xyz) == 0:
        return keep, None
    extent = xyz.max(axis=0) - xyz.min(axis=0)
    half = (extent * np.float32(rng.random() * cfg.cuboid_max_fraction) / np.float32(2.0)).astype(np.float32)
    centre = xyz[rng.integers(len(xyz))]
    low, high = centre - half, centre + half
    inside = np.all((xyz < high) & (xyz > low), axis=1)
    kept_pairs = pairs[~inside[pairs[:, 0]], 1]
    counts = np.bincount(kept_pairs, minlength=n_cameras)
    if (counts[:n_cameras] < cfg.cuboid_min_pairs).any():
        return keep, None
    return ~inside, np.stack([low, high]).astype(np.float32)


def crop_params(size: tuple[int, int], cfg: Augmentation, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of a random crop of an ``(H, W)`` image: torchvision's
    ``RandomResizedCrop.get_params(img, scale=cfg.crop_scale, ratio=cfg.crop_ratio)`` with ``rng``."""
    height, width = size
    area = height * width
    log_ratio = (math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]))
    for _ in range(cfg.crop_attempts):
        target_area = area * float(rng.uniform(cfg.crop_scale[0], cfg.crop_scale[1]))
        aspect_ratio = math.exp(float(rng.uniform(log_ratio[0], log_ratio[1])))
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = int(rng.integers(0, height - h + 1))
            j = int(rng.integers(0, width - w + 1))
            return i, j, h, w
    in_ratio = width / height
    if in_ratio < min(cfg.crop_ratio):
        w, h = width, int(round(width / min(cfg.crop_ratio)))
    elif in_ratio > max(cfg.crop_ratio):
        h, w = height, int(round(height * max(cfg.crop_ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def crop_pixels(
    rows: np.ndarray, cols: np.ndarray, crop: tuple[int, int, int, int], out: tuple[int, int]
) -> np.ndarray:
    """``(M, 2)`` int64 pixels ``(round((r - i) H' / h), round((c - j) W' / w))`` of original pixels in the crop
    ``(i, j, h, w)`` resized to ``out = (H', W')`` (SLidR ``ResizedCrop``; NumPy's round half to even)."""
    i, j, h, w = crop
    new_rows = np.round((rows - i) * (out[0] / h)).astype(np.int64)
    new_cols = np.round((cols - j) * (out[1] / w)).astype(np.int64)
    return np.stack([new_rows, new_cols], axis=1)


def inside(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Mask of ``(row, col)`` pixels inside an ``(H, W)`` image."""
    return (pixels[:, 0] >= 0) & (pixels[:, 0] < size[0]) & (pixels[:, 1] >= 0) & (pixels[:, 1] < size[1])


def resized_crop(
    pairs: np.ndarray, image_sizes: tuple[tuple[int, int], ...], cfg: Augmentation, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SLidR ``ResizedCrop`` on every camera, in camera order: the mask of surviving pairs ``(M,)``, the new pixels
    ``(M, 2)`` (meaningful where kept) and the crops ``(n_cam, 4)``.

    A camera's crop is redrawn until more than ``cfg.crop_min_pairs`` pairs, or more than ``cfg.crop_min_fraction``
    of them, survive; a camera without pairs takes its first crop; after ``cfg.crop_max_tries`` draws the crop
    keeping the most pairs (the first of them) is used.
    """
    keep = np.zeros(len(pairs), dtype=bool)
    pixels = np.zeros((len(pairs), 2), dtype=np.int64)
    crops = np.zeros((len(image_sizes), 4), dtype=np.int64)
    for cam, size in enumerate(image_sizes):
        sel = np.flatnonzero(pairs[:, 1] == cam)
        best: tuple[int, tuple[int, int, int, int], np.ndarray, np.ndarray] | None = None
        for _ in range(cfg.crop_max_tries):
            crop = crop_params(size, cfg, rng)
            new = crop_pixels(pairs[sel, 2], pairs[sel, 3], crop, cfg.crop_size)
            valid = inside(new, cfg.crop_size)
            n_valid = int(valid.sum())
            if best is None or n_valid > best[0]:
                best = (n_valid, crop, new, valid)
            if not len(sel) or n_valid > cfg.crop_min_pairs or n_valid / len(sel) > cfg.crop_min_fraction:
                best = (n_valid, crop, new, valid)
                break
        assert best is not None
        _, crop, new, valid = best
        crops[cam] = crop
        pixels[sel] = new
        keep[sel] = valid
    return keep, pixels, crops


def augment(scene: Scene, cfg: Augmentation, seed: int | np.random.Generator) -> AugmentedScene:
    """SLidR's augmentations of ``scene`` (see the module docstring), in SLidR's order: ``Rotation_z``,
    ``FlipAxis``, ``DropCuboids``, ``ResizedCrop``, ``FlipHorizontal``, each when its flag in ``cfg`` is on.

    Pure: ``scene`` is not modified (the teacher ``grids`` are shared, unmodified). Deterministic: the same
    ``seed`` (an int seeds ``numpy.random.default_rng``; :func:`scene_seed` derives one per step and scan) gives
    an identical scene. With every flag off the result equals the input.

    Returns:
        An :class:`AugmentedScene`: transformed points (intensity unchanged) and their labels, the surviving
        pairs as ``(re-indexed point, camera, original row, original col)`` -- so :meth:`Scene.pair_features`
        reads the cached teacher's features of the uncropped image at the pair's original pixel -- the original
        ``grids`` and ``image_sizes``, and the :class:`AugmentRecord` (new pixels in the augmented images, crops,
        flips, the cloud transform, the removed cuboid).
    """
    if isinstance(scene, AugmentedScene):
        raise ValueError(f"scene {scene.scan_id} is already augmented; augment the scene as loaded")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    n_cameras = len(scene.image_sizes)
    pairs = scene.pairs
    if len(pairs) and (pairs[:, 1].min() < 0 or pairs[:, 1].max() >= n_cameras):
        raise ValueError(f"scene {scene.scan_id}: pair camera indices outside 0..{n_cameras - 1}")

    # transforms_clouds: Rotation_z, FlipAxis (points move, pairs unchanged).
    matrix = cloud_matrix(cfg, rng)
    points = scene.points.copy()
    if cfg.rotation or cfg.flip_axis:
        points[:, :3] = (scene.points[:, :3].astype(np.float64) @ matrix.T).astype(points.dtype)

    # DropCuboids: remove points, keep and re-index the pairs of the survivors.
    cuboid = None
    point_keep = np.ones(len(points), dtype=bool)
    if cfg.drop_cuboids:
        point_keep, cuboid = drop_cuboid(points[:, :3], pairs, n_cameras, cfg, rng)
    pair_keep = point_keep[pairs[:, 0]]

    # ResizedCrop: per camera, pairs outside the crop drop out, the others get their pixel in the resized crop.
    sizes = tuple((int(h), int(w)) for h, w in scene.image_sizes)
    pixels = pairs[:, 2:4].copy()
    crops = np.array([(0, 0, h, w) for h, w in sizes], dtype=np.int64).reshape(n_cameras, 4)
    if cfg.resized_crop:
        survivors = np.flatnonzero(pair_keep)
        crop_keep, crop_pix, crops = resized_crop(pairs[survivors], sizes, cfg, rng)
        pair_keep[survivors[~crop_keep]] = False
        pixels[survivors] = crop_pix
        sizes = tuple((int(cfg.crop_size[0]), int(cfg.crop_size[1])) for _ in sizes)

    # FlipHorizontal: per camera, col' = W' - 1 - col'.
    flips = np.zeros(n_cameras, dtype=bool)
    if cfg.flip_horizontal:
        flips = rng.random(n_cameras) < cfg.flip_horizontal_p
        for cam in np.flatnonzero(flips):
            sel = pairs[:, 1] == cam
            pixels[sel, 1] = sizes[cam][1] - 1 - pixels[sel, 1]

    source_points = np.flatnonzero(point_keep)
    source_pairs = np.flatnonzero(pair_keep)
    new_index = np.cumsum(point_keep) - 1
    out_pairs = pairs[source_pairs].copy()
    out_pairs[:, 0] = new_index[out_pairs[:, 0]]
    record = AugmentRecord(
        source_points=source_points,
        source_pairs=source_pairs,
        pixels=pixels[source_pairs],
        augmented_sizes=sizes,
        crops=crops,
        flips=flips,
        cloud_transform=matrix,
        cuboid=cuboid,
    )
    return AugmentedScene(
        scan_id=scene.scan_id,
        points=points[point_keep],
        labels=scene.labels[point_keep],
        pairs=out_pairs,
        grids=scene.grids,
        image_sizes=scene.image_sizes,
        augmentation=record,
    )
