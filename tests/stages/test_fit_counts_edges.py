"""Edge cases of the one `fit_counts` report that the deleted per-path tests covered (issue 18
item 4): a small sample withholds Vuong's test and says so; a dispersion on its boundary
(alpha = 0) is a row of n/a cells in the text and nulls in the JSON, never NaN."""

from __future__ import annotations

import json

import numpy as np
import pytest


def report(path, tiny_params, capsys, *extra) -> tuple[dict, str]:
    from pipeline.stages import fit_counts

    argv = [str(path), "--column", "y", "--params", str(tiny_params), "--no-mlflow", *extra]
    assert fit_counts.main([*argv, "--json"]) == 0
    out = capsys.readouterr().out
    assert "NaN" not in out  # strict JSON
    as_json = json.loads(out)
    assert fit_counts.main(argv) == 0
    return as_json, capsys.readouterr().out


def test_a_small_sample_withholds_vuong_and_says_why(tiny_params, tmp_path, capsys):
    path = tmp_path / "small.csv"
    path.write_text("y\n" + "\n".join(map(str, [0, 0, 1, 2, 0, 3, 0, 1, 0, 0, 2, 5])) + "\n")
    r, text = report(path, tiny_params, capsys)
    assert r["vuong_withheld"] is True and r["n"] == 12
    assert any("only n = 12 counts (< 30)" in w and "Vuong withheld" in w for w in r["warnings"])
    assert "withheld: too few counts for its normal reference" in text


def test_a_dispersion_on_its_boundary_is_a_row_of_nulls(tiny_params, tmp_path, capsys):
    """Binomial(4, 1/2) counts are underdispersed: the NB's alpha-hat is 0 and log alpha has
    no estimate or SE."""
    y = np.random.default_rng(2).binomial(4, 0.5, 200)
    path = tmp_path / "under.csv"
    path.write_text("y\n" + "\n".join(map(str, y)) + "\n")
    r, text = report(path, tiny_params, capsys, "--family", "nb")
    nb = r["models"]["nb"]
    assert nb["status"] == "boundary"
    (row,) = nb["dispersion"]
    assert row["estimate"] is None and row["se"] is None
    assert nb["count"][0]["estimate"] == pytest.approx(np.log(y.mean()), rel=1e-12)
    line = next(x for x in text.splitlines() if x.strip().startswith("log(alpha)"))
    assert line.split()[1:7] == ["n/a"] * 6
    assert "alpha = 0  (on the boundary: the Poisson limit)" in text
