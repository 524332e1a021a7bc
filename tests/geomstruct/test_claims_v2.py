"""Claims rule version 2: cluster bootstrap by hand, zero-shot exclusions, collapse in the verdict, the shown
temperatures of claim 3, the relational selection, and agreement with version 1 where the rule is the same."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from geomstruct.claims import HOLDS, claims_frame, evaluate_claims
from geomstruct.claims_v2 import (
    COLLAPSE_ERANK,
    MIN_CONFIGURATIONS,
    SHOWN,
    claims_v2_frame,
    cluster_spearman,
    evaluate_claims_v2,
    two_stage_indices,
)
from geomstruct.correlation import spearman
from geomstruct.tables import write_claims_v2

SPEC = {  # label: (loss, params, dU, dT, S, zero-shot, few-shot, OOD few-shot)
    "contrastive (tau=0.07)": ("contrastive", {"tau": 0.07}, 0.5, -0.2, 0.54, 30.0, 30.0, 20.0),
    "similarity": ("similarity", {}, -1.0, 0.2, 1.02, 10.0, 20.0, 10.0),
    "relational": ("relational", {}, 0.05, 0.0, 0.05, 40.0, 35.0, 25.0),
}


def _students(spec: dict = SPEC, seeds: int = 3, noise: float = 0.01, rng_seed: int = 0) -> pd.DataFrame:
    """``seeds`` students per configuration of ``spec`` with small noise, ``erank_3d`` 20 and none collapsed."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for label, (loss, params, du, dt, s, zs, fs, ood) in spec.items():
        for seed in range(seeds):
            e = rng.normal(0, noise, 6)
            rows.append({"loss": loss, "label": label, "tau": params.get("tau", np.nan), "params": dict(params),
                         "seed": seed, "dU": du + e[0], "dT": dt + e[1], "S": s + e[2], "zero_shot": zs + e[3],
                         "few_shot": fs + e[4], "few_shot_ood": ood + e[5],
                         "erank_3d": 20.0, "collapsed": 0.0})  # fmt: skip
    return pd.DataFrame(rows)


def _by_number(claims) -> dict:
    return {c.number: c for c in claims}


# --- (a) the two-stage cluster bootstrap ----------------------------------------------------------------------


def test_cluster_interval_is_wider_than_the_student_bootstrap_when_students_cluster():
    rng = np.random.default_rng(1)
    means_x, means_y = [0.0, 1.0, 2.0, 3.0], [0.0, 2.0, 1.0, 3.0]  # 4 configurations, ρ of the means 0.8
    x = np.concatenate([m + rng.normal(0, 0.01, 5) for m in means_x])  # 5 seeds each, nearly equal
    y = np.concatenate([m + rng.normal(0, 0.01, 5) for m in means_y])
    labels = np.repeat(["a", "b", "c", "d"], 5)
    students = spearman(x, y, n_boot=2000, seed=0)
    clustered = cluster_spearman(x, y, labels, n_boot=2000, seed=0)
    assert clustered.r == pytest.approx(students.r)
    assert (clustered.n_students, clustered.n_configurations) == (20, 4)
    assert students.ci_low > 0  # 20 "independent" points: a confident positive correlation
    assert clustered.ci_low < 0 < clustered.ci_high  # 4 configurations: it could be anything
    assert clustered.ci_high - clustered.ci_low > 2 * (students.ci_high - students.ci_low)


def test_cluster_interval_matches_a_loop_reference():
    rng = np.random.default_rng(3)
    sizes, n_boot, seed = [2, 2, 2, 2, 2], 300, 7
    x, y = rng.normal(size=10), rng.normal(size=10)
    labels = np.repeat(list("abcde"), 2)
    result = cluster_spearman(x, y, labels, n_boot=n_boot, seed=seed)

    ref = np.random.default_rng(seed)  # the draws of two_stage_indices, assembled one by one
    drawn = ref.integers(0, len(sizes), size=(n_boot, len(sizes)))
    within = ref.integers(0, np.asarray(sizes)[drawn][..., None], size=(n_boot, len(sizes), max(sizes)))
    rhos = []
    for b in range(n_boot):
        picked = [2 * k + within[b, slot, s] for slot, k in enumerate(drawn[b]) for s in range(sizes[k])]
        if np.ptp(x[picked]) > 0 and np.ptp(y[picked]) > 0:
            rhos.append(stats.spearmanr(x[picked], y[picked])[0])
    low, high = np.quantile(rhos, [0.025, 0.975])
    assert result.r == pytest.approx(stats.spearmanr(x, y)[0])
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high), abs=1e-12)


