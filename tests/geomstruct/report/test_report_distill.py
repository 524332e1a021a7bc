"""The distillation part of geomstruct.report on run directories written in the documented schema."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from geomstruct import report as geo_report
from geomstruct.metrics import geometry
from geomstruct.structure import structure
from geomstruct.tables import POSTHOC_COLUMNS
from tests.geomstruct.conftest import write_run_folder

PROTOCOLS = ("zero_shot", "linear_probe", "few_shot", "few_shot_ood")
CLASSES = [f"c{i}" for i in range(4)]


def _write_run(root, name, loss, params, seed, teacher="synthetic-abc", rng=None):
    rng = rng or np.random.default_rng(seed)
    folder = root / name
    labels = np.repeat(np.arange(4), 30)
    q2d = np.eye(8)[labels] + 0.6 * rng.standard_normal((120, 8))
    k3d = q2d + rng.uniform(0.2, 1.5) * rng.standard_normal((120, 8))
    k3d, q2d = k3d.astype(np.float16), q2d.astype(np.float16)
    geo = geometry(k3d.astype(np.float32), q2d.astype(np.float32), labels)
    geo.update(structure(k3d.astype(np.float32), q2d.astype(np.float32), k=5))
    metrics = {"kind": "distill", "loss": loss, "params": params, "seed": seed, "teacher": teacher,
               "dataset": "synthetic", "geometry": geo, "class_names": CLASSES}  # fmt: skip
    for protocol in PROTOCOLS:
        ious = rng.uniform(0.1, 0.9, 4)
        metrics[protocol] = {"miou": float(ious.mean()), "per_class": dict(zip(CLASSES, ious.tolist(), strict=True))}
    steps = np.array([0, 10, 20])
    trajectory = {"step": steps, "loss": [np.nan, 1.0, 0.5], "U": rng.uniform(1, 2, 3), "T": rng.uniform(0.5, 1, 3),
                  "G": rng.uniform(0, 1, 3)}  # fmt: skip
    config = {"kind": "distill", "loss": loss, "seed": seed}
    write_run_folder(folder, metrics, config, trajectory, features={"k3d": k3d, "q2d": q2d, "labels": labels})
    return metrics


@pytest.fixture
def runs_dir(tmp_path):
    root = tmp_path / "runs"
    spec = [
        ("contrastive", {"tau": 0.07}),
        ("contrastive", {"tau": 0.5}),
        ("similarity", {}),
        ("relational", {"lam": 1.0}),
    ]
    metrics = {}
    for loss, params in spec:
        for seed in (0, 1):
            suffix = "".join(f"-{k}{v}" for k, v in params.items())
            name = f"{loss}{suffix}-s{seed}"
            metrics[name] = _write_run(root, name, loss, params, seed)
    return root, metrics


@pytest.mark.slow
def test_distill_report_files_tables_and_correlations(runs_dir, tmp_path):
    root, metrics = runs_dir
    out = tmp_path / "reports"
    assert geo_report.main(["--runs", str(root), "--out", str(out)]) == 0
    for name in (
        "pca.png",
        "uniformity_tolerance.png",
        "trajectories.png",
        "gap_vs_performance.png",
        "summary.md",
        "summary.tex",
        "summary.csv",
        "correlations.md",
        "correlations.tex",
        "correlations.csv",
        "predictors.png",
        "predictors.md",
        "predictors.tex",
        "predictors.csv",
    ):
        assert (out / name).stat().st_size > 0, name  # fmt: skip
        assert geo_report.is_report_file(name), name
    for protocol in PROTOCOLS:
        assert (out / f"per_class_{protocol}.csv").is_file()

    summary = pd.read_csv(out / "summary.csv").set_index("label")
    row = summary.loc["contrastive (tau=0.5)"]
    pair = [metrics[f"contrastive-tau0.5-s{s}"] for s in (0, 1)]
    assert row["n"] == 2
    assert row["S_mean"] == pytest.approx(np.mean([m["geometry"]["S"] for m in pair]), rel=1e-5)
    assert row["U_std"] == pytest.approx(np.std([m["geometry"]["U"] for m in pair], ddof=1), rel=1e-5)
    assert row["few_shot_mean"] == pytest.approx(100 * np.mean([m["few_shot"]["miou"] for m in pair]), rel=1e-5)
    for key in ("CKA", "mknn", "erank_3d", "erank_2d", "erank_ratio"):
        assert row[f"{key}_mean"] == pytest.approx(np.mean([m["geometry"][key] for m in pair]), rel=1e-5)
    assert row["collapsed"] == 0
    assert "| CKA | mkNN | erank ratio |" in (out / "summary.md").read_text()
    assert "\\toprule" in (out / "summary.tex").read_text() and "$\\pm$" in (out / "summary.tex").read_text()
    assert (out / "summary.md").read_text().startswith("Per loss, mean ± std")

    per_class = pd.read_csv(out / "per_class_zero_shot.csv").set_index("label")
    sim = [metrics[f"similarity-s{s}"]["zero_shot"]["per_class"]["c2"] for s in (0, 1)]
    assert per_class.loc["similarity", "c2"] == pytest.approx(100 * np.mean(sim), rel=1e-5)

    corr = pd.read_csv(out / "correlations.csv")
    ordered = sorted(metrics.values(), key=lambda m: (m["loss"], m["seed"]))
    s = np.array([m["geometry"]["S"] for m in ordered])
    zs = np.array([100 * m["zero_shot"]["miou"] for m in ordered])
    pick = corr[(corr["gap"] == "S") & (corr["protocol"] == "zero_shot")].set_index("over")
    got = pick.loc["students"]
    assert got["n"] == 8
    assert got["pearson_r"] == pytest.approx(stats.pearsonr(s, zs)[0], abs=1e-9)
    assert got["spearman_rho"] == pytest.approx(stats.spearmanr(s, zs)[0], abs=1e-9)
    # over configurations: one point per loss configuration (here every configuration's seeds average alike)
    assert pick.loc["configurations", "n"] == 4


def test_correlations_over_configuration_means():
    from geomstruct.tables import configuration_means, correlation_table

    students = pd.DataFrame({
        "label": ["a", "a", "b", "b", "c", "c", "d", "d", "e", "e"], "seed": [0, 1] * 5,
        "S": [0.1, 0.3, 0.5, 0.5, 0.9, 1.1, 1.5, 1.3, 2.0, 2.2],
        "zero_shot": [50.0, 48.0, 40.0, 44.0, 30.0, 31.0, 20.0, 26.0, 10.0, 9.0],
    })  # fmt: skip
    for column in ("dU", "dT", "few_shot", "linear_probe", "few_shot_ood"):
        students[column] = np.nan
    means = configuration_means(students)
    assert list(means["label"]) == ["a", "b", "c", "d", "e"]
    np.testing.assert_allclose(means["S"], [0.2, 0.5, 1.0, 1.4, 2.1])
    np.testing.assert_allclose(means["zero_shot"], [49.0, 42.0, 30.5, 23.0, 9.5])
    corr, _ = correlation_table(students, n_boot=200)
    row = corr[(corr["gap"] == "S") & (corr["protocol"] == "zero_shot")].set_index("over").loc["configurations"]
    assert row["n"] == 5
    assert row["pearson_r"] == pytest.approx(stats.pearsonr(means["S"], means["zero_shot"])[0], abs=1e-12)


@pytest.mark.slow
def test_different_teachers_and_missing_files_still_draw(runs_dir, tmp_path, capsys):
    root, _ = runs_dir
    _write_run(root, "similarity-clip-s0", "similarity", {}, 0, teacher="clip-ViT-B-16-123")
    (root / "relational-lam1.0-s1" / "trajectory.csv").unlink()
    (root / "unfinished").mkdir()
    (root / "unfinished" / "config.json").write_text("{}")
    out = tmp_path / "reports"
    assert geo_report.main(["--runs", str(root), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "different teachers" in err and "uses the synthetic-abc runs only" in err
    assert "no trajectory.csv" in err and "unfinished" in err
    summary = pd.read_csv(out / "summary.csv")
    assert summary["n"].sum() == 8  # the CLIP-teacher run is set aside
    assert (out / "trajectories.png").is_file()


@pytest.mark.slow
def test_index_html_links_every_figure_and_inlines_every_table(runs_dir, tmp_path):
    root, _ = runs_dir
    out = tmp_path / "reports"
    assert geo_report.main(["--runs", str(root), "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    for figure in ("pca.png", "uniformity_tolerance.png", "trajectories.png", "gap_vs_performance.png"):
        assert f"src='{figure}'" in page
    assert page.count("<table>") == 8  # summary, claims, predictors, correlations, four per-class tables
    assert "claims (docs/method.md#the-papers-claims) on contrastive" in page
    assert "src='predictors.png'" in page and "Which measure predicts downstream?" in page
    assert page.count("<table class='folders'>") == 1  # and the run folders of every row
    assert page.count(f"<code>{(root / 'similarity-s1').as_posix()}</code>") == 1
    assert "How these runs were produced" in page and "8 runs (8 distill)" in page


def _chromium(tmp_path, *args):
    """Run Debian's headless chromium with ``args`` (no network, a fresh profile); its standard output."""
    return subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", *args],
        check=True, capture_output=True, timeout=120, text=True,
    ).stdout  # fmt: skip


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="Debian's chromium is not installed (apt-get install chromium)"
)
@pytest.mark.slow
def test_index_html_renders_in_headless_chromium(runs_dir, tmp_path):
    from PIL import Image

    root, _ = runs_dir
    out = tmp_path / "reports"
    caveat = "supervised ceiling 41% < 50% target"
    assert geo_report.main(["--runs", str(root), "--out", str(out), "--caveat", caveat]) == 0
    shot = tmp_path / "index.png"
    _chromium(tmp_path, "--window-size=1280,3000", f"--screenshot={shot}", (out / "index.html").as_uri())
    image = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert image.shape == (3000, 1280)
    # rendered figures, not a blank or error page: many dark pixels spread over the page height
    dark_rows = np.flatnonzero((image < 128).sum(axis=1) > 20)
    assert dark_rows.size > 300 and dark_rows.max() - dark_rows.min() > 1500

    # the page as the browser parsed it opens with the claims: its first table, the caveats right under it
    dom = _chromium(tmp_path, "--dump-dom", (out / "index.html").as_uri())
    start = dom.index("<table")
    end = dom.index("</table>", start)
    first = dom[start:end]
    assert first.startswith('<table class="claims">') and "<th>verdict</th>" in first
    assert "<th>convergence</th>" in first and "<th>budget</th>" in first
    for number in range(1, 7):
        assert f"<td>{number}. " in first
    assert dom.index("<h2>Claims (rule version 2)</h2>") < start < dom.index("How these runs were produced")
    under = dom[end : dom.index("<table", end)]
    assert "Caveats" in under and "supervised ceiling 41% &lt; 50% target" in under
    assert "<h2>Breadth: 4 configurations</h2>" in dom[end:]  # the summary follows as the breadth table


