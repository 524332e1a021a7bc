"""Tables of a report in Markdown, CSV and LaTeX (booktabs): per-loss summary, per-class IoU, correlations, and
which structure quantity predicts each protocol best (``predictors``).

Every table carries a header line that names its columns and units. Values are computed from the run files
only (``metrics.json``); the correlation and predictor tables use :mod:`geomstruct.correlation`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from geomstruct.budgets import DOUBLING_RULE
from geomstruct.claims import claims_frame, evaluate_claims
from geomstruct.correlation import MIN_STUDENTS, Correlation, pearson, spearman
from geomstruct.run_folder import FEATURES_FILE, METRICS_FILE, PREDICTORS_FILE
from geomstruct.runs import STRUCTURE_COLUMNS, Run, structure_values
from geomstruct.structure import COLLAPSE_RANK, posthoc_columns, structure_titles
from geomstruct.summary import GEOMETRY_COLUMNS, PROTOCOL_TITLES, PROTOCOLS, loss_rank

SUMMARY_HEADER = (
    "Per loss, mean ± std over seeds (n students): uniformity U (negated, t = 2; higher = more uniform), "
    "tolerance T (mean same-class cosine), modality gap G (distance between the 3D and 2D feature centroids), "
    "structural gap dU = U_3D − U_2D, dT = T_3D − T_2D, S = sqrt(dU² + dT²), the teacher's U_2d and T_2d; "
    "linear CKA and mutual k-NN alignment mkNN (k = 10) between the 3D and 2D features of the same points, and "
    "the ratio of their effective ranks erank_3D / erank_2D (– where a run predates these); "
    "mIoU in % for zero-shot, linear probe, 1% few-shot and OOD 1% few-shot; recipe: the distillation optimiser "
    "and learning rate (selected per configuration by the tuning suite when the suite reads one)."
)
GAP_QUANTITIES = ("S", "dU", "dT")
STRUCTURE_TITLES = structure_titles()
"""Structure columns of the summary's Markdown and LaTeX, with their headers (the CSV holds every
:data:`STRUCTURE_COLUMNS`): declared with the metrics, :data:`geomstruct.structure.STRUCTURE_METRICS`."""
STRUCTURE_SHOWN = tuple(STRUCTURE_TITLES)
COLLAPSED_MARK = "†"
COLLAPSED_NOTE = (
    f"{COLLAPSED_MARK} collapsed: effective rank of the 3D space < {COLLAPSE_RANK:g} (in m of n seeds when not all)."
)
UNCONVERGED_MARK = "‡"
UNCONVERGED_NOTE = (
    f"{UNCONVERGED_MARK} not converged: the probe's U, T, G or the loss changed by more than 5% (relative) over the "
    f"last 20% of the steps ({METRICS_FILE} convergence; in m of n seeds when not all)."
)
TRACE_UNCONVERGED_NOTE = (
    f"{UNCONVERGED_MARK} not converged by the budget trace: the configuration's runs at twice the steps (the same "
    "seeds) moved the linear probe by more than 1 point or U or T by more than 0.05 (seed means; the doubling rule of "
    "bench/study/doubling.py). The largest budget has no twice and is unchecked."
)
POSTHOC_COLUMNS = posthoc_columns()
"""Structure columns of the metrics added after studies were run (``CKA_cal``, ``mknn_cal``, ``lidar``,
``alpha_3d``; :attr:`geomstruct.structure.StructureMetric.posthoc`): computed for finished runs by ``python -m
geomstruct.predictors``; a report shows them only when some run has them."""
PREDICTOR_QUANTITIES = ("dU", "dT", "S", "G", "CKA", "mknn", "erank_ratio", *POSTHOC_COLUMNS)
"""The structure quantities ranked by how well they predict each protocol's mIoU (:func:`predictor_table`)."""
POSTHOC_HEADER = (
    "CKA_cal and mknn_cal: CKA and mutual k-NN minus their chance level (the mean over all row-shuffled pairings); "
    "lidar: LiDAR (Thilak et al. 2024), the effective rank of the LDA matrix with each point a class and its 3D and "
    "2D features its two views; alpha_3d: alpha-ReQ (Agrawal et al. 2022), the power-law decay exponent of the 3D "
    "covariance spectrum (docs/method.md#calibrated-cka-and-mutual-k-nn, #lidar, #alpha-req)."
)
"""Added to :data:`PREDICTORS_HEADER` when the table ranks one of :data:`POSTHOC_COLUMNS`."""
PREDICTORS_HEADER = (
    "Which measure predicts downstream? Per protocol, every structure quantity (dU, dT, S, G, linear CKA, mutual "
    "k-NN alignment mknn, effective-rank ratio erank_3D / erank_2D) correlated across students with the "
    "protocol's mIoU: Spearman ρ and Pearson r with percentile-bootstrap 95% CIs, n students; ranked by |ρ| "
    "within each protocol (rank 1: the strongest monotone relation, of either sign); n < 5 is not a finding."
)


