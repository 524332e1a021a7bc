"""Published checkpoints under the lens: SLidR's layout mapped onto the MinkUNet student, and ``python -m bench.lens``.

The reference for the kernel order is a direct implementation of SLidR's network on MinkowskiEngine's semantics
(:func:`slidr_forward`): every convolution reads SLidR's ``kernel`` tensors as they are, kernel index
``m = i_x + k i_y + k^2 i_z`` (x fastest; ``kernel_region::coordinate_at`` in MinkowskiEngine's
``src/kernel_region.hpp``), input ``p + (i - k // 2)`` for odd kernels and ``2 p + i`` for the stride-2 kernel 2
(coordinates in each tensor's own grid units).
"""

from __future__ import annotations

import json

import pytest
import torch

from models.students import build_student
from models.students.checkpoints import (
    LAYOUTS,
    CheckpointMismatch,
    kernel_from_minkowski,
    load_published,
    map_scalr,
    map_slidr,
    read_state,
    slidr_name,
    to_slidr,
    unwrap_state,
)
from models.students.sparse import SparseTensor

SMALL = {"planes": (4, 6, 8, 8, 8, 6, 4, 4), "layers": (2, 1, 1, 1, 1, 1, 1, 2), "init_dim": 4}
"""A reduced-width configuration with SLidR's key structure (4 levels, shortcuts where widths change)."""


def _student(out_dim: int = 5, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_student("minkunet", out_dim=out_dim, preset="slidr", **{**SMALL, **overrides})


def _randomised_slidr_state(student, seed: int = 1) -> dict[str, torch.Tensor]:
    """SLidR-layout tensors for ``student``'s shapes, every value random (batch-norm statistics too)."""
    gen = torch.Generator().manual_seed(seed)
    state = to_slidr({k.removeprefix("network."): v for k, v in student.state_dict().items()})
    out = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            out[key] = torch.rand(value.shape, generator=gen) + 0.5
        else:
            out[key] = torch.randn(value.shape, generator=gen) * 0.5
    return out


# --- the key names ---------------------------------------------------------------------------------------------


def test_slidr_names_of_the_slidr_preset():
    student = build_student("minkunet", out_dim=64, preset="slidr")
    names = {slidr_name(k.removeprefix("network.")) for k in student.state_dict()}
    for key in (
        "conv0p1s1.kernel",
        "bn0.bn.weight",
        "conv1p1s2.kernel",
        "conv4p8s2.kernel",
        "bn4.bn.running_var",
        "block1.0.conv1.kernel",
        "block1.1.norm2.bn.bias",
        "block2.0.downsample.0.kernel",
        "block2.0.downsample.1.bn.running_mean",
        "block4.5.conv2.kernel",
        "convtr4p16s2.kernel",
        "bntr4.bn.weight",
        "convtr7p2s2.kernel",
        "bntr7.bn.num_batches_tracked",
        "block5.0.downsample.0.kernel",
        "block8.1.norm1.bn.weight",
        "final.kernel",
        "final.bias",
    ):
        assert key in names
    assert "block1.0.downsample.0.kernel" not in names  # 32 -> 32: no shortcut conv in SLidR either
    state = to_slidr({k.removeprefix("network."): v for k, v in student.state_dict().items()})
    assert state["conv0p1s1.kernel"].shape == (27, 1, 32)
    assert state["block2.0.downsample.0.kernel"].shape == (32, 64)  # 1x1 stride 1: (C_in, C_out)
    assert state["convtr4p16s2.kernel"].shape == (8, 256, 256)
    assert state["final.kernel"].shape == (96, 64) and state["final.bias"].shape == (1, 64)
    assert sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k) == 37_849_184


def test_kernel_order_is_minkowski_x_fastest():
    k = 3
    me = torch.arange(27.0).reshape(27, 1, 1)  # W_ME[m] = m
    ours = kernel_from_minkowski(me).flatten()
    for ix in range(k):
        for iy in range(k):
            for iz in range(k):
                assert ours[ix * 9 + iy * 3 + iz] == ix + 3 * iy + 9 * iz


