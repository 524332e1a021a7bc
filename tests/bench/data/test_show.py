"""The picture: draw_scan and its command line."""

import numpy as np
import pytest
from PIL import Image

from bench.data.show import draw_scan, main, save_figure


@pytest.mark.slow
def test_draw_scan_writes_a_png(tmp_path, ten_scenes):
    path = save_figure(draw_scan(ten_scenes[0]), tmp_path / "scan.png")
    img = np.asarray(Image.open(path))
    assert img.shape[0] > 300 and img.shape[1] > 1000
    assert path.stat().st_size < 1_000_000


def test_draw_scan_without_labels_colours_by_depth(tmp_path, ten_scenes):
    scan = ten_scenes[1]
    scan_nolabels = type(scan)(scan.scan_id, scan.points, None, scan.cameras, scan.classes)
    fig = draw_scan(scan_nolabels)
    assert "depth" in fig._suptitle.get_text()
    save_figure(fig, tmp_path / "depth.png")


def test_cli_help_and_nuscenes_keyframe(tmp_path, capsys, nuscenes_sample):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "synthetic" in capsys.readouterr().out
    out = tmp_path / "nusc.png"
    assert main(["nuscenes", "--dataroot", str(nuscenes_sample), "--split", "mini_val", "--out", str(out)]) == 0
    assert out.stat().st_size < 1_000_000
