"""The MLflow UI as users meet it: the runs table, a fit's run page, its charts and its plot.

Starts `make ui`'s server (pipeline.stages.ui) on a free loopback port over a tiny study (its
three stages under one invocation, as `make all` runs them, then three `make fit-counts`) and
drives headless Chromium (Debian's package; never a browser download) over the DevTools
protocol (`test_ui_devtools.Browser`). Skipped when Chromium is absent; `.ci/run` installs it.
Run by hand (not in CI), it also saves a screenshot to reports/mlflow-ui.png for the README.

What MLflow 3.17.2's UI does, measured here: the app chooses its GenAI or model-training
layout from the URL's `workflowType` (else from the browser's `localStorage`, set only by the
sidebar's GenAI / Model training switch; default GenAI). The experiment tag
`mlflow.experimentKind = custom_model_development` is set (checked below), but the layout does
not follow it; a run's tabs ('Overview', 'Model metrics', ...) are the same in both layouts, while
the GenAI one shows the breadcrumb 'Evaluations' and a sidebar of traces, judges and
'Evaluation runs'.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_ui_devtools import CHROMIUM, Browser

from pipeline.stages.ui import experiment_url, server_command, server_env, stop_group

ROOT = Path(__file__).resolve().parents[2]

TINY = """
seed: 3
data:
  n: 300
  replicates: 1
  scenarios:
    - {name: blog, pi: 0.5, lambda: 5.0}
