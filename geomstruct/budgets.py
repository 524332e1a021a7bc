"""Step budgets of a suite's students: convergence read from the trace, and the claims as a function of budget.

A suite may train its configurations at several step budgets with the same seeds (a grid over ``steps``, e.g.
800, 1 600 and 3 200). The runs of one configuration at different budgets are told apart by ``config.json``
``steps`` alone: two runs are the same configuration at two budgets (:func:`trace_identity`) when their
configurations (:meth:`geomstruct.runs.Run.result_fields`) agree on every field but ``steps`` and the fields the
doubling rule does not read (:data:`IGNORED_FIELDS`, ``ft_*``, ``ood_*``). A suite is *traced* when at least one
configuration has runs at two budgets or more.

Convergence from the trace, the doubling rule of the project (``bench/study/doubling.py``): a configuration is
*converged at budget B* when its runs at ``2 B`` steps differ from those at ``B`` by at most
:data:`MAX_MIOU_CHANGE` (1 point) of linear-probe mIoU and :data:`MAX_GEOMETRY_CHANGE` (0.05) in U and in T.
Here the rule compares the *means* over the seeds present at both budgets (the same seeds at both; a seed
trained at only one budget is left out and named), and every status also says how many of those seeds pass the
rule one by one. A budget whose ``2 B`` the configuration lacks is unchecked: the suite's largest budget says so
(with the result of the link that leads to it, when there is one), any other says which run is missing.

Claims by budget: the claims (rule version 2, :func:`geomstruct.claims_v2.evaluate_claims_v2`) are evaluated on
the students of each budget separately, with that budget and its convergence statuses. A claim is *stable from*
budget B when its verdict (the full verdict, collapse included) is the same at B and at every larger budget
(:func:`stable_from`).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from geomstruct.claims import Statement
from geomstruct.claims_v2 import ClaimV2, evaluate_claims_v2
from geomstruct.run_folder import CONFIG_FILE
from geomstruct.runs import Run

# The doubling rule's constants, re-declared from bench/study/doubling.py (the source; geomstruct imports no bench).
MAX_MIOU_CHANGE = 0.01
"""Largest linear-probe mIoU change (a fraction: 1 point) of a converged configuration when its steps double."""
MAX_GEOMETRY_CHANGE = 0.05
"""Largest change of U and of T of a converged configuration when its steps double."""
IGNORED_FIELDS = ("steps", "checkpoint_every", "probe_every", "protocols", "few_shot_every", "few_shot_subsets")
"""Configuration fields that may differ between a run and its doubled twin (bench/study/doubling.py)."""
IGNORED_PREFIXES = ("ft_", "ood_")
"""Prefixes of the few-shot and out-of-distribution protocol fields the doubling rule does not read."""

DOUBLING_RULE = (
    f"the doubling rule (bench/study/doubling.py: linear-probe mIoU within {100 * MAX_MIOU_CHANGE:g} point, U and T "
    f"within {MAX_GEOMETRY_CHANGE:g} from B to 2B steps) on the means over the seeds present at both budgets, with "
    "how many seeds pass it alone"
)
"""The rule in words, for captions."""
QUANTITIES = ("miou", "U", "T")
"""What the doubling rule compares: the linear-probe mIoU (a fraction) and U and T of ``metrics.json``."""

ONE_BUDGET = "one budget"
NOT_STABLE = "not stable"
LARGEST = "unchecked (largest budget)"
ONLY_BUDGET = "unchecked (the suite's only budget)"
NO_BUDGET = f"unchecked (no steps in {CONFIG_FILE})"
CONVERGED = "converged"
"""How a converged status begins."""
DRIFTING = "drifting"
"""How a drifting status begins."""


def run_budget(run: Run) -> int | None:
    """The run's step budget: ``config.json`` ``steps`` (None when absent or not an integer)."""
    steps = run.config.get("steps")
    return steps if isinstance(steps, int) and not isinstance(steps, bool) else None


