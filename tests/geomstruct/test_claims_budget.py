"""Claims as a function of the step budget, convergence read from the trace by the doubling rule, and the page a
reader sees (index.html opens with the claims table, its caveats right under it)."""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geomstruct import budgets
from geomstruct import report as geo_report
from geomstruct.budgets import (
    LARGEST,
    NOT_STABLE,
    ONE_BUDGET,
    ONLY_BUDGET,
    budget_trace,
    doubling_link,
    stable_from,
    within_rule,
)
from geomstruct.caveats import edge_selections, grid_edge_caveats
from geomstruct.runs import Run, label_configurations
from tests.geomstruct.conftest import write_run_folder

N_BOOT = 200
U_2D, T_2D = 1.5, 0.6
STEPS = (800, 1600, 3200)
CONTRASTIVE = ("contrastive", {"tau": 0.07})
SIMILARITY = ("similarity", {})
RELATIONAL = ("relational", {"lam": 1.0})
WARM = ("contrastive", {"tau": 0.2})


def _target(loss: str, params: dict, steps: int) -> dict[str, float]:
    """The seed-free values of a configuration at a budget: claim 1 goes from inconclusive (ΔT ≈ 0 at 800) to
    holds (ΔT = −0.2 from 1 600); claim 6 holds at 800 and 1 600 and does not at 3 200 (similarity's few-shot
    overtakes relational's); claim 2 holds at every budget."""
    if (loss, params) == CONTRASTIVE:
        return {"dU": 0.5, "dT": 0.0 if steps == 800 else -0.2, "zero_shot": 30, "few_shot": 30, "ood": 20}
    if (loss, params) == SIMILARITY:
        few = 40.0 if steps == 3200 else 20.0
        return {"dU": -1.0, "dT": 0.2, "zero_shot": 10, "few_shot": few, "ood": 40.0 if steps == 3200 else 10.0}
    if (loss, params) == RELATIONAL:
        return {"dU": 0.05, "dT": 0.0, "zero_shot": 40, "few_shot": 35, "ood": 25}
    return {"dU": 0.3, "dT": -0.1, "zero_shot": 25, "few_shot": 28, "ood": 18}


def _metrics(loss: str, params: dict, seed: int, steps: int, **override: float) -> dict:
    rng = np.random.default_rng(zlib.crc32(f"{loss}{params}{seed}{steps}".encode()))
    target = _target(loss, params, steps)
    du, dt = target["dU"] + 0.01 * (seed - 2), target["dT"] + 0.01 * (seed - 2)  # seeds 1-3: exact mean
    u3, t3 = override.get("U", U_2D + du), override.get("T", T_2D + dt)
    erank = 3.9 if loss == "similarity" else 20.0
    s = float(np.hypot(u3 - U_2D, t3 - T_2D))
    geometry = {"U": u3, "T": t3, "G": 0.5, "dU": u3 - U_2D, "dT": t3 - T_2D, "S": s, "U_2d": U_2D, "T_2d": T_2D,
                "CKA": 0.5, "mknn": 0.3, "erank_3d": erank, "erank_2d": 10.0,
                "erank_ratio": erank / 10.0, "collapsed": erank < 4}  # fmt: skip
    metrics = {"kind": "distill", "loss": loss, "params": params, "seed": seed, "teacher": "synthetic-abc",
               "dataset": "synthetic", "geometry": geometry,
               "convergence": {"converged": True}}  # fmt: skip
    scores = {"zero_shot": target["zero_shot"], "few_shot": target["few_shot"], "few_shot_ood": target["ood"]}
    for protocol, value in scores.items():
        metrics[protocol] = {"miou": (value + rng.normal(0, 0.5)) / 100.0}
    metrics["linear_probe"] = {"miou": override.get("miou", 0.30 + rng.normal(0, 0.001))}
    return metrics


