"""The paper's claims under rule version 2, dated 2026-12-06 and fixed before any run of the claims study.

The claims are those of :mod:`geomstruct.claims` (version 1, kept unchanged and reproducible). Version 2 changes
what counts as a unit, which students a zero-shot statement reads, and how a verdict reports collapse; a
statement is still *supported* when its 95% interval lies entirely on the claimed side of 0, *contradicted* when
it lies entirely on the other side and *undecided* otherwise, and a claim still **holds** when all its judged
statements are supported, **does not hold** when one is contradicted and is **inconclusive** otherwise
(:attr:`ClaimV2.verdict_category`).

Rule version 2 (:data:`RULE_DATE`, fixed before any run of the claims study):

1. Units are configurations and seeds, never students as independent points.

   - A loss's mean ΔU or ΔT (claims 1, 2): Student-t interval over the configuration's seeds (as version 1).
   - A difference of two configurations (claims 3, 5, 6): Welch t interval over the two configurations' seed
     values (as version 1; seeds are independent units).
   - A correlation (claim 4): Spearman ρ over the students as the estimate; its interval a two-stage cluster
     bootstrap (:func:`cluster_spearman`): configurations resampled with replacement, then within each drawn
     configuration its seeds resampled with replacement; ρ of every resample; percentile 95% interval over
     :data:`N_BOOT` resamples from :data:`BOOT_SEED`. Fewer than :data:`MIN_CONFIGURATIONS` configurations: no
     interval (undecided). The ``few_shot`` column is used as given (one value per student).

2. Zero-shot statements read only students whose loss has a cross-modal term: ``relational_intra``
   (:data:`INTRA_ONLY_LOSSES`) and a ``relational`` run with ``cross`` false are excluded. The loss parameters
   are read from a column of the students frame when it has one, else from a ``params`` column of dictionaries,
   else from the configuration label (``relational (cross=False, ...)``, as :attr:`geomstruct.runs.Run.loss_label`
   writes it), else the loss's default (:data:`RELATIONAL_DEFAULTS`). The zero-shot correlation's statement says
   how many students were excluded.

3. Collapse: a configuration is collapsed when at least one of its seeds is flagged ``collapsed`` (effective rank
   of the 3D space below :data:`geomstruct.structure.COLLAPSE_RANK`) or when its mean ``erank_3d`` over seeds is
   below :data:`COLLAPSE_ERANK` (:data:`COLLAPSE_MARGIN` x the threshold: within 25% of it). Every claim lists the
   configurations it involves (1: contrastive τ=0.07; 2: similarity; 3: relational, contrastive τ=0.07,
   similarity; 4: every configuration in a correlation; 5: relational, contrastive τ=0.07; 6: relational,
   similarity). When one is collapsed the verdict says so: a collapsed *subject* of the claim (1: contrastive
   τ=0.07; 2: similarity; 3, 5, 6: relational; 4: none) appends "on a collapsed space (names)", any other
   collapsed configuration "vs a collapsed baseline (names)", to any category (e.g. "holds vs a collapsed
   baseline (similarity)", "holds on a collapsed space (similarity)", "does not hold vs a collapsed baseline
   (similarity)"). :attr:`ClaimV2.verdict_category` keeps the plain category.

4. Claim 3 as the paper states it: relational has the smallest S among the paper's three losses (relational
   λ=1, contrastive τ=0.07, similarity), judged on those two differences exactly as version 1. Beside it, shown
   but never judged (status :data:`SHOWN`), S(relational) − S(contrastive τ=X) with its Welch interval for every
   other contrastive temperature X among the students.

5. Configurations: contrastive = the runs with τ = :data:`PAPER_TAU` (as version 1); relational = loss
   ``relational`` with λ = :data:`PAPER_LAM` and both its cross-modal and intra-modal terms (not the ablations);
   similarity = loss ``similarity``. When several labels qualify (e.g. two recipes), the one with the most seeds
   (as version 1).

6. Every claim carries the number of seeds of each involved configuration and, when given, a budget and a
   convergence status per configuration (:func:`evaluate_claims_v2`'s ``convergence``, keyed by configuration
   label or shown name; :data:`NOT_CHECKED` otherwise).

Nothing here is tuned: the configurations, the intervals and the rule are the same whatever the numbers say.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from geomstruct.claims import CONFIDENCE, FAILS, HOLDS, INCONCLUSIVE, Statement, difference_interval, mean_interval
from geomstruct.correlation import _rowwise_pearson
from geomstruct.structure import COLLAPSE_RANK

RULE_VERSION = 2
RULE_DATE = "2026-12-06"
"""The day rule version 2 was fixed, before any run of the claims study."""

N_BOOT = 10_000
"""Resamples of the two-stage cluster bootstrap."""
BOOT_SEED = 0
"""Seed of the cluster bootstrap's random generator (``numpy.random.default_rng``)."""
MIN_CONFIGURATIONS = 4
"""Fewest configurations a correlation's interval is computed from; below it the statement is undecided."""

