"""Recipe selection from a tuning grid and suites that read the selection (``recipes: FILE``)."""

from __future__ import annotations

import json

import pytest
import yaml

from bench.study.tune import edge_selections, main, markdown_table, select
from bench.suites import load_suite, recipe_key, run_names

GRID = {
    "loss": ["similarity", {"name": "contrastive", "params": {"tau": 0.07}}],
    "optimizer": ["sgd"],
    "lr": [0.05, 0.5],
    "seed": [0],
}
SCORES = {  # (loss, lr) -> linear-probe mIoU of the fabricated runs
    ("similarity", 0.05): 0.30,
    ("similarity", 0.5): 0.20,
    ("contrastive", 0.05): 0.25,
    ("contrastive", 0.5): 0.25,  # a tie: the first recipe of the grid wins
}


@pytest.fixture()
def tuning(tmp_path):
    suite = tmp_path / "tune.yaml"
    suite.write_text(yaml.safe_dump({"name": "tune", "kind": "distill", "defaults": {"steps": 10}, "grid": GRID}))
    runs = load_suite(str(suite)).runs
    out = tmp_path / "runs"
    for run, name in zip(runs, run_names(runs), strict=True):
        (out / name).mkdir(parents=True)
        score = SCORES[(run["loss"], run["lr"])]
        (out / name / "metrics.json").write_text(json.dumps({"linear_probe": {"miou": score}}))
    return suite, out


def test_selects_the_best_recipe_per_loss_configuration(tuning):
    suite, out = tuning
    result = select(str(suite), out)
    assert result["recipe_fields"] == ["lr"] and result["complete"]
    sim, con = recipe_key("similarity", {}), recipe_key("contrastive", {"tau": 0.07})
    assert result["selected"][sim]["recipe"] == {"lr": 0.05} and result["selected"][sim]["score"] == 0.30
    assert result["selected"][con]["recipe"] == {"lr": 0.05}  # tie: first in the grid
    assert len(result["grid"]) == 4 and all(e["score"] is not None for e in result["grid"])


def test_unfinished_grid_is_refused_and_cli_writes_the_file(tuning, tmp_path, capsys):
    suite, out = tuning
    (out / run_names(load_suite(str(suite)).runs)[0] / "metrics.json").unlink()
    with pytest.raises(ValueError, match="1 of 4 tuning runs have not finished"):
        select(str(suite), out)
    recipes = tmp_path / "recipes.json"
    assert main(["--suite", str(suite), "--runs", str(out), "--out", str(recipes)]) == 2
    assert main(["--suite", str(suite), "--runs", str(out), "--out", str(recipes), "--allow-missing"]) == 0
    assert json.loads(recipes.read_text())["complete"] is False
    assert "**" in recipes.with_suffix(".md").read_text()


def test_a_run_of_another_budget_is_refused(tuning):
    # a folder trained with `--steps` (or any other change) is not the suite's grid: its score must not select
    from bench.distill import resolve_distill

    suite, out = tuning
    run = load_suite(str(suite)).runs[1]
    folder = out / run_names(load_suite(str(suite)).runs)[1]
    (folder / "config.json").write_text(json.dumps(resolve_distill(run)))
    assert select(str(suite), out)["complete"]  # its own configuration: accepted
    (folder / "config.json").write_text(json.dumps({**resolve_distill(run), "steps": 20}))
    with pytest.raises(ValueError, match=r"config.json is not suite .*configuration of that run \(differs in: steps\)"):
        select(str(suite), out)


