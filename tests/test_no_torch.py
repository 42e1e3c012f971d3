"""The viewing side never imports torch or transformers (checked in a fresh interpreter)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
TESTS = Path(__file__).resolve().parent
MAIN = TESTS.parent / "explorer" / "app" / "main.py"


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(TESTS.parent),
                         env={**__import__("os").environ, "PYTHONPATH": str(TESTS)})
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""


def test_reader_viz_and_app_modules_do_not_import_torch():
    code = ("import sys\n"
            "import explorer.runs.reader, explorer.runs.compare, explorer.runs.status, explorer.runs.selection, explorer.runs.agreement\n"
            "import explorer.viz, explorer.viz.figures, explorer.viz.methods\n"
            "import explorer.app.common, explorer.app.launch, explorer.record.writer, explorer.importers.dualselect_log\n"
            "print('imported:' + ','.join(m for m in ('torch', 'transformers') if m in sys.modules))\n")
    assert _run(code) == "imported:"


@pytest.mark.app
def test_rendering_every_page_does_not_import_torch(tmp_path):
    """Every page rendered (AppTest runs the scripts in this interpreter) on runs of every method."""
    code = f"""
import os, sys
from _fake_runs import make_runs
runs = make_runs({str(tmp_path)!r})
os.environ["EXPLORER_RUNS_DIR"] = {str(tmp_path)!r}
from streamlit.testing.v1 import AppTest
cases = [(p, ["sft", "dualselect"]) for p in ["runs", "compare", "task_selection", "references", "generations"]]
cases += [("internals", [m]) for m in ("seal", "pact", "cwac")]
for page, which in cases:
    if True:
        at = AppTest.from_file({str(MAIN)!r}, default_timeout=60)
        at.session_state["selected_runs"] = [str(runs[k]) for k in which]
        at.run()
        at.switch_page(f"views/{{page}}.py").run()
        assert not at.exception, (page, which, at.exception)
print('imported:' + ','.join(m for m in ('torch', 'transformers') if m in sys.modules))
"""
    assert _run(code) == "imported:"
