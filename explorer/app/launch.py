"""`explorer app [RUNS_DIR]`: start the dashboard on 127.0.0.1 (another host only when asked)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MAIN = Path(__file__).with_name("main.py")


def command(runs_dir: str, host: str = "127.0.0.1", port: int = 8501, headless: bool = True) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(MAIN), "--server.address", host, "--server.port", str(port),
            "--server.headless", "true" if headless else "false", "--browser.gatherUsageStats", "false",
            "--", "--runs-dir", str(runs_dir)]


def launch(runs_dir: str, host: str = "127.0.0.1", port: int = 8501, open_browser: bool = False) -> int:
    print(f"dashboard: http://{host}:{port}  (runs from {runs_dir}; Ctrl-C to stop)")
    env = {**os.environ, "EXPLORER_RUNS_DIR": str(runs_dir)}
    return subprocess.call(command(runs_dir, host, port, headless=not open_browser), env=env)


def add_parser(sub) -> None:
    p = sub.add_parser("app", help="the dashboard over a runs directory (127.0.0.1 by default)")
    p.add_argument("runs_dir", nargs="?", default="runs")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8501)
    p.set_defaults(func=lambda a: launch(a.runs_dir, a.host, a.port))
