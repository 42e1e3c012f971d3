"""Shared fixtures. The tiny models are prepared once per machine (cached under $EXPLORER_CACHE).

On a fresh cache (a new clone's CI, a new laptop) preparing them takes about eleven minutes of one core.
So that the suite does not wait for it, a session that will need them starts `explorer prepare` in a
background process at once and runs first the test modules that do not need them; the first test
that does waits on the preparation's file lock (explorer/prepare/tiny.py) and finds it done.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: settings of a short run on the tiny model (seconds, not minutes)
SHORT_RUN = ["data.n_train=64", "optim.epochs=1", "optim.batch_size=16", "eval.final_n=16", "eval.n=8", "eval.every=2",
             "record.flush_every=1", "progress=false", "eval.max_new_tokens=12"]


# -- the tiny world: prepared in the background while the tests that do not need it run ----------------
#: in a test module's source, these mean it loads the prepared tiny world (besides the tiny_paths fixture)
WORLD_HINTS = ("tiny:aligned", "tiny:base", "ensure_prepared(", "SHORT_RUN")
_PREPARER: dict = {}


def needs_world(item) -> bool:
    """Whether a collected test (or any test of its module) may load the prepared tiny world. A wrong
    True only moves a module later; a wrong False makes it wait on the preparation, never fail."""
    if "tiny_paths" in getattr(item, "fixturenames", ()):
        return True
    module = getattr(item, "module", None)
    if module is None:                 # a notebook executed by nbmake: they all prepare the world
        return True
    try:
        src = inspect.getsource(module)
    except (OSError, TypeError):
        return True
    return any(h in src for h in WORLD_HINTS)


def world_prepared() -> bool:
    from explorer.data.sample import sample_data_dir
    from explorer.prepare import tiny

    return (tiny.cache_dir_for(tiny.TinySettings(), sample_data_dir()) / "prepare.json").exists()


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(session, config, items):
    """Before the other plugins (so that `-m notebooks` selects them): nbmake's notebook items get the
    notebooks marker. After them (after -k / -m deselection: only the tests that will run count): the
    modules that do not need the prepared world first, each module kept whole and in its own order so
    that module fixtures are built once; when some test needs the world and it is not prepared yet, it
    is prepared in a background process meanwhile."""
    for item in items:
        if item.nodeid.split("::")[0].endswith(".ipynb"):
            item.add_marker(pytest.mark.notebooks)
    yield
    by_module: dict = {}
    for item in items:
        by_module.setdefault(item.nodeid.split("::")[0], []).append(item)
    late = {m for m, its in by_module.items() if any(needs_world(i) for i in its)}
    items[:] = ([i for m, its in by_module.items() if m not in late for i in its]
                + [i for m, its in by_module.items() if m in late for i in its])
    if (late and not config.option.collectonly and not world_prepared()
            and os.environ.get("EXPLORER_TEST_BACKGROUND_PREPARE", "1") != "0"):
        log = open(Path(tempfile.gettempdir()) / f"explorer-prepare-{os.getpid()}.log", "w")
        _PREPARER["proc"] = subprocess.Popen([sys.executable, "-m", "explorer", "prepare"], cwd=REPO,
                                             stdout=log, stderr=subprocess.STDOUT)
        _PREPARER["log"] = log
        config.pluginmanager.get_plugin("terminalreporter").write_line(
            f"tiny world not prepared: preparing it in the background (pid {_PREPARER['proc'].pid}, "
            f"log {log.name}) while {len(items) - sum(len(by_module[m]) for m in late)} tests that do not "
            "need it run first")


def pytest_sessionfinish(session, exitstatus):
    proc = _PREPARER.get("proc")
    if proc is not None and proc.poll() is None:
        # the tests that needed it did not run (-x, ^C): a half-done preparation writes no prepare.json
        proc.terminate()
        proc.wait(timeout=30)


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
