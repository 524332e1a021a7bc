"""End-to-end tests of ``python -m bench.run`` on a tiny distill suite: run directories, schema, geometry
recomputed from ``features.npz``, skipping finished runs, and every kind of bad input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from bench.run import main
from bench.train import TRAJECTORY_COLUMNS
from geomstruct.metrics import geometry
from geomstruct.run_folder import read_config
from models.losses import LOSSES
from tests.conftest import write_suite

PROTOCOL_KEYS = ("zero_shot", "linear_probe", "few_shot", "few_shot_ood")
GEOMETRY_KEYS = {"U", "T", "G", "dU", "dT", "S", "U_2d", "T_2d"}


def _runs(out):
    return sorted(p for p in out.iterdir() if p.is_dir())


def test_run_directories_follow_the_schema(tiny_runs):
    runs = _runs(tiny_runs)
    assert [p.name for p in runs] == ["contrastive-tau0.07-s0", "relational-lam1.0-s0"]
    for run in runs:
        m = json.loads((run / "metrics.json").read_text())
        assert m["kind"] == "distill" and m["seed"] == 0 and m["loss"] in LOSSES
        assert m["params"] == ({"tau": 0.07} if m["loss"] == "contrastive" else {"lam": 1.0})
        assert GEOMETRY_KEYS <= set(m["geometry"])
        for key in PROTOCOL_KEYS:
            assert 0.0 <= m[key]["miou"] <= 1.0
            assert len(m[key]["per_class"]) == 16
            ious = [v for v in m[key]["per_class"].values() if v is not None]
            assert m[key]["miou"] == pytest.approx(np.mean(ious))
        assert json.loads((run / "config.json").read_text())["config_format"] == 2  # in sections
        config = read_config(run)  # its flat form
        assert config["kind"] == "distill" and config["loss"] == m["loss"] and config["steps"] == 12
        env = json.loads((run / "environment.json").read_text())
        assert {"packages", "device", "git_commit"} <= set(env)
        with open(run / "trajectory.csv") as fh:
            rows = list(csv.DictReader(fh))
        assert tuple(rows[0]) == TRAJECTORY_COLUMNS
        assert [int(r["step"]) for r in rows] == [0, 4, 8, 12]
        assert float(rows[-1]["lr"]) == pytest.approx(0.0, abs=1e-12)


def test_geometry_recomputed_from_features_equals_metrics(tiny_runs):
    for run in _runs(tiny_runs):
        m = json.loads((run / "metrics.json").read_text())
        with np.load(run / "features.npz") as f:
            assert f["k3d"].dtype == np.float16 and f["q2d"].dtype == np.float16
            k3d, q2d, labels = f["k3d"], f["q2d"], f["labels"]
        assert len(labels) == m["geometry_set"]["n"]
        counts = np.bincount(labels)
        assert counts.max() <= 60  # features_per_class of the tiny suite
        assert {int(c): int(n) for c, n in m["geometry_set"]["per_class_counts"].items()} == {
            int(c): int(counts[c]) for c in np.flatnonzero(counts)
        }
        again = geometry(k3d.astype(np.float32), q2d.astype(np.float32), labels)
        for key in GEOMETRY_KEYS:
            assert again[key] == pytest.approx(m["geometry"][key], rel=1e-9, abs=1e-12)


def test_finished_runs_are_skipped(tiny_runs, tiny_suite, capsys):
    before = {p: (p / "metrics.json").stat().st_mtime_ns for p in _runs(tiny_runs)}
    assert main(["--suite", str(tiny_suite), "--out", str(tiny_runs), "--no-progress"]) == 0
    assert {p: (p / "metrics.json").stat().st_mtime_ns for p in _runs(tiny_runs)} == before
    out = capsys.readouterr().out
    assert "2 already finished, skipped" in out and "contrastive-tau0.07-s0" in out


def test_output_folder_with_a_different_config_is_refused(tiny_runs, tiny_suite, capsys):
    configs = {p: (p / "config.json").read_bytes() for p in _runs(tiny_runs)}
    assert main(["--suite", str(tiny_suite), "--out", str(tiny_runs), "--steps", "3", "--no-progress"]) == 2
    assert "different configuration" in capsys.readouterr().err
    assert {p: (p / "config.json").read_bytes() for p in _runs(tiny_runs)} == configs


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--suite", "no_such_suite"], "valid suites: claims, claims_tune, doubling, full, nuscenes, smoke, toy, tune"),
        (["--suite", "smoke", "--data", "nuscenes", "--dataroot", "/no/such/folder"], "needs a dataroot that exists"),
        (["--suite", "smoke", "--teacher", "clip", "--clip-checkpoint", "/no/such.pt"], "does not exist"),
        (["--suite", "smoke", "--data", "nuscenes", "--dataroot", "tests/data"], "needs --teacher clip"),
        (["--suite", "toy", "--teacher", "synthetic"], "distill suites only"),
        (["--suite", "smoke", "--run", "similarity"], "no run of suite 'smoke' matches --run 'similarity'"),
        (["--suite", "smoke", "--jobs", "0"], "--jobs must be at least 1"),
    ],
)
def test_bad_command_lines(argv, message, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("option", "kind"), [("--data", "datasets"), ("--teacher", "teachers")])
def test_unknown_dataset_or_teacher_lists_the_valid_ones(option, kind, tmp_path, capsys):
    assert main(["--suite", "smoke", option, "bogus", "--out", str(tmp_path / "out")]) == 2
    assert f"unknown {kind[:-1]} 'bogus'; valid {kind}: synthetic, " in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("loss", "infonce", "contrastive"),
        ("teacher", "dino", "valid teachers: synthetic, clip"),
        ("dataset", "waymo", "valid datasets: synthetic, nuscenes, semantickitti"),
        ("optimizer", "lamb", "valid optimizers: sgd, adamw"),
    ],
)
def test_bad_suite_values_list_the_valid_ones(field, value, message, tmp_path, capsys):
    losses = [value] if field == "loss" else ["similarity"]
    extra = {} if field == "loss" else {field: value}
    suite = write_suite(tmp_path / "bad.yaml", tmp_path / "scenes", losses, [0], **extra)
    assert main(["--suite", str(suite), "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_checkpoint_that_does_not_load(tmp_path, capsys):
    bad = tmp_path / "ViT-B-16.pt"
    bad.write_bytes(b"this is not a checkpoint")
    suite = write_suite(tmp_path / "clip.yaml", tmp_path / "scenes", ["similarity"], [0], train_scenes=1)
    argv = ["--suite", str(suite), "--out", str(tmp_path / "out"), "--teacher", "clip", "--clip-checkpoint", str(bad)]
    assert main([*argv, "--no-progress"]) == 2
    assert "does not load" in capsys.readouterr().err
    assert not (tmp_path / "out" / "similarity-s0" / "metrics.json").exists()