fit: {max_steps: 60, record_every: 5, chunk_steps: 20}
sweep: {lr_grid: [0.1], inits: 2}
tracking: {experiment: browser-check, fit_counts_experiment: browser-counts, max_points: 20}
blog: {scenario: blog, inits: 2}
fit_counts: {inits: 2, max_steps: 200}
"""
FISH = str(ROOT / "examples" / "fish_caught.csv")
FIT_COUNTS = (  # what a researcher tries next: a histogram, a family, a regression
    [FISH, "--column", "count"],
    [FISH, "--column", "count", "--family", "zip"],
    [FISH, "--formula", "count ~ persons + camper | persons"],
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed"),
]

# The run page, once the app has drawn it: its tabs, its breadcrumb and its text.
RUN_PAGE = """(() => {
  const tabs = [...document.querySelectorAll('[role=tab]')].map(e => e.textContent.trim());
  const crumb = document.querySelector('[data-testid=experiment-observatory-link-runs]');
  if (!tabs.length || !crumb) return null;
  return {tabs, crumb: crumb.textContent.trim(), text: document.body.innerText};
})()"""

# The number of points on the line of the 'nll' chart card, once plotly has drawn it. The UI
# draws only the cards in view: scroll the next empty card into view until 'nll' is drawn.
NLL_LINE_POINTS = """(() => {
  const grid = document.querySelector('[data-testid=draggable-chart-cards-grid]');
  const cards = grid ? [...grid.children] : [];
  const card = cards.find(c => c.innerText.split('\\n')[0].trim() === 'nll');
  if (!card) {
    const empty = cards.find(c => !c.innerText.trim());
    if (empty) empty.scrollIntoView();
    return null;
  }
  const line = card.querySelector('.js-plotly-plot .scatterlayer .js-line');
  const path = line ? line.getAttribute('d') || '' : '';
  return path ? path.split('L').length : null;
})()"""


@dataclass(frozen=True)
class UI:
    """The running UI over the tiny study: its address, its experiment and its runs."""

    base: str
    port: int
    experiment: dict
    runs: list[dict]
    counts_experiment: dict
    counts_runs: list[dict]

    def fit(self) -> dict:
        """A fit run (the lowest level of the run tree)."""
        fits = [r for r in self.runs if _tags(r).get("zip.level") == "fit"]
        assert fits, f"no fit runs in the store: {sorted(r['info']['run_name'] for r in self.runs)}"
        return fits[0]

    def run_url(self, run_id: str, tab: str = "") -> str:
        """A run page (`tab`: '', 'model-metrics', ...) in the model-training layout."""
        page = f"#/experiments/{self.experiment['experiment_id']}/runs/{run_id}"
        return f"{self.base}/{page}{'/' + tab if tab else ''}?workflowType=machine_learning"


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    work = tmp_path_factory.mktemp("ui")
    params = work / "params.yaml"
    params.write_text(TINY)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(CI="true", ZIP_INVOCATION="browser-walk")  # one `make all`: one invocation
    for stage in ("generate", "sweep", "aggregate"):
        cmd = [sys.executable, "-m", f"pipeline.{stage}", "--params", str(params)]
        subprocess.run([*cmd, "--workdir", str(work)], check=True, env=env, cwd=ROOT)
    for argv in FIT_COUNTS:  # three `make fit-counts` calls, each its own invocation
        env["ZIP_INVOCATION"] = f"browser-counts-{len(argv)}-{argv[-1]}"
        cmd = [sys.executable, "-m", "pipeline.fit_counts", *argv, "--params", str(params)]
        subprocess.run([*cmd, "--workdir", str(work)], check=True, env=env, cwd=ROOT,
                       capture_output=True)  # fmt: skip
    port = _free_port()
    log = work / "server.log"
    with log.open("w") as out:  # its own group, stopped whole as `make ui` stops it
        proc = subprocess.Popen(
            server_command(work, port), env=server_env(), cwd=work,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"the MLflow server did not come up within 60 s:\n{log.read_text()}")
        api = f"{base}/api/2.0/mlflow"
        exp = _api(f"{api}/experiments/get-by-name?experiment_name=browser-check")["experiment"]
        counts = _api(f"{api}/experiments/get-by-name?experiment_name=browser-counts")
        body = {"experiment_ids": [exp["experiment_id"]], "max_results": 1000}
        counts_body = {"experiment_ids": [counts["experiment"]["experiment_id"]]}
        yield UI(base, port, exp, _api(f"{api}/runs/search", body)["runs"], counts["experiment"],
                 _api(f"{api}/runs/search", counts_body)["runs"])  # fmt: skip
    finally:
        stop_group(proc, grace=10)


@pytest.fixture
def browser(tmp_path):
    browser = Browser(tmp_path / "profile")
    yield browser
    browser.close()


def test_the_printed_link_shows_the_top_level_runs(ui, browser):
    # The table shows the top-level (invocation) runs, their stages and fits nested inside.
    top = {r["info"]["run_name"] for r in ui.runs if "mlflow.parentRunId" not in _tags(r)}
    assert top, "no top-level runs"
    browser.open(experiment_url(ui.port, ui.experiment["experiment_id"]))
    names = json.dumps(sorted(top))
    shown = browser.wait_for(f"{names}.every(n => document.body.innerText.includes(n))")
    assert shown, f"the runs table in the browser does not show all of {sorted(top)}"
    if os.environ.get("CI", "").lower() not in {"1", "true"}:
        (ROOT / "reports").mkdir(exist_ok=True)
        browser.screenshot(ROOT / "reports" / "mlflow-ui.png")


def test_a_fit_run_page_opens_in_the_model_training_layout(ui, browser):
    tags = {t["key"]: t["value"] for t in ui.experiment.get("tags", [])}
    assert tags.get("mlflow.experimentKind") == "custom_model_development"
    fit = ui.fit()
    browser.open(ui.run_url(fit["info"]["run_id"]))
    page = browser.wait_for(RUN_PAGE)
    assert page, "the run page did not render within 30 s"
    assert fit["info"]["run_name"] in page["text"]
    assert {"Overview", "Model metrics"} <= set(page["tabs"]), page["tabs"]
    assert "Evaluations" not in page["tabs"], page["tabs"]
    # The GenAI layout would say 'Evaluations' here and list 'Evaluation runs' in the sidebar.
    assert page["crumb"] == "Runs", f"breadcrumb {page['crumb']!r}: not the model-training one"
    assert "Evaluation runs" not in page["text"]


def test_a_fit_run_charts_its_nll_history(ui, browser):
    fit_id = ui.fit()["info"]["run_id"]
    history = _api(f"{ui.base}/api/2.0/mlflow/metrics/get-history?run_id={fit_id}&metric_key=nll")
    assert len(history["metrics"]) >= 3, "the fit logged too short an nll history to chart"
    browser.open(ui.run_url(fit_id, "model-metrics"))
    points = browser.wait_for(NLL_LINE_POINTS)
    assert points and points >= 3, "the 'Model metrics' tab draws no nll line"


def test_a_fit_run_serves_its_convergence_plot(ui, browser):
    art = f"{ui.base}/get-artifact?run_id={ui.fit()['info']['run_id']}&path=convergence.png"
    with urllib.request.urlopen(art, timeout=30) as resp:
        png = resp.read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    # The browser itself decodes it: an image's naturalWidth is 0 unless it could show it.
    # From a page of the server's own origin: from about:blank (an opaque origin) a request to
    # 127.0.0.1 is a local-network request that Chromium 150 may refuse (a CI run saw all 60
    # tries fail), whereas the UI itself loads it same-origin. A load can still fail on a busy
    # machine (the one-worker server, two test workers on 2 cores): tried again, each time
    # afresh, for up to 60 s.
    browser.open(f"{ui.base}/health")
    width, deadline, attempt = 0, time.monotonic() + 60, 0
    while width == 0 and time.monotonic() < deadline:
        attempt += 1
        src = json.dumps(f"{art}&attempt={attempt}")  # never a cached failure
        width = browser.evaluate(
            "new Promise(done => { const img = new Image(); "
            "img.onload = () => done(img.naturalWidth); "
            f"img.onerror = () => done(0); img.src = {src}; }})"
        )
        if width == 0:
            time.sleep(1)
    assert width > 0, f"Chromium cannot show convergence.png ({attempt} tries in 60 s)"


def test_the_study_lists_its_invocation_with_its_stages_nested(ui, browser):
    # Issue 19: on page one, the invocation run; its stages, trials and fits nested below it,
    # never at the top level; a trial's name says its learning rate.
    by_id = {r["info"]["run_id"]: r for r in ui.runs}
    top = [r for r in ui.runs if "mlflow.parentRunId" not in _tags(r)]
    assert [_tags(r).get("zip.level") for r in top] == ["invocation"], [
        r["info"]["run_name"] for r in top
    ]
    for r in ui.runs:
        level, parent = _tags(r).get("zip.level"), _tags(r).get("mlflow.parentRunId")
        want = {"stage": "invocation", "trial": "stage", "fit": "trial"}.get(level)
        if want:
            assert _tags(by_id[parent]).get("zip.level") == want, r["info"]["run_name"]
        if level == "trial":
            assert "lr=0.1" in r["info"]["run_name"], r["info"]["run_name"]
    browser.open(experiment_url(ui.port, ui.experiment["experiment_id"]))
    name = top[0]["info"]["run_name"]
    text = browser.wait_for(f"document.body.innerText.includes({json.dumps(name)}) && "
                            "document.body.innerText")  # fmt: skip
    assert text, f"the runs table does not show the invocation run {name!r}"
    hidden = [r["info"]["run_name"] for r in ui.runs
              if _tags(r).get("zip.level") in ("trial", "fit")]  # fmt: skip
    assert not [n for n in hidden if n in text], "a trial or fit run shows at the top level"


def test_fit_counts_runs_have_their_own_experiment_and_distinct_names(ui, browser):
    names = [r["info"]["run_name"] for r in ui.counts_runs]
    assert len(names) == 3 and len(set(names)) == 3, names
    assert not {r["info"]["run_name"] for r in ui.runs} & set(names)
    browser.open(experiment_url(ui.port, ui.counts_experiment["experiment_id"]))
    shown = browser.wait_for(f"{json.dumps(names)}.every(n => document.body.innerText.includes(n))")
    assert shown, f"the fit-counts experiment does not show {names}"


def test_a_fit_run_shows_one_value_per_quantity(ui, browser):
    # No quantity twice under two names (pi and pi_hat, nll and nll_final): every metric's
    # last value and every param differ in name, and no metric is also a param.
    fit = ui.fit()
    metrics = {m["key"]: m["value"] for m in fit["data"].get("metrics", [])}
    params = {p["key"]: p["value"] for p in fit["data"].get("params", [])}
    assert not set(metrics) & set(params)
    for key in metrics:
        for suffix in ("_hat", "_final", ".value"):
            assert key + suffix not in metrics, f"{key} and {key}{suffix}"
    browser.open(ui.run_url(fit["info"]["run_id"]))
    page = browser.wait_for(RUN_PAGE)
    assert page and "nll_gap" in page["text"] and "max_steps" in page["text"]
