"""Save one screenshot per dashboard page (headless Debian Chromium + Playwright) into docs/.

    python benchmarks/screenshots.py RUNS_DIR [OUT_DIR] [--full]

Starts the app on a free loopback port over RUNS_DIR, opens each page, waits until its text and its
plotly charts are drawn, and saves docs/page_<name>.png (the first screenful; --full: a window tall
enough for the page's main parts). It prints each page's exceptions and error boxes and exits 1 when a
page raised: a check of the dashboard on your own run folders (e.g. a real model's runs), not only a
camera.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from explorer.app.launch import command

#: page path -> (a text that appears once the page has rendered, window height in pixels). Streamlit
#: scrolls inside its own container, so a "full page" screenshot is a tall window instead.
PAGES = {"runs": ("Runs", 700), "compare": ("Safety Avg against SFT", 1900), "task_selection": ("Why:", 2300),
         "references": ("Entered", 2100), "internals": ("Method internals", 2200),
         "generations": ("Generations", 1300)}
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main(runs_dir: str, out_dir: str = "docs", full: bool = False) -> int:
    """Screenshot every page; the number of pages that showed an exception."""
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(command(runs_dir, "127.0.0.1", port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "EXPLORER_RUNS_DIR": runs_dir})
    url = f"http://127.0.0.1:{port}"
    failed = 0
    try:
        for _ in range(180):
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        Path(out_dir).mkdir(exist_ok=True)
        with sync_playwright() as p, tempfile.TemporaryDirectory() as prof:
            ctx = p.chromium.launch_persistent_context(prof, executable_path="/usr/bin/chromium", args=ARGS,
                                                       headless=True, viewport={"width": 1400, "height": 1100})
            page = ctx.new_page()
            for name, (marker, height) in PAGES.items():
                page.set_viewport_size({"width": 1400, "height": height if full else 1100})
                page.goto(f"{url}/{'' if name == 'runs' else name}", wait_until="domcontentloaded")  # Runs is "/"
                try:
                    page.get_by_text(marker).first.wait_for(timeout=60_000)
                except Exception:  # noqa: BLE001 - e.g. References on runs without refreshes: shoot what is there
                    print(f"{name}: {marker!r} did not appear")
                try:
                    page.locator(".js-plotly-plot").first.wait_for(timeout=20_000)
                except Exception:  # noqa: BLE001 - a page without charts (Runs, Generations)
                    pass
                page.wait_for_timeout(2500)  # let plotly finish laying out
                path = Path(out_dir) / f"page_{name}.png"
                page.screenshot(path=str(path))
                raised = page.locator("[data-testid='stException']").all_inner_texts()
                errors = page.locator("[data-testid='stAlertContentError']").all_inner_texts()
                failed += bool(raised)
                print(path, "raised: " + raised[0].splitlines()[0] if raised else "ok",
                      *(f"\n  error box: {e.splitlines()[0]}" for e in errors))
            ctx.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    return failed


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    sys.exit(1 if main(*args, full="--full" in sys.argv) else 0)
