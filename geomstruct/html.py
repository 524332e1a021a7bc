"""``reports/index.html``: one self-contained page with every figure and table of a report.

The page opens with the claims (rule version 2) when the report has them (:class:`ClaimsPage`): one row per
claim with its verdict, every statement's estimate and 95% interval, the budget, each configuration's
convergence status and the collapsed configurations, then the caveats (collapse, grid edge, unmet targets), the
claims by budget when the suite has several budgets, and the breadth table (the per-configuration summary,
titled with its number of configurations and budget). Below come the sections of every report. Figures are
linked relatively (the page and its PNGs travel together), tables are inlined from the Markdown
files the report wrote, a paragraph says how the runs were produced (suites, configuration, package versions,
device, git commit), read from the run directories' ``config.json`` and ``environment.json``, a table lists the
run folders that went into every row of the tables, and the warnings list every run that was skipped and why.
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from geomstruct.run_folder import CONFIG_FILE, ENVIRONMENT_FILE
from geomstruct.runs import Run

FIGURE_CAPTIONS = {
    "pca.png": "Figure 1 — the 2D teacher space and every loss's 3D space, first two principal components.",
    "uniformity_tolerance.png": "Every student in the uniformity–tolerance plane, with the 2D teacher.",
    "trajectories.png": "U, T and G of the students over training, the teacher's values as dashed lines.",
    "gap_vs_performance.png": "Structural gap (S, ΔU, ΔT) against segmentation mIoU, with correlations.",
    "predictors.png": "Which measure predicts downstream? Spearman ρ and Pearson r (bootstrap 95% CIs) of every "
    "structure quantity with each protocol's mIoU, ranked by |ρ|.",
    "toy/toy_initial_outputs.png": "Toy experiment (Figure 3): the initial MLP outputs and the targets.",
    "toy/toy_evolution_1cluster.png": "Toy experiment (Figure 2), one cluster: the predicted space over training.",
    "toy/toy_evolution_3clusters.png": "Toy experiment (Figure 2), three clusters: the predicted space over training.",
    "toy/toy_uniformity.png": "Toy experiment (Figure 4): uniformity and tolerance over training per loss.",
}
TABLE_ORDER = (
    "summary.md",
    "teachers.md",
    "references.md",
    "claims.md",
    "predictors.md",
    "correlations.md",
    "per_class_zero_shot.md",
    "per_class_linear_probe.md",
    "per_class_few_shot.md",
    "per_class_few_shot_ood.md",
    "toy/toy_table.md",
)


@dataclass(frozen=True)
class Row:
    """One row of a report's tables and the run folders averaged into it."""

    table: str
    label: str
    folders: tuple[str, ...]


@dataclass(frozen=True)
class ClaimsPage:
    """The top of the page: the claims frame (:func:`geomstruct.claims_v2.claims_v2_frame`), the budget they were
    judged at in words (e.g. ``800 steps``; shown where the claims carry no budget), the caveats printed under the
    table, the claims-by-budget table's Markdown file (None: one budget), the breadth table's title and a note
    printed above the claims table."""

    claims: pd.DataFrame
    budget: str
    caveats: tuple[str, ...] = ()
    by_budget: str | None = None
    breadth_title: str = "Breadth"
    note: str = ""


def _interval(estimate: float, low: float, high: float) -> str:
    if not math.isfinite(estimate):
        return "–"
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{estimate:+.3g} (no interval)"
    return f"{estimate:+.3g} [{low:+.3g}, {high:+.3g}]"


def _convergence_lines(text: str) -> list[str]:
    """The ``name: status; ...`` of a claim's convergence as lines, one per configuration, or one line
    ``all N configurations: status`` when they share one status."""
    parts = text.split("; ")
    statuses = {part.partition(": ")[2] for part in parts}
    if len(parts) > 1 and len(statuses) == 1 and "" not in statuses:
        return [f"all {len(parts)} configurations: {statuses.pop()}"]
    return parts


