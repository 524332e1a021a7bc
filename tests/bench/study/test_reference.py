"""Reference rows: the teacher's own zero-shot (against a direct recomputation without the caches), the random
floor and the supervised ceiling on a tiny world, and the resumable CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from bench.config import DistillConfig
from bench.data.classes import NUSCENES_CLASSES
from bench.data.features import text_embeddings
from bench.data.loader import SceneDataset
from bench.data.registry import open_dataset
from bench.evaluate import confusion_matrix, miou
from bench.study.reference import main, supervised_ceiling, teacher_zero_shot
from bench.workspace import Workspace
from models.teachers import build_teacher
from models.teachers.base import sample, zero_shot_predict
from tests.conftest import TINY_DEFAULTS


def _config(tmp_path, **overrides) -> DistillConfig:
    run = {**TINY_DEFAULTS, "dataroot": str(tmp_path / "scenes"), "feature_cache": str(tmp_path / "features"),
           "loss": "similarity", "seed": 0, **overrides}  # fmt: skip
    return DistillConfig.from_run(run)


def test_teacher_zero_shot_equals_a_direct_recomputation(tmp_path):
    cfg = _config(tmp_path)
    got = teacher_zero_shot(Workspace(), cfg, torch.device("cpu"))
    teacher = build_teacher("synthetic")
    text = text_embeddings(teacher, "nuscenes", tmp_path / "features")
    data = open_dataset("synthetic", "val", cfg.data.dataroot, sizes={"train": 3, "val": 1}, progress=False)
    conf = np.zeros((16, 16), dtype=np.int64)
    for scene in SceneDataset(data, cfg.data.crop_radius):  # no feature cache: the teacher runs on the scan itself
        grids = teacher.scan_features(data.load(scene.scan_id)).float()
        _, first = np.unique(scene.pairs[:, 0], return_index=True)
        pairs = scene.pairs[first]
        for cam in np.unique(pairs[:, 1]):
            sel = pairs[pairs[:, 1] == cam]
            feats = sample(grids[cam], sel[:, 2], sel[:, 3], scene.image_sizes[cam])
            conf += confusion_matrix(zero_shot_predict(feats, text), scene.labels[sel[:, 0]], 16)
    expected = miou(conf, NUSCENES_CLASSES)
    assert got["points"] == expected["points"] > 0
    assert abs(got["miou"] - expected["miou"]) < 1e-3  # float16 cache against float32 features


@pytest.mark.slow
def test_ceiling_trains_on_every_train_scan(tmp_path):
    cfg = _config(tmp_path)
    out = supervised_ceiling(Workspace(), cfg, steps=3, batch_size=2, lr=0.05, device=torch.device("cpu"))
    assert out["train_scans"] == 3 and out["steps"] == 3 and 0.0 <= out["miou"] <= 1.0
    assert set(out["per_class"]) == set(NUSCENES_CLASSES)


@pytest.mark.slow
def test_cli_writes_rows_and_skips_existing_ones(tmp_path, capsys):
    suite = tmp_path / "tiny.yaml"
    defaults = {**TINY_DEFAULTS, "dataroot": str(tmp_path / "scenes"), "feature_cache": str(tmp_path / "features")}
    suite.write_text(yaml.safe_dump({"name": "tiny", "kind": "distill", "defaults": defaults,
                                     "grid": {"loss": ["similarity"], "seed": [0]}}))  # fmt: skip
    args = ["--suite", str(suite), "--out", str(tmp_path / "ref"), "--no-progress", "--steps", "2"]
    assert main([*args, "--rows", "floor", "ceiling", "--name", "x", "--set", "ft_lr=0.01"]) == 0
    printed = capsys.readouterr().out  # each row says when it starts and what it reached
    assert "x-ceiling.json: computing the ceiling row ..." in printed and "x-ceiling.json: ceiling mIoU" in printed
    row = json.loads((tmp_path / "ref" / "x-ceiling.json").read_text())
    assert row["config"]["ft_lr"] == 0.01 and row["lr"] == 0.01 and row["steps"] == 2
    assert (tmp_path / "ref" / "x-floor.json").is_file()
    assert main([*args, "--rows", "floor", "--name", "x"]) == 0
    assert "exists, skipped" in capsys.readouterr().out
    assert main([*args, "--rows", "floor", "--set", "seg_class_weight=median"]) == 2  # named in the error
    with pytest.raises(SystemExit):  # an override without "=" is a usage error
        main([*args, "--rows", "floor", "--set", "ft_lr"])
    budget = ["--steps", "3", "--batch-size", "2", "--set", "ft_optimizer=adamw"]
    assert main([a for a in args if a not in ("--steps", "2")] + ["--rows", "ceiling", "--name", "y", *budget]) == 0
    row = json.loads((tmp_path / "ref" / "y-ceiling.json").read_text())
    assert row["steps"] == 3 and row["batch_size"] == 2 and row["config"]["ft_optimizer"] == "adamw"
    # the curve table: one line per row, with the downstream setting and the classes at chance
    old = {k: v for k, v in row.items() if k not in ("below_chance", "chance")}  # a row from before chance IoU
    (tmp_path / "ref" / "z-floor.json").write_text(json.dumps({**old, "row": "floor"}))
    assert main(["--table", str(tmp_path / "ref")]) == 0
    curve = (tmp_path / "ref" / "curve.md").read_text()
    assert curve.count("supervised ceiling") == 2 and "ce, adamw" in curve and "ce, sgd" in curve
    lines = [line for line in curve.splitlines() if "supervised ceiling" in line]
    assert all(line.rstrip().endswith("|") and line.count("|") == 8 for line in lines)
    assert main(["--table", str(tmp_path / "empty")]) == 2