def test_label_styles_tell_contrastive_temperatures_apart():
    from geomstruct.figures.distill import label_styles

    labels = [(f"contrastive (tau={t})", "contrastive", t) for t in (1.0, 0.07, 0.2, 0.01)]
    labels += [("similarity", "similarity", float("nan")), ("relational (lam=1.0)", "relational", float("nan"))]
    styles = label_styles(labels)
    contrastive = [styles[label] for label, _, _ in labels[:4]]
    assert len({(c, m) for c, m, _ in contrastive}) == 4  # every temperature its own colour and marker
    assert styles["contrastive (tau=0.07)"][2] == "-" and styles["contrastive (tau=0.2)"][2] == "--"
    assert styles["similarity"] != styles["relational (lam=1.0)"]
    # a single temperature keeps the loss's own style
    assert label_styles([("contrastive (tau=0.07)", "contrastive", 0.07)])["contrastive (tau=0.07)"][:2] == (
        "#d62728",
        "o",
    )


# Structure metrics in the report (issue 14): collapse flag, "which measure predicts downstream?", old runs.


def _edit_metrics(folder, edit):
    metrics = json.loads((folder / "metrics.json").read_text())
    edit(metrics)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return metrics


@pytest.mark.slow
def test_summary_shows_each_configurations_recipe(runs_dir, tmp_path):
    root, _ = runs_dir
    recipes = {"contrastive-tau0.07": ("sgd", 0.16), "contrastive-tau0.5": ("adamw", 0.001), "similarity": ("sgd", 0.5)}
    for folder in root.iterdir():
        config = json.loads((folder / "config.json").read_text())
        configuration = folder.name.rsplit("-s", 1)[0]
        if configuration in recipes:
            optimizer, lr = recipes[configuration]
            config.update(optimizer=optimizer, lr=lr)
        else:  # relational: runs from before the optimiser was a field
            config.update(lr=0.5)
        (folder / "config.json").write_text(json.dumps(config))
    out = tmp_path / "reports"
    assert geo_report.main(["--runs", str(root), "--out", str(out)]) == 0
    summary = (out / "summary.md").read_text()
    assert "| loss | n | recipe | U |" in summary
    assert "| contrastive (tau=0.07) | 2 | sgd lr 0.16 |" in summary
    assert "| contrastive (tau=0.5) | 2 | adamw lr 0.001 |" in summary and "| similarity | 2 | sgd lr 0.5 |" in summary
    assert "| relational (lam=1.0) | 2 | lr 0.5 |" in summary
    assert pd.read_csv(out / "summary.csv").set_index("label").loc["similarity", "recipe"] == "sgd lr 0.5"


