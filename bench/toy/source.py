"""Source embeddings of the toy experiment: von Mises-Fisher clusters on the sphere S^2 (docs/method.md#toy-experiment).

The 1-cluster source is one vMF cluster whose concentration kappa is calibrated so that its uniformity and
tolerance match the paper's Figure 2 (U = 0.89, T = 0.66). Both have closed forms for a vMF distribution on
S^2 (mean direction mu, density ``c(kappa) exp(kappa mu . x)``, ``c(kappa) = kappa / (4 pi sinh kappa)``):

- Tolerance: for independent x, y of one cluster ``E[x . y] = |E x|^2 = A(kappa)^2`` with the mean resultant
  length ``A(kappa) = coth(kappa) - 1/kappa``.
- Uniformity: with ``s = 2t``, ``exp(-t ||x - y||^2) = exp(-s) exp(s x . y)`` and, given x,
  ``E_y[exp(s x . y)] = c(kappa) / c(|kappa mu + s x|)``. Averaging over x, whose ``w = mu . x`` has density
  ``kappa exp(kappa w) / (2 sinh kappa)`` on [-1, 1], gives a one-dimensional integral, evaluated with
  ``scipy.integrate.quad``.

The 3-cluster source uses three clusters of the same kappa, centred on the equator 120 degrees apart (well
separated); its U and T are measured, not calibrated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import integrate, optimize

PAPER_U = 0.89
PAPER_T = 0.66


def mean_resultant_length(kappa: float) -> float:
    """``A(kappa) = coth(kappa) - 1/kappa``, the length of the mean of a vMF distribution on S^2."""
    if kappa <= 0:
        raise ValueError(f"kappa must be positive; got {kappa}")
    if kappa < 1e-4:
        return kappa / 3.0
    return 1.0 / math.tanh(kappa) - 1.0 / kappa


def vmf_tolerance(kappa: float) -> float:
    """Expected tolerance of one vMF cluster on S^2: ``T = A(kappa)^2``."""
    return mean_resultant_length(kappa) ** 2


def vmf_uniformity(kappa: float, t: float = 2.0) -> float:
    """Expected (negated) uniformity ``U`` of one vMF cluster on S^2 (closed form up to a 1-D integral)."""
    s = 2.0 * t

    def integrand(w: float) -> float:
        r = math.sqrt(kappa * kappa + s * s + 2.0 * kappa * s * w)
        # density of w times c(kappa)/c(r), written with exponentials scaled to avoid overflow
        log_val = (
            math.log(kappa / 2.0)
            + kappa * w
            - _log_sinh(kappa)
            + math.log(kappa)
            - _log_sinh(kappa)
            + _log_sinh(r)
            - math.log(r)
            - s
        )
        return math.exp(log_val)

    value, _ = integrate.quad(integrand, -1.0, 1.0, epsabs=0.0, epsrel=1e-12, limit=200)
    return -math.log(value)


def _log_sinh(x: float) -> float:
    return x + math.log1p(-math.exp(-2.0 * x)) - math.log(2.0)


def calibrate_kappa(
    target_u: float = PAPER_U,
    target_t: float = PAPER_T,
    t: float = 2.0,
    bounds: tuple[float, float] = (0.5, 50.0),
) -> float:
    """The kappa minimising ``(U(kappa) - target_u)^2 + (T(kappa) - target_t)^2`` *(choice)*.

    One parameter cannot hit both targets exactly; the least-squares compromise is reported with the achieved
    values by the toy runs.
    """

    def cost(log_kappa: float) -> float:
        kappa = math.exp(log_kappa)
        return (vmf_uniformity(kappa, t) - target_u) ** 2 + (vmf_tolerance(kappa) - target_t) ** 2

    res = optimize.minimize_scalar(
        cost, bounds=(math.log(bounds[0]), math.log(bounds[1])), method="bounded", options={"xatol": 1e-8}
    )
    return float(math.exp(res.x))


def sample_vmf(mu: np.ndarray, kappa: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of the vMF distribution on S^2 with mean direction ``mu`` (exact inverse-CDF sampling).

    ``w = mu . x = 1 + log(u + (1 - u) exp(-2 kappa)) / kappa`` for ``u ~ U(0, 1)``; the tangent direction is
    uniform on the circle orthogonal to ``mu``.
    """
    mu = np.asarray(mu, dtype=np.float64)
    mu = mu / np.linalg.norm(mu)
    u = rng.random(n)
    w = 1.0 + np.log(u + (1.0 - u) * np.exp(-2.0 * kappa)) / kappa
    w = np.clip(w, -1.0, 1.0)
    # orthonormal basis (e1, e2) of the plane orthogonal to mu
    helper = np.array([1.0, 0.0, 0.0]) if abs(mu[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(mu, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(mu, e1)
    phi = rng.uniform(0.0, 2.0 * math.pi, n)
    radial = np.sqrt(1.0 - w * w)
    x = w[:, None] * mu + radial[:, None] * (np.cos(phi)[:, None] * e1 + np.sin(phi)[:, None] * e2)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def cluster_centres(n_clusters: int) -> np.ndarray:
    """Unit centres: the north pole for one cluster, else ``n`` directions evenly spaced on the equator."""
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be at least 1; got {n_clusters}")
    if n_clusters == 1:
        return np.array([[0.0, 0.0, 1.0]])
    angles = 2.0 * math.pi * np.arange(n_clusters) / n_clusters
    return np.stack([np.cos(angles), np.sin(angles), np.zeros(n_clusters)], axis=1)


@dataclass(frozen=True)
class ToyData:
    """Inputs (n, in_dim), their source targets on S^2 (n, 3) and cluster labels (n,)."""

    inputs: np.ndarray
    targets: np.ndarray
    labels: np.ndarray
    kappa: float


def make_toy_data(
    n_clusters: int,
    n_per_cluster: int,
    kappa: float,
    seed: int,
    in_dim: int = 3,
    input_spread: float = 1.0,
    input_separation: float = 6.0,
) -> ToyData:
    """Gaussian input blobs, each paired with vMF targets of its cluster.

    Blob ``c`` is centred at ``input_separation * e_c`` (``e_c`` a basis vector of the input space) with
    standard deviation ``input_spread``. Each input is paired with an independent vMF sample of its cluster
    *(choice)*: within a cluster the pairing carries no structure the MLP could exploit, so the 1-cluster
    set-up is self-similarity in its purest form.
    """
    if in_dim < n_clusters:
        raise ValueError(f"in_dim ({in_dim}) must be at least n_clusters ({n_clusters})")
    rng = np.random.default_rng(seed)
    centres = cluster_centres(n_clusters)
    inputs, targets, labels = [], [], []
    for c in range(n_clusters):
        blob_centre = np.zeros(in_dim)
        blob_centre[c] = input_separation if n_clusters > 1 else 0.0
        inputs.append(blob_centre + input_spread * rng.standard_normal((n_per_cluster, in_dim)))
        targets.append(sample_vmf(centres[c], kappa, n_per_cluster, rng))
        labels.append(np.full(n_per_cluster, c))
    return ToyData(
        inputs=np.concatenate(inputs).astype(np.float32),
        targets=np.concatenate(targets).astype(np.float32),
        labels=np.concatenate(labels).astype(np.int64),
        kappa=kappa,
    )