def trace_identity(run: Run) -> str:
    """A string equal for two runs exactly when they are one configuration, whatever their budget (module
    docstring): the run's kind, loss label and configuration without :data:`IGNORED_FIELDS` and the
    :data:`IGNORED_PREFIXES` fields."""
    fields = {
        k: v for k, v in run.result_fields().items() if k not in IGNORED_FIELDS and not k.startswith(IGNORED_PREFIXES)
    }
    return json.dumps({"kind": run.kind, "loss_label": run.loss_label, "fields": fields}, sort_keys=True, default=str)


def budgets(runs: Sequence[Run]) -> list[int]:
    """The step budgets of ``runs``, ascending (runs without one left out)."""
    return sorted({b for b in map(run_budget, runs) if b is not None})


def is_traced(runs: Sequence[Run]) -> bool:
    """Whether some configuration has runs at two budgets or more (module docstring)."""
    seen: dict[str, set[int]] = defaultdict(set)
    for run in runs:
        budget = run_budget(run)
        if budget is not None:
            seen[trace_identity(run)].add(budget)
    return any(len(found) > 1 for found in seen.values())


def doubling_values(run: Run) -> dict[str, float | None]:
    """The linear-probe mIoU (a fraction) and U, T of a run's ``metrics.json`` (None where absent or not finite)."""
    probe = run.metrics.get("linear_probe") or {}
    geometry = run.metrics.get("geometry") or {}
    values = {"miou": probe.get("miou"), "U": geometry.get("U"), "T": geometry.get("T")}
    return {
        k: float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None
        for k, v in values.items()
    }


def within_rule(change: Mapping[str, float | None]) -> bool:
    """The doubling rule on one set of changes (``2 B`` minus ``B``): |Δ mIoU| <= :data:`MAX_MIOU_CHANGE` and
    |ΔU|, |ΔT| <= :data:`MAX_GEOMETRY_CHANGE`; a U or T change that cannot be computed (null in a label-free run)
    does not fail it, as in bench/study/doubling.py; an mIoU change must exist."""
    miou = change.get("miou")
    if miou is None:
        return False
    return abs(miou) <= MAX_MIOU_CHANGE and all(
        change.get(key) is None or abs(change[key]) <= MAX_GEOMETRY_CHANGE for key in ("U", "T")
    )


def _mean(values: Sequence[float | None]) -> float | None:
    return None if any(v is None for v in values) or not values else sum(values) / len(values)


