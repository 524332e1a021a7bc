"""The prepared GPU check (benchmarks/gpu/check.py) runs: its CPU dry run (``--device cpu --tiny``) goes through every
part's code path, the CUDA tests being recorded as skipped; the loader timing and the merge of parts are checked on
their own."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

CHECK = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu" / "check.py"


@pytest.fixture(scope="module")
def check():
    spec = importlib.util.spec_from_file_location("gpu_check", CHECK)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_check", None)


def test_timed_loader_measures_waits_and_stops_at_its_budget(check, monkeypatch):
    clock = iter(range(0, 1000)).__next__  # every perf_counter() call: one more second
    monkeypatch.setattr(check.time, "perf_counter", lambda: float(clock()))
    record: dict = {}
    loader = check.TimedLoader(list(range(30)), "cpu", record)
    assert list(loader) == list(range(30))
    figures = check.loop_figures(record, warmup=5)
    assert figures["steps"] == 30 and figures["steady_steps"] == 25
    assert 0 < figures["steady_data_wait_fraction"] < 1 and figures["median_wait_ms"] == 1000.0
    record = {}
    with pytest.raises(check.LoopBudgetSpent):
        list(check.TimedLoader(list(range(30)), "cpu", record, budget=10))
    assert record["stopped_at_budget"] and 0 < len(record["waits"]) < 30


def test_merge_names_a_part_that_left_no_result(check, tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "part_losses.json").write_text(json.dumps({"status": "ok", "wall_seconds": 1.0, "cases": []}))
    argv = ["--merge", "--parts-dir", str(parts), "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert check.main([*argv, "--note", "suite=124", "--note", "students=1"]) == 0
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["parts"]["suite"] == {"status": "timeout", "error": "timed out"}
    assert report["parts"]["students"]["error"] == "exited 1 without a result"
    assert report["parts"]["tests"]["error"] == "not run" and report["parts"]["losses"]["status"] == "ok"
    assert "suite | timeout" in (tmp_path / "out" / "gpu_check.md").read_text()


@pytest.mark.slow
def test_cpu_dry_run_exercises_every_part(check, tmp_path, monkeypatch):
    from models.losses import LOSSES

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert check.main(["--device", "cpu", "--tiny", "--out", str(tmp_path), "--scratch", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    parts = report["parts"]
    assert parts["tests"]["status"] == "skipped" and parts["tests"]["skipped"] >= 5 and parts["tests"]["passed"] == 0
    suite = parts["suite"]
    assert suite["status"] == "ok" and suite["returncode"] == 0 and suite["loop"]["steps"] == 3
    assert 0 <= suite["loop"]["data_wait_fraction"] < 1 and suite["timing_json"]["seconds"]["distill"] > 0
    assert [c["student"] for c in parts["students"]["cases"]] == ["minkunet", "waffleiron"]
    assert all(c["cached_median_seconds"] > 0 for c in parts["students"]["cases"])
    losses = parts["losses"]
    assert losses["status"] == "ok" and [c["loss"] for c in losses["cases"]] == list(LOSSES.names())
    assert all(c["float32_median_ms"] > 0 and "grad_cosine" in c for c in losses["cases"])
    assert "| suite | ok |" in (tmp_path / "gpu_check.md").read_text()
