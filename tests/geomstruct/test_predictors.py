"""The predictors of issue 30 item 4 (geomstruct.structure: calibrated CKA and mutual k-NN, LiDAR, alpha-ReQ)
against brute-force references written from the papers' formulas, and the post-hoc command
(geomstruct.predictors) that computes them for finished runs without rewriting their metrics.json."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.linalg import hadamard
from scipy.stats import ortho_group

from geomstruct import predictors as gp
from geomstruct import run_folder as rf
from geomstruct import structure as st
from geomstruct.runs import load_runs, structure_values
from geomstruct.tables import POSTHOC_COLUMNS, PREDICTORS_HEADER, add_structure_columns, predictor_table
from tests.geomstruct.conftest import write_run_folder


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _kernel_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA in its HSIC form with explicit N x N kernels and centring matrix (rows normalised)."""
    x, y = _unit(x), _unit(y)
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = h @ x @ x.T @ h, h @ y @ y.T @ h
    return np.trace(k @ l_) / math.sqrt(np.trace(k @ k) * np.trace(l_ @ l_))


def _loop_mknn(x: np.ndarray, y: np.ndarray, k: int) -> float:
    """Mutual k-NN by sorting every row (no ties in continuous features)."""
    sx, sy = _unit(x) @ _unit(x).T, _unit(y) @ _unit(y).T
    np.fill_diagonal(sx, -np.inf)
    np.fill_diagonal(sy, -np.inf)
    nx, ny = np.argsort(-sx, axis=1)[:, :k], np.argsort(-sy, axis=1)[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(nx, ny, strict=True)]))