def claims_table(page: ClaimsPage) -> str:
    """An HTML table with one row per claim: verdict, statements (estimate [95% CI], status), seeds, budget,
    convergence per configuration and collapsed configurations."""
    head = "".join(
        f"<th>{t}</th>"
        for t in ("claim", "verdict", "statements: estimate [95% CI], status", "seeds", "budget", "convergence",
                  "collapsed")
    )  # fmt: skip
    body = []
    for number, rows in page.claims.groupby("claim", sort=False):
        first = rows.iloc[0]
        statements = "<br>".join(
            f"{html.escape(str(r['statement']))}: {html.escape(_interval(r['estimate'], r['ci_low'], r['ci_high']))}"
            f" <em>({html.escape(str(r['status']))})</em>"
            for _, r in rows.iterrows()
        )
        budget = str(first["budget"])
        budget = page.budget if budget == "not given" else f"{budget} steps"
        convergence = "<br>".join(html.escape(part) for part in _convergence_lines(str(first["convergence"])))
        cells = [
            f"{number}. {html.escape(str(first['text']))}",
            f"<strong>{html.escape(str(first['verdict']))}</strong>",
            statements,
            html.escape(str(first["seeds"])),
            html.escape(budget),
            convergence,
            html.escape(str(first["collapsed"])),
        ]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table class='claims'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def claims_section(out: Path, page: ClaimsPage, breadth: str | None) -> str:
    """The top of the page (module docstring); ``breadth``: the summary's Markdown (None: none written)."""
    caveats = "".join(f"<li>{html.escape(c)}</li>" for c in page.caveats)
    parts = [
        "<h2>Claims (rule version 2)</h2>",
        f"<p class='caption'>{html.escape(page.note)}</p>" if page.note else "",
        claims_table(page),
        "<h3>Caveats</h3><ul class='caveats'>" + (caveats or "<li>none recorded</li>") + "</ul>",
    ]
    if page.by_budget and (out / page.by_budget).is_file():
        parts.append(f"<h3>Claims by budget</h3>{markdown_table_to_html((out / page.by_budget).read_text())}")
    if breadth is not None:
        parts.append(f"<h2>{html.escape(page.breadth_title)}</h2>{markdown_table_to_html(breadth)}")
    return "<section class='claims'>" + "".join(parts) + "</section>"


