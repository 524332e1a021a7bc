"""WaffleIron student against the reference (valeoai/WaffleIron @ bcd387c, v0.3.1).

CI has neither the network nor the reference source, so the reference is represented here by a line-by-line
transcription of its forward pass (``Segmenter.forward`` = ``Embedding.forward``, ``WaffleIron.forward`` with
``SpatialMix`` / ``ChannelMix``, ``classif``; the ``scatter_reduce`` projection of ``helper_projection.py``) in
plain torch, in the reference's ``(B, C, N)`` layout with zero-padded batches and ``occupied_cells``, reading the
weights by the reference's state-dict key names; and of its input preparation (``datasets/pc_dataset.py:
get_occupied_2d_cells`` in numpy, neighbours by scipy's ``cKDTree``). The same state dict is loaded into the
student and read by the transcription. With ``WAFFLEIRON_REFERENCE`` naming a checkout of valeoai/WaffleIron (the
folder holding ``waffleiron/``), the real ``Segmenter`` is built too and compared to both (it needs only torch and
numpy).

Tolerance: float64, ``rtol = atol = 1e-10``. Both sides compute the same formulas, but in another summation order
(1x1 convolutions as matrix products over other layouts, ``index_add_`` against ``scatter_reduce``), so they agree
to float64 rounding (about 1e-16 per operation, grown over a few layers and normalisations) rather than bit for
bit; 1e-10 is far above that and far below any real discrepancy (a wrong weight, cell or neighbour moves outputs
by 1e-3 or more).
"""

from __future__ import annotations

import importlib
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.config_sections import StudentConfig
from models.students import STUDENTS, build_student
from models.students.waffleiron import (
    PRESETS,
    SCALR_INPUTS,
    WaffleIronConfig,
    WaffleIronStudent,
    build_waffleiron,
    cell_indices,
    knn,
    load_reference_state_dict,
)

TOL = {"rtol": 1e-10, "atol": 1e-10}
LUT = {0: (1, 2), 1: (0, 2), 2: (0, 1)}
WI_48_768_PARAMETERS = 60_222_996
"""Parameters of ScaLR's WI-48-768 (5 inputs, 1024 outputs: ``Segmenter(5, 768, 1024, 48, grids,
layer_norm=True)``), counted by running the reference code of valeoai/WaffleIron @ bcd387c."""


# ---------------------------------------------------------------- the reference, transcribed (keys = its own)


def reference_shapes(c_in: int, c: int, n_class: int, depth: int) -> dict[str, tuple[int, ...]]:
    """The parameter shapes ``Segmenter(c_in, c, n_class, depth, grids)`` creates (``embedding.py``,
    ``backbone.py``, ``segmenter.py``); the norms' weight and bias are ``(c,)`` for layer and batch norm alike."""
    shapes = {
        "embed.norm.weight": (c_in,),
        "embed.norm.bias": (c_in,),
        "embed.conv1.weight": (c, c_in, 1),
        "embed.conv1.bias": (c,),
        "embed.conv2.0.weight": (c_in,),
        "embed.conv2.0.bias": (c_in,),
        "embed.conv2.1.weight": (c, c_in, 1, 1),
        "embed.conv2.2.weight": (c,),
        "embed.conv2.2.bias": (c,),
        "embed.conv2.4.weight": (c, c, 1, 1),
        "embed.final.weight": (c, 2 * c, 1),
        "embed.final.bias": (c,),
    }
    for d in range(depth):
        cm, sm = f"waffleiron.channel_mix.{d}", f"waffleiron.spatial_mix.{d}"
        shapes |= {
            f"{cm}.norm.weight": (c,),
            f"{cm}.norm.bias": (c,),
            f"{cm}.mlp.0.weight": (c, c, 1),
            f"{cm}.mlp.0.bias": (c,),
            f"{cm}.mlp.2.weight": (c, c, 1),
            f"{cm}.mlp.2.bias": (c,),
            f"{cm}.scale.weight": (c, 1, 1),
        }
    for d in range(depth):
        sm = f"waffleiron.spatial_mix.{d}"
        shapes |= {
            f"{sm}.norm.weight": (c,),
            f"{sm}.norm.bias": (c,),
            f"{sm}.ffn.0.weight": (c, 1, 3, 3),
            f"{sm}.ffn.0.bias": (c,),
            f"{sm}.ffn.2.weight": (c, 1, 3, 3),
            f"{sm}.ffn.2.bias": (c,),
            f"{sm}.scale.weight": (c, 1, 1),
        }
    return shapes | {"classif.weight": (n_class, c, 1), "classif.bias": (n_class,)}


