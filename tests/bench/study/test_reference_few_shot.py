"""The random-init few-shot reference row: the randomly initialised student fine-tuned on every 1% subset of the
configuration, in and out of distribution, its mean over subsets (and seeds) in one JSON, and its lines in
references.md."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from bench.study.reference import ROWS, main
from geomstruct.tables import load_references, write_references
from tests.conftest import TINY_DEFAULTS


def _suite(tmp_path, **overrides):
    defaults = {**TINY_DEFAULTS, "train_scenes": 4, "few_shot_every": 2, "ft_steps": 1,
                "dataroot": str(tmp_path / "scenes"), "feature_cache": str(tmp_path / "features"),
                **overrides}  # fmt: skip
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "kind": "distill", "defaults": defaults,
                                    "grid": {"loss": ["similarity"], "seed": [0]}}))  # fmt: skip
    return path


@pytest.mark.slow
def test_few_shot_random_row_writes_the_mean_over_subsets_and_appears_in_references(tmp_path):
    assert "few_shot_random" in ROWS
    out = tmp_path / "suite" / "references"
    args = ["--suite", str(_suite(tmp_path, few_shot_subsets=3)), "--out", str(out), "--no-progress"]
    assert main([*args, "--rows", "few_shot_random"]) == 0
    row = json.loads((out / "few_shot_random.json").read_text())
    assert row["kind"] == "reference" and row["row"] == "few_shot_random" and row["n_subsets"] == 3
    assert row["seeds"] == [0] and row["interval_over"] == "subsets" and row["config"]["few_shot_subsets"] == 3
    values = [s["miou"] for s in row["subsets"]]
    assert [s["split"] for s in row["subsets"]] == ["train_1pct", "train_1pct@1", "train_1pct@2"]
    assert row["miou"] == pytest.approx(np.mean(values)) and row["miou_ci"][0] <= row["miou"] <= row["miou_ci"][1]
    assert row["train_scans"] == 2 and row["steps"] == 1
    ood = row["ood"]  # the suite's protocols hold few_shot_ood
    assert ood["dataset"] == "synthetic" and ood["split"] == "val" and len(ood["subsets"]) == 3
    assert ood["miou"] == pytest.approx(np.mean([s["miou"] for s in ood["subsets"]]))

    rows, problems = load_references([tmp_path / "suite"])
    assert problems == [] and [r["row"] for r in rows] == ["few_shot_random"]
    write_references(rows, tmp_path)
    text = (tmp_path / "references.md").read_text()
    lines = [line for line in text.splitlines() if "random init" in line]
    assert len(lines) == 2 and "random init, few-shot 1% (3 subsets)" in lines[0]
    assert "random init, OOD few-shot 1% (3 subsets)" in lines[1] and "synthetic OOD val" in lines[1]
    low, high = (100 * v for v in row["miou_ci"])
    assert f"{100 * row['miou']:.1f} [{low:.1f}, {high:.1f}]" in lines[0]
    assert f"{100 * ood['miou']:.1f} [" in lines[1] and "scans per subset" in lines[0]
    assert all(line.count("|") == 8 for line in lines)  # the table's seven columns
    assert "random-init few-shot rows" in text


@pytest.mark.slow
def test_seeds_average_random_inits_and_one_subset_has_no_interval(tmp_path):
    out = tmp_path / "ref"
    suite = _suite(tmp_path, protocols=["few_shot"])
    args = ["--suite", str(suite), "--out", str(out), "--no-progress", "--rows", "few_shot_random"]
    assert main([*args, "--seeds", "0", "1"]) == 0
    row = json.loads((out / "few_shot_random.json").read_text())
    assert row["seeds"] == [0, 1] and row["interval_over"] == "seeds" and "ood" not in row
    assert [s["seed"] for s in row["per_seed"]] == [0, 1]
    assert all("subsets" not in s and set(s) >= {"miou", "per_class", "train_scans"} for s in row["per_seed"])
    assert row["miou"] == pytest.approx(np.mean([s["miou"] for s in row["per_seed"]]))
    write_references([{**row, "path": "x.json"}], tmp_path)
    text = (tmp_path / "references.md").read_text()
    lines = [line for line in text.splitlines() if "random init" in line]
    assert len(lines) == 1 and "random init, few-shot 1% (1 subset, 2 seeds)" in lines[0]
