"""Superpixels of every camera image, computed once per dataset and cached, for the region losses (SLidR, ST-SLidR).

SLidR (Sautier et al., CVPR 2022; ``superpixel_segmenter.py`` of ``valeoai/SLidR``) segments every camera image
once with SLIC (Achanta et al., TPAMI 2012; scikit-image's ``slic``) with ``n_segments=150, compactness=6,
sigma=3.0`` and stores the label maps next to the dataset; its loss then pools point features over the points
whose pixel falls in a superpixel (superpoints) and pixel features over the whole superpixel. Here:

- :class:`SuperpixelCache` stores the label maps of a scan, one ``uint16`` array per camera in one compressed
  ``.npz`` file per scan (written atomically, so an interrupted fill resumes), under
  ``<root>/<dataset key>/<settings key>/`` -- independent of the teacher; :meth:`SuperpixelCache.fill` runs SLIC
  in ``DataLoader`` workers and splits the missing scans over ``torchrun`` ranks, like the feature cache.
  Size: nuScenes label maps compress to a few hundred kB per image; SLIC runs once per image of the train split
  (SLidR's cost too; the time at nuScenes scale: docs/data.md#disk-and-time-at-paper-scale). The ``downscaled``
  method (:func:`segment_image`; ``slic: {method: downscaled}``) runs SLIC at a quarter of the resolution per side,
  13x faster on nuScenes images, with its agreement to the reference measured in docs/data.md#superpixels; the
  reference stays the default, and each method has its own cache folder.
- :func:`region_features` gives the teacher feature of every superpixel: the mean, over the superpixel's pixels,
  of the L2-normalised bilinear upsampling of the cached patch grid (:func:`models.teachers.base.sample`; SLidR
  normalises every pixel before pooling), computed exactly from the separable bilinear weights and the grid
  cells' inner products without materialising the upsampled image.
- :func:`scene_regions` attaches to a :class:`~bench.data.scene.Scene` the region of every pair (superpixel of the
  pair's original pixel, numbered over the scan's cameras) and the features of every region.

Stated approximation: with augmentations, SLidR segments the uncropped image but pools over the crop; here pooling
is over the whole (uncropped) superpixel, as the teacher features come from the uncropped image
(:mod:`bench.data.augment`).

CLI::

    python -m bench.data.superpixels --root cache/superpixels --dataset synthetic --split train --workers 2
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import torch
from tqdm import tqdm

from bench import distributed as dist
from bench.data.base import ScanDataset
from bench.data.features import FillReport
from bench.data.registry import add_dataset_arguments, dataset_from_args
from bench.files import remove_stale_temporaries, write_npz

DEFAULT_ROOT = "cache/superpixels"
"""Superpixel cache folder when a run sets none (relative to the working directory)."""


SLIC_METHODS = ("reference", "downscaled")
"""``reference``: scikit-image's ``slic`` on the full image (SLidR's). ``downscaled``: the same ``slic`` at about
``1 / scale`` of the resolution per side, its start grid aligned with the reference's, labels taken back by nearest
neighbour (see :func:`_segment_downscaled`)."""

DEFAULT_SCALE = 4
"""Working-resolution divisor of the ``downscaled`` method when a configuration sets none."""


@dataclass(frozen=True)
class SlicSettings:
    """scikit-image ``slic`` parameters; defaults are SLidR's (``superpixel_segmenter.py``), with the ``method``
    (:data:`SLIC_METHODS`; ``reference`` by default) and, for ``downscaled``, the ``scale`` (None: 4)."""

    n_segments: int = 150
    compactness: float = 6.0
    sigma: float = 3.0
    method: str = "reference"
    scale: int | None = None

    def __post_init__(self) -> None:
        if self.n_segments < 2 or self.compactness <= 0 or self.sigma < 0:
            raise ValueError(f"slic needs n_segments >= 2, compactness > 0 and sigma >= 0; got {asdict(self)}")
        if self.method not in SLIC_METHODS:
            raise ValueError(f"unknown slic method {self.method!r}; valid: {', '.join(SLIC_METHODS)}")
        if self.method == "reference":
            if self.scale is not None:
                raise ValueError("slic scale applies to method 'downscaled' only")
        else:
            if self.scale is None:
                object.__setattr__(self, "scale", DEFAULT_SCALE)
            if isinstance(self.scale, bool) or not isinstance(self.scale, int) or self.scale < 1:
                raise ValueError(f"slic scale must be an integer >= 1; got {self.scale!r}")

    @property
    def key(self) -> str:
        """Folder name of these settings in the cache (the reference's is the key of before the methods existed;
        every other method's names it, so caches of different methods never mix)."""
        key = f"slic-n{self.n_segments}-c{self.compactness:g}-s{self.sigma:g}"
        return key if self.method == "reference" else f"{key}-down{self.scale}"


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """``(ceil(H / f), ceil(W / f), C)`` float32: the mean of every ``f x f`` block of ``image`` (H, W, C) as
    scikit-image's float image (``img_as_float32``: integers scaled to [0, 1]); a partial last block is padded by
    repeating the edge."""
    from skimage.util import img_as_float32

    image = img_as_float32(image)
    height, width = image.shape[:2]
    rows, cols = -(-height // factor), -(-width // factor)
    if (rows * factor, cols * factor) != (height, width):
        pad = ((0, rows * factor - height), (0, cols * factor - width), (0, 0))
        image = np.pad(image, pad, mode="edge")
    return image.reshape(rows, factor, cols, factor, -1).mean(axis=(1, 3), dtype=np.float32)


def _grid_aligned(shape: tuple[int, int], n_segments: int, scale: int) -> tuple[tuple[int, int], list[np.ndarray]]:
    """The working shape ``(h, w)`` near ``shape / scale`` whose SLIC start grid (scikit-image's ``regular_grid``
    for ``n_segments``) is the full image's grid scaled, and per axis the full-resolution coordinate of every
    working pixel: working pixel ``x`` sits at ``start + (x - start') * step / step'`` (the full grid's start and
    step unprimed, the working grid's primed), so the k-th start centre of both grids is the same point and both
    grids have the same centres; the last working pixel is the last inside the image (found by a few fixed-point
    steps), so the working pixels span the image to within one working pixel at either end (one outside it
    samples the edge)."""
    from skimage.util import regular_grid

    small = tuple(max(1, round(n / scale)) for n in shape)
    if min(np.prod(shape), np.prod(small)) <= n_segments:  # every pixel a start centre: plain blocks
        small = tuple(-(-n // scale) for n in shape)
        return small, [np.arange(n) * scale + (scale - 1) / 2 for n in small]
    full = regular_grid(shape, n_segments)
    for _ in range(4):
        grid = regular_grid(small, n_segments)
        ratios = [f.step / g.step for f, g in zip(full, grid, strict=True)]
        axes = zip(shape, full, grid, ratios, strict=True)
        fit = tuple(int(np.floor((n - 1 - f.start) / r + g.start + 1e-9)) + 1 for n, f, g, r in axes)
        if fit == small or np.prod(fit) <= n_segments:
            break
        small = fit
    grid = regular_grid(small, n_segments)
    axes = zip(small, full, grid, strict=True)
    coords = [f.start + (np.arange(n) - g.start) * f.step / g.step for n, f, g in axes]
    return small, coords


def _segment_downscaled(image: np.ndarray, settings: SlicSettings, slic: Any) -> np.ndarray:
    """The ``downscaled`` method: SLIC at about ``1 / scale`` of the resolution per side, labels ``(H, W)`` int.

    1. :func:`block_mean` by ``scale`` (anti-aliasing), then the rest of the reference's Gaussian smoothing at that
       resolution: ``sigma`` minus (in variance) the box's ``(scale^2 - 1) / 12``, over ``scale`` (in RGB, where
       scikit-image smooths Lab, and slic rescales the working image's range, not the full image's: stated
       differences; smoothing in Lab after the full image's rescaling was measured too and gained no ARI at scale 4
       for 9% more time);
    2. bilinear resampling onto the working pixels of :func:`_grid_aligned` (a scale of ``step / step'``, ~4.08
       for 1600 x 900 at scale 4), so that scikit-image's start centres fall where the reference's do: with plain
       4x4 blocks its grid has another step (24 px, 96 at full resolution, against 98) and 153 centres instead of
       144 on a 1600 x 900 image: ARI 0.59 instead of 0.70 on the six nuScenes images;
    3. ``slic`` with the same ``n_segments`` and ``compactness`` (the spatial term is normalised by the grid step,
       so both are scale-free) and no further smoothing;
    4. every full-resolution pixel takes the label of the nearest working pixel, and labels are renumbered
       contiguously from 0 over the working pixels so reached.
    """
    from scipy.ndimage import gaussian_filter1d

    scale = int(settings.scale or DEFAULT_SCALE)
    height, width = image.shape[:2]
    blocks = block_mean(image, scale)
    sigma = np.sqrt(max(settings.sigma**2 - (scale**2 - 1) / 12, 0.0)) / scale
    if sigma > 0:
        for axis in (0, 1):
            blocks = gaussian_filter1d(blocks, sigma, axis=axis, mode="reflect", truncate=4.0)
    small_shape, coords = _grid_aligned((height, width), settings.n_segments, scale)
    work = blocks
    for axis, full in enumerate(coords):  # separable bilinear sampling of the block image at the working pixels
        src = np.clip((full - (scale - 1) / 2) / scale, 0, blocks.shape[axis] - 1)
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, blocks.shape[axis] - 1)
        frac = (src - lo).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
        low = np.take(work, lo, axis=axis)
        work = low + (np.take(work, hi, axis=axis) - low) * frac
    small = slic(
        work,
        n_segments=settings.n_segments,
        compactness=settings.compactness,
        sigma=0,
        start_label=0,
        channel_axis=-1,
    )
    nearest = []
    for n, full, size in zip((height, width), coords, small_shape, strict=True):
        step = (full[-1] - full[0]) / (size - 1) if size > 1 else 1.0
        nearest.append(np.clip(np.rint((np.arange(n) - full[0]) / step), 0, size - 1).astype(np.int64))
    reached = np.unique(small[np.ix_(np.unique(nearest[0]), np.unique(nearest[1]))])
    renumber = np.full(int(small.max()) + 1, -1, dtype=np.int64)
    renumber[reached] = np.arange(len(reached))
    return renumber[small[nearest[0][:, None], nearest[1][None, :]]]


def segment_image(image: np.ndarray, settings: SlicSettings = SlicSettings()) -> np.ndarray:
    """SLIC superpixels ``(H, W)`` uint16 numbered from 0 of an ``(H, W, 3)`` RGB image.

    ``reference``: ``skimage.segmentation.slic`` of the image (SLidR's call). ``downscaled``: the same call at
    about ``1 / scale`` of the resolution per side (:func:`_segment_downscaled`); at scale 4 a 1600 x 900 image
    segments >= 10x faster. Agreement with the reference on real nuScenes images: docs/data.md#superpixels.
    """
    from skimage.segmentation import slic  # scikit-image loads slowly: only where an image is segmented

    if settings.method == "reference":
        labels = slic(
            image,
            n_segments=settings.n_segments,
            compactness=settings.compactness,
            sigma=settings.sigma,
            start_label=0,
            channel_axis=-1,
        )
    else:
        labels = _segment_downscaled(image, settings, slic)
    if labels.max() >= np.iinfo(np.uint16).max:
        raise ValueError(f"slic returned {labels.max() + 1} segments; at most 65535 fit the cache")
    return labels.astype(np.uint16)


def agreement(reference: np.ndarray, other: np.ndarray, tolerance: float = 2.0) -> dict[str, float]:
    """How well the label map ``other`` (H, W) agrees with ``reference`` (H, W): ``ari`` (scikit-learn's adjusted
    Rand index of the two pixel labellings), ``boundary_recall`` (the fraction of the reference's boundary pixels
    within ``tolerance`` pixels, Euclidean, of a boundary pixel of ``other``), ``boundary_precision`` (the converse)
    and the two segment counts. Boundary pixels: scikit-image's ``find_boundaries(mode="inner")``."""
    from scipy import ndimage
    from skimage.segmentation import find_boundaries
    from sklearn.metrics import adjusted_rand_score

    if reference.shape != other.shape:
        raise ValueError(f"label maps of shapes {reference.shape} and {other.shape}")
    edges = [find_boundaries(lab, mode="inner") for lab in (reference, other)]
    near = [ndimage.distance_transform_edt(~e) <= tolerance for e in edges]
    return {
        "ari": float(adjusted_rand_score(reference.ravel(), other.ravel())),
        "boundary_recall": float(near[1][edges[0]].mean()),
        "boundary_precision": float(near[0][edges[1]].mean()),
        "segments_reference": float(len(np.unique(reference))),
        "segments": float(len(np.unique(other))),
    }


def _bilinear_weights(n_pixels: int, n_cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For pixel centres ``0..n_pixels-1`` of one axis: the two cells and weights of ``grid_sample``'s bilinear
    interpolation (``align_corners=False``, ``padding_mode="border"``): source ``(p + 0.5) n_cells / n_pixels -
    0.5`` clipped to ``[0, n_cells - 1]``."""
    src = np.clip((np.arange(n_pixels) + 0.5) * n_cells / n_pixels - 0.5, 0.0, n_cells - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_cells - 1)
    frac = src - lo
    return lo, hi, 1.0 - frac, frac


def pixel_norms(grid: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` float64: the L2 norm of every pixel of the bilinear upsampling of ``grid`` (D, h, w) to ``size``
    (:func:`models.teachers.base.sample`), without materialising the ``(D, H, W)`` image.

    A pixel is ``u = sum_x w_x G_x`` over the four cells ``x`` around it (weights of :func:`_bilinear_weights`),
    so ``|u|^2 = sum_{x, y} w_x w_y <G_x, G_y>``: the ten inner products of the four corners of every grid cell
    (computed once, ``O(D h w)``) and ``O(H W)`` work per pixel. The grid is padded by repeating its last row and
    column, so the second cell of an axis is always the next one.
    """
    height, width = size
    g = torch.nn.functional.pad(grid.to(torch.float64)[None], (0, 1, 0, 1), mode="replicate")[0]
    corners = (g[:, :-1, :-1], g[:, :-1, 1:], g[:, 1:, :-1], g[:, 1:, 1:])  # (i, j), (i, j+1), (i+1, j), (i+1, j+1)
    row_lo, _, row_a0, row_a1 = _bilinear_weights(height, grid.shape[1])
    col_lo, _, col_b0, col_b1 = _bilinear_weights(width, grid.shape[2])
    cell = (row_lo[:, None], col_lo[None, :])
    weights = (
        row_a0[:, None] * col_b0[None, :],
        row_a0[:, None] * col_b1[None, :],
        row_a1[:, None] * col_b0[None, :],
        row_a1[:, None] * col_b1[None, :],
    )
    squared = np.zeros((height, width))
    for x in range(4):
        for y in range(x, 4):
            dots = (corners[x] * corners[y]).sum(dim=0).cpu().numpy()[cell]
            squared += (1.0 if x == y else 2.0) * weights[x] * weights[y] * dots
    return np.sqrt(np.maximum(squared, 0.0))


PIXEL_NORM_EPS = 1e-12
"""``F.normalize``'s floor of the norm: a pixel is divided by ``max(|u|, eps)``."""


def pooling_matrix(
    labels: np.ndarray, grid_shape: tuple[int, int], pixel_weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(A, counts)``: ``A`` (S, h w) float64 with ``A[s] @ grid.reshape(D, h w).T = sum over the pixels p of
    superpixel s of m_p times the bilinear upsampling of the (D, h, w) grid at p`` (``m_p`` = ``pixel_weights``
    (H, W), 1 when None), and the pixel count of every superpixel.

    Separable: with row weights ``a(r, i)`` and column weights ``b(c, j)``,
    ``A[s, i, j] = sum_r a(r, i) C[s, r, j]`` where ``C[s, r, j] = sum_{c : labels[r, c] = s} m_(r, c) b(c, j)``.
    """
    height, width = labels.shape
    h, w = grid_shape
    n_seg = int(labels.max()) + 1
    row_lo, row_hi, row_a0, row_a1 = _bilinear_weights(height, h)
    col_lo, col_hi, col_b0, col_b1 = _bilinear_weights(width, w)
    seg = labels.astype(np.int64)
    base = (seg * height + np.arange(height)[:, None]) * w  # (H, W) index of (s, r, 0) in C
    m = np.ones(labels.shape) if pixel_weights is None else pixel_weights
    c = np.bincount((base + col_lo[None, :]).ravel(), (m * col_b0[None, :]).ravel(), minlength=n_seg * height * w)
    c += np.bincount((base + col_hi[None, :]).ravel(), (m * col_b1[None, :]).ravel(), minlength=n_seg * height * w)
    c = c.reshape(n_seg, height, w)
    rows = np.zeros((height, h))
    np.add.at(rows, (np.arange(height), row_lo), row_a0)
    np.add.at(rows, (np.arange(height), row_hi), row_a1)
    # A[s, i, j] = sum_r rows[r, i] C[s, r, j], as one BLAS product (np.einsum's loop was 90% of a region item)
    a = (c.transpose(0, 2, 1).reshape(n_seg * w, height) @ rows).reshape(n_seg, w, h).transpose(0, 2, 1)
    a = np.ascontiguousarray(a).reshape(n_seg, h * w)
    counts = np.bincount(seg.ravel(), minlength=n_seg)
    return a, counts


def region_features(labels: np.ndarray, grid: torch.Tensor, pixel_norm: bool = True) -> torch.Tensor:
    """Mean teacher feature ``(S, D)`` float32 of every superpixel of ``labels`` (H, W): the average over its
    pixels of the bilinear upsampling of ``grid`` (D, h, w) to ``H x W`` (:func:`models.teachers.base.sample`),
    each pixel L2-normalised first when ``pixel_norm`` (SLidR's image head ends in ``F.normalize`` of every
    upsampled pixel before its loss averages them, ``model/image_model.py`` of ``valeoai/SLidR`` @ 14729d0; so the
    mean has norm <= 1, 1 only for a superpixel of one direction). ``pixel_norm=False`` averages the raw
    upsampled features. A label absent from the map (SLIC numbers its segments contiguously, so none) gets a zero
    row."""
    weights = None
    if pixel_norm:
        weights = 1.0 / np.maximum(pixel_norms(grid, labels.shape), PIXEL_NORM_EPS)
    a, counts = pooling_matrix(labels, (grid.shape[1], grid.shape[2]), weights)
    a = a / np.maximum(counts, 1)[:, None]
    flat = grid.reshape(grid.shape[0], -1).to(torch.float64)
    return (torch.from_numpy(a).to(flat.device) @ flat.T).to(torch.float32)


def scene_regions(
    labels: Sequence[np.ndarray], pairs: np.ndarray, grids: torch.Tensor, pixel_norm: bool = True
) -> tuple[np.ndarray, torch.Tensor]:
    """``(pair_regions (M,) int64, region_feats (R, D) float32)`` of a scan: the superpixels of camera ``c`` are
    regions ``offset_c .. offset_c + S_c - 1`` (offsets = cumulative segment counts over the cameras), a pair's
    region is the superpixel of its (original) pixel, and ``region_feats`` holds :func:`region_features` (with
    ``pixel_norm``) of every camera in that order."""
    if len(labels) != grids.shape[0]:
        raise ValueError(f"{len(labels)} superpixel maps for {grids.shape[0]} cameras of teacher features")
    sizes = [int(lab.max()) + 1 for lab in labels]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    regions = np.empty(len(pairs), dtype=np.int64)
    for cam, lab in enumerate(labels):
        sel = pairs[:, 1] == cam
        regions[sel] = offsets[cam] + lab[pairs[sel, 2], pairs[sel, 3]]
    feats = torch.cat([region_features(lab, grids[cam].float(), pixel_norm) for cam, lab in enumerate(labels)])
    return regions, feats


class _Segmented(torch.utils.data.Dataset):
    """Scans of ``ids`` segmented camera by camera (runs in DataLoader workers)."""

    def __init__(self, dataset: ScanDataset, ids: Sequence[str], settings: SlicSettings) -> None:
        self.dataset, self.ids, self.settings = dataset, list(ids), settings

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[str, list[np.ndarray]]:
        scan = self.dataset.load(self.ids[index])
        return scan.scan_id, [segment_image(view.image, self.settings) for view in scan.cameras]


class SuperpixelCache:
    """The SLIC label maps of one dataset under one :class:`SlicSettings` (see the module docstring).

    Args:
        root: cache root folder.
        dataset: dataset key (:attr:`ScanDataset.cache_key`).
        settings: the SLIC parameters.
    """

    def __init__(self, root: str | Path, dataset: str, settings: SlicSettings = SlicSettings()) -> None:
        self.dataset = dataset
        self.settings = settings
        self.folder = Path(root) / quote(dataset, safe="") / settings.key

    def path(self, scan_id: str) -> Path:
        """File of scan ``scan_id`` (the id percent-quoted)."""
        return self.folder / f"{quote(scan_id, safe='')}.npz"

    def has(self, scan_id: str) -> bool:
        """Whether the superpixels of ``scan_id`` are cached."""
        return self.path(scan_id).is_file()

    def load(self, scan_id: str) -> list[np.ndarray]:
        """The label map ``(H, W)`` uint16 of every camera of ``scan_id``, in camera order."""
        path = self.path(scan_id)
        if not path.is_file():
            raise KeyError(f"{scan_id!r} is not in the superpixel cache {self.folder}")
        try:
            with np.load(path) as data:
                return [data[f"cam{i}"] for i in range(len(data.files))]
        except (ValueError, OSError, KeyError) as exc:
            raise ValueError(f"{path}: unreadable superpixel file ({exc}); delete it and run again") from None

    def fill(self, dataset: ScanDataset, workers: int = 0, progress: bool = True) -> FillReport:
        """Segment and store every scan of ``dataset`` not cached yet (call on every rank; the missing scans are
        split over the ranks, which must share the folder)."""
        if dist.is_main():
            self.folder.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.folder)
        dist.barrier()
        todo = [i for i in dataset.ids if not self.has(i)]
        mine = todo[dist.rank() :: dist.world_size()]
        start = time.perf_counter()
        if mine:
            loader = torch.utils.data.DataLoader(
                _Segmented(dataset, mine, self.settings),
                batch_size=None,
                num_workers=workers,
                prefetch_factor=2 if workers else None,
            )
            bar = tqdm(loader, total=len(mine), desc=f"superpixels {dataset.name} {dataset.split}",
                       disable=not progress)  # fmt: skip
            for scan_id, maps in bar:
                arrays = {f"cam{i}": np.asarray(m) for i, m in enumerate(maps)}
                write_npz(self.path(scan_id), **arrays)
        seconds = time.perf_counter() - start
        written = int(dist.all_reduce_sum(torch.tensor([len(mine)]))[0])
        dist.barrier()
        cached = [i for i in dataset.ids if self.has(i)]
        size = sum(self.path(i).stat().st_size for i in cached)
        return FillReport(written, seconds, len(cached), len(dataset.ids), size, workers)


def settings_from(config: dict[str, Any] | None) -> SlicSettings:
    """:class:`SlicSettings` from a run configuration's ``slic`` field (None or ``{}``: SLidR's, by the reference
    method; e.g. ``{method: downscaled, scale: 4}`` for the fast one)."""
    config = dict(config or {})
    valid = {"n_segments", "compactness", "sigma", "method", "scale"}
    unknown = sorted(set(config) - valid)
    if unknown:
        raise ValueError(f"unknown slic fields {unknown}; valid: {', '.join(sorted(valid))}")
    return SlicSettings(**config)


def main(argv: list[str] | None = None) -> int:
    """Fill the superpixel cache of one split (``python -m bench.data.superpixels --help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.data.superpixels",
        description="Segment every camera image of a split with SLIC (SLidR's settings by default) and cache the "
        "label maps for the region losses (slidr, st_slidr); DataLoader workers run SLIC; resumes where a previous "
        "run stopped; under torchrun the missing scans are split over the ranks.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--root", type=Path, default=Path(DEFAULT_ROOT), help="cache root folder")
    add_dataset_arguments(parser, split="train")
    parser.add_argument("--n-segments", type=int, default=150, help="SLIC n_segments (SLidR's)")
    parser.add_argument("--compactness", type=float, default=6.0, help="SLIC compactness (SLidR's)")
    parser.add_argument("--sigma", type=float, default=3.0, help="SLIC Gaussian smoothing (SLidR's)")
    parser.add_argument(
        "--method",
        choices=SLIC_METHODS,
        default="reference",
        help="reference: scikit-image's SLIC on the full image; downscaled: on the image block-averaged by --scale "
        "(>= 10x faster at 4; agreement in docs/data.md)",
    )
    parser.add_argument("--scale", type=int, default=None, help=f"downscaled: divisor per side (None: {DEFAULT_SCALE})")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (0: main process)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    dist.init(torch.device("cpu"))
    try:
        try:
            settings = SlicSettings(args.n_segments, args.compactness, args.sigma, args.method, args.scale)
            dataset = dataset_from_args(args, index_cache=args.root / "index")
        except (ValueError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        cache = SuperpixelCache(args.root, dataset.cache_key, settings)
        report = cache.fill(dataset, args.workers, progress=not args.no_progress)
        if dist.is_main():
            print(report.summary(cache.folder, "superpixel cache"))
        return 0
    finally:
        dist.shutdown()


if __name__ == "__main__":
    sys.exit(main())
