"""The words, cells and tables of the `fit_counts` report (`count_report` assembles them).

Cells that stay readable numbers (p-values below the float range from their log10, values too
wide for their column), the notes on how far to trust a fit (goodness of fit, misfit, samples
too small for large-sample inference, which interval a parameter gets), the frequency table
for the terminal and for markdown, Vuong's lines, strict JSON and the flat MLflow metrics. For
any count model (each model's expected frequencies come in as an array per row). No I/O here.
"""

from __future__ import annotations

import math
import re

import numpy as np

from pipeline.core.inference import goodness
from pipeline.core.inference.asymptotics import sample_size_floor
from pipeline.core.inference.model_tests import VUONG_P

P_FLOOR = 1e-300  # smaller p-values print from their log10, or as this bound; JSON keeps log10 p
P_WIDTH = 10  # the most characters a p-value cell takes: '2.3e-41235'
ZIP_VUONG_CAVEAT = (
    "Poisson is ZIP with pi = 0 (in every row: logit pi -> -inf), a point on the boundary of "
    "the ZIP parameter space, so the models are nested and Vuong's non-nested test is not a "
    "valid test of zero inflation (Wilson 2015, Economics Letters 127:51-53); use the "
    "likelihood-ratio test above."
)


def p_cell(p, log10_p=None) -> str:
    """A p-value in at most `P_WIDTH` characters, always a readable number.

    '0.0342'; below `P_FLOOR` from its log10 with two digits ('2.3e-412'), or '< 1e-300' without
    one (and '<1e-99999' past five exponent digits); 'n/a' for None or NaN.
    """
    if p is None or math.isnan(p):
        return "n/a"
    if p >= P_FLOOR:
        return f"{p:.3g}"
    if log10_p is None or not math.isfinite(log10_p):
        return f"< {P_FLOOR:g}"
    exponent = math.floor(log10_p)
    mantissa = round(10.0 ** (log10_p - exponent), 1)
    if mantissa >= 10.0:
        mantissa, exponent = 1.0, exponent + 1
    text = f"{mantissa:.1f}e{exponent}"
    return text if len(text) <= P_WIDTH else "<1e-99999"


def num_cell(x, fmt: str, width: int) -> str:
    """x formatted by `fmt`, right-aligned in `width` characters with at least one blank before
    it; where `fmt` would fill the column, 3 significant digits instead ('1.66e+04'); 'n/a'
    for None or a value that is not finite."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a".rjust(width)
    text = format(x, fmt)
    return (text if len(text) < width else format(x, ".3g")).rjust(width)


def p_text(p, log10_p=None) -> str:
    """'p = 0.0342', 'p = 2.3e-412', 'p < 1e-300' or 'p = n/a' (see `p_cell`)."""
    cell = p_cell(p, log10_p)
    return f"p {cell}" if cell.startswith("<") else f"p = {cell}"


def interval_note(name: str, entry: dict) -> str:
    """One line under a parameter table when the Wald interval is not meaningful ("" else).

    Args:
        name: the parameter as the table names it.
        entry: its interval dict (`count_fits.interval_entry`).
    """
    if not entry["reason"]:
        return ""
    then = {"profile": "profile interval used", "none": "no interval or z-test"}[entry["method"]]
    return f"  * {name}: {then}: {entry['reason']}"


def _plural(k: int, word: str) -> str:
    return f"{k} {word}{'' if k == 1 else 's'}"


def _parameters(k: int) -> str:
    return _plural(k, "fitted parameter")


GOF_HEADER = [  # what `goodness.pearson_test` does, exceptions included
    "Goodness of fit: Pearson X2 over the table's rows, adjacent rows merged until each group",
    "  expects >= 5 (left unmerged where merging would leave no df; a df below 1 raised to 1)",
]


def gof_notes(name: str, g: dict) -> list[str]:
    """What the test did beyond the header's rule: groups left expecting < 5, a df raised to 1."""
    lines = []
    if g["small_groups"]:
        lines.append(f"  {name}: {g['small_groups']} of {_plural(g['groups'], 'group')} expect "
                     "< 5 (merging would leave no df): poor chi-square reference")  # fmt: skip
    raw = g.get("raw_df", g["df"])
    if raw < 1:
        lines.append(f"  {name}: {_plural(g['groups'], 'group')} - 1 - {g['parameters']} "
                     f"parameters = {raw} df, raised to 1: poor chi-square reference")  # fmt: skip
    return lines


