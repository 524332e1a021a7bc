"""The nuScenes path end to end on nuScenes-format fixtures (the synthetic world in the devkit layout): table
versions, the lidarseg check, a dataroot without labels, SLidR's 1% subset and the holdout split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.data.fewshot import read_split_file
from bench.data.nuscenes import HOLDOUT_EVERY, HOLDOUT_OFFSET, NuScenesDataset, split_scene_names
from bench.data.registry import open_dataset
from bench.data.synthetic.nuscenes_format import write_nuscenes_dataroot
from bench.run import main
from geomstruct.run_folder import read_config
from models.teachers.clip import CLIPTeacher
from tests.conftest import small_world, write_suite


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nuscenes-mini")
    return write_nuscenes_dataroot(root, "v1.0-mini", {"mini_train": 2, "mini_val": 1}, 2, config=small_world())


@pytest.fixture(scope="module")
def checkpoint(tiny_arch, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "tiny.pt"
    torch.save(CLIPTeacher(tiny_arch, seed=0).model.state_dict(), path)
    return path


def _suite(tmp_path: Path, root: Path, tiny_arch: str, checkpoint: Path, **overrides) -> Path:
    values = {
        "dataset": "nuscenes",
        "teacher": "clip",
        "clip_arch": tiny_arch,
        "clip_checkpoint": str(checkpoint),
        "out_dim": 32,
        "crop_radius": 10.0,
        "steps": 4,
        "ood_dataset": "synthetic",
        "ood_dataroot": str(tmp_path / "ood"),
        "feature_cache": str(tmp_path / "features"),
        **overrides,
    }
    loss = [{"name": "contrastive", "params": {"tau": 0.07}}]
    return write_suite(tmp_path / "nusc.yaml", root, loss, [0], **values)


def test_mini_version_runs_every_protocol(mini_root, tiny_arch, checkpoint, tmp_path, capsys):
    suite = _suite(tmp_path, mini_root, tiny_arch, checkpoint)
    # the default version is refused up front, naming the folder and the fix
    assert main(["--suite", str(suite), "--out", str(tmp_path / "a"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{mini_root} has no table folder 'v1.0-trainval'" in err and "--version v1.0-mini" in err
    assert main(["--suite", str(suite), "--out", str(tmp_path / "b"), "--no-progress", "--version", "v1.0-mini"]) == 0
    out = capsys.readouterr().out
    assert "feature cache" in out and "scans/s" in out  # size and fill rate printed
    metrics = json.loads((tmp_path / "b" / "contrastive-tau0.07-s0" / "metrics.json").read_text())
    assert metrics["dataset"] == "nuscenes" and metrics["geometry"]["T"] is not None
    for protocol in ("zero_shot", "linear_probe", "few_shot", "few_shot_ood"):
        assert 0 <= metrics[protocol]["miou"] <= 1 and metrics[protocol]["points"] > 0
    assert metrics["few_shot"]["train_scans"] == 2  # the first mini_train scene (every 100th), 2 keyframes
    config = read_config(tmp_path / "b" / "contrastive-tau0.07-s0")  # flat form of the sectioned file
    assert config["version"] == "v1.0-mini"


def test_dataroot_without_lidarseg_distils(tiny_arch, checkpoint, tmp_path, capsys):
    root = write_nuscenes_dataroot(tmp_path / "root", "v1.0-mini", {"mini_train": 1, "mini_val": 1}, 2,
                                   lidarseg=False, config=small_world())  # fmt: skip
    suite = _suite(tmp_path, root, tiny_arch, checkpoint, version="v1.0-mini")
    assert main(["--suite", str(suite), "--out", str(tmp_path / "a"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "lidarseg" in err and "zero_shot, linear_probe, few_shot" in err and "--protocols none" in err
    assert not (tmp_path / "a").exists()  # refused before anything ran
    assert main(["--suite", str(suite), "--out", str(tmp_path / "b"), "--no-progress", "--protocols", "none"]) == 0
    metrics = json.loads((tmp_path / "b" / "contrastive-tau0.07-s0" / "metrics.json").read_text())
    geometry = metrics["geometry"]
    assert geometry["U"] > 0 and geometry["G"] > 0 and geometry["T"] is None and geometry["S"] is None
    assert metrics["geometry_set"]["n"] > 0 and "zero_shot" not in metrics


def test_trainval_splits_holdout_and_the_one_percent_file(tmp_path):
    root = write_nuscenes_dataroot(tmp_path, "v1.0-trainval", {"train": 7, "val": 1}, 1, config=small_world())
    train_names = split_scene_names("train")
    few = open_dataset("nuscenes", "train_1pct", root, version="v1.0-trainval")
    in_root = [n for n in read_split_file("nuscenes_train_1pct.txt") if n in train_names[:7]]
    assert in_root == [train_names[0]]  # SLidR's 1%: every 100th train scene, read from the split file
    assert [few.index.scenes[few._row[t]] for t in few.ids] == in_root
    holdout = NuScenesDataset(root, "holdout", "v1.0-trainval")
    fit = NuScenesDataset(root, "train_fit", "v1.0-trainval")
    assert [holdout.index.scenes[holdout._row[t]] for t in holdout.ids] == [train_names[HOLDOUT_OFFSET]]
    assert len(fit) == 6 and not set(fit.ids) & set(holdout.ids)
    assert len(split_scene_names("holdout")) == 70 == 700 // HOLDOUT_EVERY
    assert not set(split_scene_names("holdout")) & set(split_scene_names("train_1pct"))
    assert split_scene_names("val", "v1.0-mini") == split_scene_names("mini_val")
