"""The set-up API: the dataset registry, the per-process Workspace, the one atomic writer and the run-folder reader."""

from __future__ import annotations

import errno
import hashlib
import json
import os

import pytest
import torch

from bench.config import DistillConfig
from bench.data.classes import NUSCENES_CLASSES, SEMANTICKITTI_CLASSES
from bench.data.registry import DATASETS, READERS, class_names, open_dataset, reader, vocabulary
from bench.files import read_json, write_bytes, write_json
from bench.results import RunDir, finished_runs
from bench.workspace import Workspace
from models.teachers import class_phrases
from tests.conftest import TINY_DEFAULTS


def test_the_registry_reads_classes_and_vocabulary_from_the_readers():
    assert DATASETS == ("synthetic", "nuscenes", "semantickitti") == tuple(READERS)
    assert class_names("synthetic") == class_names("nuscenes") == NUSCENES_CLASSES
    assert class_names("semantickitti") == SEMANTICKITTI_CLASSES
    assert [vocabulary(name) for name in DATASETS] == ["nuscenes", "nuscenes", "semantickitti"]
    for name in DATASETS:  # every vocabulary has one phrase list per class of the label space, in label order
        assert tuple(class_phrases(vocabulary(name))) == class_names(name) == reader(name).classes
    with pytest.raises(ValueError, match="unknown dataset 'kitti360'; valid datasets: synthetic, nuscenes"):
        open_dataset("kitti360", "train", None)


def test_a_workspace_sets_up_each_thing_once(tmp_path):
    values = {**TINY_DEFAULTS, "dataroot": str(tmp_path / "scenes"), "feature_cache": str(tmp_path / "features")}
    cfg = DistillConfig(loss="similarity", seed=0, **values)
    workspace = Workspace()
    teacher = workspace.teacher(cfg, torch.device("cpu"))
    assert workspace.teacher(cfg, torch.device("cpu")) is teacher
    first = workspace.scenes(cfg, "val", teacher, progress=False)
    again = workspace.scenes(cfg, "val", teacher, progress=False)
    assert first.dataset is again.dataset and len(workspace.filled) == 1
    assert Workspace().teacher(cfg, torch.device("cpu")) is not teacher  # nothing shared between workspaces
    weights = tmp_path / "weights.pt"
    write_bytes(weights, b"weights")
    assert workspace.checkpoint_sha256(weights) == hashlib.sha256(b"weights").hexdigest()
    assert workspace.checkpoint_sha256(weights) and len(workspace.hashes) == 1


def test_the_atomic_writer_names_the_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    write_json(tmp_path / "a" / "b.json", {"x": 1})  # the folder is created
    assert read_json(tmp_path / "a" / "b.json") == {"x": 1}
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a" / "b.json").stat().st_mode & 0o777 == 0o666 & ~mask  # what open() would give

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match=r"cannot write .*a/c\.bin: No space left on device") as raised:
        write_bytes(tmp_path / "a" / "c.bin", b"data")
    assert raised.value.errno == errno.ENOSPC
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.json"]  # no temporary, no partial file


def test_finished_runs_read_config_and_metrics_with_defaults(tmp_path):
    for name, config in (("b", {"steps": 5}), ("a", None), ("c", {"steps": 7})):
        folder = tmp_path / name
        folder.mkdir()
        if config is not None:
            (folder / "config.json").write_text(json.dumps(config))
        (folder / "metrics.json").write_text(json.dumps({"seed": name}))
    (tmp_path / "c" / "metrics.json").unlink()  # unfinished: left out
    runs = finished_runs(tmp_path, defaults={"steps": 1, "lr": 0.1})
    assert list(runs) == ["a", "b"]
    assert runs["a"].config is None and runs["b"].config == {"steps": 5, "lr": 0.1}
    assert runs["b"].metrics == {"seed": "b"} and runs["b"].name == "b"
    assert list(finished_runs(tmp_path, ["c", "b"])) == ["b"]
    (tmp_path / "b" / "metrics.json").write_text("{")
    with pytest.raises(ValueError, match=r"/b: unreadable run .*not valid JSON"):
        RunDir(tmp_path / "b").read()