@pytest.mark.parametrize("sizes", [(1, 3), (2, 2)])
def test_two_stage_resamples_follow_the_exact_distribution(sizes):
    """Enumerate every two-stage resample (configurations, then each drawn one's seeds, with replacement) and
    compare the probability of each multiset of students with the frequencies of 20 000 resamples."""
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    exact: Counter = Counter()
    for drawn in itertools.product(range(len(sizes)), repeat=len(sizes)):
        draws = [itertools.product(range(sizes[k]), repeat=sizes[k]) for k in drawn]
        for within in itertools.product(*draws):
            p = (1 / len(sizes)) ** len(sizes) * math.prod((1 / sizes[k]) ** sizes[k] for k in drawn)
            exact[tuple(sorted(starts[k] + s for k, w in zip(drawn, within, strict=True) for s in w))] += p
    positions, mask = two_stage_indices(sizes, 20_000, np.random.default_rng(0))
    seen = Counter(tuple(sorted(positions[b][mask[b]].tolist())) for b in range(len(positions)))
    assert set(seen) <= set(exact)
    for key, p in exact.items():
        assert seen[key] / 20_000 == pytest.approx(p, abs=0.012), key


def test_too_few_configurations_have_no_interval():
    x, y = np.arange(12.0), np.arange(12.0) ** 2
    result = cluster_spearman(x, y, np.repeat(list("abc"), 4))
    assert MIN_CONFIGURATIONS == 4 and result.r == pytest.approx(1.0)
    assert math.isnan(result.ci_low) and math.isnan(result.ci_high)


# --- (b) zero-shot statements only over students with a cross-modal term ----------------------------------------


@pytest.mark.parametrize("source", ["column", "params", "label"])
def test_students_without_a_cross_modal_term_are_excluded_from_zero_shot(source):
    spec = {
        **SPEC,
        "contrastive (tau=0.5)": ("contrastive", {"tau": 0.5}, 0.3, -0.1, 0.4, 25.0, 25.0, 15.0),
        "relational_intra": ("relational_intra", {}, 0.0, 0.0, 0.01, 1.0, 10.0, 5.0),
        "relational (cross=False)": ("relational", {"cross": False}, 0.0, 0.0, 0.02, 2.0, 10.0, 5.0),
    }
    students = _students(spec)
    if source == "column":
        students["cross"] = [p.get("cross", np.nan) for p in students["params"]]
    if source != "params":
        students = students.drop(columns="params")
    claim = _by_number(evaluate_claims_v2(students, n_boot=500))[4]
    zero, few = claim.statements
    assert "(6 students without a cross-modal term excluded)" in zero.text
    assert zero.n == "12 students in 4 configurations" and few.n == "18 students in 6 configurations"
    kept = students[~students["label"].isin(["relational_intra", "relational (cross=False)"])]
    assert zero.estimate == pytest.approx(stats.spearmanr(kept["S"], kept["zero_shot"])[0])
    # the intra-only students (smallest S, worst zero-shot) would have made the correlation positive
    assert zero.estimate < 0 < stats.spearmanr(students["S"], students["zero_shot"])[0]


# --- (c) collapse in the verdict -------------------------------------------------------------------------------


@pytest.mark.parametrize("collapse", ["one seed flagged", "mean erank 4.5"])
def test_a_collapsed_similarity_is_named_in_the_verdict(collapse):
    students = _students()
    similarity = students["label"] == "similarity"
    if collapse == "one seed flagged":
        students.loc[similarity[similarity].index[0], "collapsed"] = 1.0
    else:
        students.loc[similarity, "erank_3d"] = [4.2, 4.5, 4.8]  # none below 4, mean below 1.25 x 4
    claims = _by_number(evaluate_claims_v2(students, n_boot=200))
    assert all(c.verdict_category == HOLDS for n, c in claims.items() if n != 4)
    assert claims[6].verdict == "holds vs a collapsed baseline (similarity)"
    assert claims[3].verdict == "holds vs a collapsed baseline (similarity)"
    assert claims[2].verdict == "holds on a collapsed space (similarity)"
    assert claims[1].verdict == HOLDS and claims[5].verdict == HOLDS
    frame = claims_v2_frame(claims.values())
    assert set(frame.loc[frame["claim"] == 6, "verdict_category"]) == {HOLDS}
    assert frame.loc[frame["claim"] == 6, "collapsed"].iloc[0].startswith("similarity (")


def test_a_mean_effective_rank_above_the_margin_is_not_collapsed():
    students = _students()
    students.loc[students["label"] == "similarity", "erank_3d"] = COLLAPSE_ERANK + 0.5
    claims = _by_number(evaluate_claims_v2(students, n_boot=200))
    assert claims[2].verdict == HOLDS and claims[6].verdict == HOLDS
    assert claims_v2_frame([claims[6]])["collapsed"].iloc[0] == "none"


def test_a_verdict_that_is_not_holds_gets_the_same_note():
    students = _students()
    students.loc[students["label"] == "similarity", "collapsed"] = 1.0
    students.loc[students["label"] == "relational", "few_shot"] -= 30.0  # relational now far below similarity
    claim = _by_number(evaluate_claims_v2(students, n_boot=200))[6]
    assert claim.verdict == "does not hold vs a collapsed baseline (similarity)"


def test_a_collapsed_subject_and_baseline_are_told_apart():
    students = _students()
    students.loc[students["label"] == "relational", "collapsed"] = 1.0
    claims = _by_number(evaluate_claims_v2(students, n_boot=200))
    assert claims[5].verdict == "holds on a collapsed space (relational)"
    students.loc[students["label"] == "similarity", "collapsed"] = 1.0
    claims = _by_number(evaluate_claims_v2(students, n_boot=200))
    assert claims[6].verdict == "holds on a collapsed space (relational) and vs a collapsed baseline (similarity)"