def test_every_parameter_gets_its_value():
    student = _student()
    state = _randomised_slidr_state(student)
    mapped = map_slidr(state, student)
    assert set(mapped) == set(student.state_dict())
    back = to_slidr({k.removeprefix("network."): v for k, v in mapped.items()})
    assert set(back) == set(state)
    for key, value in state.items():
        assert torch.equal(back[key], value.to(back[key].dtype)), key
    load_published_state = _student(seed=3)
    load_published_state.load_state_dict(mapped)
    for key, value in load_published_state.state_dict().items():
        assert torch.equal(value, mapped[key])


# --- forward equality against SLidR's kernel order -------------------------------------------------------------


def _offset(m: int, k: int) -> tuple[int, int, int]:
    i = (m % k, (m // k) % k, m // (k * k))
    return tuple(v - k // 2 for v in i) if k % 2 else i


def _conv(sites_in, feats, sites_out, kernel, k, mode):
    """MinkowskiEngine's convolution on dict sites: ``mode`` ``subm`` (p + offset), ``down`` (2 p + offset) or
    ``up`` (the output 2 p + offset of the input p)."""
    kernel = kernel if kernel.dim() == 3 else kernel.unsqueeze(0)
    index_in = {s: n for n, s in enumerate(sites_in)}
    index_out = {s: n for n, s in enumerate(sites_out)}
    out = feats.new_zeros(len(sites_out), kernel.shape[2])
    for m in range(kernel.shape[0]):
        d = _offset(m, k)
        if mode == "up":
            for p, n in index_in.items():
                q = (p[0], 2 * p[1] + d[0], 2 * p[2] + d[1], 2 * p[3] + d[2])
                if q in index_out:
                    out[index_out[q]] += feats[n] @ kernel[m]
            continue
        for p, n in index_out.items():
            scale = 2 if mode == "down" else 1
            q = (p[0], scale * p[1] + d[0], scale * p[2] + d[1], scale * p[3] + d[2])
            if q in index_in:
                out[n] += feats[index_in[q]] @ kernel[m]
    return out


def _bn(x, state, name):
    mean, var = state[f"{name}.bn.running_mean"], state[f"{name}.bn.running_var"]
    return (x - mean) / torch.sqrt(var + 1e-5) * state[f"{name}.bn.weight"] + state[f"{name}.bn.bias"]


def _block(sites, x, state, name):
    out = torch.relu(_bn(_conv(sites, x, sites, state[f"{name}.conv1.kernel"], 3, "subm"), state, f"{name}.norm1"))
    out = _bn(_conv(sites, out, sites, state[f"{name}.conv2.kernel"], 3, "subm"), state, f"{name}.norm2")
    residual = x
    if f"{name}.downsample.0.kernel" in state:
        residual = _bn(x @ state[f"{name}.downsample.0.kernel"], state, f"{name}.downsample.1")
    return torch.relu(out + residual)


def _stage(sites, x, state, stage):
    b = 0
    while f"block{stage}.{b}.conv1.kernel" in state:
        x = _block(sites, x, state, f"block{stage}.{b}")
        b += 1
    return x


def slidr_forward(state, sites, feats, normalize=True):
    """SLidR's ``Res16UNetBase.forward`` (eval mode) on MinkowskiEngine's semantics, from SLidR's tensors."""
    out = torch.relu(_bn(_conv(sites, feats, sites, state["conv0p1s1.kernel"], 3, "subm"), state, "bn0"))
    levels = [(sites, out)]
    for i in range(4):
        fine, x = levels[-1]
        coarse = sorted({(s[0], s[1] // 2, s[2] // 2, s[3] // 2) for s in fine})
        x = torch.relu(
            _bn(_conv(fine, x, coarse, state[f"conv{i + 1}p{2**i}s2.kernel"], 2, "down"), state, f"bn{i + 1}")
        )
        levels.append((coarse, _stage(coarse, x, state, i + 1)))
    sites_now, x = levels.pop()
    for j in range(4):
        fine, skip = levels.pop()
        up = _conv(sites_now, x, fine, state[f"convtr{4 + j}p{2 ** (4 - j)}s2.kernel"], 2, "up")
        x = torch.cat([torch.relu(_bn(up, state, f"bntr{4 + j}")), skip], dim=1)
        x = _stage(fine, x, state, 5 + j)
        sites_now = fine
    x = x @ state["final.kernel"] + state["final.bias"]
    return x / x.norm(dim=1, keepdim=True) if normalize else x


def _sites(n: int, seed: int) -> list[tuple[int, int, int, int]]:
    gen = torch.Generator().manual_seed(seed)
    cells = torch.randint(0, 12, (n, 3), generator=gen)
    batch = torch.randint(0, 2, (n, 1), generator=gen)
    rows = torch.unique(torch.cat([batch, cells], dim=1), dim=0)
    return [tuple(int(v) for v in row) for row in rows]


@pytest.mark.parametrize("seed", [0, 1])
def test_forward_equals_slidr_kernel_order(seed):
    student = _student(out_dim=5, seed=seed).eval()
    state = _randomised_slidr_state(student, seed=10 + seed)
    student.load_state_dict(map_slidr(state, student))
    sites = _sites(60, seed)
    feats = torch.randn(len(sites), 1, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ours = student.network(SparseTensor(torch.tensor(sites), feats)).feats
        reference = slidr_forward(state, sites, feats)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5)


def test_unpermuted_kernels_differ():
    """The permutation matters: SLidR's kernels loaded in their own order give another network."""
    student = _student(out_dim=5).eval()
    state = _randomised_slidr_state(student, seed=3)
    mapped = map_slidr(state, student)
    unpermuted = {k: kernel_from_minkowski(v) if v.dim() == 3 and v.shape[0] > 1 else v for k, v in mapped.items()}
    student.load_state_dict(unpermuted)
    sites = _sites(60, 4)
    feats = torch.randn(len(sites), 1, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = student.network(SparseTensor(torch.tensor(sites), feats)).feats
    assert not torch.allclose(ours, slidr_forward(state, sites, feats), atol=1e-3)


# --- mismatches and files --------------------------------------------------------------------------------------


def test_mismatch_lists_the_offending_keys(tmp_path):
    student = _student()
    state = _randomised_slidr_state(student)
    del state["block3.0.conv2.kernel"]
    state["block9.0.conv1.kernel"] = torch.zeros(27, 4, 4)
    state["final.kernel"] = torch.zeros(4, 7)
    path = tmp_path / "slidr.pt"
    torch.save({"model_points": state, "epoch": 3}, path)
    with pytest.raises(CheckpointMismatch) as err:
        load_published(student, path, "slidr")
    message = str(err.value)
    assert str(path) in message
    assert "1 missing keys: block3.0.conv2.kernel" in message
    assert "1 unexpected keys: block9.0.conv1.kernel" in message
    assert "final.kernel [4, 7] in the file, [4, 5] expected" in message
    assert err.value.missing == ["block3.0.conv2.kernel"]


def test_other_depth_or_family_refused():
    student = build_student("minkunet", out_dim=5, planes=(4, 4, 4, 4), layers=(1, 1, 1, 1), init_dim=4)
    with pytest.raises(ValueError, match="4 levels"):
        map_slidr({}, student)


def test_checkpoint_formats(tmp_path):
    student = _student()
    state = _randomised_slidr_state(student)
    mapped = map_slidr(state, student)
    formats = {
        "pretrain": {"model_points": state, "model_images": {"x": torch.zeros(1)}, "epoch": 50},
        "lightning": {
            "state_dict": {**{f"model_points.{k}": v for k, v in state.items()}, "model_images.w": torch.ones(1)}
        },
        "ddp": {f"module.{k}": v for k, v in state.items()},
        "bare": state,
    }
    for name, content in formats.items():
        path = tmp_path / f"{name}.pt"
        torch.save(content, path)
        got = read_state(path)
        assert set(got) == set(state), name
        target = _student(seed=5)
        load_published(target, path, "slidr")
        for key, value in target.state_dict().items():
            assert torch.equal(value, mapped[key]), (name, key)
    assert set(unwrap_state({"state_dict": {"model.a": torch.ones(1), "model.b": torch.ones(1)}})) == {"a", "b"}
    with pytest.raises(FileNotFoundError):
        read_state(tmp_path / "absent.pt")
    assert "slidr" in LAYOUTS and LAYOUTS["slidr"].student == "minkunet"


def test_json_of_layouts_is_plain():
    assert json.dumps({k: v.reference for k, v in LAYOUTS.items()})


# --- the configuration and the command -------------------------------------------------------------------------

TINY_NET = {"init_dim": 8, "planes": [8] * 8, "layers": [1] * 8}
"""The tiny suite's widths with one block per level: the lens's student in the end-to-end test."""


def _tiny_checkpoint(path, out_dim: int = 512, seed: int = 2):
    torch.manual_seed(seed)
    student = build_student(
        "minkunet",
        out_dim=out_dim,
        preset="slidr",
        **{k: tuple(v) if isinstance(v, list) else v for k, v in TINY_NET.items()},
    )
    state = _randomised_slidr_state(student, seed=seed)
    torch.save({"model_points": state, "epoch": 50, "config": {"voxel_size": 0.1}}, path)
    return path


def test_config_fields_checked_at_load(tmp_path):
    from bench.config import DistillConfig

    base = {"loss": "contrastive", "seed": 0, "teacher": "synthetic", "out_dim": 512}
    with pytest.raises(ValueError, match="checkpoint_layout"):
        DistillConfig.from_run({**base, "student_checkpoint": str(tmp_path / "x.pt")})
    with pytest.raises(ValueError, match="unknown student.checkpoint_layout .*valid: slidr"):
        DistillConfig.from_run({**base, "student_checkpoint": "x.pt", "student_checkpoint_layout": "nope"})
    with pytest.raises(ValueError, match="does not exist"):
        DistillConfig.from_run(
            {**base, "student_checkpoint": str(tmp_path / "x.pt"), "student_checkpoint_layout": "slidr"}
        )
    path = _tiny_checkpoint(tmp_path / "slidr.pt")
    cfg = DistillConfig.from_run({**base, "student_checkpoint": str(path), "student_checkpoint_layout": "slidr"})
    assert cfg.student.checkpoint == str(path) and cfg.flat()["student_checkpoint_layout"] == "slidr"
    defaults = DistillConfig.field_defaults()
    assert defaults["student_checkpoint"] is None and defaults["student_checkpoint_sha256"] is None


def test_lens_refuses_a_mismatch_before_running(tmp_path, tiny_suite):
    from bench.lens import lens_run, main

    path = _tiny_checkpoint(tmp_path / "slidr.pt")
    with pytest.raises(CheckpointMismatch, match=r"block1\.0\.conv1\.kernel \[27, 8, 8\] in the file, \[27, 8, 16\]"):
        lens_run(
            path,
            "slidr",
            str(tiny_suite),
            overrides=[f"student_overrides={json.dumps({**TINY_NET, 'planes': [16] + [8] * 7})}"],
        )
    resolved = lens_run(path, "slidr", str(tiny_suite), overrides=[f"student_overrides={json.dumps(TINY_NET)}"])
    assert len(resolved["student_checkpoint_sha256"]) == 64 and resolved["preset"] == "slidr"
    assert main(["--checkpoint", str(tmp_path / "absent.pt"), "--layout", "slidr", "--suite", str(tiny_suite)]) == 2
    assert main(["--checkpoint", str(path), "--layout", "scalr?", "--suite", str(tiny_suite)]) == 2


@pytest.mark.slow
def test_lens_end_to_end_report_reads_it(tmp_path, tiny_suite):
    from bench.lens import main
    from geomstruct import report as geo_report

    path = _tiny_checkpoint(tmp_path / "slidr.pt")
    out = tmp_path / "runs" / "lens"
    argv = ["--checkpoint", str(path), "--layout", "slidr", "--suite", str(tiny_suite), "--out", str(out)]
    argv += ["--set", f"student_overrides={json.dumps(TINY_NET)}", "--no-progress"]
    assert main(argv) == 0
    folder = out / "slidr-published-seed0"
    config = json.loads((folder / "config.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    assert config["student"]["checkpoint_layout"] == "slidr" and config["student"]["preset"] == "slidr"
    assert len(config["student"]["checkpoint_sha256"]) == 64
    assert metrics["loss"] == "slidr (published)" and metrics["steps"] == 0
    assert metrics["pretrained"]["checkpoint_sha256"] == config["student"]["checkpoint_sha256"]
    for protocol in ("zero_shot", "linear_probe", "few_shot", "few_shot_ood"):
        assert protocol in metrics
    assert (folder / "features.npz").is_file() and not (folder / "checkpoint.pt").exists()
    assert main(argv) == 0  # finished: read back, not rerun
    report = tmp_path / "report"
    assert geo_report.main(["--runs", str(out), "--out", str(report)]) == 0
    tables = "".join(p.read_text() for p in report.glob("*.md"))
    assert "slidr (published)" in tables


def test_trunk_layout_keeps_the_students_head():
    student = _student(out_dim=5)
    state = _randomised_slidr_state(build_student("minkunet", out_dim=64, preset="slidr", **SMALL))
    with pytest.raises(CheckpointMismatch, match="final.kernel \\[4, 64\\] in the file, \\[4, 5\\] expected"):
        map_slidr(state, student)
    head = student.network.head.weight.detach().clone()
    mapped = LAYOUTS["slidr-trunk"].map(state, student, "f.pt")
    assert torch.equal(mapped["network.head.weight"], head)
    full = map_slidr({**state, "final.kernel": torch.zeros(4, 5), "final.bias": torch.zeros(1, 5)}, student)
    assert all(torch.equal(mapped[k], v) for k, v in full.items() if not k.startswith("network.head."))
    del state["bn0.bn.weight"]
    with pytest.raises(CheckpointMismatch, match="layout slidr-trunk .*1 missing keys: bn0.bn.weight"):
        LAYOUTS["slidr-trunk"].map(state, student, "f.pt")


# --- ScaLR's WaffleIron ----------------------------------------------------------------------------------------

SCALR_SMALL = {"channels": 8, "depth": 3, "grids_shape": ((16, 16), (16, 4), (16, 4)), "num_neighbors": 4}
"""A reduced WaffleIron with ScaLR's key structure (layer norm, three planes, 5 inputs)."""


def _waffleiron(out_dim: int = 6, seed: int = 0, **overrides):
    from models.students.waffleiron import SCALR_INPUTS

    torch.manual_seed(seed)
    config = {**SCALR_SMALL, **overrides}
    return build_student("waffleiron", out_dim=out_dim, preset="small", inputs=SCALR_INPUTS, **config)


def _randomised_scalr_state(student, seed: int = 1) -> dict[str, torch.Tensor]:
    """ScaLR-layout tensors (``Segmenter.state_dict()``: no ``network.``) of ``student``'s shapes, all random."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in student.network.state_dict().items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(11)
        elif key.endswith("running_var"):
            out[key] = torch.rand(value.shape, generator=gen) + 0.5
        else:
            out[key] = torch.randn(value.shape, generator=gen) * 0.5
    return out


def _scan(seed: int = 0, n: int = 300):
    gen = torch.Generator().manual_seed(seed)
    xyz = (torch.rand(n, 3, generator=gen) - 0.5) * torch.tensor([60.0, 60.0, 6.0])
    points = torch.cat([xyz, torch.rand(n, 1, generator=gen)], dim=1)
    return points, torch.cat([torch.zeros(n // 2), torch.ones(n - n // 2)]).long()


def test_scalr_key_names_and_shapes():
    from models.students.waffleiron import SCALR_INPUTS

    assert LAYOUTS["scalr"].student == "waffleiron" and LAYOUTS["scalr"].preset == "wi-48-768"
    assert dict(LAYOUTS["scalr"].defaults)["student_inputs"] == SCALR_INPUTS
    state = _randomised_scalr_state(_waffleiron())
    for key, shape in {
        "embed.norm.weight": (5,),
        "embed.conv1.weight": (8, 5, 1),
        "embed.conv2.1.weight": (8, 5, 1, 1),
        "embed.final.weight": (8, 16, 1),
        "waffleiron.channel_mix.2.norm.weight": (8,),
        "waffleiron.spatial_mix.1.ffn.0.weight": (8, 1, 3, 3),
        "classif.weight": (6, 8, 1),
        "classif.bias": (6,),
    }.items():
        assert tuple(state[key].shape) == shape, key


def test_scalr_every_parameter_gets_its_value_and_forward_equals_the_reference_loader(tmp_path):
    from models.students.waffleiron import load_reference_state_dict

    state = _randomised_scalr_state(_waffleiron(), seed=4)
    path = tmp_path / "scalr.pth"  # ScaLR's distiller save_state, under DDP
    checkpoint = {"epoch": 24, "model_point": {f"module.{k}": v for k, v in state.items()}, "optim": {"state": {}}}
    checkpoint |= {"scheduler": {"last_epoch": 9, "lr_lambdas": [{"warmup": 3.0}]}, "scaler": {"scale": 65536.0}}
    torch.save(checkpoint, path)
    mapped = map_scalr(read_state(path), _waffleiron(seed=7), str(path))
    assert set(mapped) == set(_waffleiron().state_dict())
    for key, value in state.items():
        assert torch.equal(mapped[f"network.{key}"], value), key
    ours = load_published(_waffleiron(seed=3), path, "scalr").eval()
    source = load_reference_state_dict(_waffleiron(seed=5), checkpoint).eval()
    for key, value in source.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    points, batch = _scan()
    with torch.no_grad():
        torch.testing.assert_close(ours(points, batch), source(points, batch), rtol=0, atol=0)
        assert not torch.allclose(ours(points, batch), _waffleiron(seed=3).eval()(points, batch))


def test_scalr_checkpoint_formats(tmp_path):
    state = _randomised_scalr_state(_waffleiron())
    head = {k: v for k, v in state.items() if not k.startswith("classif.")}
    downstream = {**head, "classif.0.weight": torch.ones(8), "classif.0.bias": torch.zeros(8)}
    downstream |= {"classif.1.weight": torch.zeros(16, 8, 1), "classif.1.bias": torch.zeros(16)}
    formats = {
        "model_points": ({"model_points": {f"module.{k}": v for k, v in state.items()}}, "scalr"),
        "bare": (state, "scalr"),
        "net": ({"net": {f"module.{k}": v for k, v in downstream.items()}, "best_miou": 0.5}, "scalr-trunk"),
    }
    for name, (content, layout) in formats.items():
        path = tmp_path / f"{name}.pth"
        torch.save(content, path)
        target = load_published(_waffleiron(seed=5), path, layout)
        for key, value in (state if layout == "scalr" else head).items():
            assert torch.equal(target.network.state_dict()[key], value), (name, key)
    path = tmp_path / "net.pth"
    with pytest.raises(CheckpointMismatch, match="2 missing keys: classif.bias, classif.weight; 4 unexpected"):
        load_published(_waffleiron(), path, "scalr")


def test_scalr_mismatch_lists_the_offending_keys_and_names_the_file(tmp_path):
    state = _randomised_scalr_state(_waffleiron())
    del state["waffleiron.spatial_mix.2.ffn.2.bias"]
    state["waffleiron.channel_mix.3.norm.weight"] = torch.zeros(8)
    state["classif.weight"] = torch.zeros(1024, 8, 1)
    path = tmp_path / "WI_768-DINOv2_ViT_L_14-NS_KI_PD.pth"
    torch.save({"model_point": state}, path)
    with pytest.raises(CheckpointMismatch) as err:
        load_published(_waffleiron(), path, "scalr")
    message = str(err.value)
    assert str(path) in message and "layout scalr " in message
    assert "1 missing keys: waffleiron.spatial_mix.2.ffn.2.bias" in message
    assert "1 unexpected keys: waffleiron.channel_mix.3.norm.weight" in message
    assert "classif.weight [1024, 8, 1] in the file, [6, 8, 1] expected" in message
    with pytest.raises(ValueError, match="WaffleIron student; got MinkUNet"):
        map_scalr(state, _student())
    with pytest.raises(CheckpointMismatch, match="embed.norm.weight \\[5\\] in the file, \\[1\\] expected"):
        map_scalr(_randomised_scalr_state(_waffleiron()), build_student("waffleiron", out_dim=6, **SCALR_SMALL))


def test_scalr_trunk_keeps_the_students_head():
    student = _waffleiron(out_dim=6)
    state = _randomised_scalr_state(_waffleiron(out_dim=1024))
    with pytest.raises(CheckpointMismatch, match="classif.bias \\[1024\\] in the file, \\[6\\] expected"):
        map_scalr(state, student)
    head = student.network.classif.weight.detach().clone()
    mapped = LAYOUTS["scalr-trunk"].map(state, student, "f.pth")
    assert torch.equal(mapped["network.classif.weight"], head)
    assert all(torch.equal(mapped[f"network.{k}"], v) for k, v in state.items() if not k.startswith("classif."))
    del state["embed.final.bias"]
    with pytest.raises(CheckpointMismatch, match="layout scalr-trunk .*1 missing keys: embed.final.bias"):
        LAYOUTS["scalr-trunk"].map(state, student, "f.pth")


TINY_WI = {"channels": 8, "depth": 2, "grids_shape": [[16, 16], [16, 4], [16, 4]], "num_neighbors": 4}
"""The lens's WaffleIron in the end-to-end test."""


@pytest.mark.slow
def test_lens_scalr_end_to_end_report_reads_it(tmp_path, tiny_suite):
    from bench.lens import lens_run, main
    from geomstruct import report as geo_report

    torch.manual_seed(2)
    from models.students.waffleiron import SCALR_INPUTS

    source = build_student(
        "waffleiron",
        out_dim=512,
        preset="small",
        inputs=SCALR_INPUTS,
        **{k: tuple(map(tuple, v)) if k == "grids_shape" else v for k, v in TINY_WI.items()},
    )
    path = tmp_path / "scalr.pth"
    torch.save({"model_point": {f"module.{k}": v for k, v in _randomised_scalr_state(source, 2).items()}}, path)
    overrides = [f"student_overrides={json.dumps(TINY_WI)}", "preset=small"]
    resolved = lens_run(path, "scalr", str(tiny_suite), overrides=overrides)
    assert resolved["student"] == "waffleiron" and tuple(resolved["student_inputs"]) == SCALR_INPUTS
    assert resolved["voxel_system"] == "cartesian" and resolved["voxel_size"] == 0.1
    out = tmp_path / "runs" / "lens"
    argv = ["--checkpoint", str(path), "--layout", "scalr", "--suite", str(tiny_suite), "--out", str(out)]
    argv += [arg for o in overrides for arg in ("--set", o)] + ["--no-progress"]
    assert main(argv) == 0
    folder = out / "scalr-published-seed0"
    config = json.loads((folder / "config.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    assert config["student"]["checkpoint_layout"] == "scalr" and config["student"]["name"] == "waffleiron"
    assert metrics["loss"] == "scalr (published)" and metrics["steps"] == 0
    for protocol in ("linear_probe", "few_shot"):
        assert protocol in metrics
    report = tmp_path / "report"
    assert geo_report.main(["--runs", str(out), "--out", str(report)]) == 0
    assert "scalr (published)" in "".join(p.read_text() for p in report.glob("*.md"))
