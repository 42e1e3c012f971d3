"""The dashboard, page by page, with Streamlit's AppTest: first on fake run folders (every method's
tables, failed, running, imported and corrupt runs; fast, no model), then on real run folders made by
short tiny-model runs and an imported DualSelect log."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from _dualselect_log import write_fake_log
from _fake_runs import APP_MAIN as MAIN, KEEP, make_runs, open_app, read_all
from explorer.runs import reader

pytestmark = pytest.mark.app
PAGES = ["runs", "compare", "task_selection", "references", "internals", "generations"]


def texts(at) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [e.value for e in at.error]
    parts += [str(c.value) for c in at.code] + [t.value for t in at.title] + [s.value for s in at.subheader]
    parts += [h.value for h in at.header] + [i.value for i in at.info]
    return "\n".join(str(p) for p in parts)


# -- on fake run folders ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return make_runs(tmp_path_factory.mktemp("fake-runs"))


def test_fake_runs_page_lists_every_run_and_names_the_corrupt_files(fake, monkeypatch):
    at = open_app(fake["sft"].parent, monkeypatch, page="runs")
    df = at.dataframe[0].value
    assert set(df["run_id"]) == {"sft", "dualselect", "seal", "pact", "cwac", "failed", "running", "imported"}
    st = df.set_index("run_id")["status"]
    assert st["failed"] == "failed" and st["running"] == "running" and st["imported"] == "imported"
    errors = [e.value for e in at.error]
    assert any("corrupt-part" in e and "decisions/part-00003.parquet" in e for e in errors)
    assert any("corrupt-manifest" in e and "run.json" in e for e in errors)
    hs = json.loads((fake["sft"] / "run.json").read_text())["summary"]["harmful_hh/harmful_score"]
    assert df.set_index("run_id").loc["sft", "HS hh"] == hs


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("which", [("sft", "dualselect"), ("seal",), ("pact",), ("cwac",), ("imported",),
                                   ("failed", "running")])
def test_fake_every_page_opens_on_every_kind_of_run(fake, monkeypatch, page, which):
    at = open_app(fake["sft"].parent, monkeypatch, [fake[k] for k in which], page)
    # only the Runs page speaks of the corrupt runs; no page shows an error for a readable run
    assert all(e.value.startswith("`corrupt-") for e in at.error), [e.value for e in at.error]
    assert bool(at.error) == (page == "runs")


def test_fake_a_run_damaged_inside_a_part_shows_a_message_and_other_runs_still_work(fake, monkeypatch, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(fake["dualselect"], root / "dualselect")
    shutil.copytree(fake["sft"], root / "sft")
    part = sorted((root / "dualselect" / "decisions").glob("part-*.parquet"))[5]
    raw = bytearray(part.read_bytes())
    raw[8:len(raw) - 200] = b"\xff" * (len(raw) - 208)  # garbage inside; both PAR1 magics intact
    part.write_bytes(bytes(raw))
    at = open_app(root, monkeypatch, [root / "dualselect", root / "sft"], "compare")
    assert any("dualselect" in e.value and "decisions" in e.value for e in at.error)
    at = open_app(root, monkeypatch, [root / "dualselect", root / "sft"], "task_selection")
    assert any("dualselect" in e.value and "decisions" in e.value for e in at.error)
    at = open_app(root, monkeypatch, [root / "dualselect", root / "sft"], "generations")
    assert not at.error and len(at.dataframe[0].value) > 0
    at = open_app(root, monkeypatch, [root / "sft"], "task_selection")
    assert not at.error and "Why:" in texts(at)


def test_fake_task_selection_step_slider_and_why_panel(fake, monkeypatch):
    d = fake["dualselect"]
    at = open_app(d.parent, monkeypatch, [d], "task_selection")
    dec = read_all(d, "decisions")
    at.select_slider(key="step").set_value(8).run()
    batch = dec[dec.step == 8].sort_values("score")
    assert int(batch["kept"].sum()) == KEEP
    dropped = batch[~batch["kept"]].iloc[-1]  # the method's least favourite
    at.selectbox(key="sample").set_value(dropped["sample_id"]).run()
    assert not at.exception
    out = texts(at)
    smp = pd.read_parquet(d / "samples.parquet").set_index("sample_id")
    assert f"Why: {dropped['sample_id']}" in out
    assert smp.loc[dropped["sample_id"], "prompt"] in out and smp.loc[dropped["sample_id"], "response"] in out
    assert f"{dropped['loss']:.4f}" in out and f"{dropped['compat']:.4f}" in out and f"{dropped['score']:.4f}" in out
    cut = batch.loc[batch["kept"], "score"].max()
    assert f"**{cut:.4f}**" in out
    assert f"rank in batch: **{len(batch)} of {len(batch)}**" in out
    assert f"provenance: **{smp.loc[dropped['sample_id'], 'provenance']}**" in out
    assert [m.value for m in at.metric][0] == "dropped"
    # the references it conflicts with most, from decision_refs
    dr = read_all(d, "decision_refs")
    worst = dr[(dr.step == 8) & (dr.sample_id == dropped["sample_id"])].nsmallest(1, "cosine")["reference_id"].iloc[0]
    tables = [t.value for t in at.dataframe]
    assert any("reference_id" in t and t["reference_id"].iloc[0] == worst for t in tables)


def test_fake_task_selection_warmup_step_and_chart_selection_mirror(fake, monkeypatch):
    d = fake["dualselect"]
    at = open_app(d.parent, monkeypatch, [d], "task_selection")
    at.select_slider(key="step").set_value(0).run()
    assert "no selection scores" in texts(at)
    # a chart selection (as the browser would send it) moves the selectbox, and the selectbox still works after
    at.select_slider(key="step").set_value(5).run()
    ids = at.selectbox(key="sample").options
    target = ids[-1]
    at.session_state["batch_chart"] = {"selection": {"points": [{"customdata": [target]}], "point_indices": [0]}}
    at.run()
    assert at.selectbox(key="sample").value == target and f"Why: {target}" in texts(at)
    at.selectbox(key="sample").set_value(ids[0]).run()
    assert at.selectbox(key="sample").value == ids[0]


def test_fake_data_map_selectbox(fake, monkeypatch):
    d = fake["dualselect"]
    at = open_app(d.parent, monkeypatch, [d], "task_selection")
    at.selectbox(key="dm_sample").set_value("task-005").run()
    dec = read_all(d, "decisions")
    mine = dec[dec.sample_id == "task-005"]
    assert f"kept {int(mine['kept'].sum())}× (keep rate **{mine['kept'].mean():.2f}**)" in texts(at)


def test_fake_references_page(fake, monkeypatch):
    d = fake["dualselect"]
    at = open_app(d.parent, monkeypatch, [d], "references")
    refs = read_all(d, "refreshes")
    at.selectbox(key="refresh").set_value(2).run()
    out = texts(at)
    r2 = refs[refs.refresh_id == 2]
    assert f"step **{int(r2['step'].iloc[0])}**" in out and "every_n_steps" in out
    assert f"Jaccard with previous **{r2['jaccard_prev'].iloc[0]:.2f}**" in out
    tables = [t.value for t in at.dataframe]
    entered = set(r2[r2.change == "entered"]["sample_id"])
    left = set(r2[r2.change == "left"]["sample_id"])
    assert set(tables[1]["sample_id"]) == entered and set(tables[2]["sample_id"]) == left
    ref = sorted(entered)[0]
    at.selectbox(key="ref_text").set_value(ref).run()
    smp = pd.read_parquet(d / "samples.parquet").set_index("sample_id")
    assert smp.loc[ref, "prompt"] in texts(at)


def test_fake_compare_page_safety_avg(fake, monkeypatch):
    at = open_app(fake["sft"].parent, monkeypatch, [fake["sft"], fake["dualselect"], fake["seal"]], "compare")
    df = at.dataframe[0].value.set_index("run_id")
    assert df.loc["sft", "safety_avg"] == 50.0
    assert df.loc["dualselect", "win_hh"] == pytest.approx(100 * 6.5 / 8)
    at.selectbox(key="curve_suite").set_value("harmful_hh").run()
    assert not at.exception


def test_fake_compare_first_view_includes_sft(fake, monkeypatch):
    """A newcomer opens the dashboard without picking anything: the default picks include the SFT run (its
    folder sorts after six others here), so Compare shows win rates, not "No SFT run among the picked runs"."""
    at = open_app(fake["sft"].parent, monkeypatch, page="compare")
    df = at.dataframe[0].value.set_index("run_id")
    assert "sft" in df.index and df.loc["sft", "safety_avg"] == 50.0
    assert df["safety_avg"].notna().sum() >= 2
    assert "No SFT run" not in texts(at)


def test_fake_compare_drop_recall_is_blank_for_a_method_that_never_drops(fake, monkeypatch):
    at = open_app(fake["sft"].parent, monkeypatch, [fake["sft"], fake["dualselect"]], "compare")
    df = at.dataframe[0].value.set_index("run_id")
    assert pd.isna(df.loc["sft", "drop_recall"]) and pd.isna(df.loc["sft", "drop_precision"])
    assert df.loc["sft", "drop_note"] == "no drops"
    assert pd.notna(df.loc["dualselect", "drop_recall"])


# -- an imported authors' log whose batches dropped samples ------------------------------------------
@pytest.fixture(scope="module")
def authors_run(tmp_path_factory):
    from _dualselect_log import write_authors_log
    from explorer.importers.dualselect_log import import_dualselect

    d = tmp_path_factory.mktemp("authors")
    log, task, refs, lines, batches = write_authors_log(d, n_task=100, batch_size=32, top_k=16, n_ref=600)
    run = import_dualselect(log, task, refs, d / "runs", "authors", seed=42, batch_size=32, warmup_steps=10)
    return run, lines, batches


def test_imported_task_selection_shows_the_whole_batch(authors_run, monkeypatch):
    run, lines, batches = authors_run
    at = open_app(run.parent, monkeypatch, [run], "task_selection")
    at.select_slider(key="step").set_value(0).run()
    kept = {f"task-{i:05d}" for i in lines[1]["indices"]}
    at.selectbox(key="sample").set_value(sorted(kept)[0]).run()
    out = texts(at)
    assert "step 0: 16 of 32 kept" in out and "16 of 16" not in out
    assert "no cut at this step" not in out and "cut: not known" in out
    assert "provenance: **unknown**" in out and "benign" not in out
    dropped = sorted({f"task-{i:05d}" for i in batches[0]} - kept)[0]
    at.selectbox(key="sample").set_value(dropped).run()
    assert not at.exception
    assert [m.value for m in at.metric][0] == "dropped" and "its score was not logged" in texts(at)
    # the data map: keep rates below 1 (not 1.00 for every sample)
    assert "keep rate **1.00**" not in texts(at) or "keep rate **0." in texts(at)


def test_imported_references_n_scored_and_who_left(authors_run, monkeypatch):
    run, lines, batches = authors_run
    at = open_app(run.parent, monkeypatch, [run], "references")
    summary = at.dataframe[0].value
    assert list(summary["n_scored"]) == [600, 600] and list(summary["step"]) == [0, len(batches) // 2]
    at.selectbox(key="refresh").set_value(1).run()
    out = texts(at)
    assert "were not logged: the log records the selected references only" in out
    left = at.dataframe[2].value
    assert len(left) > 0 and left["score"].notna().all() and (left["refresh_id"] == 0).all()
    assert "600 were scored" in out


def test_imported_compare_drop_recall_unknown_not_zero(authors_run, monkeypatch):
    run, _, _ = authors_run
    at = open_app(run.parent, monkeypatch, [run], "compare")
    row = at.dataframe[0].value.iloc[0]
    assert pd.isna(row["drop_recall"]) and pd.isna(row["drop_precision"]) and row["drop_note"] == "provenance unknown"


def test_fake_internals_sections(fake, monkeypatch):
    for name, header in (("seal", "SEAL"), ("pact", "PACT"), ("cwac", "CWAC")):
        at = open_app(fake["sft"].parent, monkeypatch, [fake[name]], "internals")
        heads = [h.value for h in at.header]
        assert len(heads) == 1 and heads[0].startswith(header), heads
    at = open_app(fake["sft"].parent, monkeypatch, [fake["pact"]], "internals")
    # the tokenizer's own spelling beside the decoded token: a cell hides a leading space ("I" vs " I")
    table = at.dataframe[0].value
    assert list(table.columns[1:3]) == ["token", "token_raw"]
    assert (table["token_raw"] == table["token"].str.replace(" ", "Ġ")).all()
    at = open_app(fake["sft"].parent, monkeypatch, [fake["seal"]], "internals")
    cut = read_all(fake["seal"], "seal_cut")
    assert f"**{int(cut['kept'].sum())} of {len(cut)}** samples kept" in texts(at)
    at = open_app(fake["sft"].parent, monkeypatch, [fake["sft"]], "internals")
    assert not at.header and "No SEAL, PACT or CWAC tables" in texts(at)


def test_cwac_internals_warn_when_the_sae_holds_nothing(tmp_path, monkeypatch):
    """The CWAC section says when its activation constraint is hollow, from the run's own tables: the
    SAE's dead share and safety latents with no harmful-minus-benign difference (what SmolLM2's
    first-token norm did to it); a healthy SAE gets no warning."""
    from _fake_runs import make_cwac

    from explorer import viz

    run = make_cwac(tmp_path)
    lat = pd.DataFrame({"step": 0, "latent": range(16), "rank": range(16),
                        "diff": [3.2, 2.6, 1.1, 0.5, 0.004] + [0.0] * 11})
    sae = pd.DataFrame([{"step": 0, "layer": 14, "n_latents": 2304, "k": 16, "fvu": 0.000535, "dead_share": 0.981771}])
    for name, df in (("cwac_sae", sae), ("cwac_safety_latents", lat.assign(run_id=run.name))):
        (run / name).mkdir()
        df.assign(run_id=run.name).to_parquet(run / name / "part-00000.parquet")
    at = open_app(tmp_path, monkeypatch, [run], "internals")
    warnings = [w.value for w in at.warning]
    assert any("98.2 % of the SAE's latents never fired" in w for w in warnings), warnings
    assert any("11 of the 16 safety latents" in w and "holds only 5" in w for w in warnings), warnings
    assert "held-out FVU 0.000535, dead share 0.982" in texts(at)
    healthy = viz.cwac_sae_checks(sae.assign(dead_share=0.1), lat.assign(diff=lat["diff"] + 1))
    assert healthy == []


def test_fake_generations_where_runs_disagree(fake, monkeypatch):
    at = open_app(fake["sft"].parent, monkeypatch, [fake["sft"], fake["dualselect"]], "generations")
    at.selectbox(key="suite").set_value("harmful_hh").run()
    table = at.dataframe[0].value
    # SFT harmful on prompts 0-5 at the end, DualSelect on prompt 0: they disagree on 1-5
    assert sorted(table["sample_id"]) == [f"harmful_hh-{e:02d}" for e in range(1, 6)]
    # columns carry short labels: method, harmful ratio, seed
    assert set(table["verdict / sft p=0.2 s0"]) == {"harmful (answers)"}
    assert set(table["verdict / dualselect p=0.2 s0"]) == {"safe (refuses)"}
    at.checkbox(key="disagree").uncheck().run()
    assert len(at.dataframe[0].value) == 8
    at.selectbox(key="prompt_id").set_value("harmful_hh-03").run()
    out = texts(at)
    assert "[details withheld]" in out and "held-out harmful prompt 3 of harmful_hh" in out


def test_fake_a_running_run_shows_new_parts(fake, monkeypatch, tmp_path):
    from _fake_runs import make_dualselect
    from explorer.record.writer import RunWriter

    root = tmp_path / "live"
    run = make_dualselect(root, "live", status="running")
    at = open_app(root, monkeypatch, [run], "task_selection")
    steps_before = at.select_slider(key="step").options
    w = RunWriter.open(run)
    w.log("decisions", [{"step": 12, "sample_id": "task-001", "role": "task", "weight": 1.0, "kept": True,
                         "loss": 0.5, "compat": 0.1, "score": 0.4}])
    w.flush()
    at.run()
    assert len(at.select_slider(key="step").options) == len(steps_before) + 1


# -- on real run folders ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_paths):
    from explorer.config import load_config
    from explorer.importers.dualselect_log import import_dualselect
    from explorer.train.recipe import run

    from conftest import SHORT_RUN

    root = tmp_path_factory.mktemp("runs")
    ds = ["method=dualselect", "method.warmup_steps=1", "method.keep_fraction=0.5", "method.k_ref=6",
          "method.ref_cap=24", "method.refresh=every_n_steps", "method.refresh_every=2", "method.ref_cosines_every=1"]
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
    return open_app(runs["root"], monkeypatch, [runs[k] for k in selected] if selected is not None else None)


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
    at = app(runs, monkeypatch, selected=["dual"])
    at.switch_page("views/task_selection.py").run()
    dec = reader.decisions(runs["dual"])
    step = int(dec["step"].max())
    at.select_slider(key="step").set_value(step).run()
    batch = dec[dec["step"] == step].sort_values("score")
    dropped = batch[~batch["kept"]].iloc[0]
    at.selectbox(key="sample").set_value(dropped["sample_id"]).run()
    assert not at.exception
    out = texts(at)
    samples = reader.samples(runs["dual"]).set_index("sample_id")
    assert f"Why: {dropped['sample_id']}" in out
    assert samples.loc[dropped["sample_id"], "prompt"] in out
    assert f"{dropped['score']:.4f}" in out
    cut = batch.loc[batch["kept"], "score"].max()
    assert f"{cut:.4f}" in out
    rank = int((batch["score"] < dropped["score"]).sum()) + 1
    assert f"rank in batch: **{rank} of {len(batch)}**" in out
    assert [m.value for m in at.metric][0] == "dropped"
    # the references it conflicts with most, from the decision_refs DualSelect recorded at this step
    dr = reader.table(runs["dual"], "decision_refs")
    mine = dr[(dr["step"] == step) & (dr["sample_id"] == dropped["sample_id"])].sort_values("cosine")
    assert f"The references {dropped['sample_id']} conflicts with most" in out
    shown = [t for t in at.dataframe if "reference_id" in t.value.columns][0].value
    assert list(shown["reference_id"]) == list(mine["reference_id"].head(len(shown)))


def test_references_page_shows_a_refresh(runs, monkeypatch):
    at = app(runs, monkeypatch, selected=["dual"])
    at.switch_page("views/references.py").run()
    r = reader.refreshes(runs["dual"])
    at.selectbox(key="refresh").set_value(1).run()
    assert not at.exception
    out = texts(at)
    first = r[r.refresh_id == 1].iloc[0]
    assert f"step **{int(first['step'])}**" in out and "every_n_steps" in out
    tables = [d.value for d in at.dataframe]
    entered = set(r[(r.refresh_id == 1) & (r.change == "entered")]["sample_id"])
    assert set(tables[1]["sample_id"]) == entered  # tables[0] is the per-refresh summary


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


# -- launching -----------------------------------------------------------------------------------------
def test_explorer_app_binds_loopback_by_default():
    import argparse

    from explorer.app.launch import add_parser, command

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["app", "some/runs"])
    assert (args.runs_dir, args.host, args.port) == ("some/runs", "127.0.0.1", 8501)
    cmd = command(args.runs_dir, args.host, args.port)
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[-2:] == ["--runs-dir", "some/runs"]
    assert parser.parse_args(["app", "--host", "0.0.0.0"]).host == "0.0.0.0"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_explorer_app_stopped_with_sigterm_takes_the_dashboard_down(tmp_path):
    """SIGTERM to `explorer app` must not leave its streamlit child serving on the port."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    port = _free_port()
    repo = Path(MAIN).parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    # its own session, so that teardown can reach whatever the launcher left in its group
    proc = subprocess.Popen([sys.executable, "-m", "explorer.cli", "app", str(tmp_path), "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1)
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, "the dashboard did not start"
                time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        deadline = time.time() + 20
        while _port_open(port) and time.time() < deadline:
            time.sleep(0.25)
        assert not _port_open(port), "the streamlit child still serves after `explorer app` got SIGTERM"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_launch_is_headless_even_when_a_browser_is_wanted(monkeypatch):
    """`make demo` launches with open_browser=True; a non-headless streamlit asks for an e-mail address on first
    use and exits without a terminal, so the command must be headless, loopback-bound and without usage stats."""
    import subprocess

    from explorer.app import launch as launch_mod

    seen = {}

    class FakeProc:
        pid = -1

        def __init__(self, cmd, **kw):
            seen["cmd"] = cmd

        def wait(self, timeout=None):
            return 0

        def poll(self):
            return 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(subprocess, "Popen", FakeProc)
    monkeypatch.setattr(launch_mod, "_open_browser_when_up", lambda *a, **k: None, raising=False)
    assert launch_mod.launch("some/runs", open_browser=True) == 0
    cmd = seen["cmd"]
    assert cmd[cmd.index("--server.headless") + 1] == "true"
    assert cmd[cmd.index("--browser.gatherUsageStats") + 1] == "false"
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"


def test_common_logs_the_runs_it_skips(caplog):
    """An unreadable run passed over while ordering a page's run list is logged, not skipped in silence."""
    import logging

    from explorer.app import common
    from explorer.runs.reader import RunReadError

    def unreadable(run):
        raise RunReadError(run, f"{run}/run.json", "unreadable manifest")

    with caplog.at_level(logging.WARNING, logger="explorer.app.common"):
        assert common._safe(unreadable, "runs/broken") is False
    assert any("runs/broken" in r.getMessage() and "unreadable manifest" in r.getMessage() for r in caplog.records)


def test_fake_imported_run_with_unknown_batches_says_so(fake, monkeypatch):
    d = fake["imported"]
    at = open_app(d.parent, monkeypatch, [d], "task_selection")
    out = texts(at) + "\n".join(w.value for w in at.warning)
    assert "the samples each step dropped are unknown" in out
    assert "selected samples logged (the dropped ones are unknown)" in out and " kept ·" not in out
    assert "no cut at this step" not in out


def test_default_picks_put_each_sft_run_with_runs_of_its_own_model():
    """The dashboard opens on SFT runs followed by the runs they are the baseline of: same model, ratio
    and seed. A base-model DualSelect run does not ride along with the aligned model's SFT run."""
    from explorer.app.common import default_picks

    rows = [dict(path=p, method=m, model=mod, harmful_ratio=0.1, seed=0, status="complete")
            for p, m, mod in [("a-dualselect-base", "dualselect", "smollm2:base"),
                              ("b-pact-base", "pact", "smollm2:base"),
                              ("c-dualselect-aligned", "dualselect", "smollm2:aligned"),
                              ("z-sft-aligned", "sft", "smollm2:aligned")]]
    assert default_picks(pd.DataFrame(rows), n=2) == ["z-sft-aligned", "c-dualselect-aligned"]
    assert default_picks(pd.DataFrame(rows), n=4)[2:] == ["a-dualselect-base", "b-pact-base"]


def test_default_picks_open_on_the_sft_runs_that_methods_are_compared_with():
    """A folder with an SFT drift sweep beside the methods' runs (README's smollm2 commands write one):
    the SFT runs nothing is compared with sort first by name, yet the opening picks are the methods and
    their SFT run — not a failed (killed) run of the same group."""
    from explorer.app.common import default_picks

    rows = [dict(path=f"{m}-p{p}-s{s}", method=m, model="smollm2:aligned", harmful_ratio=p, seed=s,
                 status="complete")
            for m, p, s in [("dualselect", 0.1, 0), ("pact", 0.1, 0), ("seal", 0.1, 0), ("sft", 0.0, 0),
                            ("sft", 0.0, 1), ("sft", 0.05, 0), ("sft", 0.1, 0), ("sft", 0.2, 0)]]
    rows.insert(1, dict(rows[1], path="pact-p0.1-s0-killed", status="failed"))
    assert default_picks(pd.DataFrame(rows), n=4) == ["sft-p0.1-s0", "dualselect-p0.1-s0", "pact-p0.1-s0",
                                                      "seal-p0.1-s0"]
    # the killed run is not a partner: it comes after the SFT runs, with the rest
    assert default_picks(pd.DataFrame(rows), n=9)[4:] == ["sft-p0.0-s0", "sft-p0.0-s1", "sft-p0.05-s0",
                                                          "sft-p0.2-s0", "pact-p0.1-s0-killed"]


def test_default_picks_pair_on_the_weights_hash_when_runs_recorded_one():
    """Two specs of the same weights (a copied model folder) pair, as `reader.find_baseline` pairs them
    for Safety Avg; the same spec over different weights (a re-prepared model) does not; a run without a
    hash falls back to the spec."""
    from explorer.app.common import default_picks

    rows = [dict(path=p, method=m, model=mod, model_sha256=h, harmful_ratio=0.1, seed=0, status="complete")
            for p, m, mod, h in [("a-pact-copy", "pact", "/models/copy", "w1"),
                                 ("b-pact-reprepared", "pact", "smollm2:aligned", "w2"),
                                 ("c-seal-old", "seal", "smollm2:aligned", None),
                                 ("z-sft", "sft", "smollm2:aligned", "w1")]]
    assert default_picks(pd.DataFrame(rows), n=3) == ["z-sft", "a-pact-copy", "c-seal-old"]
