"""Draw a scan: its points on the six camera images, coloured by class (or by depth when the scan has no
labels), and a bird's-eye view.

Command line (``python -m bench.data.show --help``)::

    python -m bench.data.show synthetic --seed 0 --out docs/images/synthetic_scan.png
    python -m bench.data.show nuscenes --dataroot tests/data/nuscenes-sample --version v1.0-mini \\
        --out docs/images/nuscenes_keyframe.png
    python -m bench.data.show semantickitti --root /data/semantickitti --scan 08/000000 --out kitti.png
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from PIL import Image  # noqa: E402

from bench.data.classes import IGNORE_INDEX  # noqa: E402
from bench.data.nuscenes import NuScenesDataset  # noqa: E402
from bench.data.scan import Scan  # noqa: E402
from bench.data.semantickitti import SemanticKITTIDataset  # noqa: E402
from bench.data.synthetic import generate_scene  # noqa: E402

NUSCENES_COLOURS: dict[str, tuple[int, int, int]] = {
    "barrier": (112, 128, 144),
    "bicycle": (220, 20, 60),
    "bus": (255, 127, 80),
    "car": (255, 158, 0),
    "construction_vehicle": (233, 150, 70),
    "motorcycle": (255, 61, 99),
    "pedestrian": (0, 0, 230),
    "traffic_cone": (47, 79, 79),
    "trailer": (255, 140, 0),
    "truck": (255, 99, 71),
    "driveable_surface": (0, 207, 191),
    "other_flat": (175, 0, 75),
    "sidewalk": (75, 0, 75),
    "terrain": (112, 180, 60),
    "manmade": (222, 184, 135),
    "vegetation": (0, 175, 0),
}
"""The devkit's colours of the 16 lidarseg classes (``LidarsegClassMapper.get_coarse2color``)."""

# Panel order of the nuScenes devkit's six-camera figures: front row, then back row (left/right swapped).
CAMERA_LAYOUT = (
    ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"),
    ("CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"),
)


def class_colours(classes: Sequence[str]) -> np.ndarray:
    """``(C + 1, 3)`` float RGB per class (the devkit's for nuScenes names, tab20 otherwise); the last row,
    used for ignored points, is black."""
    tab = plt.get_cmap("tab20")
    rows = [
        np.array(NUSCENES_COLOURS[name]) / 255.0 if name in NUSCENES_COLOURS else np.array(tab(i % 20)[:3])
        for i, name in enumerate(classes)
    ]
    return np.vstack(rows + [np.zeros(3)])


def point_colours(scan: Scan) -> tuple[np.ndarray, str]:
    """RGB colour per point (class colours, or depth = planar range through ``jet``) and the colouring's name."""
    if scan.labels is not None:
        table = class_colours(scan.classes)
        index = np.where(scan.labels == IGNORE_INDEX, len(scan.classes), scan.labels)
        return table[index], "class"
    rng = np.linalg.norm(scan.points[:, :2], axis=1)
    return plt.get_cmap("jet")(np.clip(rng / 50.0, 0.0, 1.0))[:, :3], "depth (0-50 m)"