def _write_run(suite: Path, loss: str, params: dict, seed: int, steps: int, **override: float) -> Path:
    """A finished distill run at ``steps`` in the documented schema (no arrays, no trajectory)."""
    folder = suite / f"{loss}{''.join(f'-{k}{v}' for k, v in params.items())}-steps{steps}-s{seed}"
    config = {"kind": "distill", "loss": loss, "loss_params": params, "seed": seed, "steps": steps,
              "optimizer": "adamw", "lr": 0.003}  # fmt: skip
    return write_run_folder(folder, _metrics(loss, params, seed, steps, **override), config)


CONFIGS = (CONTRASTIVE, SIMILARITY, RELATIONAL, WARM)


@pytest.fixture
def traced(tmp_path) -> Path:
    """4 configurations x 3 budgets (800, 1 600, 3 200 steps) x the same 3 seeds."""
    suite = tmp_path / "claims"
    for loss, params in CONFIGS:
        for steps in STEPS:
            for seed in (1, 2, 3):
                _write_run(suite, loss, params, seed, steps)
    return suite


def _recipes(path: Path) -> Path:
    grid = [
        {"configuration": c, "recipe": {"lr": lr, "optimizer": "adamw"}, "run": f"{c}-{lr}", "score": 0.1}
        for c in ('relational {"lam": 1.0}', "similarity {}")
        for lr in (3e-4, 1e-3, 3e-3)
    ]
    result = {
        "suite": "claims_tune",
        "recipe_fields": ["lr", "optimizer"],
        "selected": {
            'relational {"lam": 1.0}': {"recipe": {"lr": 3e-3, "optimizer": "adamw"}, "score": 0.2, "run": "r"},
            "similarity {}": {"recipe": {"lr": 1e-3, "optimizer": "adamw"}, "score": 0.2, "run": "s"},
        },
        "grid": grid,
    }
    path.write_text(json.dumps(result))
    return path


def _run(loss: str, params: dict, seed: int, steps: int, **override: float) -> Run:
    config = {"kind": "distill", "loss": loss, "loss_params": params, "seed": seed, "steps": steps}
    return Run(Path(f"/runs/s/{loss}-{steps}-s{seed}"), config, _metrics(loss, params, seed, steps, **override))


# --- the rule's constants are bench.study.doubling's ------------------------------------------------------------


def test_doubling_constants_are_bench_doublings():
    from bench.study import doubling

    assert budgets.MAX_MIOU_CHANGE == doubling.MAX_MIOU_CHANGE == 0.01
    assert budgets.MAX_GEOMETRY_CHANGE == doubling.MAX_GEOMETRY_CHANGE == 0.05
    assert budgets.IGNORED_FIELDS == doubling.IGNORED_FIELDS
    assert budgets.IGNORED_PREFIXES == doubling.IGNORED_PREFIXES


def test_edge_selections_are_bench_tunes(tmp_path):
    from bench.study import tune

    result = json.loads(_recipes(tmp_path / "recipes.json").read_text())
    assert (
        edge_selections(result)
        == tune.edge_selections(result)
        == ['relational {"lam": 1.0}: lr 0.003 is the largest value tried']
    )
    committed = json.loads((Path(__file__).parents[2] / "bench/suites/recipes.json").read_text())
    assert edge_selections(committed) == tune.edge_selections(committed)


# --- the convergence rule on hand-made numbers -------------------------------------------------------------------


def _pair(changes: dict[int, dict[str, float]], base_seeds=(1, 2, 3), steps: int = 800) -> budgets.Link:
    """Runs at ``steps`` (miou 0.30, U 1.0, T 0.5) and at ``2 steps`` with the per-seed ``changes``."""
    start = {"miou": 0.30, "U": 1.0, "T": 0.5}
    base = [_run("similarity", {}, s, steps, **start) for s in base_seeds]
    doubled = [
        _run("similarity", {}, s, 2 * steps, **{k: v + change.get(k, 0.0) for k, v in start.items()})
        for s, change in changes.items()
    ]
    return doubling_link(base, doubled, steps)


