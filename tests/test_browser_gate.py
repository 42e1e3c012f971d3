"""When the browser tests cannot run: `make test` says so in one line, and in CI (CI=true) it is a failure."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[1]


def _pytest_browser(ci: str | None):
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update({"EXPLORER_CHROMIUM": str(REPO / "no-such-chromium"), "PYTHONPATH": str(REPO)})
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_browser.py"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_skipped_browser_tests_print_one_clear_line():
    out = _pytest_browser(None)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("BROWSER TESTS SKIPPED")]
    assert len(lines) == 1 and "no-such-chromium" in lines[0] and "(2)" in lines[0], out.stdout


def test_a_skipped_browser_test_fails_in_ci():
    out = _pytest_browser("true")
    assert out.returncode != 0, out.stdout
    assert "browser test skipped in CI" in out.stdout and "2 error" in out.stdout, out.stdout