def draw_scan(scan: Scan, bev_range: float = 50.0, point_size: float = 1.0, title: str | None = None) -> plt.Figure:
    """Figure with the six cameras (points drawn at their paired pixels) and a bird's-eye view.

    Args:
        scan: the scan; cameras missing from :data:`CAMERA_LAYOUT` are drawn in the remaining slots.
        bev_range: half width of the bird's-eye view, metres.
        point_size: marker area of the image overlays.
        title: figure title (default: the scan id).
    """
    colours, colouring = point_colours(scan)
    names = [n for row in CAMERA_LAYOUT for n in row]
    cams = {c.name: c for c in scan.cameras}
    ordered = [cams[n] if n in cams else None for n in names]
    extra = [c for c in scan.cameras if c.name not in names]
    ordered = [c if c is not None else (extra.pop(0) if extra else None) for c in ordered]

    fig = plt.figure(figsize=(16, 5.6), dpi=100)
    grid = fig.add_gridspec(2, 4, width_ratios=[1, 1, 1, 0.95], wspace=0.03, hspace=0.08)
    for k, cam in enumerate(ordered):
        ax = fig.add_subplot(grid[k // 3, k % 3])
        ax.set_axis_off()
        if cam is None:
            continue
        ax.imshow(cam.image)
        pairs = cam.pairing
        ax.scatter(pairs[:, 2], pairs[:, 1], c=colours[pairs[:, 0]], s=point_size, linewidths=0)
        ax.set_xlim(0, cam.calibration.width)
        ax.set_ylim(cam.calibration.height, 0)
        ax.set_title(f"{cam.name} ({len(pairs)} points)", fontsize=8)
    ax = fig.add_subplot(grid[:, 3])
    pts = scan.points
    near = (np.abs(pts[:, 0]) < bev_range) & (np.abs(pts[:, 1]) < bev_range)
    ax.scatter(pts[near, 0], pts[near, 1], c=colours[near], s=0.2, linewidths=0)
    ax.plot(0, 0, "k^", markersize=5)
    ax.set_xlim(-bev_range, bev_range)
    ax.set_ylim(-bev_range, bev_range)
    ax.set_aspect("equal")
    ax.set_title(f"bird's-eye view ({len(pts)} points)", fontsize=8)
    ax.tick_params(labelsize=6)
    if colouring == "class":
        present = sorted(set(np.unique(scan.labels).tolist()) - {IGNORE_INDEX})
        table = class_colours(scan.classes)
        handles = [Patch(color=table[i], label=scan.classes[i]) for i in present]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 9), fontsize=7, frameon=False)
    fig.suptitle(title or f"{scan.scan_id} (points coloured by {colouring})", fontsize=10)
    return fig


def save_figure(fig: plt.Figure, path: str | Path, max_bytes: int = 1_000_000) -> Path:
    """Save ``fig`` as PNG; when the file would exceed ``max_bytes``, quantise it to a 256-colour palette."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    data = buf.getvalue()
    if len(data) > max_bytes:
        img = Image.open(io.BytesIO(data)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        out = io.BytesIO()
        img.save(out, format="PNG", optimize=True)
        data = out.getvalue()
    path.write_bytes(data)
    return path


def _load(args: argparse.Namespace) -> Scan:
    if args.dataset == "synthetic":
        return generate_scene(args.seed, args.variant)
    if args.dataset == "nuscenes":
        ds = NuScenesDataset(args.dataroot, split=args.split, version=args.version)
        return ds.load(args.token) if args.token else ds[args.index]
    ds = SemanticKITTIDataset(args.root, split=args.split)
    return ds.load(args.scan) if args.scan else ds[args.index]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.data.show",
        description="Draw a scan's points on its six camera images (coloured by class, or by depth when the "
        "scan has no labels) next to a bird's-eye view, and save it as a PNG.",
    )
    sub = parser.add_subparsers(dest="dataset", required=True)
    syn = sub.add_parser("synthetic", help="a scene of the embedded synthetic world")
    syn.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    syn.add_argument("--variant", choices=("nuscenes", "ood"), default="nuscenes", help="world variant")
    nus = sub.add_parser("nuscenes", help="a nuScenes keyframe (through nuscenes-devkit)")
    nus.add_argument("--dataroot", required=True, help="nuScenes dataroot (holds samples/ and v1.0-*/)")
    nus.add_argument("--version", default="v1.0-mini", help="table version (default v1.0-mini)")
    nus.add_argument("--split", default="mini_train", help="split (default mini_train)")
    nus.add_argument("--index", type=int, default=0, help="keyframe index within the split (default 0)")
    nus.add_argument("--token", default=None, help="sample token (overrides --index)")
    kit = sub.add_parser("semantickitti", help="a SemanticKITTI scan (needs calib.txt and image_2/)")
    kit.add_argument("--root", required=True, help="dataset root (holds sequences/)")
    kit.add_argument("--split", default="val", help="split (default val = sequence 08)")
    kit.add_argument("--index", type=int, default=0, help="scan index within the split (default 0)")
    kit.add_argument("--scan", default=None, help="scan id 'SS/NNNNNN' (overrides --index)")
    for p in (syn, nus, kit):
        p.add_argument("--out", required=True, help="output PNG path")
        p.add_argument("--point-size", type=float, default=1.0, help="marker size on the images (default 1)")
    args = parser.parse_args(argv)
    scan = _load(args)
    path = save_figure(draw_scan(scan, point_size=args.point_size), args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
