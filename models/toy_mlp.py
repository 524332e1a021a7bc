"""The toy experiment's student (docs/method.md#toy-experiment): a small MLP whose outputs lie on the unit sphere."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ToyMLP(nn.Module):
    """``in_dim -> hidden (x depth, ReLU) -> out_dim``, outputs L2-normalised onto ``S^(out_dim - 1)``."""

    def __init__(self, in_dim: int = 3, hidden: int = 128, depth: int = 2, out_dim: int = 3) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be at least 1; got {depth}")
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Points on the unit sphere, shape (N, out_dim)."""
        return F.normalize(self.net(x), dim=1)


def build_toy_mlp(in_dim: int, hidden: int, depth: int, out_dim: int, seed: int) -> ToyMLP:
    """A seeded, randomly initialised :class:`ToyMLP` (the same seed gives the same weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ToyMLP(in_dim=in_dim, hidden=hidden, depth=depth, out_dim=out_dim)