def test_the_table_is_configurations_by_recipes_and_notes_edge_selections():
    def entry(configuration, optimizer, lr, score):
        recipe = {"optimizer": optimizer, "lr": lr}
        return {"run": f"{configuration}-{optimizer}{lr}", "configuration": configuration, "recipe": recipe,
                "score": score}  # fmt: skip

    grid = [entry("a", "sgd", lr, s) for lr, s in ((0.05, 0.1), (0.16, 0.3), (0.5, 0.2))]
    grid += [entry("b", "sgd", lr, s) for lr, s in ((0.05, 0.1), (0.16, 0.2), (0.5, 0.4))]
    grid += [entry("a", "adamw", 1e-3, 0.25), entry("b", "adamw", 1e-3, None)]
    best = {"a": grid[1], "b": grid[5]}
    selected = {c: {"recipe": e["recipe"], "score": e["score"], "run": e["run"]} for c, e in best.items()}
    result = {"recipe_fields": ["optimizer", "lr"], "grid": grid, "selected": selected}
    assert edge_selections(result) == ["b: lr 0.5 is the largest value tried"]  # a's 0.16 is inside; adamw: 1 value
    lines = markdown_table(result).splitlines()
    assert lines[0] == "| configuration | sgd 0.05 | sgd 0.16 | sgd 0.5 | adamw 0.001 | selected |"
    assert lines[2] == "| a | 10.0 | **30.0** | 20.0 | 25.0 | sgd 0.16 |"
    assert lines[3] == "| b | 10.0 | 20.0 | **40.0** | – | sgd 0.5 |"  # – : not run yet
    assert lines[-1] == "- b: lr 0.5 is the largest value tried"


def test_a_suite_reads_its_recipes(tuning, tmp_path):
    suite, out = tuning
    recipes = tmp_path / "recipes.json"
    assert main(["--suite", str(suite), "--runs", str(out), "--out", str(recipes)]) == 0
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "name": "study", "kind": "distill", "recipes": "recipes.json", "defaults": {"lr": 9.0, "steps": 10},
        "grid": [{"loss": ["similarity", {"name": "contrastive", "params": {"tau": 0.07}}], "seed": [0, 1]},
                 {"loss": ["similarity"], "lr": [0.1], "seed": [0]}],
    }))  # fmt: skip
    runs = load_suite(str(study)).runs
    assert [r["lr"] for r in runs] == [0.05, 0.05, 0.05, 0.05, 0.1]  # the grid's explicit lr wins
    study.write_text(study.read_text().replace("tau: 0.07", "tau: 0.2"))
    with pytest.raises(ValueError, match="holds no recipe for contrastive"):
        load_suite(str(study))
    (tmp_path / "recipes.json").unlink()
    with pytest.raises(ValueError, match="does not exist: run the tuning suite"):
        load_suite(str(study))


def test_defaults_from_inherits_and_overrides(tmp_path):
    base = {"name": "base", "kind": "distill", "defaults": {"steps": 10, "lr": 0.5, "val_scenes": 3},
            "grid": {"loss": ["similarity"], "seed": [0]}}  # fmt: skip
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    child = {"name": "child", "kind": "distill", "defaults_from": "base.yaml", "defaults": {"steps": 20},
             "grid": {"loss": ["similarity"], "lr": [0.05], "seed": [0]}}  # fmt: skip
    (tmp_path / "child.yaml").write_text(yaml.safe_dump(child))
    (run,) = load_suite(str(tmp_path / "child.yaml")).runs
    assert (run["steps"], run["lr"], run["val_scenes"]) == (20, 0.05, 3)  # own default, grid, inherited
    grandchild = {**child, "name": "grandchild", "defaults_from": "child.yaml", "defaults": {}}
    (tmp_path / "grandchild.yaml").write_text(yaml.safe_dump(grandchild))
    assert load_suite(str(tmp_path / "grandchild.yaml")).runs[0]["steps"] == 20
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({**base, "defaults_from": "grandchild.yaml"}))
    with pytest.raises(ValueError, match="cycle"):
        load_suite(str(tmp_path / "child.yaml"))
    (tmp_path / "child.yaml").write_text(yaml.safe_dump({**child, "defaults_from": "nowhere"}))
    with pytest.raises(ValueError, match="unknown suite 'nowhere'"):
        load_suite(str(tmp_path / "child.yaml"))