def _related(n: int, d: int, seed: int, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * np.linspace(2.0, 0.2, d)
    return x, x @ rng.standard_normal((d, d)) / math.sqrt(d) + noise * rng.standard_normal((n, d))


# -- calibrated CKA ------------------------------------------------------------------------------------------------


def test_cka_chance_is_the_mean_over_every_shuffle():
    x, y = _related(6, 3, seed=0)
    brute = np.mean([_kernel_cka(x, y[list(p)]) for p in itertools.permutations(range(6))])  # all 720 pairings
    assert st.cka_chance(x, y) == pytest.approx(brute, rel=1e-10)
    cal = st.calibrated_cka(x, y)
    assert cal.raw == pytest.approx(_kernel_cka(x, y), rel=1e-10)
    assert cal.value == pytest.approx(cal.raw - brute, rel=1e-9, abs=1e-12)
    assert cal.chance_se == 0.0 and cal.permutations == 0


def test_shuffled_cka_equals_a_loop_over_the_same_shuffles_and_estimates_the_exact_chance():
    x, y = _related(200, 12, seed=1)
    cal = st.calibrated_cka(x, y, permutations=200, seed=5)
    rng = np.random.default_rng(5)  # the draws documented: default_rng(seed).permutation(N), one per shuffle
    loop = [_kernel_cka(x, y[rng.permutation(200)]) for _ in range(200)]
    assert cal.chance == pytest.approx(np.mean(loop), rel=1e-9)
    assert cal.chance_se == pytest.approx(np.std(loop, ddof=1) / math.sqrt(200), rel=1e-6)
    assert cal.value == pytest.approx(_kernel_cka(x, y) - np.mean(loop), rel=1e-9)
    # the Monte Carlo mean estimates the exact expectation: within 4 of its standard errors
    assert abs(cal.chance - st.cka_chance(x, y)) < 4 * cal.chance_se


def test_calibrated_cka_of_independent_features_is_zero_within_the_shuffle_spread():
    """Independent spaces: the true pairing is one more draw from the shuffle distribution, so CKA - chance lies
    within a few standard deviations of that distribution of 0 (4 sd: fixed seeds, and far below the raw value);
    the raw CKA is far above 0 (the bias calibration removes; it grows with the dimension, shrinks with N)."""
    rng = np.random.default_rng(2)
    n, d = 300, 64
    x, y = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    shuffles = st.calibrated_cka(x, y, permutations=100, seed=3)
    spread = shuffles.chance_se * math.sqrt(100)  # the sd of the shuffled CKA values
    cal = st.calibrated_cka(x, y)
    assert cal.raw > 0.15  # about sqrt(PR_x PR_y) / (N - 1) = 64 / 299
    assert abs(cal.value) < 4 * spread and spread < 0.02
    wide = st.calibrated_cka(rng.standard_normal((n, 4 * d)), rng.standard_normal((n, 4 * d)))
    assert wide.chance > 2 * cal.chance and abs(wide.value) < 0.02  # raw CKA grows with width; so does chance


def test_calibrated_cka_is_invariant_to_rotations_and_scale():
    x, y = _related(150, 8, seed=4)
    q = ortho_group.rvs(8, random_state=0)
    a, b = st.calibrated_cka(x, y), st.calibrated_cka(3.0 * x @ q, y @ q.T)
    assert b.value == pytest.approx(a.value, rel=1e-9) and b.chance == pytest.approx(a.chance, rel=1e-9)


# -- calibrated mutual k-NN ----------------------------------------------------------------------------------------


def test_mknn_chance_is_the_mean_over_every_shuffle():
    x, y = _related(7, 4, seed=6)
    brute = np.mean([_loop_mknn(x, y[list(p)], 2) for p in itertools.permutations(range(7))])  # 5040 pairings
    assert st.mknn_chance(7, 2) == pytest.approx(brute, rel=1e-12) == 2 / 6
    cal = st.calibrated_mutual_knn(x, y, k=2)
    assert cal.raw == pytest.approx(_loop_mknn(x, y, 2)) and cal.value == pytest.approx(cal.raw - 2 / 6)


def test_shuffled_mknn_equals_a_loop_over_the_same_shuffles():
    x, y = _related(120, 6, seed=7)
    cal = st.calibrated_mutual_knn(x, y, k=5, permutations=30, seed=9, block_size=17)
    rng = np.random.default_rng(9)
    loop = [_loop_mknn(x, y[rng.permutation(120)], 5) for _ in range(30)]
    assert cal.chance == pytest.approx(np.mean(loop), rel=1e-12)  # pi^-1(N_Y(pi(i))) is the shuffled space's
    assert cal.raw == pytest.approx(_loop_mknn(x, y, 5))
    assert abs(cal.chance - 5 / 119) < 4 * cal.chance_se


def test_calibrated_mknn_with_sampled_queries_subtracts_the_same_chance():
    x, y = _related(300, 6, seed=8)
    cal = st.calibrated_mutual_knn(x, y, k=4, queries=100, seed=1)
    assert cal.raw == pytest.approx(st.mutual_knn(x, y, k=4, queries=100, seed=1))
    assert cal.chance == pytest.approx(4 / 299)


# -- LiDAR ---------------------------------------------------------------------------------------------------------


def _paper_lidar(views: np.ndarray, delta: float, eps: float) -> float:
    """Thilak et al. (2024), Eqs. 1-4, literally: ``views`` (n classes, q views, d), loops over classes."""
    n, q, d = views.shape
    mu_x = views.mean(axis=1)
    mu = mu_x.mean(axis=0)
    sigma_b = sum(np.outer(m - mu, m - mu) for m in mu_x) / (n - 1)
    sigma_w = sum(np.outer(e - mu_x[i], e - mu_x[i]) for i in range(n) for e in views[i]) / (n * (q - 1))
    sigma_w = sigma_w + delta * np.eye(d)
    lam_w, vec_w = np.linalg.eigh(sigma_w)
    inv_sqrt = vec_w @ np.diag(lam_w**-0.5) @ vec_w.T
    lam = np.linalg.eigvalsh(inv_sqrt @ sigma_b @ inv_sqrt)
    lam = np.clip(lam, 0.0, None)
    p = lam / np.abs(lam).sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


@pytest.mark.parametrize("delta", [1e-6, 1e-2])
def test_lidar_equals_the_papers_formula_with_a_point_as_class_and_its_3d_and_2d_features_as_views(delta):
    x, y = _related(60, 10, seed=10, noise=0.5)
    views = np.stack([_unit(x), _unit(y)], axis=1)  # (n, q = 2, d)
    assert st.lidar(x, y, delta=delta) == pytest.approx(_paper_lidar(views, delta, st.LIDAR_EPS), rel=1e-9)
    assert st.lidar(x, y, delta=delta, eps=0.0) == pytest.approx(_paper_lidar(views, delta, 0.0), rel=1e-9)


def test_lidar_invariances_bounds_and_refusals():
    x, y = _related(200, 16, seed=11, noise=0.3)
    q = ortho_group.rvs(16, random_state=1)
    value = st.lidar(x, y)
    assert st.lidar(5.0 * x @ q, 0.5 * y @ q) == pytest.approx(value, rel=1e-8)  # one rotation of both views
    assert 1.0 <= value <= 16.0
    # views that agree up to a disagreement below delta: Sigma_w ~ delta I, so LiDAR is the entropy rank of the
    # covariance eigenvalues of the points
    aligned = st.lidar(x, x + 1e-5 * np.random.default_rng(0).standard_normal(x.shape))
    xc = _unit(x) - _unit(x).mean(axis=0)
    lam = np.linalg.eigvalsh(xc.T @ xc)
    p = lam / lam.sum()
    assert aligned == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-2)
    # unrelated views: Sigma_b ~ Sigma_w / 2 in every direction, a flat LDA spectrum: LiDAR near D (the paper's
    # effective rank reads how evenly, not how much, the spread between points exceeds the views' disagreement)
    assert st.lidar(x, np.random.default_rng(1).standard_normal(x.shape)) > 0.9 * 16
    with pytest.raises(ValueError, match="share a space"):
        st.lidar(x, y[:, :8])
    values = st.structure(x, y[:, :8], k=3)
    assert values["lidar"] is None  # the registry: None when the spaces differ in dimension


