"""Save one screenshot per dashboard page (headless Debian Chromium + Playwright) into docs/.

    python benchmarks/screenshots.py RUNS_DIR [OUT_DIR]
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

PAGES = ["runs", "compare", "task_selection", "references", "internals", "generations"]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main(runs_dir: str, out_dir: str = "docs") -> None:
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(command(runs_dir, "127.0.0.1", port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "EXPLORER_RUNS_DIR": runs_dir})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        Path(out_dir).mkdir(exist_ok=True)
        with sync_playwright() as p, tempfile.TemporaryDirectory() as prof:
            ctx = p.chromium.launch_persistent_context(prof, executable_path="/usr/bin/chromium", args=ARGS,
                                                       headless=True, viewport={"width": 1400, "height": 1000})
            page = ctx.new_page()
            for name in PAGES:
                page.goto(f"{url}/{name}", wait_until="networkidle")
                page.wait_for_timeout(4000)  # let plotly draw
                path = Path(out_dir) / f"page_{name}.png"
                page.screenshot(path=str(path), full_page=False)
                print(path)
            ctx.close()
    finally:
        proc.terminate()


if __name__ == "__main__":
    main(*sys.argv[1:])
