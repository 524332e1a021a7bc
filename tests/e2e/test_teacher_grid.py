"""A teacher x loss grid end to end on the embedded synthetic world: the synthetic teacher and a tiny DINOv2-shaped
ViT with random weights (through the registry's options), two losses, ``python -m bench.run`` then the report,
whose teacher table has a row per teacher and loss and whose page says that no scientific conclusion can be drawn
from a randomly initialised teacher. The numbers mean nothing: the path is what is tested."""

from __future__ import annotations

import csv
import json

import yaml

from bench.run import main as run_main
from geomstruct.report import main as report_main
from tests.conftest import TINY_DEFAULTS

TINY_DINOV2 = {"name": "dinov2", "depth": 2, "embed_dim": 48, "num_heads": 2, "image_size": [56, 112]}


def test_a_teacher_by_loss_grid_runs_and_the_report_renders_its_table(tmp_path, capsys):
    defaults = {k: v for k, v in TINY_DEFAULTS.items() if k != "teacher"}
    defaults |= {"dataroot": str(tmp_path / "scenes"), "feature_cache": str(tmp_path / "features"), "steps": 4}
    defaults |= {"train_scenes": 2, "probe_every": 2, "checkpoint_every": 4}
    suite = {
        "name": "teacher-grid",
        "kind": "distill",
        "description": "teacher x loss on the synthetic world (random DINOv2-shaped teacher: a path check)",
        "defaults": {**defaults, "protocols": ["linear_probe", "few_shot"]},
        "grid": {"loss": ["similarity", "contrastive"], "seed": [0], "teacher": [{"name": "synthetic"}, TINY_DINOV2]},
    }
    path = tmp_path / "teacher-grid.yaml"
    path.write_text(yaml.safe_dump(suite))
    out = tmp_path / "runs"
    assert run_main(["--suite", str(path), "--out", str(out), "--no-progress"]) == 0
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert names == [
        "contrastive-teacherdinov2-s0",
        "contrastive-teachersynthetic-s0",
        "similarity-teacherdinov2-s0",
        "similarity-teachersynthetic-s0",
    ]
    dino = json.loads((out / "similarity-teacherdinov2-s0" / "metrics.json").read_text())
    assert dino["teacher"].startswith("dinov2-vit_small_patch14_dinov2-d2w48h2-random0-56x112")
    assert "zero_shot" not in dino and "linear_probe" in dino and "few_shot" in dino
    assert {"U", "T", "S"} <= set(dino["geometry"])
    config = json.loads((out / "similarity-teacherdinov2-s0" / "config.json").read_text())
    assert config["student"]["out_dim"] == 48  # follows the teacher when unset

    report = tmp_path / "report"
    capsys.readouterr()
    assert report_main(["--runs", str(out), "--out", str(report)]) == 0
    with open(report / "teachers.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    pairs = sorted((r["teacher"].split("-")[0], r["configuration"]) for r in rows)
    assert pairs == [
        ("dinov2", "contrastive"),
        ("dinov2", "similarity"),
        ("synthetic", "contrastive"),
        ("synthetic", "similarity"),
    ]
    assert {"linear_probe", "few_shot", "U", "T", "S"} <= set(rows[0])
    table = (report / "teachers.md").read_text()
    assert table.count("| dinov2-") == 2 and "no scientific conclusion" in table
    page = (report / "index.html").read_text()
    assert "randomly initialised teachers (dinov2-vit_small_patch14_dinov2-d2w48h2-random0" in page
    assert "no scientific conclusion can be drawn" in page and "Teacher × loss" in page