# --- (d) claim 3: other temperatures shown, not judged ---------------------------------------------------------


def test_claim_3_shows_other_temperatures_without_judging_them():
    spec = {**SPEC, "contrastive (tau=0.2)": ("contrastive", {"tau": 0.2}, 0.02, 0.0, 0.01, 35.0, 36.0, 26.0)}
    claims = _by_number(evaluate_claims_v2(_students(spec), n_boot=200))
    claim = claims[3]
    assert claim.verdict == HOLDS and len(claim.statements) == 2
    (shown,) = claim.shown
    assert shown.text == "S(relational) − S(contrastive τ=0.2) < 0"
    assert shown.estimate > 0 and shown.status == "contradicted"  # judged, it would have failed the claim
    frame = claims_v2_frame([claim])
    row = frame[frame["statement"] == shown.text].iloc[0]
    assert row["status"] == SHOWN and not row["judged"] and row["verdict"] == HOLDS
    without = _by_number(evaluate_claims_v2(_students(), n_boot=200))[3]
    assert without.shown == () and without.statements == claim.statements


# --- rule 5: the relational configuration; rule 6: seeds, convergence, budget ---------------------------------


def test_relational_is_lambda_one_with_both_terms_even_with_fewer_seeds():
    students = _students()
    for label, s in (("relational (lam=0.5)", 5.0), ("relational (intra=False)", 6.0)):
        extra = students[students["label"] == "relational"].copy()
        extra = pd.concat([extra, extra.iloc[:1].assign(seed=3)])  # 4 seeds: more than the paper's relational
        extra["label"], extra["S"] = label, s
        students = pd.concat([students, extra], ignore_index=True)
    students = students.drop(columns="params")  # parameters read from the labels
    claims = _by_number(evaluate_claims_v2(students, n_boot=200))
    assert claims[3].verdict == HOLDS  # S 5 or 6 would contradict it
    assert claims_v2_frame([claims[3]])["seeds"].iloc[0] == "relational: 3; contrastive τ=0.07: 3; similarity: 3"
    v1 = {c.number: c for c in evaluate_claims(students, n_boot=200)}
    assert v1[3].statements[0].estimate > 0  # version 1 took the configuration with the most seeds


def test_convergence_and_budget_are_shown_per_configuration():
    convergence = {"contrastive (tau=0.07)": "drifting", "relational": "converged"}
    claims = _by_number(evaluate_claims_v2(_students(), convergence=convergence, budget=3000, n_boot=200))
    assert claims[5].convergence == "relational: converged; contrastive τ=0.07: drifting"
    assert claims[6].convergence == "relational: converged; similarity: not checked"
    frame = claims_v2_frame(claims.values())
    assert set(frame["budget"]) == {"3000"}
    plain = claims_v2_frame(evaluate_claims_v2(_students(), n_boot=200))
    assert set(plain["convergence"]) == {"not checked"} and set(plain["budget"]) == {"not given"}


# --- (e) the same numbers as version 1 where the rule is the same ----------------------------------------------


def test_judged_statements_equal_version_1_where_the_rule_is_the_same():
    spec = {**SPEC, "contrastive (tau=1.0)": ("contrastive", {"tau": 1.0}, -5.0, 5.0, 9.0, 1.0, 1.0, 1.0)}
    students = _students(spec, noise=2.0, rng_seed=5)  # noisy: a mix of statuses
    v1 = claims_frame(evaluate_claims(students, n_boot=500))
    v2 = claims_v2_frame(evaluate_claims_v2(students, n_boot=500))
    judged = v2[v2["judged"]].reset_index(drop=True)
    same = judged["claim"] != 4
    columns = ["claim", "statement", "n", "status"]
    assert judged.loc[same, columns].equals(v1.loc[same, columns])
    for column in ("estimate", "ci_low", "ci_high"):
        assert np.allclose(judged.loc[same, column], v1.loc[same, column], equal_nan=True)
    assert list(judged.loc[same, "verdict_category"]) == list(v1.loc[same, "verdict"])
    # claim 4: the same point estimates (Spearman over the same students), another interval
    assert np.allclose(judged.loc[~same, "estimate"], v1.loc[~same, "estimate"])
    assert len(set(v1["status"])) > 1


def test_writer_writes_the_three_files(tmp_path):
    spec = {**SPEC, "contrastive (tau=0.2)": ("contrastive", {"tau": 0.2}, 0.02, 0.0, 0.01, 35.0, 36.0, 26.0)}
    paths = write_claims_v2(claims_v2_frame(evaluate_claims_v2(_students(spec), n_boot=200)), tmp_path)
    assert sorted(p.name for p in paths) == ["claims_v2.csv", "claims_v2.md", "claims_v2.tex"]
    text = (tmp_path / "claims_v2.md").read_text()
    assert "rule version 2" in text and SHOWN in text and "not checked" in text
    assert len(pd.read_csv(tmp_path / "claims_v2.csv")) == 12  # 11 judged, 1 shown
