"""`explorer app [RUNS_DIR]`: start the dashboard on 127.0.0.1 (another host only when asked).

Streamlit always runs headless: a non-headless Streamlit asks for an e-mail address on first use and,
without a terminal to answer it, exits at once (the demo then ends with no dashboard). When a browser
is wanted we open it ourselves once the server answers.

Streamlit runs as a child in its own process group. SIGTERM, SIGINT and SIGHUP sent to `explorer app`
are forwarded to that whole group, so stopping the launcher (a service manager, `kill`, Ctrl-C) never
leaves a dashboard serving on its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

MAIN = Path(__file__).with_name("main.py")
#: seconds the child has to exit after a forwarded signal before it is killed
STOP_GRACE_S = 10.0
_KILL = getattr(signal, "SIGKILL", signal.SIGTERM)
FORWARDED = tuple(s for s in (getattr(signal, n, None) for n in ("SIGTERM", "SIGINT", "SIGHUP")) if s is not None)


def command(runs_dir: str, host: str = "127.0.0.1", port: int = 8501) -> list[str]:
    """The streamlit command line: headless, no usage statistics, bound to `host`."""
    return [sys.executable, "-m", "streamlit", "run", str(MAIN), "--server.address", host, "--server.port", str(port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--", "--runs-dir", str(runs_dir)]


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, sig)  # the child leads its own group: streamlit and anything it started
        else:  # pragma: no cover - Windows
            proc.send_signal(sig)
    except ProcessLookupError:
        pass


def _open_browser_when_up(url: str, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    import webbrowser

    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=1)
        except OSError:
            time.sleep(0.5)
            continue
        webbrowser.open(url)
        return


def launch(runs_dir: str, host: str = "127.0.0.1", port: int = 8501, open_browser: bool = False) -> int:
    url = f"http://{host}:{port}"
    print(f"dashboard: {url}  (runs from {runs_dir}; Ctrl-C to stop)", flush=True)
    env = {**os.environ, "EXPLORER_RUNS_DIR": str(runs_dir)}
    proc = subprocess.Popen(command(runs_dir, host, port), env=env, start_new_session=hasattr(os, "killpg"))
    stopping: list[int] = []

    def forward(sig, _frame):
        stopping.append(sig)
        _signal_group(proc, sig)

    previous = {s: signal.signal(s, forward) for s in FORWARDED} if threading.current_thread() is threading.main_thread() else {}
    try:
        if open_browser:
            threading.Thread(target=_open_browser_when_up, args=(url, proc), daemon=True).start()
        stop_at = None
        while True:
            try:
                rc = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                pass
            if stopping and stop_at is None:
                stop_at = time.time() + STOP_GRACE_S
            if stop_at is not None and time.time() > stop_at:
                print(f"dashboard: still running {STOP_GRACE_S:g} s after the stop signal; killing it", flush=True)
                _signal_group(proc, _KILL)
                stop_at = float("inf")
    finally:
        if proc.poll() is None:  # an exception in the launcher itself: take the dashboard down with it
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(proc, _KILL)
        for s, h in previous.items():
            signal.signal(s, h)
    # a stop we were asked for is a normal end, not a failure of the dashboard
    return 0 if stopping else rc


def add_parser(sub) -> None:
    p = sub.add_parser("app", help="the dashboard over a runs directory (127.0.0.1 by default)")
    p.add_argument("runs_dir", nargs="?", default="runs")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8501)
    p.set_defaults(func=lambda a: launch(a.runs_dir, a.host, a.port))