def test_a_configuration_within_the_rule_is_converged():
    link = _pair({s: {"miou": 0.004, "U": 0.03, "T": -0.02} for s in (1, 2, 3)})
    assert link.converged and link.seeds == (1, 2, 3) and link.seeds_passing == 3
    assert link.change["U"] == pytest.approx(0.03) and link.change["miou"] == pytest.approx(0.004)
    assert link.status() == "converged at 800 (3/3 seeds)"


def test_a_u_change_beyond_005_is_drifting():
    link = _pair({s: {"U": 0.29} for s in (1, 2, 3)}, steps=1600)
    assert not link.converged and link.seeds_passing == 0
    assert link.status() == "drifting: U +0.29 from 1600 to 3200 (0/3 seeds pass)"


def test_a_linear_probe_change_beyond_one_point_is_drifting():
    link = _pair({s: {"miou": 0.02} for s in (1, 2, 3)})
    assert not link.converged
    assert link.status() == "drifting: LP mIoU +2.0 points from 800 to 1600 (0/3 seeds pass)"
    assert within_rule({"miou": 0.009, "U": 0.0, "T": 0.0}) and not within_rule({"miou": 0.011, "U": 0.0, "T": 0.0})
    assert within_rule({"miou": 0.0, "U": None, "T": None}) and not within_rule({"miou": None, "U": 0.0, "T": 0.0})


def test_the_means_decide_and_the_seeds_are_counted_one_by_one():
    link = _pair({1: {"U": 0.08}, 2: {"U": -0.08}, 3: {}})  # the mean does not move; two seeds do
    assert link.converged and link.seeds_passing == 1
    assert link.status() == "converged at 800 (1/3 seeds)"


def test_only_the_seeds_present_at_both_budgets_are_compared():
    base = [_run("similarity", {}, s, 800, miou=0.30, U=1.0, T=0.5) for s in (1, 2)]
    base.append(_run("similarity", {}, 3, 800, miou=0.10, U=3.0, T=0.0))  # an outlier trained at 800 only
    doubled = [_run("similarity", {}, s, 1600, miou=0.30, U=1.0, T=0.5) for s in (1, 2)]
    doubled.append(_run("similarity", {}, 4, 1600, miou=0.9, U=0.0, T=0.9))  # and one at 1 600 only
    link = doubling_link(base, doubled, 800)
    assert link.seeds == (1, 2) and link.only_base == (3,) and link.only_doubled == (4,)
    assert link.converged and link.change["U"] == pytest.approx(0.0)
    assert link.status() == "converged at 800 (2/2 seeds, seed 3 only at 800, seed 4 only at 1600)"
    assert doubling_link(base[2:], doubled[:2], 800).status() == "unchecked (no seed at both 800 and 1600 steps)"


def test_the_trace_gives_every_budget_a_status():
    runs = [_run(loss, params, seed, steps) for loss, params in CONFIGS for steps in STEPS for seed in (1, 2)]
    label_configurations(runs)
    trace = budget_trace(runs)
    assert trace.traced and trace.budgets == STEPS
    contrastive = {b: trace.statuses[b][f"contrastive (tau=0.07) [steps={b}]"] for b in STEPS}
    assert contrastive[800] == "drifting: T -0.20 from 800 to 1600 (0/2 seeds pass)"
    assert contrastive[1600].startswith("converged at 1600 (")
    assert contrastive[3200] == f"{LARGEST}, previous link: {contrastive[1600]}"
    single = [_run("similarity", {}, s, 800) for s in (1, 2)]
    label_configurations(single)
    assert budget_trace(single).statuses == {800: {"similarity": ONLY_BUDGET}}
    assert not budget_trace(single).traced


