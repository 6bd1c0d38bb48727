"""The MLflow UI serves the study: runs in the table and a fit's convergence.png.

Starts `make ui`'s server (pipeline.stages.ui) on a free loopback port over a tiny study and
loads the
experiment page in headless Chromium (Debian's package; never a browser download). Skipped
when Chromium is absent; `.ci/run` installs it. Run by hand (not in CI), it also saves a
screenshot to reports/mlflow-ui.png for the README.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline.stages.ui import experiment_url, server_command, server_env

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROME_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--virtual-time-budget=30000", "--window-size=1400,900",
]  # fmt: skip

TINY = """
seed: 3
data:
  n: 300
  replicates: 1
  scenarios:
    - {name: blog, pi: 0.5, lambda: 5.0}
fit: {max_steps: 60, record_every: 5, chunk_steps: 20}
sweep: {lr_grid: [0.1], inits: 2}
tracking: {experiment: browser-check, max_points: 20}
blog: {scenario: blog, inits: 2}
"""

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def _chromium(args: list[str], profile: Path) -> str:
    out = subprocess.run(
        [CHROMIUM, *CHROME_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return out.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("ui")
    params = work / "params.yaml"
    params.write_text(TINY)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["CI"] = "true"
    for stage in ("generate", "sweep"):
        cmd = [sys.executable, "-m", f"pipeline.{stage}", "--params", str(params)]
        subprocess.run([*cmd, "--workdir", str(work)], check=True, env=env, cwd=ROOT)
    port = _free_port()
    proc = subprocess.Popen(
        server_command(work, port), env=server_env(), cwd=work,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
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
            pytest.fail("the MLflow server did not come up within 60 s")
        yield base, port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_ui_lists_the_runs_and_serves_a_convergence_plot(server, tmp_path):
    base, port = server
    with urllib.request.urlopen(
        f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=browser-check", timeout=30
    ) as resp:
        exp = json.load(resp)["experiment"]
    runs = _post(
        f"{base}/api/2.0/mlflow/runs/search",
        {"experiment_ids": [exp["experiment_id"]], "max_results": 1000},
    )["runs"]
    names = {r["info"]["run_name"] for r in runs}
    fits = [r for r in runs if {"key": "zip.level", "value": "fit"} in r["data"].get("tags", [])]
    assert fits, f"no fit runs in the store; run names: {sorted(names)[:10]}"

    # The table shows the top-level (invocation) runs, their stages and fits nested inside.
    top = {
        r["info"]["run_name"]
        for r in runs
        if not any(t["key"] == "mlflow.parentRunId" for t in r["data"].get("tags", []))
    }
    assert top, "no top-level runs"
    url = experiment_url(port, exp["experiment_id"])
    dom = ""
    for attempt in range(3):  # the SPA renders after its API calls; retry a slow first load
        dom = _chromium(["--dump-dom", url], tmp_path / f"profile{attempt}")
        if all(name in dom for name in top):
            break
    missing = sorted(name for name in top if name not in dom)
    assert not missing, f"the runs table in the browser does not show {missing}"

    fit_id = fits[0]["info"]["run_id"]
    art = f"{base}/get-artifact?run_id={fit_id}&path=convergence.png"
    with urllib.request.urlopen(art, timeout=30) as resp:
        png = resp.read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    # The browser itself loads the artifact as an image: naturalWidth > 0 means it decoded.
    page = tmp_path / "artifact.html"
    page.write_text(
        f'<img id="plot" src="{art}" '
        "onload=\"document.title='loaded '+this.naturalWidth\" "
        "onerror=\"document.title='failed'\">"
    )
    dom = _chromium(["--dump-dom", page.as_uri()], tmp_path / "profile-art")
    assert "<title>loaded " in dom and "<title>loaded 0<" not in dom, "Chromium cannot show it"

    if os.environ.get("CI", "").lower() not in {"1", "true"}:
        (ROOT / "reports").mkdir(exist_ok=True)
        _chromium([f"--screenshot={ROOT / 'reports' / 'mlflow-ui.png'}", url], tmp_path / "p-s")
