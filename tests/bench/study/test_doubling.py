"""The doubling check: runs paired by configuration, the 1-point / 0.05 rule at its edges, and the CLI."""

from __future__ import annotations

import json

import pytest

from bench.study.doubling import chain, compare, main


def _run(folder, name, steps, miou, u, t, lr=0.5, loss="similarity"):
    path = folder / name
    path.mkdir(parents=True)
    config = {"loss": loss, "loss_params": {}, "seed": 0, "optimizer": "sgd", "lr": lr, "steps": steps,
              "checkpoint_every": steps // 2}  # fmt: skip
    (path / "config.json").write_text(json.dumps(config))
    (path / "metrics.json").write_text(json.dumps({"linear_probe": {"miou": miou}, "geometry": {"U": u, "T": t}}))


def test_rule_edges_and_pairing(tmp_path):
    base, doubled = tmp_path / "base", tmp_path / "doubled"
    _run(base, "a", 100, 0.300, 1.00, 0.50, lr=0.5)
    _run(base, "b", 100, 0.300, 1.00, 0.50, lr=0.05)
    _run(base, "c", 100, 0.300, 1.00, 0.50, loss="relational")
    _run(doubled, "a", 200, 0.3099, 1.0499, 0.4501, lr=0.5)  # inside every bound: converged
    _run(doubled, "b", 200, 0.3101, 1.00, 0.50, lr=0.05)  # 1.01 points of mIoU: not converged
    _run(doubled, "c", 200, 0.300, 1.00, 0.5501, loss="relational")  # T moved by 0.0501
    result = compare(base, doubled)
    by_lr = {(r["configuration"], r["recipe"]["lr"]): r for r in result["rows"]}
    assert by_lr[("similarity {}", 0.5)]["converged"]
    assert by_lr[("similarity {}", 0.5)]["change"]["miou"] == pytest.approx(0.0099)
    assert not by_lr[("similarity {}", 0.05)]["converged"]
    assert not by_lr[("relational {}", 0.5)]["converged"]
    assert by_lr[("similarity {}", 0.05)]["base_run"].endswith("base/b")  # paired by configuration, not name
    assert not result["all_converged"]


def test_unpaired_runs_are_named(tmp_path):
    base, doubled = tmp_path / "base", tmp_path / "doubled"
    _run(base, "a", 100, 0.3, 1.0, 0.5)
    _run(doubled, "a", 300, 0.3, 1.0, 0.5)  # three times the steps: no twin
    with pytest.raises(ValueError, match="half its 300 steps"):
        compare(base, doubled)
    assert main([str(base), str(tmp_path / "empty"), "--out", str(tmp_path / "x")]) == 2


def test_cli_writes_json_and_markdown(tmp_path, capsys):
    base, doubled = tmp_path / "base", tmp_path / "doubled"
    _run(base, "a", 100, 0.30, 1.0, 0.5)
    _run(doubled, "a", 200, 0.32, 1.0, 0.5)
    assert main([str(base), str(doubled), "--out", str(tmp_path / "out" / "doubling")]) == 0
    data = json.loads((tmp_path / "out" / "doubling.json").read_text())
    (doubling,) = data["doublings"]
    assert doubling["rows"][0]["change"]["miou"] == pytest.approx(0.02) and not doubling["all_converged"]
    assert data["budget"] is None and data["converged_at"] == {"similarity {} sgd 0.5 seed 0": None}
    table = (tmp_path / "out" / "doubling.md").read_text()
    assert "30.0 → 32.0" in table and "+2.0" in table and "**no**" in table
    assert "no budget of the chain converges every configuration" in capsys.readouterr().out


def test_a_chain_finds_the_smallest_converged_budget(tmp_path, capsys):
    """S = 100, 200, 400, 800: similarity converges from 200, relational from 400; every configuration from 400.
    A run written before a configuration field existed pairs with one that has the field at its default."""
    folders = [tmp_path / f"s{s}" for s in (100, 200, 400, 800)]
    similarity = [0.20, 0.30, 0.305, 0.31]  # doublings: +10, +0.5, +0.5 points
    relational = [0.10, 0.20, 0.25, 0.255]  # +10, +5, +0.5
    for folder, steps, a, b in zip(folders, (100, 200, 400, 800), similarity, relational, strict=True):
        _run(folder, "a", steps, a, 1.0, 0.5)
        _run(folder, "b", steps, b, 1.0, 0.5, loss="relational")
    config = folders[-1] / "b" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "seg_loss": "ce"}))  # a later field, default
    config = folders[-1] / "a" / "config.json"  # a few-shot setting the check does not read
    config.write_text(json.dumps({**json.loads(config.read_text()), "ft_lr": 0.01, "ood_test_scenes": 3}))
    result = chain(folders)
    assert result["converged_at"] == {"similarity {} sgd 0.5 seed 0": 200, "relational {} sgd 0.5 seed 0": 400}
    assert result["budget"] == 400 and len(result["doublings"]) == 3
    assert main([str(f) for f in folders] + ["--out", str(tmp_path / "chain")]) == 0
    text = (tmp_path / "chain.md").read_text()
    assert "every configuration converged from 400 steps" in text
    assert "| relational {} sgd 0.5 seed 0 | **no** | **no** | yes | 400 |" in text
    with pytest.raises(ValueError, match="at least two run folders"):
        chain(folders[:1])


def test_recipes_restrict_the_check_to_the_selected_runs(tmp_path, capsys):
    base, doubled = tmp_path / "base", tmp_path / "doubled"
    for lr in (0.5, 0.05):
        _run(base, f"s{lr}", 100, 0.30, 1.0, 0.5, lr=lr)
    _run(doubled, "old", 200, 0.40, 1.0, 0.5, lr=0.5)  # the run of an earlier selection: not converged
    _run(doubled, "new", 200, 0.305, 1.0, 0.5, lr=0.05)  # the selected recipe's run: converged
    recipes = tmp_path / "recipes.json"
    recipes.write_text(json.dumps({"selected": {"similarity {}": {"recipe": {"optimizer": "sgd", "lr": 0.05}}}}))
    assert len(compare(base, doubled)["rows"]) == 2
    assert main([str(base), str(doubled), "--recipes", str(recipes), "--out", str(tmp_path / "d")]) == 0
    data = json.loads((tmp_path / "d.json").read_text())
    ((row,),) = [d["rows"] for d in data["doublings"]]
    assert row["recipe"]["lr"] == 0.05 and row["converged"] and data["budget"] == 100
    # the command that rewrites these very files (not the default study/results/doubling)
    assert data["command"].endswith(f"--recipes {recipes.as_posix()} --out {(tmp_path / 'd').as_posix()}")
    # a selected configuration without its doubled run is named, not silently left out
    selected = {
        "similarity {}": {"recipe": {"optimizer": "sgd", "lr": 0.05}},
        "relational {}": {"recipe": {"optimizer": "sgd", "lr": 0.5}},
    }
    recipes.write_text(json.dumps({"selected": selected}))
    assert main([str(base), str(doubled), "--recipes", str(recipes), "--out", str(tmp_path / "d")]) == 2
    assert "no finished run of the selected recipe of relational {}" in capsys.readouterr().err
    assert main([str(base), str(doubled), "--recipes", str(tmp_path / "none.json"), "--out", str(tmp_path / "d")]) == 2
