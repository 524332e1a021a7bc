"""The shipped distill suites parse, resolve and hold what the issue asks of them."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.distill import resolve_distill
from bench.suites import load_suite, run_name
from models.losses import LOSSES


@pytest.mark.parametrize("name", ["smoke", "full"])
def test_shipped_distill_suites_resolve(name):
    suite = load_suite(name)
    assert suite.kind == "distill"
    resolved = [resolve_distill(run) for run in suite.runs]
    assert {r["loss"] for r in resolved} == set(LOSSES)  # every loss
    assert all(set(r["protocols"]) == {"zero_shot", "linear_probe", "few_shot", "few_shot_ood"} for r in resolved)
    names = [run_name(run) for run in suite.runs]
    assert len(set(names)) == len(names)


def test_full_suite_design():
    runs = load_suite("full").runs
    assert len(runs) >= 12
    seeds = Counter((r["loss"], tuple(sorted(r["loss_params"].items()))) for r in runs)
    assert seeds[("contrastive", (("tau", 0.07),))] == 3
    assert seeds[("similarity", ())] == 3
    assert seeds[("relational", (("lam", 1.0),))] == 3
    taus = {r["loss_params"]["tau"] for r in runs if r["loss"] == "contrastive"}
    assert 0.07 in taus and len(taus) >= 3
    assert {r["features_per_class"] for r in runs} == {5000}
    assert {r["n_pairs"] for r in runs} == {4096}