def misfit_warning(name: str, gof: dict, screen: float) -> str:
    """A one-line warning when `name` misfits at the level `screen` ("" else).

    Misfit is `goodness.misfits`, the rule the comparison of families screens with: Pearson's X2
    rejects even against chi2(G - 1), the lenient end of its null law, at `screen`
    (`goodness.screen_level`: 1 - level for one model, (1 - level)/m where m families were
    screened). Against chi2(G - 1 - k) alone a regression with k ~ G parameters would be
    flagged on data drawn from it (the shipped example's ZIP regression: df 1, p = 0.004)."""
    if not goodness.misfits(gof["statistic"], gof["groups"], screen):
        return ""
    lenient, log10_lenient = goodness.gof_bound_p(gof["statistic"], gof["groups"])
    poor = "; poor chi-square reference" if gof["poor_reference"] else ""
    return (
        f"warning: the {name} misfits (Pearson X2 = {gof['statistic']:.4g} on {gof['groups']} "
        f"groups, {p_text(lenient, log10_lenient)} vs chi2({gof['groups'] - 1}) < {screen:.2g}"
        f"{poor}): SEs assume a fit"
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
    """The Vuong test's heading (with its p convention), then its raw, AIC- and BIC-corrected z
    and p, or why it is withheld.

    Args:
        v: the report's `vuong` entry (`reported`, and `raw`/`aic`/`bic` with statistic and
            p_value).
    """
    head = f"Vuong test, ZIP against Poisson ({VUONG_P.format(first='ZIP')})"
    if not v["reported"]:
        return [head, "  withheld: too few counts for its normal reference (see the warning "
                "above)"]  # fmt: skip
    rows = (("raw", "raw"), ("AIC-corrected", "aic"), ("BIC-corrected", "bic"))
    return [head] + [f"  {name:<18}z = {_g4(v[key]['statistic']):<10}"
                     f"{p_text(v[key]['p_value'], v[key]['log10_p_value'])}"
                     for name, key in rows]  # fmt: skip


def _g4(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, ".4g")


def jsonable(obj):
    """The report with tuples as lists and NaN/inf as null (strict JSON)."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def metrics(report: dict) -> dict[str, float]:
    """The report's finite numbers as flat MLflow metrics; coefficients under their term name
    (characters MLflow refuses in a key, e.g. the brackets of `C(g)[T.b]`, become '_')."""
    out: dict[str, float] = {}

    def clean(key) -> str:  # every segment: terms appear as dict keys and in rows
        return re.sub(r"[^0-9A-Za-z_. /-]", "_", str(key))

    def walk(prefix: str, obj) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}{clean(k)}.", v)
        elif isinstance(obj, (list, tuple)) and len(obj) == 2 and prefix.count(".") > 1 \
                and not isinstance(obj[0], dict):  # an interval (lower, upper)  # fmt: skip
            walk(f"{prefix}lower.", obj[0])
            walk(f"{prefix}upper.", obj[1])
        elif isinstance(obj, list) and obj and isinstance(obj[0], dict) and "term" in obj[0]:
            for row in obj:
                walk(f"{prefix}{clean(row['term'])}.",
                     {k: v for k, v in row.items() if k != "term"})  # fmt: skip
        elif isinstance(obj, (bool, int, float, np.number)) and math.isfinite(float(obj)):
            out[prefix[:-1]] = float(obj)

    walk("", {k: v for k, v in report.items() if k not in ("frequencies", "rows")})
    return out
