"""Shared fixtures. The tiny models are prepared once per machine (cached under $EXPLORER_CACHE)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: settings of a short run on the tiny model (seconds, not minutes)
SHORT_RUN = ["n_train=64", "epochs=1", "batch_size=16", "final_eval_n=16", "eval_n=8", "eval_every=2",
             "flush_every=1", "progress=false", "eval_max_new_tokens=12"]


@pytest.fixture(scope="session")
def tiny_paths():
    from explorer.prepare import tiny

    return tiny.ensure_prepared()


@pytest.fixture
def short_config(tmp_path, tiny_paths):
    """Build a RunConfig for a short tiny-model run: short_config("method=random", "seed=1")."""
    from explorer.config import load_config

    def make(*overrides, config=None):
        return load_config(config, [f"runs_dir={tmp_path / 'runs'}", *SHORT_RUN, *overrides])

    return make


# -- the browser tests: a skip is loud, and a failure in CI ------------------------------------------
_BROWSER_SKIPS: list[str] = []


def in_ci() -> bool:
    """CI=true (or 1/yes), as .ci/run and most CI services set it."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.skipped or item.get_closest_marker("browser") is None:
        return
    reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
    reason = reason.removeprefix("Skipped: ")
    _BROWSER_SKIPS.append(reason)
    if in_ci():
        # in CI the dashboard must be tested in a real browser: a missing Chromium is a broken CI machine
        rep.outcome = "failed"
        rep.longrepr = f"browser test skipped in CI (CI={os.environ.get('CI')}): {reason}"


def pytest_terminal_summary(terminalreporter):
    if _BROWSER_SKIPS:
        reasons = "; ".join(dict.fromkeys(_BROWSER_SKIPS))
        terminalreporter.write_line(
            f"BROWSER TESTS SKIPPED ({len(_BROWSER_SKIPS)}): {reasons} -- the dashboard was not checked in a real "
            "browser (apt-get install chromium; CI=true turns this into a failure)", yellow=True, bold=True)