def ref_bn(sd: dict, key: str, x: torch.Tensor, training: bool) -> torch.Tensor:
    """``nn.BatchNorm1d/2d(x)`` with ``sd[key.*]`` (statistics over every dimension but 1; running stats unused
    in training, as the reference's forward reads them only in eval)."""
    return F.batch_norm(
        x, sd[f"{key}.running_mean"].clone(), sd[f"{key}.running_var"].clone(), sd[f"{key}.weight"],
        sd[f"{key}.bias"], training, 0.1, 1e-5,
    )  # fmt: skip


def ref_norm(sd: dict, key: str, x: torch.Tensor, which: str, training: bool) -> torch.Tensor:
    """``NORM_OPTIONS[which](x)`` on ``(B, C, N)``: ``myLayerNorm`` (layer norm over C) or ``BatchNorm1d``."""
    if which == "layernorm":
        c = x.shape[1]
        return F.layer_norm(x.transpose(1, -1), (c,), sd[f"{key}.weight"], sd[f"{key}.bias"], 1e-5).transpose(1, -1)
    return ref_bn(sd, key, x, training)


def ref_embedding(sd: dict, x: torch.Tensor, neighbors: torch.Tensor, training: bool) -> torch.Tensor:
    """``Embedding.forward(x (B, C_in, N), neighbors (B, K + 1, N))``."""
    x = ref_bn(sd, "embed.norm", x, training)
    point_emb = F.conv1d(x, sd["embed.conv1.weight"], sd["embed.conv1.bias"])
    gather = []
    for ind_nn in range(1, neighbors.shape[1]):
        temp = neighbors[:, ind_nn : ind_nn + 1, :].expand(-1, x.shape[1], -1)
        gather.append(torch.gather(x, 2, temp).unsqueeze(-1))
    neigh_emb = torch.cat(gather, -1) - x.unsqueeze(-1)
    h = ref_bn(sd, "embed.conv2.0", neigh_emb, training)
    h = F.conv2d(h, sd["embed.conv2.1.weight"])
    h = F.relu(ref_bn(sd, "embed.conv2.2", h, training))
    h = F.conv2d(h, sd["embed.conv2.4.weight"])
    neigh_emb = h.max(-1)[0]
    return F.conv1d(torch.cat((point_emb, neigh_emb), dim=1), sd["embed.final.weight"], sd["embed.final.bias"])


def ref_projections(cell_ind: torch.Tensor, occupied: torch.Tensor, c: int, grids: list) -> list[dict]:
    """``get_all_projections_scatter_reduce``."""
    sp_mat = []
    b = cell_ind.shape[0]
    occ = occupied.unsqueeze(1).to(torch.float64)
    for i in range(cell_ind.shape[1]):
        h, w = grids[i]
        count = torch.zeros((b, 1, h * w), dtype=occ.dtype)
        count.scatter_reduce_(2, cell_ind[:, i : i + 1], occ * torch.ones_like(occ), "sum", include_self=False)
        count = torch.gather(count, 2, cell_ind[:, i : i + 1])
        sp_mat.append({"mask_zero_padding": occ / (count + 1e-6), "inflate": cell_ind[:, i : i + 1].expand(-1, c, -1)})
    return sp_mat


