"""The few-shot protocol's selection on val (``bench.study.few_shot_tune``): grid files, the criterion, the CLI."""

from __future__ import annotations

import json

import pytest
import yaml

import bench.study.few_shot_tune as few_shot_tune
from bench.results import write_json
from bench.study.few_shot_tune import Grid, load_grid, main, markdown_table, option_label, select

OPTIONS = ({"ft_lr": 0.05}, {"ft_lr": 0.02, "ft_warmup": 0.1}, {"ft_lr": 0.01})
MIOU = {  # (option, student) -> (few_shot, few_shot_ood)
    (0, "a"): (0.2, 0.1),
    (0, "b"): (0.4, 0.3),  # option 0: mean of (0.15, 0.35) = 0.25
    (1, "a"): (0.3, 0.2),
    (1, "b"): (0.3, 0.2),  # option 1: 0.25 as well, a tie: the first option wins
    (2, "a"): (0.1, 0.0),
    (2, "b"): (0.1, 0.0),  # option 2: 0.05
}


def _fabricate(work, students):
    for i, option in enumerate(OPTIONS):
        for _, folder in students:
            few, ood = MIOU[(i, folder.name)]
            first, peak = (2.0, 5.0) if (i, folder.name) == (1, "a") else (2.0, 2.0)  # one spike
            trace = {"first": first, "max": peak, "last": 1.0}
            result = {"few_shot": {"miou": few, "train_loss": trace}, "few_shot_ood": {"miou": ood}}
            write_json(work / option_label(option) / f"{folder.name}.json", result)


def test_criterion_ties_and_spikes_hand_computed(tmp_path):
    students = [("loss a", tmp_path / "a"), ("loss b", tmp_path / "b")]
    _fabricate(tmp_path / "work", students)
    result = select(Grid(OPTIONS, {"eval_split": "val"}), students, tmp_path / "work", "cmd")
    scores = [row["score"] for row in result["options"]]
    assert scores == pytest.approx([0.25, 0.25, 0.05])
    assert result["selected"] == OPTIONS[0]  # tie with option 1: the first listed wins
    assert result["options"][0]["mean"] == pytest.approx({"few_shot": 0.3, "few_shot_ood": 0.2})
    assert result["options"][0]["worst"] == pytest.approx({"few_shot": 0.2, "few_shot_ood": 0.1})
    assert [row["spikes"] for row in result["options"]] == [0, 1, 0]
    table = markdown_table(result)
    assert "| **ft_lr0.05** | 25.0 | 30.0 | 20.0 | 20.0 | 10.0 | 0 |" in table
    assert "| loss a | 20.0 / 10.0 | 30.0* / 20.0 | 10.0 / 0.0 |" in table
    (tmp_path / "work" / option_label(OPTIONS[2]) / "b.json").unlink()
    with pytest.raises(ValueError, match="b.json is missing: run the grid first"):
        select(Grid(OPTIONS, {}), students, tmp_path / "work", "cmd")


@pytest.mark.parametrize(
    "grid,match",
    [
        ({"options": []}, "non-empty list `options`"),
        ({"options": [{"lr": 0.1}]}, r"sets \['lr'\]; an option sets downstream fields only"),
        ({"options": [{"ft_lr": 0.1}], "defaults": {"nonsense": 1}}, r"defaults \['nonsense'\]"),
        ({"options": [{"ft_lr": 0.1}, {"ft_lr": 0.1}]}, "two options are equal"),
    ],
)
def test_bad_grid_files_are_named(tmp_path, grid, match):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    with pytest.raises(ValueError, match=f"{path}.*{match}"):
        load_grid(path)


@pytest.mark.slow
def test_the_selection_runs_resumes_and_scores_the_ood_test_split(tiny_runs, tmp_path, monkeypatch, capsys):
    names = sorted(p.name for p in tiny_runs.iterdir() if (p / "metrics.json").is_file())
    recipes = tmp_path / "recipes.json"
    recipes.write_text(json.dumps({"selected": {f"configuration {n}": {"run": n} for n in names}}))
    grid = tmp_path / "grid.yaml"
    options = [{"ft_lr": 0.05}, {"ft_lr": 0.05, "ft_warmup": 0.5, "ft_clip_norm": 1.0}]
    ood = tmp_path / "ood"  # the OOD scenes of this test, generated here
    defaults = {"eval_split": "val", "ood_eval_split": "test", "ood_test_scenes": 1, "ood_dataroot": str(ood)}
    grid.write_text(yaml.safe_dump({"defaults": defaults, "options": options}))
    out, work = tmp_path / "protocol.json", tmp_path / "work"
    argv = ["--grid", str(grid), "--runs", str(tiny_runs), "--recipes", str(recipes), "--work", str(work),
            "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["selected"] in options and len(result["options"]) == 2
    for option in load_grid(grid).options:
        for name in names:
            saved = json.loads((work / option_label(option) / f"{name}.json").read_text())
            assert saved["run"] == name and saved["option"] == option
            for protocol in ("few_shot", "few_shot_ood"):
                assert 0.0 <= saved[protocol]["miou"] <= 1.0
                assert saved[protocol]["train_loss"]["first"] > 0 and saved[protocol]["grad_norm_max"] > 0
    assert sorted(p.name for p in ood.glob("ood-*/*.npz")) == ["ood-000000.npz", "ood-2000000.npz"]  # 1%, test

    def refuse(*args, **kwargs):
        raise AssertionError("a finished evaluation was repeated")

    monkeypatch.setattr(few_shot_tune, "evaluate", refuse)
    assert main(argv) == 0  # everything is in the work folder: nothing is evaluated again
    assert "**" in out.with_suffix(".md").read_text()
    recipes.write_text(json.dumps({"selected": {"configuration x": {"run": "not-run-s0"}}}))
    assert main(argv) == 2  # a student that has not finished is refused, naming it
    assert "not-run-s0: the selected run of configuration x has not finished" in capsys.readouterr().err
