"""What both `fit_counts` reports (a column, `--formula`) say about how far to trust them.

p-values below the float range, goodness of fit, samples too small for large-sample inference,
which interval a parameter gets, and the frequency table's rows: the same words and the same
JSON in both reports, for any count model (each model's expected frequencies come in as an
array per row). No I/O here.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.core.inference import goodness
from pipeline.core.inference.asymptotics import Interval, sample_size_floor
from pipeline.core.inference.model_choice import gof_bound_p

P_FLOOR = 1e-300  # smaller p-values print as this bound; the JSON keeps log10 p


def p_cell(p) -> str:
    """'0.0342', '< 1e-300' (below float resolution of a tail; 0 included) or 'n/a'."""
    if p is None or math.isnan(p):
        return "n/a"
    return f"< {P_FLOOR:g}" if p < P_FLOOR else f"{p:.3g}"


def p_text(p) -> str:
    """'p = 0.0342', 'p < 1e-300' or 'p = n/a' (see `p_cell`)."""
    cell = p_cell(p)
    return f"p {cell}" if cell.startswith("<") else f"p = {cell}"


def interval_entry(iv: Interval) -> dict:
    """The JSON of the interval a parameter gets: limits, method and why not Wald."""
    return {"lower": iv.lower, "upper": iv.upper, "method": iv.method, "reason": iv.reason}


def interval_note(name: str, entry: dict) -> str:
    """One line under a parameter table when the Wald interval is not meaningful ("" else).

    Args:
        name: the parameter as the table names it.
        entry: its `interval_entry`.
    """
    if not entry["reason"]:
        return ""
    then = {"profile": "profile interval used", "none": "no interval or z-test"}[entry["method"]]
    return f"  * {name}: {then}: {entry['reason']}"


def gof_entry(observed, expected, parameters: int) -> dict:
    """Pearson's test of one model over the frequency rows (`goodness.pearson_test`) as JSON.

    Args:
        observed: observed frequency per row.
        expected: the model's expected frequency per row.
        parameters: the model's number of estimated parameters.

    Returns:
        statistic, df, p_value, log10_p_value, groups, parameters, poor_reference, reference.
    """
    test = goodness.pearson_test(observed, expected, parameters)
    return {**test._asdict(), "reference": f"chi2({test.df})"}


def _plural(k: int, word: str) -> str:
    return f"{k} {word}{'' if k == 1 else 's'}"


def _parameters(k: int) -> str:
    return _plural(k, "fitted parameter")


def gof_lines(models: list[tuple[str, dict]]) -> list[str]:
    """The goodness-of-fit section: one line per model, then one per poor reference."""
    lines = ["Goodness of fit: Pearson X2 over the table's rows, merged until each expects >= 5"]
    for name, g in models:
        lines.append(f"  {name:<10}X2 = {g['statistic']:<11.4g}df = {g['df']:<5d}"
                     f"{p_text(g['p_value']):<15}({_plural(g['groups'], 'group')}, "
                     f"{_parameters(g['parameters'])})")  # fmt: skip
    for name, g in models:
        if g["small_groups"]:
            lines.append(
                f"  {name}: {g['small_groups']} of {_plural(g['groups'], 'group')} expect "
                "< 5 (merging leaves no df): poor chi-square reference"
            )
        elif g["poor_reference"]:
            lines.append(
                f"  {name}: only {_plural(g['groups'], 'group')} for "
                f"{_parameters(g['parameters'])}: poor chi-square reference"
            )
    return lines


def misfit_warning(name: str, gof: dict, level: float) -> str:
    """A one-line warning when `name` misfits at the report's level 1 - `level` ("" else).

    Misfit means Pearson's X2 rejects even against chi2(G - 1), the lenient end of its null
    law (`model_choice.gof_bound_p`, as the comparison of families screens): against
    chi2(G - 1 - k) alone a regression with k ~ G parameters would be flagged on data drawn
    from it (the shipped example's ZIP regression: df 1, p = 0.004)."""
    alpha = 1.0 - level
    lenient, _ = gof_bound_p(gof["statistic"], gof["groups"])
    if not lenient < alpha:
        return ""
    poor = "; poor chi-square reference" if gof["poor_reference"] else ""
    return (
        f"warning: the {name} misfits (Pearson X2 = {gof['statistic']:.4g} on {gof['groups']} "
        f"groups, {p_text(lenient)} vs chi2({gof['groups'] - 1}){poor}): SEs assume a fit"
    )


def small_sample_warning(n: int, parameters: int) -> str:
    """A one-line warning when n is below `asymptotics.sample_size_floor` ("" else)."""
    floor = sample_size_floor(parameters)
    if n >= floor:
        return ""
    return (f"warning: only n = {n:,} counts (< {floor}): SEs, intervals and p-values rely on a "
            "large n; Vuong withheld")  # fmt: skip


def row_label(row: dict) -> str:
    """'3' (one count), '5-9' (a range) or '20+' (the open tail row)."""
    if row["tail"]:
        return f"{row['count']}+"
    upper = row.get("upper", row["count"])
    return str(row["count"]) if upper == row["count"] else f"{row['count']}-{upper}"


def frequency_rows(starts, observed, expected: dict[str, np.ndarray]) -> list[dict]:
    """The frequency table as JSON rows.

    Args:
        starts: lower edges of the rows (the last row open).
        observed: observed frequency per row.
        expected: model key -> expected frequency per row.

    Returns:
        One dict per row: count (lower edge), upper (inclusive, None for the tail), tail,
        label, observed and one expected frequency per model.
    """
    rows = []
    for j, a in enumerate(starts):
        tail = j + 1 == len(starts)
        row = {"count": int(a), "upper": None if tail else int(starts[j + 1]) - 1, "tail": tail,
               "observed": int(observed[j])}  # fmt: skip
        row["label"] = row_label(row)
        rows.append({**row, **{key: float(e[j]) for key, e in expected.items()}})
    return rows


def frequency_lines(rows: list[dict], models: list[tuple[str, str]]) -> list[str]:
    """The rows aligned for the terminal; `models` = [(row key, column title), ...]."""
    width = max(7, *(len(row_label(r)) + 2 for r in rows))
    head = "  " + "count".rjust(width) + "observed".rjust(12)
    lines = [head + "".join(title.rjust(12) for _, title in models)]
    for r in rows:
        cells = "".join(f"{r[key]:>12.1f}" for key, _ in models)
        lines.append(f"  {row_label(r):>{width}}{r['observed']:>12,}{cells}")
    return lines


def markdown_frequencies(rows: list[dict], models: list[tuple[str, str]]) -> str:
    """The rows as a markdown table; `models` = [(row key, column title), ...]."""
    titles = " | ".join(title for _, title in models)
    lines = [f"| count | observed | {titles} |", "| ---: | ---: |" + " ---: |" * len(models)]
    for r in rows:
        cells = " | ".join(f"{r[key]:.2f}" for key, _ in models)
        lines.append(f"| {row_label(r)} | {r['observed']} | {cells} |")
    return "\n".join(lines) + "\n"


def vuong_lines(v: dict) -> list[str]:
    """The Vuong test's lines (raw, AIC- and BIC-corrected z and p), or why it is withheld.

    Args:
        v: the report's `vuong` entry (`reported`, and `raw`/`aic`/`bic` with statistic and
            p_value).
    """
    if not v["reported"]:
        return ["  withheld: too few counts for its normal reference (see the warning above)"]
    rows = (("raw", "raw"), ("AIC-corrected", "aic"), ("BIC-corrected", "bic"))
    return [f"  {name:<18}z = {_g4(v[key]['statistic']):<10}{p_text(v[key]['p_value'])}"
            for name, key in rows]  # fmt: skip


def _g4(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, ".4g")