def ref_segmenter(sd: dict, feat, cell_ind, occupied, neighbors, grids, which: str, training: bool = False):
    """``Segmenter.forward(feats, cell_ind, occupied_cell, neighbors)`` (no drop path: probability 0)."""
    tokens = ref_embedding(sd, feat, neighbors, training)
    b, c, _ = tokens.shape
    sp_mat = ref_projections(cell_ind, occupied, c, grids)
    depth = len([k for k in sd if k.startswith("waffleiron.channel_mix.") and k.endswith(".mlp.0.weight")])
    for d in range(depth):
        sm, cm, (h, w) = f"waffleiron.spatial_mix.{d}", f"waffleiron.channel_mix.{d}", grids[d % len(grids)]
        mat = sp_mat[d % len(sp_mat)]
        residual = ref_norm(sd, f"{sm}.norm", tokens, which, training)
        grid = torch.zeros((b, c, h * w), dtype=tokens.dtype)
        grid.scatter_reduce_(2, mat["inflate"], residual * mat["mask_zero_padding"], "sum", include_self=False)
        grid = grid.reshape(b, c, h, w)
        grid = F.conv2d(grid, sd[f"{sm}.ffn.0.weight"], sd[f"{sm}.ffn.0.bias"], padding=1, groups=c)
        grid = F.conv2d(F.relu(grid), sd[f"{sm}.ffn.2.weight"], sd[f"{sm}.ffn.2.bias"], padding=1, groups=c)
        grid = F.conv1d(grid.reshape(b, c, h * w), sd[f"{sm}.scale.weight"], groups=c)
        tokens = tokens + torch.gather(grid, 2, mat["inflate"])
        y = ref_norm(sd, f"{cm}.norm", tokens, which, training)
        y = F.conv1d(F.relu(F.conv1d(y, sd[f"{cm}.mlp.0.weight"], sd[f"{cm}.mlp.0.bias"])), sd[f"{cm}.mlp.2.weight"])
        y = y + sd[f"{cm}.mlp.2.bias"][None, :, None]
        tokens = tokens + F.conv1d(y, sd[f"{cm}.scale.weight"], groups=c)
    return F.conv1d(tokens, sd["classif.weight"], sd["classif.bias"])


def ref_occupied_2d_cells(pc: np.ndarray, cfg: WaffleIronConfig) -> np.ndarray:
    """``PCDataset.get_occupied_2d_cells`` (fov and grids as numpy arrays, ``astype("int")``)."""
    fov = np.concatenate([np.array(f)[None] for f in cfg.fov], axis=0)
    cell_ind = []
    for dim, grid in zip(cfg.dim_proj, [np.array(g) for g in cfg.grids_shape], strict=True):
        dims = LUT[dim]
        res = (fov[1, dims] - fov[0, dims]) / grid[None]
        pc_quant = ((pc[:, dims] - fov[0, dims]) / res).astype("int")
        assert pc_quant.min() >= 0 and (pc_quant < grid[None]).all()
        cell_ind.append((pc_quant[:, 0] * grid[1] + pc_quant[:, 1])[None])
    return np.vstack(cell_ind)


def ref_inputs(scans: list[torch.Tensor], cfg: WaffleIronConfig, inputs: tuple[str, ...]):
    """``PCDataset.__getitem__`` (no voxelisation, no crop: every point inside the fov) and ``Collate`` (zero
    padding to the longest scan): ``feat (B, C_in, N)``, ``cell_ind``, ``occupied``, ``neighbors``."""
    spatial = pytest.importorskip("scipy.spatial")
    n_max = max(len(s) for s in scans)
    feats, cells, neigh, occ = [], [], [], []
    columns = {"intensity": lambda p: p[:, 3:4], "x": lambda p: p[:, 0:1], "y": lambda p: p[:, 1:2]}
    columns |= {"z": lambda p: p[:, 2:3], "radius": lambda p: np.linalg.norm(p[:, :3], axis=1, keepdims=True)}
    for scan in scans:
        pc = scan.numpy()
        n = len(pc)
        f = np.concatenate([columns[name](pc) for name in inputs], 1).T[None]
        c = ref_occupied_2d_cells(pc, cfg)[None]
        _, nb = spatial.cKDTree(pc[:, :3]).query(pc[:, :3], k=cfg.num_neighbors + 1)
        nb = nb.T[None]
        o = np.ones((1, n_max))
        if n < n_max:  # zero_pad
            f = np.concatenate((f, np.zeros((1, f.shape[1], n_max - n))), axis=2)
            nb = np.concatenate((nb, (n_max - 1) * np.ones((1, nb.shape[1], n_max - n))), axis=2)
            c = np.concatenate((c, np.zeros((1, c.shape[1], n_max - n))), axis=2)
            o[:, n:] = 0
        feats.append(f), cells.append(c), neigh.append(nb), occ.append(o)
    return (
        torch.from_numpy(np.vstack(feats)),
        torch.from_numpy(np.vstack(cells)).long(),
        torch.from_numpy(np.vstack(occ)),
        torch.from_numpy(np.vstack(neigh)).long(),
    )


