"""A headless Chromium driven over the DevTools protocol, for the browser tests of `make ui`.

`--dump-dom` cannot check the MLflow UI's charts: under `--virtual-time-budget` plotly never
draws (the chart cards stay spinners), and without it Chromium dumps before the app has
rendered. So the tests drive Chromium with `--remote-debugging-pipe`: commands go in on its
fd 3 and replies come out on its fd 4, each a JSON text ended by NUL. Standard library only
(no websocket client, no browser download); Debian's `chromium` package, skipped when absent.

The test here checks the client itself on a local page; `test_ui_browser.py` uses it.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--remote-debugging-pipe",
]  # fmt: skip


class BrowserError(RuntimeError):
    """Chromium answered a command with an error, or did not answer in time."""


class Browser:
    """One headless Chromium with its own profile, and one page (tab) at a time.

    Args:
        profile: the profile folder (its `localStorage` is shared by the pages opened here).
        size: the window's width and height in pixels; the UI draws only the charts in view.
        timeout: seconds to wait for any one reply.
    """

    def __init__(self, profile: Path, size: tuple[int, int] = (1400, 1000), timeout=30.0):
        commands_in, self._commands = os.pipe()  # we write, Chromium reads on fd 3
        self._replies, replies_out = os.pipe()  # Chromium writes on fd 4, we read

        def to_fds_3_and_4():  # in the child; both via fds >= 10, so neither dup2 clobbers
            high_in = fcntl.fcntl(commands_in, fcntl.F_DUPFD, 10)
            high_out = fcntl.fcntl(replies_out, fcntl.F_DUPFD, 10)
            os.dup2(high_in, 3)
            os.dup2(high_out, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--window-size={size[0]},{size[1]}",
             f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(3, 4, commands_in, replies_out), preexec_fn=to_fds_3_and_4,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        os.close(commands_in)
        os.close(replies_out)
        self.timeout = timeout
        self._buffer = b""
        self._last_id = 0
        self.session: str | None = None

    def send(self, method: str, params: dict | None = None, page: bool = True) -> dict:
        """Send one DevTools command (to the open page unless `page` is false); its result."""
        self._last_id += 1
        message = {"id": self._last_id, "method": method, "params": params or {}}
        if page and self.session:
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\0" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                    raise BrowserError(f"no reply to {method} within {self.timeout:.0f} s")
                chunk = os.read(self._replies, 1 << 16)
                if not chunk:
                    raise BrowserError(f"Chromium closed the pipe during {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._last_id:  # anything else is an event: not asked for
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply["result"]

    def open(self, url: str, timeout: float = 30.0) -> None:
        """Open `url` in a new page, which later commands address; return once it has loaded.

        Raises:
            BrowserError: it did not load within `timeout` seconds.
        """
        target = self.send("Target.createTarget", {"url": "about:blank"}, page=False)
        attached = self.send("Target.attachToTarget", {**target, "flatten": True}, page=False)
        self.session = attached["sessionId"]
        # Returns once the new document is committed; scripts may run before it has a body.
        navigated = self.send("Page.navigate", {"url": url})
        if "errorText" in navigated:
            raise BrowserError(f"{url}: {navigated['errorText']}")
        if self.wait_for("document.readyState === 'complete'", timeout) is not True:
            raise BrowserError(f"{url} did not load within {timeout:.0f} s")

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the open page (promises awaited)."""
        params = {"expression": expression, "returnByValue": True, "awaitPromise": True}
        result = self.send("Runtime.evaluate", params)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:60]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0):
        """Poll `expression` until it is truthy (the app renders after its API calls).

        Returns:
            Its first truthy value, or its last value once `timeout` seconds have passed.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.25)

    def screenshot(self, path: Path) -> None:
        """Save the open page as a PNG."""
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot")["data"]))

    def close(self) -> None:
        """Close Chromium (killed if it lingers) and the pipes."""
        try:
            self.send("Browser.close", page=False)
            self.proc.wait(timeout=10)
        except (BrowserError, OSError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):  # its helpers too: its own group
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        finally:
            os.close(self._commands)
            os.close(self._replies)


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_browser_waits_for_a_page_that_renders_late(tmp_path):
    page = tmp_path / "late.html"
    page.write_text(
        "<body><script>setTimeout(() => { document.body.innerText = 'ready'; }, 500)</script>"
    )
    browser = Browser(tmp_path / "profile")
    try:
        browser.open(page.as_uri())
        assert browser.wait_for("document.body.innerText === 'ready'", timeout=20) is True
        assert browser.evaluate("Promise.resolve(6 * 7)") == 42
        with pytest.raises(BrowserError, match="no_such_name"):
            browser.evaluate("no_such_name.x")
        browser.screenshot(tmp_path / "late.png")
        assert (tmp_path / "late.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        browser.close()
    assert browser.proc.returncode is not None