def rows_table(rows: Sequence[Row]) -> str:
    """An HTML table: for every row of the report's tables, the run folders that went into it."""
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{html.escape(r.table)}</td><td>{html.escape(r.label)}</td><td>{len(r.folders)}</td>"
        f"<td class='folders'>{'<br>'.join(f'<code>{html.escape(f)}</code>' for f in r.folders)}</td></tr>"
        for r in rows
    )
    return (
        "<table class='folders'><thead><tr><th>table</th><th>row</th><th>n</th><th>run folders</th></tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def _environment(run: Run) -> dict | None:
    try:
        env = json.loads((run.path / ENVIRONMENT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, unreadable, not UTF-8 or not JSON: nothing to say
        return None
    return env if isinstance(env, dict) else None


def markdown_table_to_html(text: str) -> str:
    """The caption paragraph and the pipe table of a Markdown file written by :mod:`geomstruct.tables`."""
    lines = [line for line in text.splitlines() if line.strip()]
    caption = [line for line in lines if not line.startswith("|")]
    rows = [line.strip().strip("|").split("|") for line in lines if line.startswith("|")]
    rows = [r for r in rows if not all(set(c.strip()) <= {"-", ":"} for c in r)]
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c.strip())}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>" for r in rows[1:])
    cap = html.escape(" ".join(caption))
    return f"<p class='caption'>{cap}</p><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def provenance(runs: Sequence[Run]) -> str:
    """A paragraph on how the runs were produced: suites, data, teachers, steps, versions, device, commit."""
    if not runs:
        return "No run could be read."
    suites = Counter(r.suite for r in runs)
    kinds = Counter(r.kind for r in runs)
    teachers = Counter(str(r.metrics.get("teacher", "–")) for r in runs if r.kind != "toy")
    datasets = Counter(str(r.metrics.get("dataset", "–")) for r in runs if r.kind != "toy")
    envs = [env for env in map(_environment, runs) if env is not None]
    commits = Counter(str(e.get("git_commit") or "unknown")[:12] for e in envs)
    devices = Counter(str(e.get("device", "?")) for e in envs)
    packages = envs[0].get("packages") if envs else None
    packages = packages if isinstance(packages, dict) else {}
    parts = [
        f"{len(runs)} runs ({', '.join(f'{n} {k}' for k, n in kinds.items())}) of the suites "
        + ", ".join(f"<code>{html.escape(s)}</code> ({n})" for s, n in suites.items())
        + ", each written by <code>python -m bench.run --suite NAME</code> into its own directory with its "
        f"resolved <code>{CONFIG_FILE}</code>.",
    ]
    if teachers:
        parts.append(
            "Teachers: " + ", ".join(f"<code>{html.escape(t)}</code> ({n})" for t, n in teachers.items())
            + "; data: " + ", ".join(f"{html.escape(d)} ({n})" for d, n in datasets.items()) + "."
        )  # fmt: skip
    parts.append(
        "Devices: " + ", ".join(f"{html.escape(d)} ({n})" for d, n in devices.items())
        + "; git commits: " + ", ".join(f"<code>{html.escape(c)}</code> ({n})" for c, n in commits.items()) + "."
    )  # fmt: skip
    if packages:
        parts.append("Versions: " + ", ".join(f"{html.escape(k)} {html.escape(str(v))}" for k, v in packages.items()
                                               if v) + ".")  # fmt: skip
    return " ".join(parts)


def write_index(
    out: Path,
    runs: Sequence[Run],
    problems: Sequence[str],
    rows: Sequence[Row] = (),
    claims: ClaimsPage | None = None,
) -> Path:
    """Write ``out/index.html`` linking every figure and inlining every table present under ``out``, with the
    run folders of every table row (``rows``) and the ``problems`` as warnings; with ``claims``, the page opens
    with the claims section (:func:`claims_section`), which holds the summary as the breadth table."""
    figures = [name for name in FIGURE_CAPTIONS if (out / name).is_file()]
    tables = [name for name in TABLE_ORDER if (out / name).is_file()]
    top = ""
    if claims is not None:
        breadth = (out / "summary.md").read_text() if "summary.md" in tables else None
        tables = [name for name in tables if name != "summary.md"]
        top = claims_section(out, claims, breadth)
    sections = []
    for name in figures:
        sections.append(
            f"<figure><img src='{html.escape(name)}' alt='{html.escape(FIGURE_CAPTIONS[name])}'>"
            f"<figcaption>{html.escape(FIGURE_CAPTIONS[name])}</figcaption></figure>"
        )
    for name in tables:
        sections.append(f"<section><h3>{html.escape(name)}</h3>{markdown_table_to_html((out / name).read_text())}"
                        "</section>")  # fmt: skip
    notes = "".join(f"<li>{html.escape(p)}</li>" for p in problems)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Image-to-lidar distillation: geometry report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; border: 1px solid #ddd; }}
figcaption, .caption {{ color: #555; font-size: 0.9em; }}
table {{ border-collapse: collapse; font-size: 0.85em; margin-bottom: 1.5em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
td.folders {{ text-align: left; font-size: 0.9em; }}
table.claims th, table.claims td {{ text-align: left; vertical-align: top; }}
</style></head>
<body>
<h1>Image-to-lidar distillation: geometry report</h1>
{top}
<h2>How these runs were produced</h2>
<p>{provenance(runs)}</p>
{"<h2>Warnings</h2><ul>" + notes + "</ul>" if notes else ""}
<h2>Figures</h2>
{"".join(sections[: len(figures)]) or "<p>No figure could be drawn.</p>"}
<h2>Tables</h2>
{"".join(sections[len(figures) :]) or "<p>No table could be written.</p>"}
{"<h2>Run folders of every row</h2>" + rows_table(rows) if rows else ""}
</body></html>
"""
    path = out / "index.html"
    path.write_text(page)
    return path