# ---------------------------------------------------------------- fixtures

TINY = WaffleIronConfig(
    channels=8,
    depth=4,
    grids_shape=((16, 16), (16, 4), (16, 4)),
    fov=((-20.0, -20.0, -3.0), (20.0, 20.0, 3.0)),
    num_neighbors=5,
    normalize=False,
)


def scan(seed: int, n: int) -> torch.Tensor:
    """A float64 scan (n, 4) inside TINY's fov: ground, a wall and clutter; intensity in [0, 1)."""
    g = torch.Generator().manual_seed(seed)
    xyz = torch.rand(n, 3, generator=g, dtype=torch.float64) * torch.tensor([36.0, 36.0, 5.0]) - torch.tensor(
        [18.0, 18.0, 2.5]
    )
    xyz[: n // 3, 2] = -1.8 + 0.02 * torch.rand(n // 3, generator=g, dtype=torch.float64)
    return torch.cat([xyz, torch.rand(n, 1, generator=g, dtype=torch.float64)], dim=1)


def random_state(model: WaffleIronStudent, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict of ``model``'s keys with every entry random (norm statistics included, variances positive),
    so that no weight is at an initial value that could hide a mistake."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in model.network.state_dict().items():
        if key.endswith("num_batches_tracked"):
            out[key] = value.clone()
        elif key.endswith("running_var"):
            out[key] = 0.5 + torch.rand(value.shape, generator=g, dtype=torch.float64)
        else:
            out[key] = 0.5 * torch.randn(value.shape, generator=g, dtype=torch.float64)
    return out


def student(cfg: WaffleIronConfig, inputs=SCALR_INPUTS, out_dim: int = 6) -> WaffleIronStudent:
    model = WaffleIronStudent(
        build_waffleiron(out_dim=out_dim, inputs=inputs, **vars(cfg)).network, voxel_size=None, inputs=inputs
    )
    return model.double()


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("which_norm", ["layernorm", "batchnorm"])
def test_forward_equals_the_reference_transcription_in_eval(which_norm: str) -> None:
    cfg = WaffleIronConfig(**{**vars(TINY), "which_norm": which_norm})
    model = student(cfg)
    sd = random_state(model)
    load_reference_state_dict(model, sd)
    model.eval()
    scans = [scan(1, 300), scan(2, 240)]  # the second is zero-padded on the reference side
    points = torch.cat(scans)
    batch = torch.cat([torch.full((len(s),), i) for i, s in enumerate(scans)])
    with torch.no_grad():
        ours = model(points, batch)
        ref = ref_segmenter(sd, *ref_inputs(scans, cfg, SCALR_INPUTS), [list(g) for g in cfg.grids_shape], which_norm)
    expected = torch.cat([ref[i, :, : len(s)].T for i, s in enumerate(scans)])
    torch.testing.assert_close(ours, expected, **TOL)


@pytest.mark.parametrize("which_norm", ["layernorm", "batchnorm"])
def test_forward_and_gradient_equal_the_reference_transcription_in_training(which_norm: str) -> None:
    """One scan (no padding: the reference's batch statistics are then over the same points)."""
    cfg = WaffleIronConfig(**{**vars(TINY), "which_norm": which_norm})
    model = student(cfg, inputs=("intensity", "z"))
    sd = random_state(model, seed=3)
    load_reference_state_dict(model, sd)
    model.train()
    points = scan(4, 256)
    ours = model(points, torch.zeros(256, dtype=torch.int64))
    ref_sd = {k: v.clone().requires_grad_("running" not in k and v.is_floating_point()) for k, v in sd.items()}
    ref = ref_segmenter(
        ref_sd, *ref_inputs([points], cfg, ("intensity", "z")), [list(g) for g in cfg.grids_shape], which_norm, True
    )[0].T
    torch.testing.assert_close(ours, ref, **TOL)
    weights = torch.randn(ours.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    (ours * weights).sum().backward()
    (ref * weights).sum().backward()
    for key, param in model.network.named_parameters():
        torch.testing.assert_close(param.grad, ref_sd[key].grad, **TOL, msg=key)


def test_cells_and_neighbours_equal_the_reference_preparation() -> None:
    spatial = pytest.importorskip("scipy.spatial")
    pc = scan(6, 500)
    expected = torch.from_numpy(ref_occupied_2d_cells(pc.numpy(), TINY))
    assert torch.equal(cell_indices(pc[:, :3], TINY), expected)
    assert torch.equal(cell_indices(pc[:, :3].float(), TINY)[:, :5], cell_indices(pc[:5, :3].float(), TINY))
    _, nb = spatial.cKDTree(pc[:, :3].numpy()).query(pc[:, :3].numpy(), k=TINY.num_neighbors + 1)
    assert torch.equal(knn(pc[:, :3], TINY.num_neighbors), torch.from_numpy(nb))
    assert torch.equal(knn(pc[:, :3], TINY.num_neighbors, chunk=64, method="brute"), torch.from_numpy(nb))
    dup = torch.cat([pc[:20, :3], pc[:20, :3]])  # duplicate positions: the token itself still comes first
    for method in ("kdtree", "brute"):
        found = knn(dup, 3, method=method)
        assert torch.equal(found[:, 0], torch.arange(40)) and (found[:20, 1] == torch.arange(20, 40)).all()


def test_outside_the_fov_points_take_border_cells_and_tiny_scans_repeat_themselves() -> None:
    far = torch.tensor([[100.0, -100.0, 50.0]], dtype=torch.float64)
    cells = cell_indices(far, TINY)
    assert cells.tolist() == [[15 * 16 + 0], [15 * 4 + 3], [0 * 4 + 3]]
    for method in ("kdtree", "brute"):
        assert knn(torch.zeros(2, 3), 3, method=method).tolist() == [[0, 1, 0, 0], [1, 0, 1, 1]]


def test_wi_48_768_has_the_reference_parameter_count_and_key_layout() -> None:
    torch.manual_seed(0)
    model = build_student("waffleiron", out_dim=1024, preset="wi-48-768", inputs=SCALR_INPUTS)
    shapes = reference_shapes(5, 768, 1024, 48)
    own = {k: tuple(v.shape) for k, v in model.network.named_parameters()}
    assert own == shapes
    assert sum(p.numel() for p in model.parameters()) == WI_48_768_PARAMETERS
    assert sum(math_prod(s) for s in shapes.values()) == WI_48_768_PARAMETERS


def math_prod(shape: tuple[int, ...]) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def test_load_reference_state_dict_unwraps_checkpoints_and_names_bad_keys() -> None:
    model = student(TINY)
    sd = random_state(model)
    ckpt = {"model_points": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}
    load_reference_state_dict(model, ckpt)
    torch.testing.assert_close(model.network.classif.weight, sd["classif.weight"])
    bad = dict(sd)
    del bad["embed.conv1.weight"]
    bad["embed.extra"] = torch.zeros(1)
    bad["classif.weight"] = torch.zeros(3, 8, 1)
    with pytest.raises(ValueError) as err:
        load_reference_state_dict(model, bad)
    text = str(err.value)
    assert "1 keys of the wrong shape: classif.weight [3, 8, 1] in the file, [6, 8, 1] expected" in text
    assert "1 missing keys: embed.conv1.weight" in text and "1 unexpected keys: embed.extra" in text


def test_student_interface_index_distinct_and_voxels() -> None:
    torch.manual_seed(0)
    model = build_student("waffleiron", out_dim=16, preset="small", voxel_size=0.5, inputs=("intensity", "z"))
    points = torch.cat([scan(7, 400), scan(8, 300)]).float()
    batch = torch.cat([torch.full((400,), 3), torch.full((300,), 1)])  # unsorted scan ids
    model.eval()
    with torch.no_grad():
        full = model(points, batch)
        assert full.shape == (700, 16)
        torch.testing.assert_close(full.norm(dim=1), torch.ones(700))
        index = torch.tensor([0, 5, 450, 699, 5])
        torch.testing.assert_close(model(points, batch, index), full[index])
        feats, rows = model(points, batch, index, distinct=True)
        torch.testing.assert_close(feats[rows], full[index])
        model.scan_cache.capacity = 4
        torch.testing.assert_close(model(points, batch), full)
        torch.testing.assert_close(model(points, batch), full)  # from the cache
        assert len(model.scan_cache.entries) == 2
        alone = model(points[400:], torch.zeros(300, dtype=torch.int64))
    torch.testing.assert_close(alone, full[400:], rtol=1e-5, atol=1e-6)  # layer norm: scans are independent
    model.train()
    model(points, batch, index).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_drop_path_is_one_draw_per_scan() -> None:
    cfg = WaffleIronConfig(**{**vars(TINY), "drop_path": 0.5, "depth": 1})
    model = student(cfg)
    model.train()
    x = torch.ones(5, 8, dtype=torch.float64)
    from models.students.waffleiron import Tokens, _drop_path

    tokens = Tokens(torch.zeros(5, 1, dtype=torch.int64), [], torch.tensor([0, 0, 1, 1, 1]), 2)
    torch.manual_seed(0)
    out = _drop_path(x, tokens, 0.5, True)
    assert set(out[:2].unique().tolist()) <= {0.0, 2.0} and out[:2].unique().numel() == 1
    assert out[2:].unique().numel() == 1


def test_registered_presets_and_config_validation() -> None:
    assert "waffleiron" in STUDENTS.names()
    assert {"small", "wi-48-768", "wi-48-384"} <= set(PRESETS)
    cfg = StudentConfig(
        name="waffleiron", preset="small", overrides={"depth": 2, "grids_shape": [[8, 8], [8, 2], [8, 2]]}
    )
    assert cfg.overrides["depth"] == 2
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        StudentConfig(name="waffleiron", preset="huge")
    with pytest.raises(ValueError, match=r"unknown student.overrides .*\['planes'\]"):
        StudentConfig(name="waffleiron", overrides={"planes": [8]})
    with pytest.raises(ValueError, match="which_norm must be one of"):
        StudentConfig(name="waffleiron", overrides={"which_norm": "groupnorm"})
    with pytest.raises(ValueError, match="depth must be int"):
        StudentConfig(name="waffleiron", overrides={"depth": "two"})
    StudentConfig(name="waffleiron", preset="wi-48-768", inputs=SCALR_INPUTS)


@pytest.mark.skipif(not os.environ.get("WAFFLEIRON_REFERENCE"), reason="WAFFLEIRON_REFERENCE (a checkout) not set")
def test_against_the_reference_code() -> None:
    """The real ``Segmenter`` (``WAFFLEIRON_REFERENCE``: the folder holding ``waffleiron/``): the parameter count
    of WI-48-768, the seeded initialisation, and the forward of the student and of the transcription."""
    sys.path.insert(0, os.environ["WAFFLEIRON_REFERENCE"])
    try:
        ref = importlib.import_module("waffleiron")
    finally:
        sys.path.pop(0)
    grids = [list(g) for g in PRESETS["wi-48-768"].grids_shape]
    torch.manual_seed(0)
    big = ref.Segmenter(5, 768, 1024, 48, grids, layer_norm=True)
    assert sum(p.numel() for p in big.parameters()) == WI_48_768_PARAMETERS
    torch.manual_seed(0)
    mine = build_student("waffleiron", out_dim=1024, preset="wi-48-768", inputs=SCALR_INPUTS)
    ref_sd, own_sd = big.state_dict(), mine.network.state_dict()
    assert list(ref_sd) == list(own_sd) and all(torch.equal(ref_sd[k], own_sd[k]) for k in ref_sd)
    for which in ("layernorm", "batchnorm"):
        cfg = WaffleIronConfig(**{**vars(TINY), "which_norm": which})
        model = student(cfg)
        sd = random_state(model, seed=9)
        load_reference_state_dict(model, sd)
        real = ref.Segmenter(5, 8, 6, cfg.depth, [list(g) for g in cfg.grids_shape], which_norm=which).double()
        real.load_state_dict(sd)
        real.eval(), model.eval()
        scans = [scan(10, 200), scan(11, 150)]
        inputs = ref_inputs(scans, cfg, SCALR_INPUTS)
        points = torch.cat(scans)
        batch = torch.cat([torch.full((len(s),), i) for i, s in enumerate(scans)])
        with torch.no_grad():
            expected = real(*inputs)
            transcribed = ref_segmenter(sd, *inputs, [list(g) for g in cfg.grids_shape], which)
            ours = model(points, batch)
        torch.testing.assert_close(transcribed, expected, **TOL)
        torch.testing.assert_close(ours, torch.cat([expected[i, :, : len(s)].T for i, s in enumerate(scans)]), **TOL)
