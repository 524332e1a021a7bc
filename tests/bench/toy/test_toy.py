"""The toy experiment: vMF source (closed forms, calibration, sampling), the training loop, the suite CLI and
the toy report."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from bench import run as bench_run
from bench.suites import load_suite
from bench.toy.experiment import ToyConfig, run_toy
from bench.toy.source import (
    calibrate_kappa,
    make_toy_data,
    mean_resultant_length,
    sample_vmf,
    vmf_tolerance,
    vmf_uniformity,
)
from geomstruct import metrics
from geomstruct import report as geo_report


def test_vmf_closed_forms_against_monte_carlo():
    rng = np.random.default_rng(0)
    for kappa in (1.0, 5.0, 20.0):
        x = sample_vmf(np.array([0.3, -0.2, 0.9]), kappa, 6000, rng)
        assert np.allclose(np.linalg.norm(x, axis=1), 1.0)
        mu = np.array([0.3, -0.2, 0.9]) / np.linalg.norm([0.3, -0.2, 0.9])
        assert (x @ mu).mean() == pytest.approx(mean_resultant_length(kappa), abs=0.01)
        assert metrics.uniformity(x) == pytest.approx(vmf_uniformity(kappa), abs=0.03)
        assert metrics.tolerance(x, np.zeros(len(x))) == pytest.approx(vmf_tolerance(kappa), abs=0.02)


def test_vmf_uniformity_limits():
    # kappa -> 0: uniform on S^2, E[exp(s x.y)] = sinh(s)/s, so U = s - log(sinh(s)/s) with s = 2t = 4
    assert vmf_uniformity(1e-3) == pytest.approx(4.0 - math.log(math.sinh(4.0) / 4.0), abs=1e-3)
    assert vmf_uniformity(500.0) < 0.02  # concentrated: nearly identical vectors


def test_calibrated_kappa_hits_the_paper_values():
    kappa = calibrate_kappa()
    assert vmf_uniformity(kappa) == pytest.approx(0.89, abs=0.01)
    assert vmf_tolerance(kappa) == pytest.approx(0.66, abs=0.01)


def test_toy_data_layout():
    data = make_toy_data(3, 50, 5.0, seed=1, in_dim=4)
    assert data.inputs.shape == (150, 4) and data.targets.shape == (150, 3)
    np.testing.assert_array_equal(np.bincount(data.labels), [50, 50, 50])
    again = make_toy_data(3, 50, 5.0, seed=1, in_dim=4)
    np.testing.assert_array_equal(data.targets, again.targets)
    with pytest.raises(ValueError, match="in_dim"):
        make_toy_data(3, 5, 5.0, seed=0, in_dim=2)


def test_run_toy_records_geometry_and_is_deterministic():
    cfg = ToyConfig(
        "3clusters",
        "relational",
        seed=0,
        n_per_cluster=40,
        iterations=30,
        batch_size=64,
        record_every=10,
        snapshots=(0, 10, 30),
    ).resolved()
    m1, traj1, arrays1 = run_toy(cfg, torch.device("cpu"))
    m2, traj2, _ = run_toy(cfg, torch.device("cpu"))
    assert m1 == m2 and traj1 == traj2
    assert [r["iteration"] for r in traj1] == [0, 10, 20, 30]
    final = arrays1["pred_30"]
    assert m1["geometry"]["U"] == pytest.approx(metrics.uniformity(final))
    assert m1["geometry"]["U_2d"] == pytest.approx(metrics.uniformity(arrays1["targets"]))
    assert traj1[-1]["T"] == pytest.approx(metrics.tolerance(final, arrays1["labels"]))
    assert m1["source"]["n_clusters"] == 3 and "U_expected" not in m1["source"]


def test_toy_training_reduces_the_loss():
    cfg = ToyConfig(
        "1cluster", "similarity", seed=0, n_per_cluster=64, iterations=60, batch_size=64, record_every=60, snapshots=()
    ).resolved()
    _, traj, _ = run_toy(cfg, torch.device("cpu"))
    _, traj0, _ = run_toy({**cfg, "iterations": 1}, torch.device("cpu"))
    assert traj[-1]["A"] < traj0[0]["A"]  # predictions moved towards their targets


def test_toy_suite_file_expands_to_every_loss_and_setup():
    suite = load_suite("toy")
    assert suite.kind == "toy"
    combos = {(r["setup"], r["loss"]) for r in suite.runs}
    assert len(combos) == 10
    with pytest.raises(ValueError, match="valid suites: .*toy"):
        load_suite("no-such-suite")


@pytest.mark.slow
def test_suite_cli_end_to_end_then_report(tmp_path, capsys):
    suite = tmp_path / "mini.yaml"
    suite.write_text(
        "name: mini\nkind: toy\ndefaults: {n_per_cluster: 30, iterations: 20, batch_size: 32, record_every: 5,"
        " snapshots: [0, 10, 20], kappa: 5.0, in_dim: 3, hidden: 16, depth: 1, lr: 0.01, uniformity_t: 2.0}\n"
        "grid:\n  setup: [1cluster, 3clusters]\n  loss: [similarity, {name: contrastive, params: {tau: 0.2}}]\n"
        "  seed: [0, 1]\n"
    )
    out = tmp_path / "runs"
    assert bench_run.main(["--suite", str(suite), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "1cluster-contrastive-tau0.2-s1" in printed and "(0 already finished" in printed
    run_dir = out / "3clusters-similarity-s0"
    metrics_json = json.loads((run_dir / "metrics.json").read_text())
    assert metrics_json["loss"] == "similarity" and metrics_json["seed"] == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["kappa"] == 5.0 and config["iterations"] == 20
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["packages"]["torch"] == torch.__version__.split("+")[0] or env["packages"]["torch"]
    traj = pd.read_csv(run_dir / "trajectory.csv")
    assert list(traj["iteration"]) == [0, 5, 10, 15, 20]
    # geometry in metrics.json recomputed from the stored arrays
    with np.load(run_dir / "snapshots.npz") as snap:
        assert metrics_json["geometry"]["T"] == pytest.approx(metrics.tolerance(snap["pred_20"], snap["labels"]))

    # a second invocation skips finished runs
    mtime = (run_dir / "metrics.json").stat().st_mtime_ns
    assert bench_run.main(["--suite", str(suite), "--out", str(out), "--no-progress"]) == 0
    assert "(8 already finished" in capsys.readouterr().out
    assert (run_dir / "metrics.json").stat().st_mtime_ns == mtime

    # a different configuration into the same folder is refused; nothing is overwritten
    assert bench_run.main(["--suite", str(suite), "--out", str(out), "--steps", "7", "--no-progress"]) == 2
    assert "different configuration" in capsys.readouterr().err
    assert (run_dir / "metrics.json").stat().st_mtime_ns == mtime

    reports = tmp_path / "reports"
    assert geo_report.main(["--runs", str(out), "--out", str(reports)]) == 0
    for name in (
        "toy_initial_outputs.png",
        "toy_evolution_1cluster.png",
        "toy_evolution_3clusters.png",
        "toy_uniformity.png",
        "toy_table.csv",
        "toy_table.md",
    ):
        assert (reports / "toy" / name).stat().st_size > 0
    table = pd.read_csv(reports / "toy" / "toy_table.csv")
    row = table[(table["setup"] == "3clusters") & (table["loss"] == "similarity")].iloc[0]
    u = [json.loads((out / f"3clusters-similarity-s{s}" / "metrics.json").read_text())["geometry"]["U"] for s in (0, 1)]
    assert row["n"] == 2 and row["U_mean"] == pytest.approx(np.mean(u), abs=1e-4)


def test_cli_bad_input(tmp_path, capsys):
    assert bench_run.main(["--suite", "nope"]) == 2
    assert "valid suites" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nkind: toy\ngrid: {setup: [1cluster], loss: [hinge], seed: [0]}\n")
    assert bench_run.main(["--suite", str(bad), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "unknown loss 'hinge'" in capsys.readouterr().err
    assert bench_run.main(["--suite", "toy", "--only", "zzz"]) == 2


def test_report_with_no_runs_and_with_a_broken_run(tmp_path, capsys):
    assert geo_report.main(["--runs", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "no such folder" in err and "no finished run" in err
    broken = tmp_path / "runs" / "broken"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{}")
    assert geo_report.main(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "r")]) == 1
    assert "no metrics.json" in capsys.readouterr().err