def _difference(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


@dataclass(frozen=True)
class Link:
    """One doubling of one configuration: its runs at ``steps`` and at ``2 steps``, compared over ``seeds`` (the
    seeds present at both); ``only_base`` / ``only_doubled``: seeds at one budget only."""

    steps: int
    seeds: tuple[int, ...]
    only_base: tuple[int, ...]
    only_doubled: tuple[int, ...]
    base: dict[str, float | None]
    doubled: dict[str, float | None]
    change: dict[str, float | None]
    seeds_passing: int

    @property
    def checked(self) -> bool:
        """Whether the rule could be applied: a common seed, with the linear-probe mIoU at both budgets."""
        return bool(self.seeds) and self.change["miou"] is not None

    @property
    def converged(self) -> bool:
        """The doubling rule on the means over :attr:`seeds` (:func:`within_rule`)."""
        return self.checked and within_rule(self.change)

    def status(self) -> str:
        """``converged at B (k/n seeds)``, ``drifting: U +0.29 from B to 2B (k/n seeds pass)`` or why unchecked;
        seeds present at one budget only are named."""
        doubled = 2 * self.steps
        if not self.seeds:
            return f"unchecked (no seed at both {self.steps} and {doubled} steps)"
        if self.change["miou"] is None:
            return f"unchecked (no linear-probe mIoU at {self.steps} or {doubled} steps)"
        n = len(self.seeds)
        extra = "".join(
            f", seed{'s' if len(only) > 1 else ''} {', '.join(map(str, only))} only at {budget}"
            for only, budget in ((self.only_base, self.steps), (self.only_doubled, doubled))
            if only
        )
        if self.converged:
            return f"{CONVERGED} at {self.steps} ({self.seeds_passing}/{n} seeds{extra})"
        moved = ", ".join(self.failures())
        return f"{DRIFTING}: {moved} from {self.steps} to {doubled} ({self.seeds_passing}/{n} seeds pass{extra})"

    def failures(self) -> list[str]:
        """The mean changes beyond the rule, e.g. ``LP mIoU +2.1 points``, ``U +0.29``."""
        parts = []
        miou = self.change["miou"]
        if miou is not None and abs(miou) > MAX_MIOU_CHANGE:
            parts.append(f"LP mIoU {100 * miou:+.1f} points")
        for key in ("U", "T"):
            value = self.change[key]
            if value is not None and abs(value) > MAX_GEOMETRY_CHANGE:
                parts.append(f"{key} {value:+.2f}")
        return parts


def doubling_link(base: Sequence[Run], doubled: Sequence[Run], steps: int) -> Link:
    """The :class:`Link` of one configuration's runs at ``B = steps`` (``base``) and at ``2 B`` (``doubled``): mean
    of each quantity over the seeds present at both, its change, and how many of those seeds pass the rule alone."""
    by_seed_base = {run.seed: doubling_values(run) for run in base}
    by_seed_doubled = {run.seed: doubling_values(run) for run in doubled}
    seeds = tuple(sorted(set(by_seed_base) & set(by_seed_doubled)))
    before = {k: _mean([by_seed_base[s][k] for s in seeds]) for k in QUANTITIES}
    after = {k: _mean([by_seed_doubled[s][k] for s in seeds]) for k in QUANTITIES}
    change = {k: _difference(after[k], before[k]) for k in QUANTITIES}
    passing = sum(
        within_rule({k: _difference(by_seed_doubled[s][k], by_seed_base[s][k]) for k in QUANTITIES}) for s in seeds
    )
    return Link(
        steps=steps,
        seeds=seeds,
        only_base=tuple(sorted(set(by_seed_base) - set(seeds))),
        only_doubled=tuple(sorted(set(by_seed_doubled) - set(seeds))),
        base=before,
        doubled=after,
        change=change,
        seeds_passing=int(passing),
    )


@dataclass(frozen=True)
class BudgetTrace:
    """The budgets of a suite's runs and each configuration's convergence status at each of them.

    ``statuses[B]``: configuration label (:attr:`Run.label`) -> status at budget ``B`` (None: runs without a
    budget); ``links``: ``(label at B, B) -> Link`` for every doubling present."""

    budgets: tuple[int, ...]
    traced: bool
    statuses: dict[int | None, dict[str, str]]
    links: dict[tuple[str, int], Link]

    def paths(self, runs: Sequence[Run], budget: int | None) -> set[str]:
        """The run folders (as in the students frame's ``path``) of the runs at ``budget``."""
        return {run.path.as_posix() for run in runs if run_budget(run) == budget}


def budget_trace(runs: Sequence[Run]) -> BudgetTrace:
    """Every configuration's convergence status at each budget from the runs of the suite (module docstring);
    labels must be set (:func:`geomstruct.runs.label_configurations`)."""
    found = budgets(runs)
    groups: dict[str, dict[int | None, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        groups[trace_identity(run)][run_budget(run)].append(run)
    statuses: dict[int | None, dict[str, str]] = defaultdict(dict)
    links: dict[tuple[str, int], Link] = {}
    for by_budget in groups.values():
        for budget in sorted(by_budget, key=lambda b: (b is None, b or 0)):
            members = by_budget[budget]
            if budget is None:
                status = NO_BUDGET
            elif 2 * budget in by_budget:
                link = doubling_link(members, by_budget[2 * budget], budget)
                status = link.status()
                for label in {r.label for r in members}:
                    links[(label, budget)] = link
            elif len(found) == 1:
                status = ONLY_BUDGET
            elif budget == found[-1]:
                previous = by_budget.get(budget // 2) if budget % 2 == 0 else None
                status = LARGEST
                if previous:
                    status += f", previous link: {doubling_link(previous, members, budget // 2).status()}"
            else:
                status = f"unchecked (no run at {2 * budget} steps)"
            for label in {r.label for r in members}:
                statuses[budget][label] = status
    return BudgetTrace(tuple(found), is_traced(runs), dict(statuses), links)


# ---------------------------------------------------------------------------------------------------------------
# Claims by budget


def claims_by_budget(
    students: pd.DataFrame, runs: Sequence[Run], trace: BudgetTrace, n_boot: int, seed: int = 0
) -> dict[int, list[ClaimV2]]:
    """The claims (rule version 2) of every budget of ``trace``, each on the students of that budget only, with
    the budget and its convergence statuses."""
    result = {}
    for budget in trace.budgets:
        chosen = students[students["path"].isin(trace.paths(runs, budget))].reset_index(drop=True)
        result[budget] = evaluate_claims_v2(
            chosen, convergence=trace.statuses.get(budget, {}), budget=budget, n_boot=n_boot, seed=seed
        )
    return result


def key_statement(claim: ClaimV2) -> Statement | None:
    """The statement that decides a claim's verdict: the first contradicted one, else the first that is not
    supported, else (all supported) the first; None when the claim has no judged statement."""
    for wanted in ("contradicted", "undecided"):
        for statement in claim.statements:
            if statement.status == wanted:
                return statement
    return claim.statements[0] if claim.statements else None


def stable_from(verdicts: Sequence[str], steps: Sequence[int]) -> str:
    """The smallest budget from which the verdict no longer changes over the larger budgets (``verdicts`` in the
    order of ascending ``steps``): :data:`ONE_BUDGET` for a single budget, :data:`NOT_STABLE` when the largest two
    differ."""
    if len(verdicts) != len(steps) or not verdicts:
        raise ValueError(f"one verdict per budget is needed; got {len(verdicts)} verdicts for {len(steps)} budgets")
    if len(verdicts) == 1:
        return ONE_BUDGET
    if verdicts[-1] != verdicts[-2]:
        return NOT_STABLE
    start = len(verdicts) - 1
    while start > 0 and verdicts[start - 1] == verdicts[-1]:
        start -= 1
    return str(steps[start])


def claims_by_budget_frame(by_budget: Mapping[int, Sequence[ClaimV2]]) -> pd.DataFrame:
    """One row per claim: ``claim``, ``text``, per budget B ``verdict_B``, ``statement_B``, ``estimate_B``,
    ``ci_low_B``, ``ci_high_B`` (the :func:`key_statement`), ``convergence_B``, and last ``stable_from``."""
    steps = sorted(by_budget)
    if not steps:
        return pd.DataFrame()
    numbers = [c.number for c in by_budget[steps[0]]]
    claims = {b: {c.number: c for c in by_budget[b]} for b in steps}
    rows = []
    for number in numbers:
        row: dict[str, object] = {"claim": number, "text": claims[steps[0]][number].text}
        verdicts = []
        for b in steps:
            claim = claims[b][number]
            key = key_statement(claim)
            verdicts.append(claim.verdict)
            row.update({
                f"verdict_{b}": claim.verdict,
                f"statement_{b}": key.text if key else "–",
                f"estimate_{b}": key.estimate if key else math.nan,
                f"ci_low_{b}": key.ci_low if key else math.nan,
                f"ci_high_{b}": key.ci_high if key else math.nan,
                f"convergence_{b}": claim.convergence,
            })  # fmt: skip
        row["stable_from"] = stable_from(verdicts, steps)
        rows.append(row)
    return pd.DataFrame(rows)


def trace_flags(students: pd.DataFrame, trace: BudgetTrace) -> pd.Series:
    """Per student (a row of :func:`geomstruct.summary.students_frame` with its ``label``): 1.0 when the trace
    finds its configuration drifting at its budget, 0.0 when converged there, NaN when unchecked (the largest
    budget, a missing twin). The convergence mark of a traced suite's tables then flags only what the doubling
    rule flags, never the in-run diagnostic of ``metrics.json`` (which can miss a configuration that still moves
    from one budget to the next)."""
    status = {label: text for statuses in trace.statuses.values() for label, text in statuses.items()}

    def flag(label: str) -> float:
        text = status.get(label, "")
        if text.startswith(CONVERGED):
            return 0.0
        if text.startswith(DRIFTING):
            return 1.0
        return math.nan

    return students["label"].map(flag).astype(float)
