"""Training loop of the toy experiment (docs/method.md#toy-experiment; the paper's Figures 2-4).

A :class:`~models.toy_mlp.ToyMLP` maps the input blobs onto S^2 and is trained with one distillation loss to
reproduce the source embedding (vMF clusters, :mod:`bench.toy.source`). Along the way the uniformity,
tolerance and modality gap of the predicted space are recorded on all points, and the predictions are kept at
a few snapshot iterations for the sphere figures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from bench.toy.source import PAPER_T, PAPER_U, calibrate_kappa, make_toy_data, vmf_tolerance, vmf_uniformity
from geomstruct import metrics
from models.losses import get_loss
from models.toy_mlp import build_toy_mlp

SETUPS: dict[str, int] = {"1cluster": 1, "3clusters": 3}
"""Toy set-ups and their number of clusters."""

TRAJECTORY_COLUMNS = ("iteration", "loss", "U", "T", "G", "A")


@dataclass(frozen=True)
class ToyConfig:
    """Everything that defines one toy run; every field is a choice of docs/method.md#toy-experiment exposed here."""

    setup: str
    loss: str
    seed: int
    loss_params: dict[str, Any] = field(default_factory=dict)
    kappa: float | None = None  # None: calibrated to the paper's U = 0.89, T = 0.66
    n_per_cluster: int = 512
    in_dim: int = 3
    hidden: int = 128
    depth: int = 2
    iterations: int = 1500
    batch_size: int = 512
    lr: float = 1e-3
    uniformity_t: float = 2.0
    record_every: int = 25
    snapshots: tuple[int, ...] = (0, 100, 500, 1500)

    def __post_init__(self) -> None:
        if self.setup not in SETUPS:
            raise ValueError(f"unknown toy set-up {self.setup!r}; valid set-ups: {', '.join(SETUPS)}")
        get_loss(self.loss)  # raises with the valid names
        if self.iterations < 1 or self.batch_size < 2 or self.record_every < 1:
            raise ValueError("iterations and record_every must be >= 1 and batch_size >= 2")

    def resolved(self) -> dict[str, Any]:
        """The configuration with kappa calibrated and snapshots clipped to the iterations (JSON-ready)."""
        cfg = asdict(self)
        cfg["kappa"] = float(self.kappa) if self.kappa is not None else calibrate_kappa(PAPER_U, PAPER_T)
        cfg["snapshots"] = sorted({min(int(s), self.iterations) for s in self.snapshots} | {0, self.iterations})
        cfg["kind"] = "toy"
        return cfg


def run_toy(
    config: Mapping[str, Any],
    device: torch.device,
    on_step: Callable[[int], None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, float]], dict[str, np.ndarray]]:
    """Train one toy MLP.

    Args:
        config: a resolved configuration (:meth:`ToyConfig.resolved`).
        device: where to train.
        on_step: called after every iteration with the iteration number (progress bars).

    Returns:
        ``(metrics, trajectory rows, arrays)``: ``metrics`` holds the loss, its parameters, the seed, the
        source's U and T (measured, and for one cluster the closed form), and ``geometry`` of the final
        predicted space against the source; ``arrays`` holds ``inputs``, ``targets``, ``labels``,
        ``snapshot_iterations`` and ``pred_<iteration>`` for every snapshot.
    """
    kappa = float(config["kappa"])
    data = make_toy_data(
        SETUPS[config["setup"]], config["n_per_cluster"], kappa, seed=config["seed"], in_dim=config["in_dim"]
    )
    torch.manual_seed(config["seed"])
    model = build_toy_mlp(config["in_dim"], config["hidden"], config["depth"], 3, seed=config["seed"]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    loss_fn = get_loss(config["loss"])
    params = dict(config["loss_params"])
    inputs = torch.from_numpy(data.inputs).to(device)
    targets = torch.from_numpy(data.targets).to(device)
    n = inputs.shape[0]
    batch = min(config["batch_size"], n)
    gen = torch.Generator().manual_seed(config["seed"])
    t = config["uniformity_t"]
    snapshots = set(config["snapshots"])

    trajectory: list[dict[str, float]] = []
    arrays: dict[str, np.ndarray] = {}
    last_loss = math.nan

    def record(iteration: int) -> None:
        model.eval()
        with torch.no_grad():
            pred = model(inputs)
        model.train()
        if iteration % config["record_every"] == 0 or iteration == config["iterations"]:
            trajectory.append(
                {
                    "iteration": iteration,
                    "loss": last_loss,
                    "U": metrics.uniformity(pred, t=t),
                    "T": metrics.tolerance(pred, data.labels),
                    "G": metrics.modality_gap(pred, targets),
                    "A": metrics.alignment(pred, targets),
                }
            )
        if iteration in snapshots:
            arrays[f"pred_{iteration}"] = pred.cpu().numpy().astype(np.float32)

    record(0)
    for it in range(1, config["iterations"] + 1):
        idx = torch.randperm(n, generator=gen)[:batch].to(device)
        loss = loss_fn(model(inputs[idx]), targets[idx], **params)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        last_loss = float(loss.detach())
        record(it)
        if on_step is not None:
            on_step(it)

    model.eval()
    with torch.no_grad():
        final_pred = model(inputs).cpu()
    geometry = metrics.geometry(final_pred, data.targets, data.labels, t=t)
    source = {
        "kappa": kappa,
        "n_clusters": SETUPS[config["setup"]],
        "U": metrics.uniformity(data.targets, t=t),
        "T": metrics.tolerance(data.targets, data.labels),
        "U_paper": PAPER_U,
        "T_paper": PAPER_T,
    }
    if source["n_clusters"] == 1:
        source["U_expected"] = vmf_uniformity(kappa, t)
        source["T_expected"] = vmf_tolerance(kappa)
    result = {
        "kind": "toy",
        "setup": config["setup"],
        "loss": config["loss"],
        "params": params,
        "seed": config["seed"],
        "final_loss": last_loss,
        "source": source,
        "geometry": geometry,
    }
    arrays.update(
        inputs=data.inputs,
        targets=data.targets,
        labels=data.labels,
        snapshot_iterations=np.array(sorted(s for s in snapshots if s <= config["iterations"]), dtype=np.int64),
    )
    return result, trajectory, arrays
