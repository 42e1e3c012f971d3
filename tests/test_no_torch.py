"""The viewing side never imports torch or transformers (checked in a fresh interpreter)."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit


def test_app_viz_and_reader_do_not_import_torch():
    code = ("import sys, importlib, runpy\n"
            "import explorer.runs.reader, explorer.runs.compare, explorer.runs.status, explorer.viz\n"
            "import explorer.app.common, explorer.app.launch\n"
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
            "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"imported: {out.stdout.strip()}"
