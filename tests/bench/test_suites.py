"""The shipped distill suites parse, resolve and hold what the issue asks of them."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from bench.distill import resolve_distill
from bench.suites import SUITE_DIR, load_suite, recipe_key, run_name
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
    assert set(seeds.values()) == {3}  # three seeds for every configuration (issue 15)
    assert seeds[("relational", (("lam", 1.0),))] == 3
    taus = {r["loss_params"]["tau"] for r in runs if r["loss"] == "contrastive"}
    assert 0.07 in taus and len(taus) >= 3
    assert {r["features_per_class"] for r in runs} == {5000}
    assert {r["eval_split"] for r in runs} == {"test"} and {r["test_scenes"] for r in runs} == {24}


def test_tuning_suite_is_the_full_study_on_val():
    full, tune = load_suite("full").runs, load_suite("tune").runs
    key = lambda r: (r["loss"], tuple(sorted(r["loss_params"].items())))  # noqa: E731
    assert {key(r) for r in tune} == {key(r) for r in full}  # every configuration of the study is tuned
    grid = Counter(key(r) for r in tune)
    assert set(grid.values()) == {6} and {r["seed"] for r in tune} == {0}  # the same grid for every one
    for optimizer in ("sgd", "adamw"):
        lrs = sorted({r["lr"] for r in tune if r["optimizer"] == optimizer})
        assert len(lrs) == 3 and lrs[-1] / lrs[0] >= 10  # three values spanning a decade
    assert {r["eval_split"] for r in tune} == {"val"} and {tuple(r["protocols"]) for r in tune} == {("linear_probe",)}
    shared = {k for k in full[0] if k not in ("loss", "loss_params", "seed", "optimizer", "lr", "eval_split",
                                              "protocols")}  # fmt: skip
    assert all(r[k] == full[0][k] for r in tune for k in shared)  # same data, student, budget


def test_full_suite_runs_each_configuration_with_its_committed_recipe():
    recipes = json.loads((SUITE_DIR / "recipes.json").read_text())
    assert recipes["complete"] and recipes["suite"] == "tune"
    for run in load_suite("full").runs:
        selected = recipes["selected"][recipe_key(run["loss"], run["loss_params"])]["recipe"]
        assert (run["optimizer"], run["lr"]) == (selected["optimizer"], selected["lr"])
    assert len({(r["optimizer"], r["lr"]) for r in load_suite("full").runs}) > 1  # the recipes differ by loss


def test_nuscenes_suite_is_slidrs_recipe(tmp_path):
    from dataclasses import replace

    from bench.data.synthetic import VARIANTS
    from bench.data.synthetic.nuscenes_format import write_nuscenes_dataroot

    small = replace(VARIANTS["nuscenes"], rig=VARIANTS["nuscenes"].rig.with_resolution(160, 96))
    root = write_nuscenes_dataroot(tmp_path / "nusc", "v1.0-trainval", {"train": 1, "val": 1}, 1, config=small)
    (tmp_path / "kitti" / "sequences").mkdir(parents=True)
    (tmp_path / "clip.pt").write_bytes(b"")
    suite = load_suite("nuscenes")
    where = {"dataroot": str(root), "clip_checkpoint": str(tmp_path / "clip.pt")}
    where["ood_dataroot"] = str(tmp_path / "kitti")
    resolved = [resolve_distill({**run, **where}) for run in suite.runs]
    assert {r["loss"] for r in resolved} == {r["loss"] for r in map(resolve_distill, load_suite("full").runs)}
    first = resolved[0]
    assert (first["preset"], first["voxel_size"], first["voxel_system"]) == ("slidr", 0.1, "cylindrical")
    assert (first["batch_size"], first["n_pairs"], first["lr"], first["optimizer"]) == (16, 4096, 0.5, "sgd")
    assert first["steps"] == 50 * 28130 // 16  # 50 epochs of the 28 130 train keyframes
    assert first["augmentation"] == {} and first["sync_bn"] and first["teacher"] == "clip"
    assert first["ood_dataset"] == "semantickitti" and first["version"] == "v1.0-trainval"


def test_doubling_suite_pairs_every_selected_tuning_run(tmp_path):
    import json
    import shutil

    from bench.study.doubling import _identity
    from bench.suites import SUITE_DIR, recipe_key

    tune = load_suite("tune").runs
    selected = {}  # a fabricated selection: the AdamW 1e-3 recipe of every configuration
    for run in tune:
        if run["optimizer"] == "adamw" and run["lr"] == 0.001:
            selected[recipe_key(run["loss"], run["loss_params"])] = {"recipe": {"optimizer": "adamw", "lr": 0.001}}
    (tmp_path / "recipes.json").write_text(json.dumps({"selected": selected}))
    shutil.copy(SUITE_DIR / "doubling.yaml", tmp_path / "doubling.yaml")
    doubled = load_suite(str(tmp_path / "doubling.yaml")).runs
    twins = {_identity(resolve_distill(r)): r for r in tune if r["optimizer"] == "adamw" and r["lr"] == 0.001}
    assert len(doubled) == len(twins) == 11
    for run in doubled:
        twin = twins[_identity(resolve_distill(run))]  # the same configuration but for the steps
        assert run["steps"] == 2 * twin["steps"]
