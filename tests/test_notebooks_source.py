"""The teaching notebooks: reviewable source (jupytext percent .py) in sync with the committed .ipynb,
no outputs committed, and each one opens with what it teaches and ends with a checked exercise.
Executing them is nbmake's job (pytest collects notebooks/*.ipynb)."""

from pathlib import Path

import jupytext
import nbformat
import pytest

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
SOURCES = sorted(NB_DIR.glob("[0-9][0-9]_*.py"))

pytestmark = pytest.mark.unit


def test_the_numbered_sequence_is_complete():
    numbers = [int(p.name[:2]) for p in SOURCES]
    assert numbers == list(range(1, 9)), f"expected notebooks 01..08, found {[p.name for p in SOURCES]}"


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_ipynb_matches_its_source_and_has_no_outputs(src):
    nb_path = src.with_suffix(".ipynb")
    assert nb_path.exists(), f"{nb_path.name} missing: run `jupytext --to ipynb {src.name}`"
    nb = nbformat.read(nb_path, as_version=4)
    want = jupytext.read(src)
    got = [(c.cell_type, c.source.strip()) for c in nb.cells]
    exp = [(c.cell_type, c.source.strip()) for c in want.cells]
    assert got == exp, f"{nb_path.name} is out of sync with {src.name}: run `jupytext --sync` or `--to ipynb`"
    for c in nb.cells:
        if c.cell_type == "code":
            assert not c.get("outputs") and c.get("execution_count") is None, f"{nb_path.name} has outputs committed"


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_each_notebook_teaches_and_checks_an_exercise(src):
    cells = jupytext.read(src).cells
    assert cells[0].cell_type == "markdown" and "What you will learn" in cells[0].source
    assert any(c.cell_type == "markdown" and "## Exercise" in c.source for c in cells)
    last_code = [c for c in cells if c.cell_type == "code"][-1].source
    assert "assert" in last_code, f"{src.name}: the last code cell must check the exercise"
    text = src.read_text()
    assert "EXPLORER_NB_QUICK" in text and "from explorer" in text