# -- alpha-ReQ -----------------------------------------------------------------------------------------------------


def _with_spectrum(eigenvalues: np.ndarray, seed: int) -> np.ndarray:
    """N x D features with unit rows (so row normalisation changes nothing but a common scale), centred columns and
    the covariance spectrum ``eigenvalues`` exactly: Hadamard columns (entries +-1 / sqrt(N), each summing to 0
    but the first) times ``diag(sqrt(eigenvalues))`` times a random rotation."""
    d = len(eigenvalues)
    n = 2 ** math.ceil(math.log2(d + 1))
    h = hadamard(n)[:, 1 : d + 1] / math.sqrt(n)
    return h @ np.diag(np.sqrt(eigenvalues)) @ ortho_group.rvs(d, random_state=seed)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_alpha_req_recovers_the_exponent_of_a_power_law_spectrum(alpha):
    x = _with_spectrum(np.arange(1, 257, dtype=np.float64) ** -alpha, seed=0)
    fit = st.alpha_req(x)
    assert fit.alpha == pytest.approx(alpha, abs=1e-8) and fit.r2 == pytest.approx(1.0, abs=1e-10)
    assert (fit.first, fit.last) == st.ALPHA_FIT_RANKS
    assert st.alpha_req(x, weighted=False).alpha == pytest.approx(alpha, abs=1e-8)
    assert st.alpha_req(7.0 * x).alpha == pytest.approx(alpha, abs=1e-8)  # scale-invariant


def test_alpha_req_equals_a_weighted_log_log_fit_of_the_covariance_spectrum():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((600, 128)) * np.arange(1, 129) ** -0.7 + 0.1 * rng.standard_normal((600, 128))
    xc = _unit(x) - _unit(x).mean(axis=0)
    eig = np.sort(np.linalg.eigvalsh(xc.T @ xc / (len(x) - 1)))[::-1]
    r = np.arange(6, 101)
    slope = np.polyfit(np.log(r), np.log(eig[5:100]), 1, w=np.sqrt(1.0 / r))[0]  # polyfit weighs residuals by w
    assert st.alpha_req(x).alpha == pytest.approx(-slope, rel=1e-8)
    q = ortho_group.rvs(128, random_state=2)
    assert st.alpha_req(x @ q).alpha == pytest.approx(-slope, rel=1e-8)  # rotation-invariant