COLLAPSE_MARGIN = 1.25
"""A configuration whose mean effective rank is within 25% above the collapse threshold counts as collapsed."""
COLLAPSE_ERANK = COLLAPSE_MARGIN * COLLAPSE_RANK
"""Mean ``erank_3d`` over seeds below which a configuration is collapsed (1.25 x 4 = 5)."""

PAPER_TAU = 0.07
"""The contrastive temperature of the paper's contrastive configuration."""
PAPER_LAM = 1.0
"""The relational weight λ of the paper's relational configuration."""
INTRA_ONLY_LOSSES = ("relational_intra",)
"""Losses without a cross-modal term (besides ``relational`` with ``cross`` false)."""
RELATIONAL_DEFAULTS: dict[str, float | bool] = {"lam": 1.0, "cross": True, "intra": True}
"""The defaults of the relational loss's parameters (``models.losses.relational``), used where a run omits one."""

SHOWN = "shown (not judged)"
"""The status of a statement shown beside a claim that never changes its verdict."""
NOT_CHECKED = "not checked"
NOT_GIVEN = "not given"

CONTRASTIVE, RELATIONAL, SIMILARITY = "contrastive τ=0.07", "relational", "similarity"
"""Shown names of the paper's three configurations."""


@dataclass(frozen=True)
class Configuration:
    """A configuration a claim involves: shown ``name``, frame ``label``, seeds and collapse (rule 3)."""

    name: str
    label: str
    seeds: int
    collapsed: bool
    collapse_reason: str


@dataclass(frozen=True)
class ClusterCorrelation:
    """Spearman ρ over students with its two-stage cluster-bootstrap interval (NaN bounds: no interval)."""

    r: float
    ci_low: float
    ci_high: float
    n_students: int
    n_configurations: int


@dataclass(frozen=True)
class ClaimV2:
    """A claim under rule version 2: judged ``statements``, ``shown`` ones, and what the verdict depends on."""

    number: int
    text: str
    statements: tuple[Statement, ...]
    shown: tuple[Statement, ...]
    configurations: tuple[Configuration, ...]
    subjects: tuple[str, ...]
    convergence: str
    budget: str
    collapse_checked: bool

    @property
    def verdict_category(self) -> str:
        """``holds``, ``does not hold`` or ``inconclusive`` from the judged statements only."""
        statuses = [s.status for s in self.statements]
        if statuses and all(s == "supported" for s in statuses):
            return HOLDS
        if "contradicted" in statuses:
            return FAILS
        return INCONCLUSIVE

    @property
    def verdict(self) -> str:
        """The category with the collapsed configurations it involves (rule 3)."""
        collapsed = [c.name for c in self.configurations if c.collapsed]
        own = [name for name in collapsed if name in self.subjects]
        other = [name for name in collapsed if name not in self.subjects]
        parts = []
        if own:
            parts.append(f"on a collapsed space ({', '.join(own)})")
        if other:
            parts.append(f"vs a collapsed baseline ({', '.join(other)})")
        return " ".join([self.verdict_category, " and ".join(parts)]) if parts else self.verdict_category


# ---------------------------------------------------------------------------------------------------------------
# Two-stage cluster bootstrap