@pytest.mark.slow
def test_predictors_rank_a_monotone_quantity_first(runs_dir, tmp_path):
    root, _ = runs_dir
    rng = np.random.default_rng(7)
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    mknn = rng.uniform(0.1, 0.9, len(folders))
    erank = rng.uniform(0.2, 1.0, len(folders))
    for folder, a, b in zip(folders, mknn, erank, strict=True):

        def edit(m, a=a, b=b):
            m["geometry"]["mknn"], m["geometry"]["erank_ratio"] = float(a), float(b)
            m["zero_shot"]["miou"] = float(0.2 + 0.5 * a**2)  # increasing in mknn, not linear
            m["few_shot"]["miou"] = float(0.9 - 0.6 * b)  # decreasing in the effective-rank ratio

        _edit_metrics(folder, edit)
    out = tmp_path / "reports"
    assert geo_report.main(["--runs", str(root), "--out", str(out)]) == 0
    pred = pd.read_csv(out / "predictors.csv")
    assert list(dict.fromkeys(pred["protocol"])) == list(PROTOCOLS)
    assert set(pred["quantity"]) == {"dU", "dT", "S", "G", "CKA", "mknn", "erank_ratio", *POSTHOC_COLUMNS}
    for protocol, group in pred.groupby("protocol"):
        assert list(group["rank"]) == list(range(1, 8 + len(POSTHOC_COLUMNS))), protocol
        rho = group["spearman_rho"].abs().to_numpy()
        assert (np.diff(rho) <= 1e-12).all(), protocol  # ranked by |rho|
    top = pred[pred["rank"] == 1].set_index("protocol")
    assert top.loc["zero_shot", "quantity"] == "mknn" and top.loc["zero_shot", "spearman_rho"] == pytest.approx(1.0)
    assert top.loc["zero_shot", "pearson_r"] < 1.0  # monotone, not linear
    assert top.loc["few_shot", "quantity"] == "erank_ratio"
    assert top.loc["few_shot", "spearman_rho"] == pytest.approx(-1.0)  # |rho| ranks, the sign is kept
    ordered = sorted((json.loads((f / "metrics.json").read_text()) for f in folders), key=lambda m: m["seed"])
    s = np.array([m["geometry"]["S"] for m in ordered])
    ood = np.array([m["few_shot_ood"]["miou"] for m in ordered])
    got = pred[(pred["protocol"] == "few_shot_ood") & (pred["quantity"] == "S")].iloc[0]
    assert got["n"] == 8 and bool(got["reliable"])
    assert got["spearman_rho"] == pytest.approx(stats.spearmanr(s, ood)[0], abs=1e-9)
    assert got["pearson_r"] == pytest.approx(stats.pearsonr(s, ood)[0], abs=1e-9)
    table = (out / "predictors.md").read_text()
    assert table.startswith("Which measure predicts downstream?")
    assert "| zero-shot | 1 | mknn | 8 | +1.00 [" in table
    assert "\\toprule" in (out / "predictors.tex").read_text()


