"""The session replay in a real browser: JupyterLab 4, headless Debian Chromium, driven by Playwright.

JupyterLab is started on a free loopback port with a token and opens
``02_session_replay`` (parameters injected as papermill would), runs every
cell, presses Play and waits for the replay to advance; then it loads a session
whose HTTP request and response carry ``<script>`` and ``<img onerror>`` markup
and checks the markup shows as text and no script ran. Screenshots are saved in
the test's temporary folder. Skipped, with the reason, when Chromium, Playwright
or JupyterLab is missing (``make oracles`` installs Chromium when run as root;
Playwright's own browser download is never used).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("jupyterlab", reason="needs the lab extra (pip install -e '.[lab]')")
pytest.importorskip("ipywidgets", reason="needs the lab extra (pip install -e '.[lab]')")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright; "
                               "the test extra has it) - never `playwright install`")

from test_widgets import HOSTILE, build_hand_case  # noqa: E402

from forensics.report import NOTEBOOKS  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync"]
START_S = 90  # JupyterLab up and the notebook open
RUN_S = 120  # every cell executed
STEP_MS = 30_000  # one widget round trip

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_up(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"JupyterLab exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError), \
                urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                return
        time.sleep(0.3)
    pytest.fail(f"JupyterLab did not answer within {START_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def lab(tmp_path):
    """JupyterLab serving a folder with the replay notebook parameterised for the hand-built case."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    if not Path(CHROMIUM).exists():
        pytest.skip("needs Debian chromium (apt-get install chromium chromium-driver; "
                    "`make oracles` installs it when run as root)")
    case_dir, uids = build_hand_case(tmp_path, scan=False)
    root = tmp_path / "lab"
    root.mkdir()
    nb = load_notebook_node(str(NOTEBOOKS / "02_session_replay.ipynb"))
    nb = parameterize_notebook(nb, {"case_dir": str(case_dir), "uid": uids["10.0.0.80"]})
    nbformat.write(nb, root / "02_session_replay.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "jcfg"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "jrt"), "IPYTHONDIR": str(tmp_path / "ipy")}
    log = tmp_path / "jupyterlab.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
             f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
             f"--LabApp.workspaces_dir={tmp_path / 'ws'}",
             f"--LabApp.user_settings_dir={tmp_path / 'settings'}",
             "--ServerApp.terminals_enabled=False",
             *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])],  # CI runs as root
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    try:
        _wait_up(f"http://127.0.0.1:{port}/api/status?token={token}", proc, log)
        yield {"url": f"http://127.0.0.1:{port}/lab/tree/02_session_replay.ipynb?token={token}", "uids": uids,
               "log": log, "shots": tmp_path}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _show(page, selector: str) -> None:
    """Scroll the notebook so the element is at the top of the view (for the screenshot)."""
    page.evaluate(f"document.querySelector('{selector}').scrollIntoView({{block: 'start'}})")
    page.wait_for_timeout(200)


_KERNEL_IDLE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle';
}"""
_ALL_RAN = """() => {
  const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
  return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
}"""


def test_replay_plays_in_jupyterlab_and_hostile_markup_stays_text(lab):
    shots = lab["shots"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(STEP_MS)
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            # Any alert() from the capture would land here (and in `dialogs` were this stub bypassed).
            page.add_init_script("window.__alerts = []; "
                                 "window.alert = (m) => window.__alerts.push(String(m));")
            page.goto(lab["url"], timeout=START_S * 1000)
            page.wait_for_selector(".jp-Notebook", timeout=START_S * 1000)
            page.wait_for_function(_KERNEL_IDLE, timeout=START_S * 1000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            play = page.locator("button.jupyter-button.bb-play:has-text('Play')")
            play.wait_for(timeout=RUN_S * 1000)
            page.wait_for_function(_ALL_RAN, timeout=RUN_S * 1000)
            page.wait_for_function(_KERNEL_IDLE, timeout=RUN_S * 1000)
            with contextlib.suppress(sync_api.Error):  # JupyterLab's news prompt covers the corner
                page.locator(".jp-toast-button:has-text('No')").click(timeout=2000)
            _show(page, ".bb-sessions")
            page.screenshot(path=str(shots / "1-notebook-ran.png"))
            assert page.locator(".bb-turn").count() == 0
            assert "nothing played yet" in page.locator(".bb-status").inner_text()

            play.click()  # real time: the capture's turns are 50 ms apart
            page.wait_for_function("() => document.querySelectorAll('.bb-turn').length >= 6", timeout=STEP_MS)
            page.wait_for_function("() => /turn 6 of 6/.test(document.querySelector('.bb-status').innerText)",
                                   timeout=STEP_MS)
            assert "GET /logo.png" in page.locator(".bb-turn").nth(2).inner_text()
            _show(page, ".bb-status")
            page.screenshot(path=str(shots / "2-played.png"))

            hostile = lab["uids"]["10.0.0.66"]
            page.locator(".bb-sessions select").select_option(index=1)
            page.wait_for_function(f"() => document.querySelector('.bb-uid').innerText === '{hostile}'",
                                   timeout=STEP_MS)
            step = page.locator("button.jupyter-button.bb-step")
            step.click()
            page.wait_for_function("() => document.querySelectorAll('.bb-turn').length === 1",
                                   timeout=STEP_MS)
            step.click()
            page.wait_for_function("() => /turn 2 of 2/.test(document.querySelector('.bb-status').innerText)",
                                   timeout=STEP_MS)
            markup = HOSTILE.decode()
            assert markup in page.locator(".bb-turn").nth(0).inner_text()  # User-Agent and URI
            assert markup in page.locator(".bb-turn").nth(1).inner_text()  # X-Evil header and body
            page.locator(".bb-views .lm-TabBar-tab:has-text('HTTP')").click()
            page.wait_for_selector(".bb-http", state="visible", timeout=STEP_MS)
            http = "\n".join(page.locator(".bb-http").all_inner_texts())
            assert http.count(markup) >= 3
            _show(page, ".bb-status")
            page.screenshot(path=str(shots / "3-hostile-http.png"))
            page.wait_for_timeout(500)  # give an injected onerror a moment to fire, were there one
            assert page.evaluate("window.__alerts") == [] and dialogs == []
            assert page.evaluate("document.querySelectorAll('img[src=\"x\"]').length") == 0
            assert page.evaluate("document.querySelectorAll('.bb-turn script, .bb-http script').length") == 0
        finally:
            browser.close()
