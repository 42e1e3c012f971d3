"""The dashboard, page by page, with Streamlit's AppTest, on real run folders (tiny model + an import)."""

import json
import shutil
from pathlib import Path

import pytest

from _dualselect_log import write_fake_log

pytestmark = pytest.mark.app
MAIN = str(Path(__file__).resolve().parents[1] / "explorer" / "app" / "main.py")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_paths):
    from explorer.config import load_config
    from explorer.importers.dualselect_log import import_dualselect
    from explorer.train.loop import run

    from conftest import SHORT_RUN

    root = tmp_path_factory.mktemp("runs")
    ds = ["method=dualselect", "method.warmup_steps=1", "method.keep_fraction=0.5", "method.k_ref=6",
          "method.ref_cap=24", "method.refresh=every_n_steps", "method.refresh_every=2"]
    sft = run(load_config(None, [f"runs_dir={root}", *SHORT_RUN, "method=sft"]))
    dual = run(load_config(None, [f"runs_dir={root}", *SHORT_RUN, *ds]))
    logdir = tmp_path_factory.mktemp("log")
    log, task, refs, _ = write_fake_log(logdir)
    imported = import_dualselect(log, task, refs, root, "imported-log")
    broken = root / "broken-run"
    shutil.copytree(sft, broken)
    (broken / "run.json").write_text('{"run_id": "broken-run", "status": ')  # truncated manifest
    torn = root / "torn-part"
    shutil.copytree(sft, torn)
    (torn / "run.json").write_text((torn / "run.json").read_text().replace(sft.name, "torn-part"))
    part = sorted((torn / "metrics").glob("part-*.parquet"))[-1]
    part.write_bytes(part.read_bytes()[: len(part.read_bytes()) // 2])  # a truncated Parquet part
    return {"root": root, "sft": sft, "dual": dual, "imported": imported, "broken": broken, "torn": torn}


def app(runs, monkeypatch, selected=None):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("EXPLORER_RUNS_DIR", str(runs["root"]))
    at = AppTest.from_file(MAIN, default_timeout=60)
    if selected is not None:
        at.session_state["selected_runs"] = [str(runs[k]) for k in selected]
    return at.run()


def texts(at) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [e.value for e in at.error]
    parts += [str(c.value) for c in at.code] + [t.value for t in at.title] + [s.value for s in at.subheader]
    return "\n".join(str(p) for p in parts)


def test_runs_page_lists_runs_and_flags_the_broken_one(runs, monkeypatch):
    at = app(runs, monkeypatch)
    assert not at.exception
    df = at.dataframe[0].value
    assert {"sft", "dualselect"} <= set(df["method"])
    assert "imported" in set(df["status"]) and "complete" in set(df["status"])
    assert any("broken-run" in e.value and "manifest" in e.value for e in at.error)
    assert any("torn-part" in e.value and "unreadable Parquet" in e.value for e in at.error)


@pytest.mark.parametrize("page", ["compare", "task_selection", "references", "internals", "generations"])
@pytest.mark.parametrize("which", [("sft", "dual"), ("imported",)])
def test_every_page_opens(runs, monkeypatch, page, which):
    at = app(runs, monkeypatch, selected=list(which))
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, at.exception


def test_task_selection_slider_and_sample_why_panel(runs, monkeypatch):
    import pandas as pd

    at = app(runs, monkeypatch, selected=["dual"])
    at.switch_page("views/task_selection.py").run()
    dec = pd.concat(pd.read_parquet(p) for p in sorted((runs["dual"] / "decisions").glob("part-*.parquet")))
    step = int(dec["step"].max())
    at.select_slider(key="step").set_value(step).run()
    batch = dec[dec["step"] == step].sort_values("score")
    dropped = batch[~batch["kept"]].iloc[0]
    at.selectbox(key="sample").set_value(dropped["sample_id"]).run()
    assert not at.exception
    out = texts(at)
    samples = pd.read_parquet(runs["dual"] / "samples.parquet").set_index("sample_id")
    assert f"Why: {dropped['sample_id']}" in out
    assert samples.loc[dropped["sample_id"], "prompt"] in out
    assert f"{dropped['score']:.4f}" in out
    cut = batch.loc[batch["kept"], "score"].max()
    assert f"{cut:.4f}" in out
    rank = int((batch["score"] < dropped["score"]).sum()) + 1
    assert f"rank in batch: **{rank} of {len(batch)}**" in out
    assert [m.value for m in at.metric][0] == "dropped"


def test_references_page_shows_a_refresh(runs, monkeypatch):
    import pandas as pd

    at = app(runs, monkeypatch, selected=["dual"])
    at.switch_page("views/references.py").run()
    r = pd.concat(pd.read_parquet(p) for p in sorted((runs["dual"] / "refreshes").glob("part-*.parquet")))
    at.selectbox(key="refresh").set_value(1).run()
    assert not at.exception
    out = texts(at)
    first = r[r.refresh_id == 1].iloc[0]
    assert f"step **{int(first['step'])}**" in out and "every_n_steps" in out
    tables = [d.value for d in at.dataframe]
    entered = set(r[(r.refresh_id == 1) & (r.change == "entered")]["sample_id"])
    assert set(tables[0]["sample_id"]) == entered


def test_compare_page_reports_safety_avg(runs, monkeypatch):
    at = app(runs, monkeypatch, selected=["sft", "dual"])
    at.switch_page("views/compare.py").run()
    df = at.dataframe[0].value
    sft = df[df["method"] == "sft"].iloc[0]
    assert sft["safety_avg"] == 50.0 and sft["win_hh"] == 50.0
    assert df["safety_avg"].notna().all()


def test_generations_page_side_by_side(runs, monkeypatch):
    at = app(runs, monkeypatch, selected=["sft", "dual"])
    at.switch_page("views/generations.py").run()
    at.checkbox(key="disagree").uncheck().run()
    assert not at.exception
    table = at.dataframe[0].value
    assert any(c.startswith("response / ") for c in table.columns) and len(table) > 0