@pytest.mark.slow
def test_collapsed_students_are_flagged_and_old_runs_are_skipped_with_a_note(runs_dir, tmp_path, capsys):
    root, _ = runs_dir

    def collapse(m):  # the report judges by the effective rank (the current rule), whatever the stored flag
        m["geometry"].update(erank_3d=1.5, collapsed=False)

    _edit_metrics(root / "similarity-s0", collapse)
    _edit_metrics(root / "similarity-s1", collapse)
    _edit_metrics(root / "contrastive-tau0.5-s1", collapse)

    def old(m):  # a run written before the structure metrics
        for key in ("CKA", "mknn", "mknn_k", "mknn_queries", "mknn_se", "erank_3d", "erank_2d", "erank_ratio",
                    "collapsed", "CKA_cal", "CKA_chance", "mknn_cal", "mknn_chance", "lidar", "alpha_3d", "alpha_2d",
                    "alpha_r2"):  # fmt: skip
            del m["geometry"][key]

    _edit_metrics(root / "relational-lam1.0-s0", old)
    _edit_metrics(root / "contrastive-tau0.07-s1", lambda m: m["geometry"].update(CKA=None))  # undefined
    _edit_metrics(root / "contrastive-tau0.07-s1", lambda m: m.update(convergence={"converged": False}))
    _edit_metrics(root / "contrastive-tau0.07-s0", lambda m: m.update(convergence={"converged": True}))
    out = tmp_path / "reports"
    assert geo_report.main(["--runs", str(root), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "CKA is missing for 1 of 8 runs" in err and "left out of the ranking" in err

    summary = (out / "summary.md").read_text()
    assert "| similarity † | 2 |" in summary
    assert "| contrastive (tau=0.5) † (1 of 2 seeds) | 2 |" in summary
    assert "† collapsed: effective rank of the 3D space < 4" in summary
    assert "| contrastive (tau=0.07) ‡ (1 of 2 seeds) | 2 |" in summary and "‡ not converged" in summary
    assert "\\dag{}" in (out / "summary.tex").read_text() and "\\ddag{}" in (out / "summary.tex").read_text()
    frame = pd.read_csv(out / "summary.csv").set_index("label")
    assert frame.loc["similarity", "collapsed"] == 2 and frame.loc["contrastive (tau=0.07)", "collapsed"] == 0
    assert frame.loc["relational (lam=1.0)", "collapsed"] == 0  # one seed known, not collapsed; one unknown
    assert np.isfinite(frame.loc["relational (lam=1.0)", "CKA_mean"])  # the run that has it

    pred = pd.read_csv(out / "predictors.csv")
    assert set(pred["quantity"]) == {"dU", "dT", "S", "G"}  # CKA, mknn, erank_ratio: missing for one run
    assert (pred["n"] == 8).all()
    table = (out / "predictors.md").read_text()
    assert "Note: mknn is missing for 1 of 8 runs" in table
    page = (out / "index.html").read_text()
    assert "src='predictors.png'" in page and "erank_ratio is missing for 1 of 8 runs" in page


@pytest.mark.slow
def test_predictors_of_too_few_students_are_not_a_finding(tmp_path):
    root = tmp_path / "runs"
    for seed, loss in enumerate(("contrastive", "similarity", "relational", "relational_intra")):
        _write_run(root, f"{loss}-s{seed}", loss, {}, seed)
    out = tmp_path / "reports"
    assert geo_report.main(["--runs", str(root), "--out", str(out)]) == 0
    pred = pd.read_csv(out / "predictors.csv")
    assert (pred["n"] == 4).all() and not pred["reliable"].any()
    assert "| 4 (too few) |" in (out / "predictors.md").read_text()
    assert (out / "predictors.png").stat().st_size > 0


def test_predictor_table_leaves_undefined_values_out_of_their_correlation_only():
    from geomstruct.tables import predictor_table

    rng = np.random.default_rng(3)
    students = pd.DataFrame({q: rng.standard_normal(7) for q in ("dU", "dT", "S", "G", "mknn", "erank_ratio")})
    students["CKA"] = [0.1, 0.2, None, 0.4, 0.5, 0.6, 0.7]  # one student's CKA undefined (null in metrics.json)
    students["zero_shot"] = [10.0, 12.0, 99.0, 13.0, 15.0, 16.0, 20.0]  # monotone in CKA where it is defined
    students["absent"] = [()] * 7
    for protocol in PROTOCOLS[1:]:
        students[protocol] = np.nan  # not evaluated: no rows
    table, notes = predictor_table(students, n_boot=200)
    assert set(table["protocol"]) == {"zero_shot"} and len(table) == 7
    top = table.iloc[0]
    assert top["quantity"] == "CKA" and top["rank"] == 1 and top["n"] == 6 and top["spearman_rho"] == 1.0
    assert (table["n"][table["quantity"] != "CKA"] == 7).all()
    assert notes == [
        "predictors: CKA is undefined for 1 of 7 runs (null in metrics.json); they are left out of its correlations"
    ]


@pytest.mark.slow
def test_reference_rows_beside_the_runs_become_a_table(runs_dir, tmp_path, capsys):
    import json

    root, _ = runs_dir
    refs = root / "references"
    refs.mkdir()
    rows = {"teacher": 0.643, "floor": 0.068, "ceiling": 0.279}
    for row, score in rows.items():
        extra = {"steps": 800, "batch_size": 1, "lr": 0.05, "train_scans": 40} if row == "ceiling" else {}
        (refs / f"{row}.json").write_text(json.dumps({"kind": "reference", "row": row, "miou": score, "points": 10,
                                                       "config": {"eval_split": "val"}, **extra}))  # fmt: skip
    (refs / "broken.json").write_text("{not json")
    elsewhere = tmp_path / "other" / "references"
    elsewhere.mkdir(parents=True)
    (elsewhere / "floor.json").write_text(json.dumps({"kind": "reference", "row": "floor", "miou": 0.5}))
    out = tmp_path / "reports"
    assert geo_report.main(["--runs", str(root), str(tmp_path / "other"), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "broken.json: unreadable reference row" in err and "a reference row of another suite's folder" in err
    table = (out / "references.md").read_text()
    assert table.index("2D teacher") < table.index("random student") < table.index("supervised ceiling")
    assert "| 64.3 |" in table and "| 6.8 |" in table and "800 steps × 1 scans, lr 0.05, 40 scans" in table
    frame = pd.read_csv(out / "references.csv")
    assert list(frame["row"]) == ["teacher", "floor", "ceiling"] and frame["miou"].tolist() == [64.3, 6.8, 27.9]
    assert "references.md" in (out / "index.html").read_text()


@pytest.mark.slow
def test_label_free_runs_are_reported_with_dashes(runs_dir, tmp_path, capsys):
    root, _ = runs_dir

    def label_free(m):  # a nuScenes dataroot without lidarseg: no tolerance, no label protocols
        m["geometry"].update(T=None, dT=None, S=None, T_2d=None)
        for protocol in ("zero_shot", "linear_probe", "few_shot"):
            m.pop(protocol, None)

    _edit_metrics(root / "relational-lam1.0-s0", label_free)
    _edit_metrics(root / "relational-lam1.0-s1", label_free)
    out = tmp_path / "reports"
    assert geo_report.main(["--runs", str(root), "--out", str(out)]) == 0
    assert "relational-lam1.0-s0" not in capsys.readouterr().err  # read, not skipped as broken
    frame = pd.read_csv(out / "summary.csv").set_index("label")
    assert frame.loc["relational (lam=1.0)", "n"] == 2 and np.isnan(frame.loc["relational (lam=1.0)", "T_mean"])
    assert np.isfinite(frame.loc["relational (lam=1.0)", "U_mean"])
    row = next(line for line in (out / "summary.md").read_text().splitlines() if line.startswith("| relational"))
    assert "| – |" in row