def test_alpha_req_of_a_low_rank_space_fits_only_its_nonzero_eigenvalues():
    spectrum = np.r_[np.arange(1, 41, dtype=np.float64) ** -1.5, np.zeros(88)]
    fit = st.alpha_req(_with_spectrum(spectrum, seed=1))
    assert fit.last == 40 and fit.alpha == pytest.approx(1.5, abs=1e-6)
    assert math.isnan(st.alpha_req(_with_spectrum(np.r_[1.0, 0.5, 0.2, np.zeros(30)], seed=1)).alpha)


# -- in every new run's metrics.json -------------------------------------------------------------------------------


def test_structure_writes_the_predictors_equal_to_the_functions():
    x, y = _related(400, 12, seed=13)
    values = st.structure(x, y, k=5, mknn_queries=None)
    cal = st.calibrated_cka(x, y)
    assert values["CKA_cal"] == pytest.approx(cal.value, rel=1e-12)
    assert values["CKA_chance"] == pytest.approx(cal.chance, rel=1e-12)
    assert values["mknn_cal"] == pytest.approx(st.calibrated_mutual_knn(x, y, k=5).value, rel=1e-12)
    assert values["mknn_chance"] == pytest.approx(5 / 399)
    assert values["lidar"] == pytest.approx(st.lidar(x, y), rel=1e-12)
    assert values["alpha_3d"] == pytest.approx(st.alpha_req(x).alpha, rel=1e-12)
    assert values["alpha_2d"] == pytest.approx(st.alpha_req(y).alpha, rel=1e-12)
    assert values["alpha_r2"] == pytest.approx(st.alpha_req(x).r2, rel=1e-12)
    assert POSTHOC_COLUMNS == ("CKA_cal", "mknn_cal", "lidar", "alpha_3d")


# -- post hoc, for finished runs -----------------------------------------------------------------------------------

OLD_GEOMETRY = ("CKA_cal", "CKA_chance", "mknn_cal", "mknn_chance", "lidar", "alpha_3d", "alpha_2d", "alpha_r2")


def _old_run(folder, seed: int, probe: float):
    x, y = _related(150, 8, seed=seed, noise=0.2 + 0.3 * seed)
    k3d, q2d = x.astype(np.float16), y.astype(np.float16)
    geometry = {key: 0.5 for key in ("U", "T", "G", "dU", "dT", "S", "U_2d", "T_2d")}
    geometry.update(st.structure(k3d.astype(np.float32), q2d.astype(np.float32), k=4, mknn_queries=None))
    for key in OLD_GEOMETRY:
        del geometry[key]  # written before the predictors existed
    metrics = {"kind": "distill", "loss": "contrastive", "params": {"tau": 0.1 * (seed + 1)}, "seed": 0,
               "geometry": geometry, "linear_probe": {"miou": probe, "per_class": {}}}  # fmt: skip
    labels = np.zeros(150, dtype=np.int64)
    return write_run_folder(folder, metrics, {"loss": "contrastive"}, features={"k3d": k3d, "q2d": q2d,
                                                                                "labels": labels})  # fmt: skip


