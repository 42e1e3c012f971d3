"""End to end in a real browser: Debian's Chromium, headless, driven by Playwright, against the app on
loopback over fake run folders — load a page, select a sample with the keyboard-accessible selectbox,
see its "why" panel, save a screenshot. Skipped when Chromium is absent — loudly: `make test` prints a line
saying so, and with CI=true the skip is a failure (tests/conftest.py)."""

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
#: Debian's Chromium; EXPLORER_CHROMIUM names another binary
CHROMIUM = os.environ.get("EXPLORER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    from _fake_runs import make_runs
    from explorer.app.launch import command

    root = tmp_path_factory.mktemp("runs")
    make_runs(root)
    port = free_port()
    proc = subprocess.Popen(command(str(root), "127.0.0.1", port), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "EXPLORER_RUNS_DIR": str(root)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=1)
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("the dashboard did not start on 127.0.0.1")
            time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def test_select_a_sample_and_see_why(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM, args=ARGS,
                                                   headless=True, viewport={"width": 1400, "height": 1800})
        page = ctx.new_page()
        page.goto(server + "/task_selection", wait_until="domcontentloaded")
        page.get_by_text("Why:").first.wait_for(timeout=60_000)
        page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)  # the batch chart is drawn
        # choose another sample with the selectbox that mirrors the chart
        page.get_by_label("Sample", exact=True).click()
        options = page.get_by_role("option")
        options.nth(3).wait_for(timeout=20_000)
        chosen = options.nth(3).inner_text().strip()
        options.nth(3).click()
        page.get_by_text(f"Why: {chosen}").wait_for(timeout=30_000)
        panel = page.get_by_text("rank in batch:").first
        panel.wait_for(timeout=10_000)
        assert page.get_by_text("Prompt", exact=True).first.is_visible()
        shot = tmp_path / "task_selection.png"
        page.screenshot(path=str(shot), full_page=True)
        ctx.close()
    assert shot.stat().st_size > 10_000


def test_runs_page_names_the_corrupt_run(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM, args=ARGS,
                                                   headless=True, viewport={"width": 1400, "height": 1000})
        page = ctx.new_page()
        page.goto(server + "/", wait_until="domcontentloaded")
        page.get_by_text("corrupt-part").first.wait_for(timeout=60_000)
        assert page.get_by_text("part-00003.parquet", exact=False).first.is_visible()
        ctx.close()