def two_stage_indices(sizes: Sequence[int], n_boot: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Positions and mask, each ``(n_boot, C, max(sizes))``, of ``n_boot`` two-stage resamples of students ordered
    by configuration (configuration ``k`` holds positions ``sum(sizes[:k]) ... + sizes[k] - 1``).

    Per resample: ``C`` configurations drawn with replacement (``rng.integers(0, C, (n_boot, C))``), then for
    each drawn configuration as many of its seeds as it has, with replacement (``rng.integers(0, n_k)`` per
    slot, one call for all); ``mask`` is false past a drawn configuration's size. Hand-written: scipy.stats.bootstrap
    resamples observations, not clusters then their members."""
    n = np.asarray(sizes, dtype=np.int64)
    if n.ndim != 1 or n.size == 0 or (n < 1).any():
        raise ValueError(f"sizes must be positive counts of seeds per configuration; got {list(sizes)}")
    start = np.concatenate([[0], np.cumsum(n)[:-1]])
    drawn = rng.integers(0, n.size, size=(n_boot, n.size))
    size = n[drawn][..., None]
    within = rng.integers(0, size, size=(n_boot, n.size, int(n.max())))
    mask = np.arange(int(n.max())) < size
    return start[drawn][..., None] + within, mask


def _resampled_spearman(x: np.ndarray, y: np.ndarray, positions: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Spearman ρ (Pearson r of average ranks) of every resample; NaN where x or y is constant in it. Resamples of
    equal length are ranked together."""
    lengths = mask.sum(axis=(1, 2))
    rho = np.full(len(positions), np.nan)
    for length in np.unique(lengths):
        rows = np.flatnonzero(lengths == length)
        picked = positions[rows][mask[rows]].reshape(len(rows), int(length))
        rho[rows] = _rowwise_pearson(stats.rankdata(x[picked], axis=1), stats.rankdata(y[picked], axis=1))
    return rho


def cluster_spearman(
    x: Sequence[float],
    y: Sequence[float],
    clusters: Sequence[object],
    n_boot: int = N_BOOT,
    confidence: float = CONFIDENCE,
    seed: int = BOOT_SEED,
) -> ClusterCorrelation:
    """Spearman ρ of ``x`` and ``y`` over the students (non-finite pairs dropped) with a two-stage cluster-bootstrap
    percentile interval, ``clusters`` naming each student's configuration (rule 1; configurations numbered in
    order of first appearance, each one's students in their order, for :func:`two_stage_indices`). Resamples where
    x or y is constant are left out of the interval; fewer than :data:`MIN_CONFIGURATIONS` configurations: NaN
    bounds."""
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    labels = np.asarray(clusters, dtype=object)
    if not (xa.shape == ya.shape == labels.shape) or xa.ndim != 1:
        raise ValueError(f"x, y and clusters must be 1-D of one length; got {xa.shape}, {ya.shape}, {labels.shape}")
    keep = np.isfinite(xa) & np.isfinite(ya)
    xa, ya, labels = xa[keep], ya[keep], labels[keep]
    order = list(dict.fromkeys(labels.tolist()))
    n_students, n_configs = int(xa.size), len(order)
    if n_students < 3 or np.ptp(xa) == 0 or np.ptp(ya) == 0:
        return ClusterCorrelation(math.nan, math.nan, math.nan, n_students, n_configs)
    r = float(stats.spearmanr(xa, ya)[0])
    if n_configs < MIN_CONFIGURATIONS:
        return ClusterCorrelation(r, math.nan, math.nan, n_students, n_configs)
    grouped = [np.flatnonzero(labels == label) for label in order]
    index = np.concatenate(grouped)
    positions, mask = two_stage_indices([len(g) for g in grouped], n_boot, np.random.default_rng(seed))
    boot = _resampled_spearman(xa[index], ya[index], positions, mask)
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return ClusterCorrelation(r, math.nan, math.nan, n_students, n_configs)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    return ClusterCorrelation(r, float(low), float(high), n_students, n_configs)


# ---------------------------------------------------------------------------------------------------------------
# Loss parameters, configurations, collapse

_LABEL_PARAMS = re.compile(r"^\S+ \(([^()]*)\)")


def _label_params(label: str) -> dict[str, object]:
    """The ``(key=value, ...)`` of a configuration label (:attr:`geomstruct.runs.Run.loss_label`)."""
    match = _LABEL_PARAMS.match(str(label))
    if not match:
        return {}
    params: dict[str, object] = {}
    for item in match.group(1).split(", "):
        key, _, text = item.partition("=")
        if text in ("True", "False"):
            params[key] = text == "True"
            continue
        try:
            params[key] = float(text)
        except ValueError:
            params[key] = text
    return params


def _present(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def loss_parameter(students: pd.DataFrame, key: str, default: object = math.nan) -> pd.Series:
    """Each student's loss parameter ``key``: its column, else its ``params`` dictionary, else its label's
    ``(key=value)``, else ``default`` (rule 2)."""
    values = []
    for i in range(len(students)):
        row = students.iloc[i]
        found: object = default
        params = row.get("params")
        for source in (
            row.get(key),
            params.get(key) if isinstance(params, Mapping) else None,
            _label_params(row.get("label", "")).get(key),
        ):
            if _present(source):
                found = source
                break
        values.append(found)
    return pd.Series(values, index=students.index, dtype=object)


def cross_modal(students: pd.DataFrame) -> pd.Series:
    """Whether each student's loss has a cross-modal term: not :data:`INTRA_ONLY_LOSSES`, not ``relational`` with
    ``cross`` false."""
    cross = loss_parameter(students, "cross", True).map(bool)
    return ~students["loss"].isin(INTRA_ONLY_LOSSES) & ~((students["loss"] == "relational") & ~cross)


def _most_seeds(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of the label with the most seeds (the first label in sorted order on a tie, as version 1)."""
    if rows.empty:
        return rows
    main = rows.groupby("label")["seed"].count().idxmax()
    return rows[rows["label"] == main]


def _is_tau(students: pd.DataFrame, tau: float) -> pd.Series:
    values = loss_parameter(students, "tau").map(lambda v: float(v) if isinstance(v, int | float) else math.nan)
    return pd.Series(np.isclose(values.to_numpy(float), tau), index=students.index)


def contrastive_rows(students: pd.DataFrame, tau: float = PAPER_TAU) -> pd.DataFrame:
    """The contrastive configuration with temperature ``tau`` (rule 5)."""
    rows = students[students["loss"] == "contrastive"]
    return _most_seeds(rows[_is_tau(rows, tau)])


def relational_rows(students: pd.DataFrame) -> pd.DataFrame:
    """The relational configuration with λ = :data:`PAPER_LAM` and both terms (rule 5)."""
    rows = students[students["loss"] == "relational"]
    lam = loss_parameter(rows, "lam", RELATIONAL_DEFAULTS["lam"]).map(float)
    both = loss_parameter(rows, "cross", True).map(bool) & loss_parameter(rows, "intra", True).map(bool)
    return _most_seeds(rows[np.isclose(lam.to_numpy(float), PAPER_LAM) & both.to_numpy(bool)])


def similarity_rows(students: pd.DataFrame) -> pd.DataFrame:
    """The similarity configuration (rule 5)."""
    return _most_seeds(students[students["loss"] == "similarity"])


def collapse_known(students: pd.DataFrame) -> bool:
    """Whether the frame carries what rule 3 reads (``collapsed`` or ``erank_3d``)."""
    return "collapsed" in students or "erank_3d" in students


def configuration(name: str, rows: pd.DataFrame) -> Configuration:
    """The :class:`Configuration` of one configuration's rows (rule 3's collapse)."""
    label = str(rows["label"].iloc[0]) if len(rows) else ""
    flags = pd.to_numeric(rows["collapsed"], errors="coerce") if "collapsed" in rows else pd.Series(dtype=float)
    flagged = int((flags == 1).sum())
    ranks = pd.to_numeric(rows["erank_3d"], errors="coerce") if "erank_3d" in rows else pd.Series(dtype=float)
    ranks = ranks[np.isfinite(ranks)]
    low_rank = bool(len(ranks)) and float(ranks.mean()) < COLLAPSE_ERANK
    reasons = []
    if flagged:
        reasons.append(f"{flagged} of {len(rows)} seeds flagged")
    if low_rank:
        reasons.append(f"mean erank_3d {float(ranks.mean()):.2f} < {COLLAPSE_ERANK:g}")
    return Configuration(name, label, len(rows), bool(flagged) or low_rank, "; ".join(reasons))


def _names(roles: Mapping[str, pd.DataFrame]) -> dict[str, str]:
    """Configuration label -> shown name, for the paper's three configurations (``roles``: name -> rows)."""
    return {str(rows["label"].iloc[0]): name for name, rows in roles.items() if len(rows)}


# ---------------------------------------------------------------------------------------------------------------
# Statements


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def _values(rows: pd.DataFrame, column: str) -> np.ndarray:
    return rows[column].to_numpy(float) if column in rows else np.array([])


def _one(rows: pd.DataFrame, column: str, sign: int, what: str) -> Statement:
    values = _values(rows, column)
    mean, lo, hi = mean_interval(values)
    side = ">" if sign > 0 else "<"
    return Statement(f"{what} {side} 0", mean, lo, hi, _seeds(int(np.isfinite(values).sum())), sign)


def _diff(first: pd.DataFrame, second: pd.DataFrame, column: str, sign: int, what: str) -> Statement:
    a, b = _values(first, column), _values(second, column)
    diff, lo, hi = difference_interval(a, b)
    side = ">" if sign > 0 else "<"
    n = f"{int(np.isfinite(a).sum())} + {_seeds(int(np.isfinite(b).sum()))}"
    return Statement(f"{what} {side} 0", diff, lo, hi, n, sign)


def _correlated(students: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """The students with a finite S and a finite score of ``protocol``."""
    if protocol not in students or "S" not in students:
        return students.iloc[0:0]
    keep = np.isfinite(students["S"].to_numpy(float)) & np.isfinite(students[protocol].to_numpy(float))
    return students[keep]


def _correlation(students: pd.DataFrame, protocol: str, title: str, note: str, n_boot: int, seed: int) -> Statement:
    text = f"Spearman ρ(S, {title}) < 0{note}"
    rows = _correlated(students, protocol)
    if rows.empty:
        return Statement(text, math.nan, math.nan, math.nan, "0 students", -1)
    result = cluster_spearman(rows["S"], rows[protocol], rows["label"], n_boot=n_boot, seed=seed)
    n = f"{result.n_students} students in {result.n_configurations} configurations"
    return Statement(text, result.r, result.ci_low, result.ci_high, n, -1)


def _other_taus(students: pd.DataFrame) -> list[float]:
    """The contrastive temperatures among the students other than :data:`PAPER_TAU`, ascending."""
    rows = students[students["loss"] == "contrastive"]
    taus = loss_parameter(rows, "tau").map(lambda v: float(v) if isinstance(v, int | float) else math.nan)
    found = sorted({float(t) for t in taus if math.isfinite(t)})
    return [t for t in found if not np.isclose(t, PAPER_TAU)]


# ---------------------------------------------------------------------------------------------------------------
# The claims


def _describe(configurations: Sequence[Configuration], convergence: Mapping[str, str] | None) -> str:
    """``name: status; ...`` of the given convergence statuses (by label, else by shown name)."""
    if convergence is None:
        return NOT_CHECKED
    return "; ".join(
        f"{c.name}: {convergence.get(c.label, convergence.get(c.name, NOT_CHECKED))}" for c in configurations
    )


def evaluate_claims_v2(
    students: pd.DataFrame,
    convergence: Mapping[str, str] | None = None,
    budget: int | None = None,
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
) -> list[ClaimV2]:
    """The six claims under rule version 2 (module docstring) on a suite's students (a
    :func:`geomstruct.summary.students_frame`, with :func:`geomstruct.tables.add_structure_columns` for collapse;
    mIoU in percent). ``convergence``: a status per configuration label (or shown name), e.g. ``"converged"``,
    ``"drifting"``; ``budget``: the training budget the runs had; both only shown."""
    con, rel, sim = contrastive_rows(students), relational_rows(students), similarity_rows(students)
    with_cross = cross_modal(students) if len(students) else pd.Series(dtype=bool)
    zero_shot_students = students[with_cross.to_numpy(bool)] if len(students) else students
    excluded = len(students) - len(zero_shot_students)
    c_con, c_rel, c_sim = (
        configuration(CONTRASTIVE, con),
        configuration(RELATIONAL, rel),
        configuration(SIMILARITY, sim),
    )
    zs_rel, zs_con = relational_rows(zero_shot_students), contrastive_rows(zero_shot_students)

    shown = tuple(
        _diff(rel, other, "S", -1, f"S(relational) − S(contrastive τ={tau:g})")
        for tau in _other_taus(students)
        if len(other := contrastive_rows(students, tau))
    )
    note = f" ({excluded} student{'' if excluded == 1 else 's'} without a cross-modal term excluded)"
    correlation = (
        _correlation(zero_shot_students, "zero_shot", "zero-shot", note, n_boot, seed),
        _correlation(students, "few_shot", "few-shot", "", n_boot, seed),
    )
    in_correlation = pd.concat([_correlated(zero_shot_students, "zero_shot"), _correlated(students, "few_shot")])
    labels = list(dict.fromkeys(in_correlation["label"])) if "label" in in_correlation else []
    names = _names({CONTRASTIVE: con, RELATIONAL: rel, SIMILARITY: sim})
    c_all = tuple(configuration(names.get(label, label), students[students["label"] == label]) for label in labels)

    specs = [
        (1, "contrastive raises U and lowers T relative to the 2D space", (
            _one(con, "dU", +1, "ΔU(contrastive)"),
            _one(con, "dT", -1, "ΔT(contrastive)"),
        ), (), (c_con,), (CONTRASTIVE,)),
        (2, "similarity lowers U and raises T relative to the 2D space", (
            _one(sim, "dU", -1, "ΔU(similarity)"),
            _one(sim, "dT", +1, "ΔT(similarity)"),
        ), (), (c_sim,), (SIMILARITY,)),
        (3, "relational has the smallest structural gap S among the paper's three losses (relational λ=1, "
            "contrastive τ=0.07, similarity)", (
            _diff(rel, con, "S", -1, "S(relational) − S(contrastive)"),
            _diff(rel, sim, "S", -1, "S(relational) − S(similarity)"),
        ), shown, (c_rel, c_con, c_sim), (RELATIONAL,)),
        (4, "the structural gap S correlates negatively with zero-shot and few-shot mIoU", correlation, (), c_all, ()),
        (5, "relational beats contrastive in zero-shot mIoU", (
            _diff(zs_rel, zs_con, "zero_shot", +1, "zero-shot(relational) − zero-shot(contrastive)"),
        ), (), (c_rel, c_con), (RELATIONAL,)),
        (6, "relational beats similarity in few-shot mIoU, in and out of distribution", (
            _diff(rel, sim, "few_shot", +1, "few-shot(relational) − few-shot(similarity)"),
            _diff(rel, sim, "few_shot_ood", +1, "OOD few-shot(relational) − OOD few-shot(similarity)"),
        ), (), (c_rel, c_sim), (RELATIONAL,)),
    ]  # fmt: skip
    budget_text = NOT_GIVEN if budget is None else str(budget)
    checked = collapse_known(students)
    return [
        ClaimV2(number, text, judged, extra, involved, subjects, _describe(involved, convergence), budget_text, checked)
        for number, text, judged, extra, involved, subjects in specs
    ]


def _collapse_cell(claim: ClaimV2) -> str:
    if not claim.collapse_checked:
        return NOT_CHECKED
    collapsed = [f"{c.name} ({c.collapse_reason})" for c in claim.configurations if c.collapsed]
    return "; ".join(collapsed) if collapsed else "none"


def claims_v2_frame(claims: Sequence[ClaimV2]) -> pd.DataFrame:
    """One row per statement (judged ones first, then those shown beside the claim): claim, text, statement,
    estimate, CI, n, status (:data:`SHOWN` for a shown one), judged, the claim's verdict and verdict_category, the
    seeds of every involved configuration, the collapsed ones, convergence, budget and the rule version."""
    rows = []
    for c in claims:
        common = {
            "verdict": c.verdict,
            "verdict_category": c.verdict_category,
            "seeds": "; ".join(f"{x.name}: {x.seeds}" for x in c.configurations) or "–",
            "collapsed": _collapse_cell(c),
            "convergence": c.convergence,
            "budget": c.budget,
            "rule": f"v{RULE_VERSION} ({RULE_DATE})",
        }
        for statement, judged in [*((s, True) for s in c.statements), *((s, False) for s in c.shown)]:
            rows.append({
                "claim": c.number,
                "text": c.text,
                "statement": statement.text,
                "estimate": statement.estimate,
                "ci_low": statement.ci_low,
                "ci_high": statement.ci_high,
                "n": statement.n,
                "status": statement.status if judged else SHOWN,
                "judged": judged,
                **common,
            })  # fmt: skip
    return pd.DataFrame(rows)
