"""SLidR as SLidR wrote it, on the harness side: superpixel features average unit pixels, and run folders of the
former region losses (re-normalised means of raw pixels) are not taken for the new ones."""

from __future__ import annotations

import pytest

from bench.config import DistillConfig
from bench.results import RunDir, write_json


def test_region_pixel_norm_is_slidr_s_for_region_losses_and_absent_elsewhere():
    assert DistillConfig(loss="slidr", seed=0).distillation.region_pixel_norm is True
    assert DistillConfig(loss="st_slidr", seed=0, region_pixel_norm=False).distillation.region_pixel_norm is False
    assert DistillConfig(loss="contrastive", seed=0).distillation.region_pixel_norm is None
    with pytest.raises(ValueError, match="region_pixel_norm applies to the region losses"):
        DistillConfig(loss="contrastive", seed=0, region_pixel_norm=True)


@pytest.mark.parametrize("loss", ["slidr", "st_slidr"])
def test_a_region_run_of_the_former_definition_is_refused(tmp_path, loss):
    """A run folder written before ``region_pixel_norm`` existed used raw pixels and re-normalised means: resuming
    it, or skipping it as finished, under the new definition would report the old loss's numbers."""
    new = DistillConfig(loss=loss, seed=0).flat()
    old = {k: v for k, v in new.items() if k != "region_pixel_norm"}
    write_json(tmp_path / "config.json", old)
    assert "region_pixel_norm" in RunDir(tmp_path).config_differences(new, DistillConfig.field_defaults())


def test_a_pair_run_of_before_the_field_still_resumes(tmp_path):
    new = DistillConfig(loss="contrastive", seed=0).flat()
    write_json(tmp_path / "config.json", {k: v for k, v in new.items() if k != "region_pixel_norm"})
    assert RunDir(tmp_path).config_differences(new, DistillConfig.field_defaults()) == []