def test_stable_from():
    assert stable_from(["inconclusive", "holds", "holds"], [800, 1600, 3200]) == "1600"
    assert stable_from(["holds", "holds", "holds"], [800, 1600, 3200]) == "800"
    assert stable_from(["holds", "inconclusive", "holds"], [800, 1600, 3200]) == NOT_STABLE
    assert stable_from(["holds", "holds", "does not hold"], [800, 1600, 3200]) == NOT_STABLE
    assert stable_from(["holds"], [800]) == ONE_BUDGET
    with pytest.raises(ValueError, match="one verdict per budget"):
        stable_from(["holds"], [800, 1600])


# --- the report --------------------------------------------------------------------------------------------------


def _first_table(page: str) -> str:
    start = page.index("<table")
    return page[start : page.index("</table>", start) + len("</table>")]


@pytest.mark.slow
def test_several_budgets_give_the_claims_by_budget_and_a_page_that_opens_with_the_claims(traced, tmp_path):
    out = tmp_path / "reports"
    caveat = "supervised ceiling 41% < 50% target"
    written, _ = geo_report.build_report(
        [traced], out, n_boot=N_BOOT, recipes=_recipes(tmp_path / "recipes.json"), caveats=[caveat]
    )
    assert {"claims_by_budget.md", "claims_by_budget.tex", "claims_by_budget.csv"} <= {p.name for p in written}
    assert all(geo_report.is_report_file(f"claims_by_budget.{ext}") for ext in ("md", "tex", "csv"))

    by_budget = pd.read_csv(out / "claims_by_budget.csv").set_index("claim")
    assert list(by_budget.loc[1, [f"verdict_{b}" for b in STEPS]]) == ["inconclusive", "holds", "holds"]
    assert by_budget.loc[1, "stable_from"] == "1600"
    assert by_budget.loc[2, "verdict_800"] == "holds on a collapsed space (similarity)"
    assert by_budget.loc[2, "stable_from"] == "800"
    assert (
        by_budget.loc[6, "verdict_3200"].startswith("does not hold") and by_budget.loc[6, "stable_from"] == NOT_STABLE
    )
    assert by_budget.loc[1, "statement_800"] == "ΔT(contrastive) < 0"  # the undecided one decides
    assert by_budget.loc[1, "convergence_800"].startswith("contrastive τ=0.07: drifting: T -0.20 from 800 to 1600 (0/3")
    md = (out / "claims_by_budget.md").read_text()
    assert "| claim | 800 steps | 1600 steps | 3200 steps | stable from |" in md

    claims = pd.read_csv(out / "claims_v2.csv")  # the claims table: the largest budget's students
    assert set(claims["budget"].astype(str)) == {"3200"}
    assert claims.loc[claims["claim"] == 1, "convergence"].iloc[0].startswith(f"contrastive τ=0.07: {LARGEST}")
    assert set(claims.loc[claims["claim"] == 1, "n"]) == {"3 seeds"}

    page = (out / "index.html").read_text()
    first = _first_table(page)
    assert first.startswith("<table class='claims'>")
    assert "holds on a collapsed space (similarity)" in first and "3200 steps" in first
    assert "ΔT(contrastive) &lt; 0: " in first and "(supported)" in first
    after = page[page.index(first) + len(first) :]
    caveats = after[: after.index("<table")]  # right under the claims table, before any other table
    assert "collapse: similarity" in caveats and "claims 2, 3, 4, 6" in caveats
    assert "grid edge: relational {&quot;lam&quot;: 1.0}: lr 0.003 is the largest value tried" in caveats
    assert "similarity {}" not in caveats and "supervised ceiling 41% &lt; 50% target" in caveats
    second = _first_table(after)
    assert "stable from" in second and "800 steps" in second
    assert "<h2>Breadth: 4 configurations at 800, 1600 and 3200 steps (12 rows)</h2>" in page
    assert page.index("Breadth: 4") < page.index("How these runs were produced") < page.index("<h2>Tables</h2>")
    assert page.count("Per loss, mean ± std") == 1  # the summary is the breadth table, not shown twice


