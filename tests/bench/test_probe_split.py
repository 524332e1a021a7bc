"""The training probe's split: a suite that reports on test can keep its in-run probe on val (``probe_split``);
unset, the probe reads the evaluation split, as every run before the field did."""

from __future__ import annotations

import pytest
import torch

import bench.distill as distill
from bench.config import DistillConfig
from bench.results import RunDir, write_json
from bench.workspace import Workspace
from tests.conftest import TINY_DEFAULTS


class _Drawn(Exception):
    """Raised by the patched probe draw with the scan ids it was given."""


@pytest.mark.slow
@pytest.mark.parametrize("probe_split,expected", [(None, "test"), ("val", "val")])
def test_the_probe_is_drawn_from_probe_split(tmp_path, monkeypatch, probe_split, expected):
    values = {**TINY_DEFAULTS, "test_scenes": 1, "eval_split": "test", "dataroot": str(tmp_path / "scenes")}
    values["feature_cache"] = str(tmp_path / "features")
    cfg = DistillConfig(loss="similarity", seed=0, probe_split=probe_split, **values)

    def draw(scenes, *args, **kwargs):
        raise _Drawn(list(scenes.ids))

    monkeypatch.setattr(distill.GeometrySet, "draw", staticmethod(draw))
    with pytest.raises(_Drawn) as drawn:
        distill.run_distill(cfg, None, torch.device("cpu"), progress=False)
    split_ids = Workspace().scenes(cfg, expected, None, False).ids
    assert drawn.value.args[0] == list(split_ids[: cfg.probe.scenes])


def test_probe_split_is_checked_at_load():
    with pytest.raises(ValueError, match="synthetic splits are train, val and test"):
        DistillConfig(loss="similarity", seed=0, probe_split="holdout")
    with pytest.raises(ValueError, match="split test is empty"):
        DistillConfig(loss="similarity", seed=0, probe_split="test", test_scenes=0)


def test_runs_before_the_field_keep_their_identity(tmp_path):
    new = DistillConfig(loss="similarity", seed=0).flat()
    write_json(tmp_path / "config.json", {k: v for k, v in new.items() if k != "probe_split"})
    write_json(tmp_path / "metrics.json", {})
    assert RunDir(tmp_path).config_differences(new, DistillConfig.field_defaults()) == []
