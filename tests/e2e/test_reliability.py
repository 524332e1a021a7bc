"""Reliability of the harness (issue 13, items 3-6, 8, 9 and the exit code of 10): run names from every varied
field, validation of every run before the first starts, a failing run recorded and skipped, a run directory
bound only after set-up, checkpoints tied to their configuration, unreadable files named with the remedy,
names that would leave the output folder refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from bench.data.io import DataFormatError, read_image
from bench.run import main
from bench.suites import load_suite, run_names
from models.teachers.base import file_sha256
from tests.conftest import TINY_DEFAULTS

QUICK = {"steps": 4, "checkpoint_every": 2, "probe_every": 2, "protocols": []}


def _suite(path: Path, scenes: Path, grid: dict, **defaults) -> Path:
    data = {"name": path.stem, "kind": "distill", "defaults": {**TINY_DEFAULTS, "dataroot": str(scenes), **defaults}}
    path.write_text(yaml.safe_dump({**data, "grid": grid}))
    return path


def test_runs_are_named_by_every_field_the_grid_varies(tiny_suite, tmp_path):
    suite = _suite(tmp_path / "lr.yaml", tiny_suite.parent / "scenes", {"loss": ["similarity"], "seed": [0],
                                                                         "lr": [0.5, 0.05]})  # fmt: skip
    assert run_names(load_suite(str(suite)).runs) == ["similarity-lr0.5-s0", "similarity-lr0.05-s0"]
    assert run_names(load_suite("smoke").runs)[0] == "contrastive-tau0.07-s0"  # unchanged where only loss/seed vary
    # the recipes of the full suite vary lr and optimizer between its loss configurations: the names say so
    runs = load_suite("full").runs  # the first: contrastive tau 0.07 with the recipe recipes.json selected for it
    recipe = f"lr{runs[0]['lr']:g}-optimizer{runs[0]['optimizer']}"
    assert run_names(runs)[0] == f"contrastive-tau0.07-{recipe}-s0"


def test_duplicate_runs_are_refused_before_anything_runs(tiny_suite, tmp_path, capsys):
    suite = _suite(tmp_path / "dup.yaml", tiny_suite.parent / "scenes", {"loss": ["similarity"], "seed": [0, 0]})
    assert main(["--suite", str(suite), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "same name (similarity-s0)" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_names_that_would_leave_the_output_folder_are_refused(tiny_suite, tmp_path, capsys):
    grid = {"loss": ["similarity"], "seed": [0], "feature_cache": ["cache", "../../escaped"]}  # free text
    suite = _suite(tmp_path / "evil.yaml", tiny_suite.parent / "scenes", grid)
    assert main(["--suite", str(suite), "--out", str(tmp_path / "a" / "out"), "--no-progress"]) == 2
    assert "would not be a plain folder name" in capsys.readouterr().err
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        (
            {"loss": [{"name": "similarity", "params": {"tau": 0.1}}], "seed": [0]},
            "loss similarity has no parameter tau",
        ),
        ({"loss": ["similarity"], "seed": [0], "lr": [0.5, "fast"]}, "lr must be float; got 'fast'"),
        ({"loss": [{"name": "contrastive", "params": {"tau": "hot"}}], "seed": [0]}, "parameter tau must be float"),
    ],
)
def test_every_run_is_validated_before_the_first_starts(grid, message, tiny_suite, tmp_path, capsys):
    suite = _suite(tmp_path / "bad.yaml", tiny_suite.parent / "scenes", grid, **QUICK)
    assert main(["--suite", str(suite), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_failing_run_is_recorded_and_the_others_go_on(tiny_suite, tmp_path, monkeypatch, capsys):
    import bench.distill

    original = bench.distill.run_distill

    def fail_for_similarity(cfg, *args, **kwargs):
        if cfg.distillation.loss == "similarity":
            raise RuntimeError("simulated fault")
        return original(cfg, *args, **kwargs)

    monkeypatch.setattr(bench.distill, "run_distill", fail_for_similarity)
    suite = _suite(tmp_path / "two.yaml", tiny_suite.parent / "scenes",
                   {"loss": ["similarity", "relational_cross"], "seed": [0]}, **QUICK)  # fmt: skip
    out = tmp_path / "out"
    assert main(["--suite", str(suite), "--out", str(out), "--no-progress"]) == 2  # non-zero at the end
    captured = capsys.readouterr()
    assert (out / "relational_cross-s0" / "metrics.json").is_file()  # the run after the failure ran
    error = (out / "similarity-s0" / "error.txt").read_text()
    assert "RuntimeError: simulated fault" in error and "Traceback" in error
    assert "1 of 2 runs failed" in captured.out and "similarity-s0: RuntimeError: simulated fault" in captured.out


def test_a_run_that_fails_during_set_up_accepts_its_fix(tiny_suite, tiny_arch, tmp_path, capsys):
    from models.teachers.clip import CLIPTeacher

    broken, good = tmp_path / "broken.pt", tmp_path / "good.pt"
    broken.write_bytes(b"not a checkpoint")
    torch.save(CLIPTeacher(tiny_arch, seed=0).model.state_dict(), good)
    args = {"teacher": "clip", "clip_arch": tiny_arch, "out_dim": 32, "feature_cache": str(tmp_path / "f"), **QUICK}
    out = tmp_path / "out"
    first = _suite(tmp_path / "s.yaml", tiny_suite.parent / "scenes", {"loss": ["similarity"], "seed": [0]},
                   clip_checkpoint=str(broken), **args)  # fmt: skip
    assert main(["--suite", str(first), "--out", str(out), "--no-progress"]) == 2
    assert "does not load" in capsys.readouterr().err and not (out / "similarity-s0" / "config.json").exists()
    fixed = _suite(tmp_path / "s.yaml", tiny_suite.parent / "scenes", {"loss": ["similarity"], "seed": [0]},
                   clip_checkpoint=str(good), **args)  # fmt: skip
    assert main(["--suite", str(fixed), "--out", str(out), "--no-progress"]) == 0
    assert (out / "similarity-s0" / "metrics.json").is_file() and not (out / "similarity-s0" / "error.txt").exists()


def test_a_checkpoint_of_another_configuration_is_refused(tiny_suite, tmp_path, capsys):
    scenes = tiny_suite.parent / "scenes"
    other = _suite(tmp_path / "a.yaml", scenes, {"loss": ["relational_cross"], "seed": [0]}, **QUICK)
    assert main(["--suite", str(other), "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    mine = _suite(tmp_path / "b.yaml", scenes, {"loss": ["similarity"], "seed": [0]}, **QUICK)
    target = tmp_path / "b" / "similarity-s0"
    target.mkdir(parents=True)
    shutil.copy(tmp_path / "a" / "relational_cross-s0" / "checkpoint.pt", target / "checkpoint.pt")  # stale/foreign
    assert main(["--suite", str(mine), "--out", str(tmp_path / "b"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{target / 'checkpoint.pt'} was written by another configuration" in err and "remove it" in err
    assert not (target / "metrics.json").exists()


def test_a_run_interrupted_before_a_new_field_existed_resumes(tiny_suite, tmp_path):
    """Its config.json lacks the field (at its default) and its checkpoint carries that config.json's hash."""
    from bench.train import config_hash

    scenes = tiny_suite.parent / "scenes"
    suite = _suite(tmp_path / "a.yaml", scenes, {"loss": ["similarity"], "seed": [0]}, **QUICK)
    assert main(["--suite", str(suite), "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    run = tmp_path / "a" / "similarity-s0"
    (run / "metrics.json").unlink()  # interrupted
    older = {k: v for k, v in json.loads((run / "config.json").read_text()).items() if k != "ft_clip_norm"}
    (run / "config.json").write_text(json.dumps(older))
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["config_hash"] = config_hash(older)  # what the older code wrote
    torch.save(state, run / "checkpoint.pt")
    assert main(["--suite", str(suite), "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    assert (run / "metrics.json").is_file()


def test_a_corrupted_checkpoint_is_named_with_the_remedy(tiny_suite, tmp_path, capsys):
    suite = _suite(tmp_path / "c.yaml", tiny_suite.parent / "scenes", {"loss": ["similarity"], "seed": [0]}, **QUICK)
    target = tmp_path / "out" / "similarity-s0"
    target.mkdir(parents=True)
    (target / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    assert main(["--suite", str(suite), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{target / 'checkpoint.pt'}: the checkpoint does not load" in err and "remove it to restart" in err
    assert "weights_only" not in err


def test_a_truncated_image_is_named(tmp_path):
    path = tmp_path / "cam.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataFormatError, match=rf"{path}: unreadable image"):
        read_image(path)


def test_new_teacher_weights_at_the_same_path_are_a_new_configuration(tiny_suite, tiny_arch, tmp_path, capsys):
    from models.teachers.clip import CLIPTeacher

    weights = tmp_path / "clip.pt"
    torch.save(CLIPTeacher(tiny_arch, seed=0).model.state_dict(), weights)
    args = {"teacher": "clip", "clip_arch": tiny_arch, "out_dim": 32, "feature_cache": str(tmp_path / "f"), **QUICK}
    suite = _suite(tmp_path / "s.yaml", tiny_suite.parent / "scenes", {"loss": ["similarity"], "seed": [0]},
                   clip_checkpoint=str(weights), **args)  # fmt: skip
    out = tmp_path / "out"
    assert main(["--suite", str(suite), "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "similarity-s0" / "metrics.json").read_text())
    assert metrics["teacher_checkpoint_sha256"] == file_sha256(weights)
    torch.save(CLIPTeacher(tiny_arch, seed=1).model.state_dict(), weights)  # other weights, same path
    assert main(["--suite", str(suite), "--out", str(out), "--no-progress"]) == 2
    assert "differs in: clip_checkpoint_sha256" in capsys.readouterr().err


def test_files_follow_the_umask(tmp_path):
    import os

    from bench.results import write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644


def test_empty_or_non_integer_inputs_are_errors():
    from geomstruct.metrics import alignment, modality_gap
    from geomstruct.sampling import balanced_sample

    empty = np.zeros((0, 4), dtype=np.float32)
    for metric in (modality_gap, alignment):
        with pytest.raises(ValueError, match="no point"):
            metric(empty, empty)
    with pytest.raises(ValueError, match="integer class ids"):
        balanced_sample(np.array([0.5, 1.0, 2.0]), 2)
    assert balanced_sample(np.array([0.0, 1.0, 1.0]), 1).counts == {0: 1, 1: 1}  # whole floats are ids


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nkind: distill\ndefaults: [1, 2]\ngrid: {loss: [similarity], seed: [0]}\n", "defaults must be"),
        ("name: x\nkind: distill\ngrid: {loss: similarity, seed: [0]}\n", "must be a list"),
        ("name: x\nkind: distill\ngrid: {loss: [similarity], seed: [0\n", "not valid YAML"),
    ],
)
def test_malformed_suite_files_say_what_is_wrong(text, message, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["--suite", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err