@pytest.mark.slow
def test_a_configuration_the_trace_flags_is_drifting_though_its_run_says_converged(tmp_path, capsys):
    suite = tmp_path / "drift"
    for loss, params in CONFIGS:
        for steps in (800, 1600):
            for seed in (1, 2, 3):
                drift = {"U": 1.2 + (0.29 if steps == 1600 else 0.0)} if (loss, params) == RELATIONAL else {}
                folder = _write_run(suite, loss, params, seed, steps, **drift)
                metrics = json.loads((folder / "metrics.json").read_text())
                assert metrics["convergence"]["converged"] is True  # the in-run diagnostic says converged
    out = tmp_path / "reports"
    assert geo_report.main(["--runs", str(suite), "--out", str(out)]) == 0
    capsys.readouterr()
    by_budget = pd.read_csv(out / "claims_by_budget.csv").set_index("claim")
    assert "relational: drifting: U +0.29 from 800 to 1600 (0/3 seeds pass)" in by_budget.loc[6, "convergence_800"]
    # the summary's mark flags what the trace flags (relational at 800 steps), never what the in-run diagnostic
    # says (converged everywhere); the largest budget is unchecked, so nothing there is flagged
    rows = [line.split(" | ")[0].lstrip("| ") for line in (out / "summary.md").read_text().splitlines()]
    flagged = [label for label in rows if label.endswith("‡")]
    drifting = " ".join(by_budget["convergence_800"])  # the trace's statuses at 800 steps
    assert any(label.startswith("relational") and "steps=800" in label for label in flagged), flagged
    for label in flagged:
        name = label.split(" ")[0]
        assert "steps=800" in label and re.search(rf"{name}[^:]*: drifting", drifting), (label, drifting)
    assert "not converged by the budget trace" in (out / "summary.md").read_text()
    page = (out / "index.html").read_text()
    assert "relational: unchecked (largest budget), previous link: drifting: U +0.29 from 800 to 1600" in page


@pytest.mark.slow
def test_one_budget_keeps_one_claims_table_with_its_budget(tmp_path):
    suite = tmp_path / "full"
    for loss, params in CONFIGS:
        for seed in (1, 2, 3):
            _write_run(suite, loss, params, seed, 800)
    out = tmp_path / "reports"
    written, _ = geo_report.build_report([suite], out, n_boot=N_BOOT)
    assert not any(p.name.startswith("claims_by_budget") for p in written)
    claims = pd.read_csv(out / "claims_v2.csv")
    assert set(claims["budget"].astype(str)) == {"800"}
    assert claims.loc[claims["claim"] == 2, "convergence"].iloc[0] == f"similarity: {ONLY_BUDGET}"
    page = (out / "index.html").read_text()
    assert _first_table(page).startswith("<table class='claims'>")
    assert "<h2>Breadth: 4 configurations at 800 steps</h2>" in page
    assert "Claims by budget" not in page
    assert "all 4 configurations: unchecked (the suite&#x27;s only budget)" in _first_table(page)  # claim 4
    assert re.search(r"<h3>Caveats</h3><ul class='caveats'><li>collapse: similarity", page)


def test_a_file_that_is_not_a_recipes_file_is_refused(traced, tmp_path, capsys):
    bad = tmp_path / "recipes.json"
    bad.write_text(json.dumps({"grid": []}))
    out = tmp_path / "reports"
    assert geo_report.main(["--runs", str(traced), "--out", str(out), "--recipes", str(bad)]) == 2
    assert f"--recipes {bad}" in capsys.readouterr().err and not out.exists()
    with pytest.raises(ValueError, match="not a recipes file"):
        grid_edge_caveats(bad)
    none = tmp_path / "none.json"
    none.write_text(json.dumps({"suite": "tune", "recipe_fields": ["lr"], "selected": {}, "grid": [], "edges": []}))
    assert grid_edge_caveats(none) == [f"grid edge: no selected recipe is on the edge of the tuning grid (tuning "
                                       f"suite tune, {none.as_posix()})"]  # fmt: skip