def test_posthoc_predictors_are_written_beside_metrics_json_and_read_by_the_report(tmp_path, capsys):
    root = tmp_path / "suite"
    folders = [_old_run(root / f"run{i}", i, 0.1 + 0.1 * i) for i in range(3)]
    before = {f: (f / rf.METRICS_FILE).read_bytes() for f in folders}
    (folders[2] / rf.FEATURES_FILE).unlink()  # not kept: nothing to compute from
    assert gp.main(["--runs", str(root)]) == 0
    out = capsys.readouterr().out
    assert "run2: no features.npz" in out and out.count("wrote predictors.json") == 2
    assert all((f / rf.METRICS_FILE).read_bytes() == before[f] for f in folders)  # never rewritten
    stored = json.loads((folders[0] / rf.PREDICTORS_FILE).read_text())
    with np.load(folders[0] / rf.FEATURES_FILE) as f:
        k3d, q2d = f["k3d"].astype(np.float32), f["q2d"].astype(np.float32)
    metrics = json.loads(before[folders[0]])
    fresh = st.structure(k3d, q2d, k=4, mknn_queries=None)  # what a new run would have written
    for key in OLD_GEOMETRY:
        assert stored["geometry"][key] == pytest.approx(fresh[key], rel=1e-9), key
    assert stored["source"]["mknn_from"] == rf.METRICS_FILE and stored["source"]["points"] == 150
    assert stored["geometry"]["mknn_cal"] == pytest.approx(metrics["geometry"]["mknn"] - 4 / 149)
    with pytest.raises(FileExistsError, match="written once"):
        rf.write_predictors(folders[0], {}, {})
    assert gp.main(["--runs", str(root)]) == 0 and "has a predictors.json already" in capsys.readouterr().out

    runs, problems = load_runs([root])
    by_name = {run.name: structure_values(run) for run in runs}
    assert by_name["run0"]["lidar"] == pytest.approx(stored["geometry"]["lidar"])
    assert "lidar" not in by_name["run2"] and by_name["run2"]["CKA"] == pytest.approx(metrics_of(folders[2])["CKA"])
    students = pd.DataFrame({"path": [r.path.as_posix() for r in runs], "linear_probe": [0.1, 0.2, 0.3]})
    frame = add_structure_columns(students, runs)
    assert set(POSTHOC_COLUMNS) <= set(frame.columns)
    table, notes = predictor_table(frame, n_boot=50)
    assert not set(table["quantity"]) & set(POSTHOC_COLUMNS)  # missing for run2: left out, with a note
    assert any("lidar is missing for 1 of 3 runs" in n and "geomstruct.predictors" in n for n in notes)


def metrics_of(folder):
    return json.loads((folder / rf.METRICS_FILE).read_text())["geometry"]


def test_metrics_json_wins_over_predictors_json_and_runs_without_either_report_as_before(tmp_path):
    root = tmp_path / "suite"
    folders = [_old_run(root / f"run{i}", i, 0.1 + 0.1 * i) for i in range(5)]
    runs, _ = load_runs([root])
    students = pd.DataFrame({"path": [r.path.as_posix() for r in runs], "linear_probe": np.linspace(0.1, 0.5, 5)})
    frame = add_structure_columns(students, runs)
    assert not set(POSTHOC_COLUMNS) & set(frame.columns)  # no run has them: no column, no note
    table, notes = predictor_table(frame, n_boot=50)
    assert not set(table["quantity"]) & set(POSTHOC_COLUMNS) and not any("lidar" in n for n in notes)

    for folder in folders:
        gp.predictors_of_run(folder)
    geometry = json.loads((folders[0] / rf.METRICS_FILE).read_text())
    geometry["geometry"]["lidar"] = 123.0  # a metrics.json that has it: it wins
    (folders[0] / rf.METRICS_FILE).write_text(json.dumps(geometry))
    runs, _ = load_runs([root])
    assert structure_values(next(r for r in runs if r.name == "run0"))["lidar"] == 123.0
    frame = add_structure_columns(students, runs)
    table, notes = predictor_table(frame, n_boot=50)
    assert set(POSTHOC_COLUMNS) <= set(table["quantity"])
    assert not any(q in n for q in POSTHOC_COLUMNS for n in notes)  # (the notes left are of dU, dT, S, G: no column)
    assert PREDICTORS_HEADER  # the header the table keeps; its note on the new quantities is added (write_predictors)


def test_the_predictors_accept_torch_tensors():
    x, y = _related(100, 8, seed=14)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    assert st.lidar(xt, yt) == pytest.approx(st.lidar(x, y), rel=1e-5)
    assert st.alpha_req(xt).alpha == pytest.approx(st.alpha_req(x).alpha, rel=1e-5)
