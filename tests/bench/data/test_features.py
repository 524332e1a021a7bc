"""The feature cache: float16 files per sample, manifest, atomic writes, resume after an interruption, filling
by DataLoader workers, the text-embedding cache, CLI."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from bench.data.features import FeatureCache, main, teacher_options, text_embeddings
from bench.data.synthetic import SyntheticDataset
from bench.files import STALE_TEMPORARY_SECONDS
from models.teachers import build_teacher
from models.teachers.base import zero_shot_classifier


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> SyntheticDataset:
    return SyntheticDataset(tmp_path_factory.mktemp("scenes"), "val", sizes={"val": 3}, progress=False)


@pytest.mark.slow
def test_fill_stores_float16_patch_grids_with_a_manifest(tmp_path, scenes, teacher):
    cache = FeatureCache(tmp_path, "synthetic", teacher.identity)
    report = cache.fill(scenes, teacher, progress=False)
    assert (report.written, report.cached, report.total) == (3, 3, 3)
    assert report.bytes_on_disk == 3 * cache.path(scenes.ids[0]).stat().st_size and report.rate > 0
    assert "3/3 scans cached" in report.summary(cache.folder) and "scans/s with 0 workers" in report.summary(
        cache.folder
    )
    first = cache.load(scenes.ids[0])
    assert first.dtype == np.float16 and first.shape == (6, 512, 14, 26)
    expected = teacher.scan_features(scenes[0]).to(torch.float16).numpy()
    np.testing.assert_array_equal(first, expected)
    manifest = cache.manifest()
    assert manifest["complete"] and manifest["teacher"] == teacher.identity and manifest["dim"] == 512
    assert sorted(manifest["samples"]) == sorted(scenes.ids) and manifest["grid"] == [14, 26]
    assert manifest["cameras"][0] == "CAM_FRONT"
    assert cache.fill(scenes, teacher, progress=False).written == 0  # nothing left to do
    with pytest.raises(KeyError, match="not in the feature cache"):
        cache.load("nuscenes-999999")


def test_interrupted_fill_resumes_to_the_same_result(tmp_path, scenes, teacher):
    reference = FeatureCache(tmp_path / "once", "synthetic", teacher.identity)
    reference.fill(scenes, teacher, progress=False)
    resumed = FeatureCache(tmp_path / "twice", "synthetic", teacher.identity)
    assert resumed.fill(scenes, teacher, progress=False, max_new=1).written == 1  # "interrupted" after one
    assert not resumed.manifest()["complete"] and len(resumed.manifest()["samples"]) == 1
    killed = resumed.folder / ".left-by-a-killed-writer.npy.tmp"
    killed.write_bytes(b"partial")
    os.utime(killed, (time.time() - 2 * STALE_TEMPORARY_SECONDS,) * 2)
    writing = resumed.folder / ".being-written-by-another-process.npy.tmp"  # e.g. a worker of bench.run --jobs
    writing.write_bytes(b"partial")
    assert resumed.fill(scenes, teacher, progress=False).written == 2
    assert not killed.exists() and writing.exists()  # only the stale one is removed
    writing.unlink()
    for scan_id in scenes.ids:
        np.testing.assert_array_equal(resumed.load(scan_id), reference.load(scan_id))
    assert resumed.manifest()["samples"] == reference.manifest()["samples"] and resumed.manifest()["complete"]


def test_workers_fill_the_same_bytes(tmp_path, scenes, teacher):
    serial = FeatureCache(tmp_path / "serial", "synthetic", teacher.identity)
    serial.fill(scenes, teacher, workers=0, progress=False)
    parallel = FeatureCache(tmp_path / "parallel", "synthetic", teacher.identity)
    report = parallel.fill(scenes, teacher, workers=2, progress=False)
    assert report.written == 3 and report.workers == 2
    for scan_id in scenes.ids:
        assert parallel.path(scan_id).read_bytes() == serial.path(scan_id).read_bytes()


def test_text_embeddings_are_cached_under_the_teacher_identity(tmp_path, teacher):
    first = text_embeddings(teacher, "nuscenes", tmp_path)
    (path,) = (tmp_path / "text" / teacher.identity).glob("nuscenes-*.npy")
    torch.testing.assert_close(first, zero_shot_classifier(teacher, "nuscenes").float())
    np.save(path, np.zeros((16, 512), dtype=np.float32))  # a cached file is read back, not recomputed
    assert not text_embeddings(teacher, "nuscenes", tmp_path).any()
    assert text_embeddings(teacher, "nuscenes", None).shape == (16, 512)


def test_ids_with_slashes_and_identity_checks(tmp_path, scenes, teacher):
    cache = FeatureCache(tmp_path, "semantickitti", teacher.identity)
    assert cache.path("08/000123").name == "08%2F000123.npy" and cache.path("08/000123").parent == cache.folder
    other = FeatureCache(tmp_path, "synthetic", "clip-ViT-B-16-abc-224x416")
    with pytest.raises(ValueError, match="does not match"):
        other.fill(scenes, teacher, progress=False)
    cache = FeatureCache(tmp_path, "synthetic", teacher.identity)
    cache.fill(scenes, teacher, progress=False, max_new=1)
    manifest = json.loads((cache.folder / "manifest.json").read_text())
    (cache.folder / "manifest.json").write_text(json.dumps({**manifest, "dim": 768}))
    with pytest.raises(ValueError, match="different settings"):
        cache.fill(scenes, teacher, progress=False)


def test_cli_fills_and_resumes(tmp_path, scenes, capsys):
    args = ["--root", str(tmp_path / "features"), "--dataroot", str(scenes.folder.parent), "--split", "val"]
    assert main([*args, "--size", "3", "--limit", "2", "--no-progress"]) == 0
    assert "2/3 scans cached" in capsys.readouterr().out
    assert main([*args, "--size", "3", "--no-progress", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "3/3 scans cached" in out and "wrote 1 in" in out and "with 1 workers" in out


@pytest.mark.slow
def test_cli_help_and_clip_needs_a_checkpoint(tmp_path):
    out = subprocess.run([sys.executable, "-m", "bench.data.features", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--clip-checkpoint" in out.stdout and "resumes" in out.stdout
    with pytest.raises(SystemExit):
        main(["--root", str(tmp_path), "--teacher", "clip"])


def test_teacher_options_are_checked_by_the_teachers_options_dataclass(tmp_path):
    weights = tmp_path / "w.pt"
    assert teacher_options("synthetic", {}) == {}
    got = teacher_options("clip", {"arch": "ViT-L-14", "checkpoint": str(weights)})
    assert got == {"arch": "ViT-L-14", "checkpoint": str(weights), "allow_torchscript": False}
    with pytest.raises(ValueError, match=r"teacher clip has no option depth \(its options: arch, checkpoint"):
        teacher_options("clip", {"depth": 3, "checkpoint": str(weights)})
    with pytest.raises(ValueError, match="needs --clip-checkpoint"):
        teacher_options("clip", {})
    with pytest.raises(ValueError, match="unknown teacher 'dino'"):
        teacher_options("dino", {})


def test_cli_builds_a_plugin_teacher_with_its_options(tmp_path, scenes, capsys, monkeypatch):
    """A teacher defined outside the package fills the cache from the command line: --teacher module:object and its
    options by --teacher-option, with no change to the CLI."""
    (tmp_path / "cli_teacher_plugin.py").write_text(
        "from models.teachers.synthetic import SyntheticTeacher\n\n"
        "def scaled(device, gain=1.0):\n"
        "    teacher = SyntheticTeacher.from_file(device=device)\n"
        "    teacher.gain = gain\n"
        "    return teacher\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    args = ["--root", str(tmp_path / "features"), "--dataroot", str(scenes.folder.parent), "--split", "val"]
    plugin = ["--teacher", "cli_teacher_plugin:scaled", "--teacher-option", "gain=2.5"]
    assert main([*args, *plugin, "--size", "2", "--no-progress"]) == 0
    assert "2/2 scans cached" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*args, "--teacher", "synthetic", "--teacher-option", "gain", "--size", "2", "--no-progress"])
    assert "--teacher-option takes KEY=VALUE" in capsys.readouterr().err


def _add_one_at_a_time(folder: str, ids: list[str], start) -> None:
    """One process of the concurrent-manifest test: record ``ids`` in the manifest one update at a time."""
    teacher = build_teacher("synthetic")
    cache = FeatureCache(folder, "synthetic", teacher.identity)
    start.wait()  # both processes imported: the updates overlap
    for scan_id in ids:
        cache._update_manifest(teacher, [scan_id], {})


@pytest.mark.slow
def test_processes_updating_the_manifest_at_once_keep_every_entry(tmp_path, teacher):
    """Two processes filling one cache (bench.run --jobs) each read-modify-write the manifest many times: without
    the lock, one's write regularly drops the other's latest entries."""
    cache = FeatureCache(tmp_path, "synthetic", teacher.identity)
    cache.folder.mkdir(parents=True)
    halves = [[f"a{i:03d}" for i in range(150)], [f"b{i:03d}" for i in range(150)]]
    for scan_id in halves[0] + halves[1]:
        cache.path(scan_id).write_bytes(b"")  # has() only looks at the file
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    workers = [context.Process(target=_add_one_at_a_time, args=(str(tmp_path), half, start)) for half in halves]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    assert sorted(cache.manifest()["samples"]) == sorted(halves[0] + halves[1])
