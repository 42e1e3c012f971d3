"""End to end in a real browser: Debian's Chromium, headless, driven by Playwright, against the app on loopback."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_paths):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from conftest import SHORT_RUN
    from explorer.app.launch import command
    from explorer.config import load_config
    from explorer.train.loop import run

    root = tmp_path_factory.mktemp("runs")
    run(load_config(None, [f"runs_dir={root}", *SHORT_RUN, "method=sft"]))
    run(load_config(None, [f"runs_dir={root}", *SHORT_RUN, "method=dualselect", "method.warmup_steps=1",
                           "method.keep_fraction=0.5", "method.k_ref=6", "method.ref_cap=24",
                           "method.refresh=every_n_steps", "method.refresh_every=2"]))
    port = free_port()
    proc = subprocess.Popen(command(str(root), "127.0.0.1", port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "EXPLORER_RUNS_DIR": str(root)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def test_select_a_sample_and_see_why(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                       args=ARGS, headless=True,
                                                       viewport={"width": 1400, "height": 1800})
        page = browser.new_page()
        page.goto(server + "/task_selection", wait_until="networkidle")
        page.get_by_text("Why:").first.wait_for(timeout=60_000)
        # choose another sample with the keyboard-accessible selectbox that mirrors the chart
        box = page.get_by_label("Sample")
        box.click()
        options = page.get_by_role("option")
        options.nth(3).wait_for(timeout=20_000)
        chosen = options.nth(3).inner_text().strip()
        options.nth(3).click()
        page.get_by_text(f"Why: {chosen}").wait_for(timeout=30_000)
        assert page.get_by_text("Prompt").first.is_visible()
        shot = tmp_path / "task_selection.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 10_000
