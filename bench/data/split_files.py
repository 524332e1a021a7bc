"""The few-shot split files of ``bench/data/splits/``, written from the rules of :mod:`bench.data.fewshot`.

``python -m bench.data.split_files`` regenerates them (docs/data.md#few-shot-split-files); the tests compare the
shipped files with :func:`expected_split_files`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from nuscenes.utils.splits import create_splits_scenes

from bench.data.fewshot import SPLITS_DIR, few_shot_ids, semantickitti_train_ids
from bench.data.synthetic.dataset import DEFAULT_SIZES, synthetic_ids


def expected_split_files() -> dict[str, tuple[str, list[str]]]:
    """File name -> (header comment, ids) of every few-shot split file, computed from the rules of
    :mod:`bench.data.fewshot`."""
    kitti = semantickitti_train_ids()
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
        path.write_text(f"# {header}; written by python -m bench.data.split_files\n" + "\n".join(ids) + "\n")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.data.split_files", description="Regenerate the 1% few-shot split files."
    )
    parser.add_argument("--out", type=Path, default=SPLITS_DIR, help="output folder (default: bench/data/splits)")
    args = parser.parse_args(argv)
    for path in write_split_files(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
