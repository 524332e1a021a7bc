"""Few-shot label subsets (METHOD.md section 5): SLidR's 1% rule, every 100th scene of the train split.

The subsets are written as split files in ``bench/data/splits/`` (one id per line) so that they are fixed,
reviewable and reported with the results. ``python -m bench.data.fewshot`` regenerates them:

- ``nuscenes_train_1pct.txt``: scene *names* of ``create_splits_scenes()["train"][::100]``; the sample tokens
  of those scenes are resolved at run time from the dataroot (no full dataroot is needed to write the file).
- ``semantickitti_train_1pct.txt``: scan ids ``SS/NNNNNN`` of every 100th scan of sequences 00-07, 09, 10
  (frame counts of the KITTI odometry benchmark, :data:`SEMANTICKITTI_TRAIN_FRAMES`).
- ``synthetic_train_1pct.txt``: scene ids of every 100th scene of the synthetic train split at its default
  size (:data:`bench.data.synthetic.dataset.DEFAULT_SIZES`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

SPLITS_DIR = Path(__file__).resolve().parent / "splits"
"""Folder of the few-shot split files shipped with the package."""

FEW_SHOT_EVERY = 100
"""SLidR's 1% rule: keep every 100th scene of the train split."""

SEMANTICKITTI_TRAIN_FRAMES: dict[str, int] = {
    "00": 4541,
    "01": 1101,
    "02": 4661,
    "03": 801,
    "04": 271,
    "05": 2761,
    "06": 1101,
    "07": 1101,
    "09": 1591,
    "10": 1201,
}
"""Scans per SemanticKITTI training sequence (KITTI odometry benchmark; sequence 08 is validation)."""


def few_shot_ids(ids: Sequence[str], every: int = FEW_SHOT_EVERY) -> list[str]:
    """The few-shot subset of a split: every ``every``-th id starting with the first (SLidR's 1% rule).

    ``ids`` must be in the split's canonical order (nuScenes: scene order of ``create_splits_scenes``;
    SemanticKITTI: sequence then frame; synthetic: scene index).
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    return list(ids[::every])


def read_split_file(name: str) -> list[str]:
    """Read a split file of ``bench/data/splits`` (one id per line, ``#`` starts a comment)."""
    path = SPLITS_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def expected_split_files() -> dict[str, tuple[str, list[str]]]:
    """File name -> (header comment, ids) of every few-shot split file, computed from the rules above."""
    from nuscenes.utils.splits import create_splits_scenes

    from bench.data.synthetic.dataset import DEFAULT_SIZES, synthetic_ids

    kitti = [f"{seq}/{i:06d}" for seq, n in SEMANTICKITTI_TRAIN_FRAMES.items() for i in range(n)]
    return {
        "nuscenes_train_1pct.txt": (
            "nuScenes 1% subset: every 100th scene of create_splits_scenes()['train'] (scene names)",
            few_shot_ids(create_splits_scenes(verbose=False)["train"]),
        ),
        "semantickitti_train_1pct.txt": (
            "SemanticKITTI 1% subset: every 100th scan of sequences 00-07, 09, 10 (SS/NNNNNN)",
            few_shot_ids(kitti),
        ),
        "synthetic_train_1pct.txt": (
            f"synthetic world 1% subset: every 100th scene of the {DEFAULT_SIZES['train']}-scene train split",
            few_shot_ids(synthetic_ids("nuscenes", "train", DEFAULT_SIZES["train"])),
        ),
    }


def write_split_files(folder: Path = SPLITS_DIR) -> list[Path]:
    """Write every few-shot split file into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (header, ids) in expected_split_files().items():
        path = folder / name
        path.write_text(f"# {header}; written by python -m bench.data.fewshot\n" + "\n".join(ids) + "\n")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.data.fewshot", description="Regenerate the 1% few-shot split files."
    )
    parser.add_argument("--out", type=Path, default=SPLITS_DIR, help="output folder (default: bench/data/splits)")
    args = parser.parse_args(argv)
    for path in write_split_files(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