def _collapsed(values: dict) -> float:
    """1.0 / 0.0 by the current rule (``erank_3d < COLLAPSE_RANK``) when the run has its effective rank, so that
    runs written under an earlier rule are judged alike; else the run's stored flag (NaN when unknown)."""
    rank = values.get("erank_3d")
    if rank is not None and math.isfinite(rank):
        return float(rank < COLLAPSE_RANK)
    return np.nan if values.get("collapsed") is None else float(values["collapsed"])


def add_structure_columns(students: pd.DataFrame, runs: Sequence[Run]) -> pd.DataFrame:
    """``students`` (one row per run, with its ``path``) with the structure metrics of every run:
    :data:`STRUCTURE_COLUMNS` (NaN when missing or undefined), ``collapsed`` (1.0 / 0.0, NaN when unknown) and
    ``absent``: the tuple of structure keys the run's ``metrics.json`` lacks (runs older than them) and its
    ``predictors.json`` does not supply. A column of :data:`POSTHOC_COLUMNS` that no run has is not added."""
    by_path = {run.path.as_posix(): structure_values(run) for run in runs}
    frame = students.copy()
    values = [by_path.get(path, {}) for path in frame["path"]] if "path" in frame else [{} for _ in range(len(frame))]
    for key in STRUCTURE_COLUMNS:
        if key in POSTHOC_COLUMNS and not any(key in v for v in values):
            continue  # a metric newer than every run: no column (a report of such runs is unchanged)
        frame[key] = [float(v.get(key, np.nan)) for v in values]
    frame["collapsed"] = [_collapsed(v) for v in values]
    converged = {run.path.as_posix(): (run.metrics.get("convergence") or {}).get("converged") for run in runs}
    paths = frame["path"] if "path" in frame else [None] * len(frame)
    frame["unconverged"] = [
        np.nan if not isinstance(converged.get(p), bool) else float(not converged[p]) for p in paths
    ]
    frame["absent"] = [tuple(k for k in (*STRUCTURE_COLUMNS, "collapsed") if k not in v) for v in values]
    return frame


def summary_table(students: pd.DataFrame) -> pd.DataFrame:
    """Per configuration (``label``): ``n``, ``<column>_mean`` / ``<column>_std`` of the geometry, structure (when
    ``students`` has them, :func:`add_structure_columns`) and mIoU columns, ``<column>_count`` where some seed has
    no finite value of that column (its mean is over the others), ``collapsed`` (how many of its seeds are
    collapsed) and, last, ``runs``: the run folders of the row (``; ``-separated, in seed order)."""
    columns = [*GEOMETRY_COLUMNS, *[c for c in STRUCTURE_COLUMNS if c in students], *PROTOCOLS]
    present = [c for c in columns if c in students]
    students = students.assign(**{c: students[c].replace([np.inf, -np.inf], np.nan) for c in present})  # missing
    grouped = students.groupby("label", sort=False)
    table = grouped[columns].agg(["mean", "std"])
    table.columns = [f"{c}_{stat}" for c, stat in table.columns]
    table.insert(0, "n", grouped.size())
    counts = grouped[columns].count()  # finite values: a NaN seed is left out of the mean, and the cell says so
    for column in columns:
        if column in students and (counts[column] < table["n"]).any():
            table[f"{column}_count"] = counts[column]
    if "recipe" in students:  # one per configuration unless its seeds were trained differently
        table.insert(1, "recipe", grouped["recipe"].agg(lambda values: "; ".join(dict.fromkeys(values))))
    for flag in ("collapsed", "unconverged"):
        if flag in students:
            table[flag] = grouped[flag].sum(min_count=1)  # flagged seeds; NaN: none known
    if "path" in students:
        ordered = students.sort_values(["seed", "path"])
        table["runs"] = ordered.groupby("label", sort=False)["path"].agg("; ".join)
    table = table.reset_index()
    return table.iloc[sorted(range(len(table)), key=lambda i: loss_rank(table["label"][i]))].reset_index(drop=True)


