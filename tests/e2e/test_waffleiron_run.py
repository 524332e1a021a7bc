"""A suite with the WaffleIron student end to end on the synthetic world: ``student: waffleiron`` with a tiny
override of its ``small`` preset, distilled, probed, linearly probed and fine-tuned by ``python -m bench.run``. The
numbers mean nothing: the path (the student's ``forward(points, batch, index)``, its scan cache, the probe and the
segmentation head on its outputs) is what is tested."""

from __future__ import annotations

import json

import yaml

from bench.run import main as run_main
from tests.conftest import TINY_DEFAULTS

TINY_WAFFLEIRON = {"channels": 8, "depth": 2, "grids_shape": [[16, 16], [16, 4], [16, 4]], "num_neighbors": 4}


def test_a_waffleiron_suite_runs_every_protocol(tmp_path, capsys):
    defaults = {k: v for k, v in TINY_DEFAULTS.items() if k != "student_overrides"}
    defaults |= {"dataroot": str(tmp_path / "scenes"), "steps": 4, "probe_every": 2, "checkpoint_every": 4}
    defaults |= {"student": {"name": "waffleiron", "preset": "small", "overrides": TINY_WAFFLEIRON}}
    suite = {
        "name": "waffleiron",
        "kind": "distill",
        "description": "the WaffleIron student on the synthetic world (a path check)",
        "defaults": {**defaults, "protocols": ["linear_probe", "few_shot"]},
        "grid": {"loss": ["contrastive"], "seed": [0]},
    }
    path = tmp_path / "waffleiron.yaml"
    path.write_text(yaml.safe_dump(suite))
    out = tmp_path / "runs"
    assert run_main(["--suite", str(path), "--out", str(out), "--no-progress"]) == 0, capsys.readouterr()
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    assert run.name == "contrastive-s0"
    config = json.loads((run / "config.json").read_text())
    assert config["student"]["name"] == "waffleiron" and config["student"]["overrides"]["depth"] == 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["linear_probe"]["miou"] <= 1.0 and "few_shot" in metrics
    assert {"U", "T"} <= set(metrics["geometry"])
