"""geomstruct.report on the run directories of a real (tiny) distill suite: files, table rows, suites and
configurations kept apart, broken runs skipped, the output folder replaced only when the report is complete."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from geomstruct import report as geo_report
from geomstruct.tables import POSTHOC_COLUMNS

pytestmark = pytest.mark.slow  # every test reads a real suite's runs (tiny_runs trains them)


def test_report_from_suite_runs_matches_metrics(tiny_runs, tmp_path):
    out = tmp_path / "reports"
    assert geo_report.main(["--runs", str(tiny_runs), "--out", str(out)]) == 0
    for name in (
        "index.html",
        "pca.png",
        "uniformity_tolerance.png",
        "trajectories.png",
        "gap_vs_performance.png",
        "summary.md",
        "summary.tex",
        "summary.csv",
        "correlations.csv",
        "per_class_zero_shot.csv",
        "predictors.png",
        "predictors.md",
        "predictors.csv",
    ):
        assert (out / name).stat().st_size > 0, name  # fmt: skip
    summary = pd.read_csv(out / "summary.csv").set_index("label")
    runs = [json.loads(p.read_text()) for p in sorted(tiny_runs.glob("*/metrics.json"))]
    assert len(summary) == len(runs)
    for m in runs:
        label = m["loss"] + (" (" + ", ".join(f"{k}={v}" for k, v in sorted(m["params"].items())) + ")"
                             if m["params"] else "")  # fmt: skip
        row = summary.loc[label]
        for key in ("U", "T", "G", "dU", "dT", "S", "U_2d", "T_2d", "CKA", "mknn", "erank_3d", "erank_2d",
                    "erank_ratio"):  # fmt: skip
            assert row[f"{key}_mean"] == pytest.approx(m["geometry"][key], rel=1e-5, abs=1e-9)
        assert row["collapsed"] == int(m["geometry"]["collapsed"])
        for protocol in ("zero_shot", "linear_probe", "few_shot", "few_shot_ood"):
            assert row[f"{protocol}_mean"] == pytest.approx(100 * m[protocol]["miou"], rel=1e-5)
        assert m["class_names"][0] == "barrier" and len(m["class_names"]) == 16
    per_class = pd.read_csv(out / "per_class_zero_shot.csv").set_index("label")
    assert set(per_class.columns) <= set(runs[0]["class_names"])
    assert np.isfinite(per_class.to_numpy(float)).any()
    predictors = pd.read_csv(out / "predictors.csv")
    assert set(predictors["quantity"]) == {"dU", "dT", "S", "G", "CKA", "mknn", "erank_ratio", *POSTHOC_COLUMNS}
    assert (predictors["n"] == len(runs)).all() and not predictors["reliable"].any()  # 2 students: not a finding
    assert "(too few)" in (out / "predictors.md").read_text()


def test_structure_metrics_of_every_run_recomputed_from_features(tiny_runs):
    from geomstruct.structure import MKNN_QUERIES, structure

    for folder in sorted(p for p in tiny_runs.iterdir() if (p / "metrics.json").is_file()):
        m = json.loads((folder / "metrics.json").read_text())
        with np.load(folder / "features.npz") as f:
            k3d, q2d = f["k3d"].astype(np.float32), f["q2d"].astype(np.float32)
        again = structure(k3d, q2d, mknn_queries=MKNN_QUERIES, seed=m["geometry_set"]["seed"])
        assert again["mknn_queries"] == len(k3d) and again["mknn_se"] == 0.0  # a small set: exact
        for key, value in again.items():
            assert m["geometry"][key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
        assert 0.0 <= m["geometry"]["mknn"] <= 1.0 and -1e-9 <= m["geometry"]["CKA"] <= 1.0 + 1e-9


# Reliability (issue 13, items 1-2): suites and configurations are never pooled, every row names its run folders,
# a broken run is skipped with a warning naming the file, and the report replaces its folder only when complete.


def _copy_runs(src, dst):
    """A copy of a suite's run folders (without the checkpoints, which the report does not read)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoint.pt"))
    return dst


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _tree(folder):
    """``{relative path: bytes}`` of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


REPORT_NAMES = ("index.html", "pca.png", "uniformity_tolerance.png", "trajectories.png", "gap_vs_performance.png",
                "summary.md", "summary.csv", "correlations.csv", "per_class_zero_shot.csv")  # fmt: skip


def test_report_refuses_to_pool_two_suites_and_names_the_folders_of_every_row(tiny_runs, tmp_path, capsys):
    root = tmp_path / "runs"
    _copy_runs(tiny_runs, root / "full")
    _copy_runs(tiny_runs, root / "smoke")  # the same configurations, another suite
    out = tmp_path / "reports"
    assert geo_report.main(["--runs", str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "several suites" in err and "never pooled" in err
    assert f"full (distill): 2 runs in {(root / 'full').as_posix()}" in err
    assert f"smoke (distill): 2 runs in {(root / 'smoke').as_posix()}" in err
    assert f"--runs {(root / 'full').as_posix()}" in err
    assert not out.exists()  # nothing written
    assert geo_report.main(["--runs", str(root / "full"), "--out", str(root)]) == 2  # never replaces the runs
    assert "holds the run directories" in capsys.readouterr().err

    assert geo_report.main(["--runs", str(root / "full"), "--out", str(out)]) == 0
    summary = pd.read_csv(out / "summary.csv").set_index("label")
    names = sorted(p.name for p in tiny_runs.iterdir() if (p / "metrics.json").is_file())
    assert list(summary["n"]) == [1, 1]
    assert sorted(summary["runs"]) == [(root / "full" / name).as_posix() for name in names]
    page = (out / "index.html").read_text()
    assert "Run folders of every row" in page
    assert all(f"<code>{(root / 'full' / name).as_posix()}</code>" in page for name in names)
    assert "smoke" not in page


def test_report_keeps_configurations_apart_and_pools_only_seeds(tiny_runs, tmp_path):
    suite = _copy_runs(tiny_runs, tmp_path / "runs" / "tiny")
    source = suite / "contrastive-tau0.07-s0"
    seed1 = suite / "contrastive-tau0.07-s1"  # another seed, its data elsewhere: the same configuration
    shutil.copytree(source, seed1)
    _edit_json(seed1 / "config.json", seed=1, dataroot="/elsewhere/scenes", checkpoint_every=5)
    _edit_json(seed1 / "metrics.json", seed=1)
    longer = suite / "contrastive-tau0.07-steps24-s0"  # another configuration of the same loss
    shutil.copytree(source, longer)
    _edit_json(longer / "config.json", steps=24)
    out = tmp_path / "reports"
    assert geo_report.main(["--runs", str(suite), "--out", str(out)]) == 0
    summary = pd.read_csv(out / "summary.csv").set_index("label")
    assert summary.loc["contrastive (tau=0.07) [steps=12]", "n"] == 2
    assert summary.loc["contrastive (tau=0.07) [steps=12]", "runs"] == f"{source.as_posix()}; {seed1.as_posix()}"
    assert summary.loc["contrastive (tau=0.07) [steps=24]", "n"] == 1
    assert summary.loc["contrastive (tau=0.07) [steps=24]", "runs"] == longer.as_posix()
    assert summary.loc["relational (lam=1.0)", "n"] == 1
    assert "contrastive (tau=0.07) [steps=24]" in (out / "summary.md").read_text()


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _drop_geometry(path):
    metrics = json.loads(path.read_text())
    del metrics["geometry"]
    path.write_text(json.dumps(metrics))


def _not_utf8(path):
    path.write_bytes(path.read_bytes().replace(b"step", "stép".encode("latin-1"), 1))


@pytest.mark.parametrize(
    ("file", "damage", "reason"),
    [
        ("features.npz", _truncate, "truncated or corrupt"),
        ("metrics.json", _drop_geometry, "no 'geometry'"),
        ("trajectory.csv", _not_utf8, "not UTF-8"),
    ],
)
def test_report_skips_a_run_with_a_broken_file_and_names_it(tiny_runs, tmp_path, capsys, file, damage, reason):
    suite = _copy_runs(tiny_runs, tmp_path / "runs" / "tiny")
    broken = suite / "contrastive-tau0.07-s0" / file
    damage(broken)
    out = tmp_path / "reports"
    assert geo_report.main(["--runs", str(suite), "--out", str(out)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert any(str(broken) in line and reason in line and "skipped" in line for line in warnings), warnings
    assert str(broken) in (out / "index.html").read_text()  # listed in the report's warnings
    for name in REPORT_NAMES:
        assert (out / name).stat().st_size > 0, name
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["label"]) == ["relational (lam=1.0)"]
    assert list(summary["runs"]) == [(suite / "relational-lam1.0-s0").as_posix()]


def test_interrupted_report_leaves_the_previous_report_intact(tiny_runs, tmp_path, monkeypatch):
    suite = _copy_runs(tiny_runs, tmp_path / "runs" / "tiny")
    out = tmp_path / "out" / "reports"
    assert geo_report.main(["--runs", str(suite), "--out", str(out)]) == 0
    (out / "README.md").write_text("notes kept by hand\n")
    before = _tree(out)

    shutil.rmtree(suite / "relational-lam1.0-s0")  # the next report would differ

    def fail(*args, **kwargs):
        raise RuntimeError("disk full while drawing")

    monkeypatch.setattr(geo_report, "plot_trajectories", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        geo_report.main(["--runs", str(suite), "--out", str(out)])
    assert _tree(out) == before
    assert [p.name for p in out.parent.iterdir()] == ["reports"]  # no partial folder left next to it


def test_report_replaces_its_files_and_keeps_the_others(tiny_runs, tmp_path):
    suite = _copy_runs(tiny_runs, tmp_path / "runs" / "tiny")
    out = tmp_path / "reports"
    assert geo_report.main(["--runs", str(suite), "--out", str(out)]) == 0
    assert (out / "pca.png").is_file()
    (out / "README.md").write_text("how these were made\n")
    (out / "notes").mkdir()
    (out / "notes" / "draft.txt").write_text("draft\n")
    (out / "toy").mkdir()
    (out / "toy" / "toy_table.md").write_text("a toy table of earlier runs\n")

    for features in suite.glob("*/features.npz"):
        features.unlink()  # no PCA figure this time
    assert geo_report.main(["--runs", str(suite), "--out", str(out)]) == 0
    assert not (out / "pca.png").exists() and "pca.png" not in (out / "index.html").read_text()
    assert not (out / "toy" / "toy_table.md").exists() and "toy_table" not in (out / "index.html").read_text()
    assert (out / "README.md").read_text() == "how these were made\n"
    assert (out / "notes" / "draft.txt").read_text() == "draft\n"
    for path in out.rglob("*"):
        relative = path.relative_to(out).as_posix()
        assert path.is_dir() or relative in ("README.md", "notes/draft.txt") or geo_report.is_report_file(relative)


def test_report_of_a_distill_suite_and_the_toy_suite(tiny_runs, tmp_path, capsys):
    from bench.run import main as bench_main

    root = tmp_path / "runs"
    _copy_runs(tiny_runs, root / "full")
    toy_suite = tmp_path / "toy.yaml"
    toy_suite.write_text(
        "name: toy\nkind: toy\ndefaults: {n_per_cluster: 20, iterations: 10, batch_size: 16, record_every: 5,"
        " snapshots: [0, 10], kappa: 5.0, in_dim: 3, hidden: 8, depth: 1, lr: 0.01}\n"
        "grid:\n  setup: [1cluster]\n  loss: [similarity]\n  seed: [0, 1]\n"
    )
    assert bench_main(["--suite", str(toy_suite), "--out", str(root / "toy"), "--no-progress"]) == 0
    out = tmp_path / "reports"
    assert geo_report.main(["--runs", str(root / "full"), str(root / "toy"), "--out", str(out)]) == 0
    assert (out / "summary.csv").is_file() and (out / "toy" / "toy_uniformity.png").is_file()
    toy_table = pd.read_csv(out / "toy" / "toy_table.csv")
    toy_runs = sorted(p.as_posix() for p in (root / "toy").iterdir() if p.is_dir())
    assert list(toy_table["n"]) == [2] and toy_table["runs"][0].split("; ") == toy_runs
    page = (out / "index.html").read_text()
    assert "src='toy/toy_uniformity.png'" in page and "src='pca.png'" in page
    assert "1cluster: similarity" in page
    (out / "toy" / "README.md").write_text("what the toy figures show\n")
    assert geo_report.main(["--runs", str(root / "full"), str(root / "toy"), "--out", str(out)]) == 0
    assert (out / "toy" / "README.md").read_text() == "what the toy figures show\n"
    assert pd.read_csv(out / "toy" / "toy_table.csv").equals(toy_table)

    shutil.copytree(root / "toy", root / "toy2")  # a second toy suite: refused
    capsys.readouterr()
    assert geo_report.main(["--runs", str(root), "--out", str(out)]) == 2
    assert "toy2 (toy)" in capsys.readouterr().err