def per_class_table(runs: Sequence[Run], protocol: str) -> pd.DataFrame:
    """Per configuration (rows, :attr:`Run.label`) and class (columns): IoU in %, mean over seeds (absent
    classes left out)."""
    rows: dict[str, list[dict[str, float]]] = {}
    for run in runs:
        per_class = (run.metrics.get(protocol) or {}).get("per_class") or {}
        values = {c: (100.0 * v if v is not None else np.nan) for c, v in per_class.items()}
        rows.setdefault(run.label, []).append(values)
    frame = pd.DataFrame({label: pd.DataFrame(values).mean(axis=0, skipna=True) for label, values in rows.items()}).T
    frame.index.name = "label"
    return frame.iloc[sorted(range(len(frame)), key=lambda i: loss_rank(frame.index[i]))]


def configuration_means(students: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (``label``): the mean over its seeds of every numeric column."""
    numeric = [c for c in students.columns if c != "seed" and pd.api.types.is_numeric_dtype(students[c])]
    return students.groupby("label", sort=False)[numeric].mean().reset_index()


def correlation_table(
    students: pd.DataFrame, n_boot: int = 10_000, seed: int = 0
) -> tuple[pd.DataFrame, dict[tuple[str, str], tuple[Correlation, Correlation]]]:
    """Pearson and Spearman (bootstrap 95% CI, n) of every gap quantity against every protocol's mIoU, over the
    students (``over = "students"``: seeds count separately) and over the configuration means (``over =
    "configurations"``: one point per configuration, its seeds averaged). The returned dictionary holds the
    correlations over students."""
    rows = []
    results = {}
    means = configuration_means(students) if "label" in students else students.iloc[0:0]
    for gap in GAP_QUANTITIES:
        for protocol in PROTOCOLS:
            for over, frame in (("students", students), ("configurations", means)):
                x = frame[gap].to_numpy(float) if gap in frame else np.array([])
                y = frame[protocol].to_numpy(float) if protocol in frame else np.array([])
                p = pearson(x, y, n_boot=n_boot, seed=seed)
                s = spearman(x, y, n_boot=n_boot, seed=seed)
                if over == "students":
                    results[(gap, protocol)] = (p, s)
                rows.append(
                    {
                        "gap": gap,
                        "protocol": protocol,
                        "over": over,
                        "n": p.n,
                        "pearson_r": p.r,
                        "pearson_ci_low": p.ci_low,
                        "pearson_ci_high": p.ci_high,
                        "spearman_rho": s.r,
                        "spearman_ci_low": s.ci_low,
                        "spearman_ci_high": s.ci_high,
                        "reliable": p.reliable,
                    }
                )
    return pd.DataFrame(rows), results


def _pm(mean: float, std: float, digits: int, signed: bool = False) -> str:
    if not math.isfinite(mean):
        return "–"
    value = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return f"{value} ± {std:.{digits}f}" if math.isfinite(std) else value


def _digits(column: str) -> int:
    return 1 if column in PROTOCOLS else 3


def _row_label(row: pd.Series) -> str:
    """The configuration, marked :data:`COLLAPSED_MARK` when a seed is collapsed and :data:`UNCONVERGED_MARK` when
    a seed has not converged (``m of n seeds`` if not all)."""
    label = row["label"]
    for flag, mark in (("collapsed", COLLAPSED_MARK), ("unconverged", UNCONVERGED_MARK)):
        m = row.get(flag, np.nan)
        if isinstance(m, int | float) and math.isfinite(m) and m >= 1:
            n = int(row["n"])
            label += f" {mark}" + ("" if int(m) == n else f" ({int(m)} of {n} seeds)")
    return label


def _summary_cells(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    columns = [*GEOMETRY_COLUMNS, *[c for c in STRUCTURE_SHOWN if f"{c}_mean" in table], *PROTOCOLS]
    titles = {**PROTOCOL_TITLES, **STRUCTURE_TITLES}
    recipes = "recipe" in table and bool(table["recipe"].astype(str).str.len().any())
    header = ["loss", "n", *(["recipe"] if recipes else []), *[titles.get(c, c) for c in columns]]
    body = [
        [_row_label(r), str(int(r["n"])), *([str(r["recipe"])] if recipes else [])]
        + [_pm(r[f"{c}_mean"], r[f"{c}_std"], _digits(c), signed=c in ("dU", "dT")) + _partial(r, c) for c in columns]
        for _, r in table.iterrows()
    ]
    return header, body


def _partial(row: pd.Series, column: str) -> str:
    """`` (k of n seeds)`` when the cell's mean is over fewer seeds than the row's ``n`` (the others NaN)."""
    count = row.get(f"{column}_count", np.nan)
    if isinstance(count, int | float) and math.isfinite(count) and 0 < count < row["n"]:
        return f" ({int(count)} of {int(row['n'])} seeds)"
    return ""


def predictor_table(students: pd.DataFrame, n_boot: int = 10_000, seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """Which structure quantity predicts each protocol's mIoU best.

    For every protocol with scores and every quantity of :data:`PREDICTOR_QUANTITIES`: Pearson and Spearman
    (bootstrap 95% CIs, n) across the students, ranked by ``|Spearman rho|`` within the protocol (``rank`` 1 =
    strongest; NaN when rho is undefined, e.g. a constant column). Returns ``(table, notes)``: a quantity that
    some runs lack (runs older than the structure metrics: ``absent`` of :func:`add_structure_columns`) or that
    no run has is left out, with a note (none for a quantity of :data:`POSTHOC_COLUMNS` that no run has: a
    report of runs older than it is unchanged), so that every ranked quantity is measured on the same students; runs
    where a quantity is present but undefined (null, e.g. CKA of a space without variance) are left out of that
    quantity's correlations only (its n says so), with a note.
    """
    protocols = [p for p in PROTOCOLS if p in students and students[p].notna().any()]
    absent = students["absent"] if "absent" in students else pd.Series([()] * len(students), index=students.index)
    notes, kept = [], []
    for quantity in PREDICTOR_QUANTITIES:
        lacking = int(sum(quantity in a for a in absent)) if quantity in STRUCTURE_COLUMNS else 0
        values = students[quantity] if quantity in students else pd.Series(np.nan, index=students.index)
        if quantity in POSTHOC_COLUMNS and (quantity not in students or lacking == len(students)):
            continue  # newer than every run: left out silently
        if lacking:
            how = (
                f"compute it from their {FEATURES_FILE} with python -m geomstruct.predictors"
                if quantity in POSTHOC_COLUMNS
                else "rerun those runs with python -m bench.run to include it"
            )
            notes.append(
                f"predictors: {quantity} is missing for {lacking} of {len(students)} runs (written before the "
                f"structure metrics); left out of the ranking ({how})"
            )
            continue
        if not values.notna().any():
            notes.append(f"predictors: no run has a value of {quantity}; left out of the ranking")
            continue
        undefined = int(values.isna().sum())
        where = f"{METRICS_FILE} or {PREDICTORS_FILE}" if quantity in POSTHOC_COLUMNS else METRICS_FILE
        if undefined:
            notes.append(
                f"predictors: {quantity} is undefined for {undefined} of {len(students)} runs (null in "
                f"{where}); they are left out of its correlations"
            )
        kept.append(quantity)
    rows = []
    for protocol in protocols:
        y = students[protocol].to_numpy(float)
        block = []
        for quantity in kept:
            x = students[quantity].to_numpy(float)
            p = pearson(x, y, n_boot=n_boot, seed=seed)
            s = spearman(x, y, n_boot=n_boot, seed=seed)
            block.append(
                {
                    "protocol": protocol,
                    "rank": np.nan,
                    "quantity": quantity,
                    "n": s.n,
                    "spearman_rho": s.r,
                    "spearman_ci_low": s.ci_low,
                    "spearman_ci_high": s.ci_high,
                    "spearman_p": s.p_value,
                    "pearson_r": p.r,
                    "pearson_ci_low": p.ci_low,
                    "pearson_ci_high": p.ci_high,
                    "pearson_p": p.p_value,
                    "reliable": s.n >= MIN_STUDENTS,
                }
            )
        block.sort(key=lambda r: -abs(r["spearman_rho"]) if math.isfinite(r["spearman_rho"]) else math.inf)
        for i, row in enumerate(r for r in block if math.isfinite(r["spearman_rho"])):
            row["rank"] = i + 1
        rows += block
    columns = ["protocol", "rank", "quantity", "n", "spearman_rho", "spearman_ci_low", "spearman_ci_high",
               "spearman_p", "pearson_r", "pearson_ci_low", "pearson_ci_high", "pearson_p", "reliable"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns), notes


def markdown(header: Sequence[str], body: Sequence[Sequence[str]], caption: str) -> str:
    """A Markdown table with a caption line."""
    lines = [caption, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#")):
        text = text.replace(a, b)
    for a, b in (("±", r"$\pm$"), ("–", "--"), ("τ", r"$\tau$"), ("†", r"\dag{}"), ("‡", r"\ddag{}")):
        text = text.replace(a, b)
    return text


def latex(header: Sequence[str], body: Sequence[Sequence[str]], caption: str) -> str:
    """A booktabs ``tabular`` with the caption as a comment line above it."""
    lines = [
        f"% {caption}",
        r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
        r"\toprule",
        " & ".join(_latex_escape(h) for h in header) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(_latex_escape(c) for c in row) + r" \\" for row in body]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_all(
    header: Sequence[str], body: Sequence[Sequence[str]], caption: str, csv: pd.DataFrame, stem: Path
) -> list[Path]:
    """``stem.md``, ``stem.tex`` and ``stem.csv`` (the CSV holds the unrounded numbers, and for the summary the
    run folders of every row)."""
    paths = [stem.with_suffix(".md"), stem.with_suffix(".tex"), stem.with_suffix(".csv")]
    paths[0].write_text(markdown(header, body, caption))
    paths[1].write_text(latex(header, body, caption))
    csv.to_csv(paths[2], index=csv.index.name is not None, float_format="%.6g")
    return paths


def _ci(r: float, lo: float, hi: float) -> str:
    return "–" if not math.isfinite(r) else f"{r:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def write_predictors(predictors: pd.DataFrame, notes: Sequence[str], out: Path) -> list[Path]:
    """``predictors.md``, ``.tex`` and ``.csv`` from :func:`predictor_table` (nothing when it has no row: no
    protocol was evaluated)."""
    if predictors.empty:
        return []
    cells = [
        [
            PROTOCOL_TITLES[r["protocol"]],
            str(int(r["rank"])) if math.isfinite(r["rank"]) else "–",
            r["quantity"],
            str(r["n"]) + ("" if r["reliable"] else " (too few)"),
            _ci(r["spearman_rho"], r["spearman_ci_low"], r["spearman_ci_high"]),
            _ci(r["pearson_r"], r["pearson_ci_low"], r["pearson_ci_high"]),
        ]
        for _, r in predictors.iterrows()
    ]
    head = [PREDICTORS_HEADER] + ([POSTHOC_HEADER] if set(predictors["quantity"]) & set(POSTHOC_COLUMNS) else [])
    caption = " ".join([*head, *(f"Note: {n[len('predictors: ') :]}." for n in notes)])
    header = ["protocol", "rank", "quantity", "n", "Spearman ρ [95% CI]", "Pearson r [95% CI]"]
    return write_all(header, cells, caption, predictors, out / "predictors")


def write_tables(
    runs: Sequence[Run],
    students: pd.DataFrame,
    out: Path,
    n_boot: int = 10_000,
    predictors: tuple[pd.DataFrame, Sequence[str]] | None = None,
    traced: bool = False,
) -> list[Path]:
    """The summary, per-class, correlation and predictor tables into ``out``; ``predictors``: the result of
    :func:`predictor_table` when already computed; ``traced``: the students' ``unconverged`` flags come from the
    budget trace (:func:`geomstruct.budgets.trace_flags`), and the summary's caption says so."""
    out.mkdir(parents=True, exist_ok=True)
    if "absent" not in students:
        students = add_structure_columns(students, runs)
    table = summary_table(students)
    header, body = _summary_cells(table)
    caption = SUMMARY_HEADER + (f" {COLLAPSED_NOTE}" if (table.get("collapsed", pd.Series()) > 0).any() else "")
    note = TRACE_UNCONVERGED_NOTE if traced else UNCONVERGED_NOTE
    caption += f" {note}" if (table.get("unconverged", pd.Series()) > 0).any() else ""
    written = write_all(header, body, caption, table, out / "summary")

    for protocol in PROTOCOLS:
        frame = per_class_table(runs, protocol)
        if frame.empty or frame.isna().all().all():
            continue
        caption = (
            f"Per-class IoU (%) of the {PROTOCOL_TITLES[protocol]} protocol, mean over seeds; "
            "– = class absent from both prediction and ground truth."
        )
        cells = [[label] + [f"{v:.1f}" if math.isfinite(v) else "–" for v in row] for label, row in frame.iterrows()]
        written += write_all(["loss", *frame.columns], cells, caption, frame, out / f"per_class_{protocol}")

    corr, _ = correlation_table(students, n_boot=n_boot)
    caption = (
        "Correlation of each structural-gap quantity with each protocol's mIoU, across students (every seed a point) "
        "and across configurations (one point per configuration, its seeds averaged): Pearson r and Spearman ρ "
        "with percentile-bootstrap 95% CIs, n points; n < 5 is not a finding."
    )

    cells = [
        [
            r["gap"],
            PROTOCOL_TITLES[r["protocol"]],
            r["over"],
            str(r["n"]) + ("" if r["reliable"] else " (too few)"),
            _ci(r["pearson_r"], r["pearson_ci_low"], r["pearson_ci_high"]),
            _ci(r["spearman_rho"], r["spearman_ci_low"], r["spearman_ci_high"]),
        ]
        for _, r in corr.iterrows()
    ]
    written += write_all(
        ["gap", "protocol", "over", "n", "Pearson r [95% CI]", "Spearman ρ [95% CI]"],
        cells,
        caption,
        corr,
        out / "correlations",
    )
    pred, notes = predictors if predictors is not None else predictor_table(students, n_boot=n_boot)
    written += write_predictors(pred, notes, out)
    written += write_claims(claims_frame(evaluate_claims(students, n_boot=n_boot)), out)
    return written


CLAIMS_HEADER = (
    "The paper's claims (docs/method.md#the-papers-claims) on contrastive (τ = 0.07), similarity and relational. "
    "Each statement "
    "is an estimate with a 95% interval (seed means: Student t; differences of seed means: Welch t; correlations "
    "over students: percentile bootstrap, none below 5 students); supported when the interval lies on the "
    "claimed side of 0, contradicted when on the other side. A claim holds when all its statements are "
    "supported, does not hold when one is contradicted, and is inconclusive otherwise (rule fixed before any "
    "result, geomstruct/claims.py)."
)


def write_claims(frame: pd.DataFrame, out: Path) -> list[Path]:
    """``claims.md``, ``.tex`` and ``.csv`` from :func:`geomstruct.claims.claims_frame`."""
    if frame.empty:
        return []

    def interval(r: pd.Series) -> str:
        if not math.isfinite(r["estimate"]):
            return "–"
        if not (math.isfinite(r["ci_low"]) and math.isfinite(r["ci_high"])):
            return f"{r['estimate']:+.3g} (no interval)"
        return f"{r['estimate']:+.3g} [{r['ci_low']:+.3g}, {r['ci_high']:+.3g}]"

    cells = [
        [f"{r['claim']}. {r['text']}", r["statement"], interval(r), r["n"], r["status"], r["verdict"]]
        for _, r in frame.iterrows()
    ]
    header = ["claim", "statement", "estimate [95% CI]", "n", "statement status", "verdict"]
    return write_all(header, cells, CLAIMS_HEADER, frame, out / "claims")


CLAIMS_V2_HEADER = (
    "The paper's claims (docs/method.md#the-papers-claims) under rule version 2 (fixed 2026-12-06, before any run of "
    "the claims study; geomstruct/claims_v2.py). Units are configurations and seeds: seed means, Student t; "
    "differences of two configurations, Welch t; Spearman ρ over students with a two-stage cluster bootstrap "
    "(configurations, then their seeds, resampled; none below 4 configurations). Zero-shot statements leave out "
    "students without a cross-modal term. Contrastive: τ = 0.07; relational: λ = 1 with both terms. A claim holds when "
    "all its judged statements are supported, does not hold when one is contradicted, and is inconclusive otherwise; "
    "the verdict names every involved configuration that is collapsed (a seed flagged, or mean erank_3D below 5). Rows "
    "'shown (not judged)' never change a verdict."
)


def write_claims_v2(frame: pd.DataFrame, out: Path) -> list[Path]:
    """``claims_v2.md``, ``.tex`` and ``.csv`` from :func:`geomstruct.claims_v2.claims_v2_frame` (nothing when it
    has no row)."""
    if frame.empty:
        return []

    def interval(r: pd.Series) -> str:
        if not math.isfinite(r["estimate"]):
            return "–"
        if not (math.isfinite(r["ci_low"]) and math.isfinite(r["ci_high"])):
            return f"{r['estimate']:+.3g} (no interval)"
        return f"{r['estimate']:+.3g} [{r['ci_low']:+.3g}, {r['ci_high']:+.3g}]"

    columns = ("verdict", "seeds", "collapsed", "convergence", "budget")
    cells = [
        [f"{r['claim']}. {r['text']}", r["statement"], interval(r), r["n"], r["status"], *(r[c] for c in columns)]
        for _, r in frame.iterrows()
    ]
    header = ["claim", "statement", "estimate [95% CI]", "n", "statement status", *columns]
    return write_all(header, cells, CLAIMS_V2_HEADER, frame, out / "claims_v2")


CLAIMS_BY_BUDGET_HEADER = (
    "The paper's claims under rule version 2 as a function of the training budget: at each budget (steps) the "
    "claims are judged on the students of that budget only (the same seeds at every budget); each cell gives the "
    "verdict and the statement that decides it (the contradicted one, else one not supported, else the first) "
    "with its estimate [95% CI]. Stable from: the smallest budget from which the verdict no longer changes over "
    "the larger budgets ('not stable' when the largest two differ). Convergence at each budget (in "
    f"claims_by_budget.csv): {DOUBLING_RULE}."
)


def write_claims_by_budget(frame: pd.DataFrame, out: Path) -> list[Path]:
    """``claims_by_budget.md``, ``.tex`` and ``.csv`` from :func:`geomstruct.budgets.claims_by_budget_frame`
    (nothing when it has no row)."""
    if frame.empty:
        return []
    steps = [int(c[len("verdict_") :]) for c in frame.columns if c.startswith("verdict_")]

    def cell(r: pd.Series, b: int) -> str:
        estimate, low, high = r[f"estimate_{b}"], r[f"ci_low_{b}"], r[f"ci_high_{b}"]
        if not math.isfinite(estimate):
            interval = "–"
        elif not (math.isfinite(low) and math.isfinite(high)):
            interval = f"{estimate:+.3g} (no interval)"
        else:
            interval = f"{estimate:+.3g} [{low:+.3g}, {high:+.3g}]"
        return f"{r[f'verdict_{b}']} ({r[f'statement_{b}']}: {interval})"

    cells = [
        [f"{r['claim']}. {r['text']}", *(cell(r, b) for b in steps), str(r["stable_from"])] for _, r in frame.iterrows()
    ]
    header = ["claim", *(f"{b} steps" for b in steps), "stable from"]
    return write_all(header, cells, CLAIMS_BY_BUDGET_HEADER, frame, out / "claims_by_budget")


REFERENCE_TITLES = {
    "teacher": "2D teacher, zero-shot (paired points)",
    "floor": "random student, linear probe (floor)",
    "ceiling": "student trained with every train label (supervised ceiling)",
    "few_shot_random": "random init, few-shot 1%",
}
REFERENCES_HEADER = (
    "Reference rows (python -m bench.study.reference): the 2D teacher's own zero-shot on the evaluation points "
    "seen by a "
    "camera, a randomly initialised student under the linear probe, and the suite's student trained from random "
    "weights with the labels of every train scan; mIoU in %, on each row's evaluation split."
)


def load_references(roots: Sequence[Path], pattern: str = "references/*.json") -> tuple[list[dict], list[str]]:
    """The reference rows (``kind: reference`` JSON files of :mod:`bench.study.reference`) matching ``pattern`` under
    ``roots``; unreadable files are skipped with a note naming them."""
    rows, problems = [], []
    for root in roots:
        for path in sorted(Path(root).rglob(pattern)):
            try:
                data = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                problems.append(f"{path}: unreadable reference row ({exc}); skipped")
                continue
            if not isinstance(data, dict) or data.get("kind") != "reference" or data.get("row") not in REFERENCE_TITLES:
                problems.append(f"{path}: not a reference row of bench.study.reference; skipped")
                continue
            if not isinstance(data.get("miou"), (int, float)):
                problems.append(f"{path}: no mIoU; skipped")
                continue
            rows.append({**data, "path": path.as_posix()})
    return rows, problems


def _student_cell(config: dict) -> str:
    """``widths init/planes, voxel size, input`` of a reference row's student."""
    overrides = config.get("student_overrides") or {}
    planes = overrides.get("planes")
    widths = f"{overrides.get('init_dim', '?')}/{'-'.join(str(p) for p in planes)}" if planes else config.get("preset")
    inputs = config.get("student_inputs") or ["intensity"]
    extra = "" if list(inputs) == ["intensity"] else f", inputs {'+'.join(inputs)}"
    return f"{widths}, {config.get('voxel_size')} m{extra}"


def _downstream_cell(config: dict) -> str:
    """``seg_loss [class weight], optimiser`` of a reference row's downstream training."""
    weight = config.get("seg_class_weight", "none")
    loss = config.get("seg_loss", "ce") + ("" if weight in (None, "none") else f" ({weight})")
    return f"{loss}, {config.get('ft_optimizer', 'sgd')}"


FEW_SHOT_REFERENCE_NOTE = (
    " The random-init few-shot rows fine-tune the randomly initialised student under the distilled students' few-shot "
    "protocol (and OOD few-shot): the mean over the 1% subsets (over the seeds where several), with its 95% Student-t "
    "interval in brackets."
)


def _few_shot_title(row: dict, ood: bool) -> str:
    """``random init, [OOD ]few-shot 1% (k subsets[, n seeds])`` of a ``few_shot_random`` row."""
    k = row.get("n_subsets") or (row.get("config") or {}).get("few_shot_subsets") or 1
    seeds = row.get("seeds") if isinstance(row.get("seeds"), list) else []
    extra = f", {len(seeds)} seeds" if len(seeds) > 1 else ""
    return f"random init, {'OOD ' if ood else ''}few-shot 1% ({k} subset{'s' if k != 1 else ''}{extra})"


def _reference_lines(rows: Sequence[dict]) -> list[tuple[dict, dict, str]]:
    """``(row, scores, title)`` per table line: one per row, and a second, OOD one for a ``few_shot_random`` row
    holding an ``ood`` result with an mIoU (its scores, dataset and split)."""
    lines = []
    for r in rows:
        if r["row"] != "few_shot_random":
            lines.append((r, r, REFERENCE_TITLES[r["row"]]))
            continue
        lines.append((r, r, _few_shot_title(r, ood=False)))
        ood = r.get("ood")
        if isinstance(ood, dict) and isinstance(ood.get("miou"), (int, float)):
            lines.append((r, ood, _few_shot_title(r, ood=True)))
    return lines


def write_references(
    rows: Sequence[dict], out: Path, stem: str = "references", header_text: str = REFERENCES_HEADER
) -> list[Path]:
    """``<stem>.md``, ``.tex`` and ``.csv`` (nothing when there is no row): one line per reference row with its
    student, downstream loss and optimiser, budget, mIoU and the present classes whose IoU does not exceed chance
    (:func:`bench.evaluate.miou`). A ``few_shot_random`` row gives two lines, few-shot and OOD few-shot (when
    computed), titled with its number of 1% subsets (and seeds), its mIoU followed by the 95% interval
    ``miou_ci`` in brackets; its budget is the fine-tuning's (steps, scans per step, lr, scans per subset)."""
    if not rows:
        return []
    order = list(REFERENCE_TITLES)
    rows = sorted(rows, key=lambda r: (order.index(r["row"]), r["path"]))
    lines = _reference_lines(rows)
    if any(r["row"] == "few_shot_random" for r in rows):
        header_text += FEW_SHOT_REFERENCE_NOTE

    def record(r: dict, scores: dict) -> dict:
        config = r.get("config") or {}
        ood = scores is not r
        entry = {
            "row": r["row"] + ("_ood" if ood else ""),
            "miou": 100.0 * float(scores["miou"]),
            "eval_split": f"{scores.get('dataset')} OOD {scores.get('split')}" if ood else config.get("eval_split"),
            "student": _student_cell(config),
            "downstream": _downstream_cell(config) if r["row"] in ("ceiling", "few_shot_random") else "",
            "steps": r.get("steps"),
            "batch_size": r.get("batch_size"),
            "lr": r.get("lr"),
            "train_scans": scores.get("train_scans"),
            "points": scores.get("points"),
            "below_chance": " ".join(scores["below_chance"]) if isinstance(scores.get("below_chance"), list) else None,
            "file": r["path"],
        }
        ci = scores.get("miou_ci")
        if r["row"] == "few_shot_random":
            entry |= {"subsets": r.get("n_subsets"), "seeds": len(r.get("seeds") or []) or None}
            entry |= {"miou_ci_low": 100.0 * ci[0], "miou_ci_high": 100.0 * ci[1]} if ci else {}
        return entry

    frame = pd.DataFrame([record(r, scores) for r, scores, _ in lines])

    def budget(r: pd.Series) -> str:
        if r["row"] != "ceiling" and not r["row"].startswith("few_shot_random"):
            return "–"
        per = " per subset" if r["row"] != "ceiling" and (r.get("subsets") or 1) > 1 else ""
        steps = f"{int(r['steps'])} steps × {int(r['batch_size'])} scans"
        return f"{steps}, lr {r['lr']:g}, {int(r['train_scans'])} scans{per}"

    def below(r: pd.Series) -> str:
        if not isinstance(r["below_chance"], str):  # a row written before the chance IoU (None, NaN in the frame)
            return "–"
        return r["below_chance"].replace(" ", ", ") or "none"

    def score(r: pd.Series) -> str:
        low, high = r.get("miou_ci_low"), r.get("miou_ci_high")
        interval = f" [{low:.1f}, {high:.1f}]" if isinstance(low, float) and math.isfinite(low) else ""
        return f"{r['miou']:.1f}{interval}"

    cells = [
        [
            title,
            score(r),
            str(r["eval_split"]),
            r["student"] if r["row"] != "teacher" else "–",
            r["downstream"] or "–",
            budget(r),
            below(r),
        ]
        for (_, _, title), (_, r) in zip(lines, frame.iterrows(), strict=True)
    ]
    header = ["reference", "mIoU", "evaluated on", "student", "downstream", "training budget", "classes at chance"]
    return write_all(header, cells, header_text, frame, out / stem)
