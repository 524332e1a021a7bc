"""Tables of a report in Markdown, CSV and LaTeX (booktabs): per-loss summary, per-class IoU, correlations.

Every table carries a header line that names its columns and units. Values are computed from the run files
only (``metrics.json``); the correlation table uses :mod:`geomstruct.correlation`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from geomstruct.correlation import Correlation, pearson, spearman
from geomstruct.runs import Run
from geomstruct.summary import GEOMETRY_COLUMNS, PROTOCOL_TITLES, PROTOCOLS, loss_rank

SUMMARY_HEADER = (
    "Per loss, mean ± std over seeds (n students): uniformity U (negated, t = 2; higher = more uniform), "
    "tolerance T (mean same-class cosine), modality gap G (distance between the 3D and 2D feature centroids), "
    "structural gap dU = U_3D − U_2D, dT = T_3D − T_2D, S = sqrt(dU² + dT²), the teacher's U_2d and T_2d; "
    "mIoU in % for zero-shot, linear probe, 1% few-shot and OOD 1% few-shot."
)
GAP_QUANTITIES = ("S", "dU", "dT")


def summary_table(students: pd.DataFrame) -> pd.DataFrame:
    """Per configuration (``label``): ``n``, ``<column>_mean`` / ``<column>_std`` of the geometry and mIoU columns
    and, last, ``runs``: the run folders of the row (``; ``-separated, in seed order)."""
    columns = [*GEOMETRY_COLUMNS, *PROTOCOLS]
    grouped = students.groupby("label", sort=False)
    table = grouped[columns].agg(["mean", "std"])
    table.columns = [f"{c}_{stat}" for c, stat in table.columns]
    table.insert(0, "n", grouped.size())
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


def correlation_table(
    students: pd.DataFrame, n_boot: int = 10_000, seed: int = 0
) -> tuple[pd.DataFrame, dict[tuple[str, str], tuple[Correlation, Correlation]]]:
    """Pearson and Spearman (bootstrap 95% CI, n) of every gap quantity against every protocol's mIoU."""
    rows = []
    results = {}
    for gap in GAP_QUANTITIES:
        for protocol in PROTOCOLS:
            x, y = students[gap].to_numpy(float), students[protocol].to_numpy(float)
            p = pearson(x, y, n_boot=n_boot, seed=seed)
            s = spearman(x, y, n_boot=n_boot, seed=seed)
            results[(gap, protocol)] = (p, s)
            rows.append(
                {
                    "gap": gap,
                    "protocol": protocol,
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


def _summary_cells(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    columns = [*GEOMETRY_COLUMNS, *PROTOCOLS]
    header = ["loss", "n", *[PROTOCOL_TITLES.get(c, c) for c in columns]]
    body = [
        [r["label"], str(int(r["n"]))]
        + [_pm(r[f"{c}_mean"], r[f"{c}_std"], _digits(c), signed=c in ("dU", "dT")) for c in columns]
        for _, r in table.iterrows()
    ]
    return header, body


def markdown(header: Sequence[str], body: Sequence[Sequence[str]], caption: str) -> str:
    """A Markdown table with a caption line."""
    lines = [caption, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#")):
        text = text.replace(a, b)
    return text.replace("±", r"$\pm$").replace("–", "--").replace("τ", r"$\tau$")


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


def write_tables(runs: Sequence[Run], students: pd.DataFrame, out: Path, n_boot: int = 10_000) -> list[Path]:
    """The summary, per-class and correlation tables into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    table = summary_table(students)
    header, body = _summary_cells(table)
    written = write_all(header, body, SUMMARY_HEADER, table, out / "summary")

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
        "Correlation across students of each structural-gap quantity with each protocol's mIoU: Pearson r and "
        "Spearman ρ with percentile-bootstrap 95% CIs, n students; n < 5 is not a finding."
    )

    def ci(r, lo, hi):
        return "–" if not math.isfinite(r) else f"{r:+.2f} [{lo:+.2f}, {hi:+.2f}]"

    cells = [
        [
            r["gap"],
            PROTOCOL_TITLES[r["protocol"]],
            str(r["n"]) + ("" if r["reliable"] else " (too few)"),
            ci(r["pearson_r"], r["pearson_ci_low"], r["pearson_ci_high"]),
            ci(r["spearman_rho"], r["spearman_ci_low"], r["spearman_ci_high"]),
        ]
        for _, r in corr.iterrows()
    ]
    written += write_all(
        ["gap", "protocol", "n", "Pearson r [95% CI]", "Spearman ρ [95% CI]"],
        cells,
        caption,
        corr,
        out / "correlations",
    )
    return written
