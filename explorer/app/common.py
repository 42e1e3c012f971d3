"""Shared helpers of the pages: where the runs are, which runs are picked, cached readers (no torch).

Caching: every reader call is cached under (function, run folder, arguments, fingerprint), where the
fingerprint changes whenever a Parquet part or the manifest is (re)written — so a running run shows
its new parts on the next rerun, and a finished one is read once.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Callable

import pandas as pd
import streamlit as st

from explorer.runs import reader, schema
from explorer.runs.status import effective_status

log = logging.getLogger(__name__)


def runs_dir() -> str:
    """--runs-dir D (or --runs-dir=D) after `--` on the streamlit command line, else $EXPLORER_RUNS_DIR,
    else ./runs."""
    argv = sys.argv
    for i, a in enumerate(argv):
        if a == "--runs-dir" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--runs-dir="):
            return a.split("=", 1)[1]
    return os.environ.get("EXPLORER_RUNS_DIR", "runs")


def fingerprint(run_dir: str) -> tuple:
    """(number of files, newest mtime): changes whenever a part or the manifest is (re)written."""
    d = Path(run_dir)
    files = (list(d.glob("*.json")) + list(d.glob("*.parquet")) + list(d.glob("*/part-*.parquet"))
             + list(d.glob("replays/*.json")))     # a replay's record changes status after its last part
    return (len(files), max((f.stat().st_mtime_ns for f in files), default=0))


@st.cache_data(show_spinner=False, max_entries=256)
def _cached(fn_name: str, run_dir: str, fp: tuple, *args):
    return getattr(reader, fn_name)(run_dir, *args)


def read(fn_name: str, run_dir: str, *args):
    """reader.<fn_name>(run_dir, *args), cached until the run folder changes. Raises RunReadError."""
    return _cached(fn_name, str(run_dir), fingerprint(run_dir), *args)


@st.cache_data(show_spinner=False, max_entries=16)
def _compare(runs: tuple, fps: tuple) -> pd.DataFrame:
    return reader.compare(list(runs), stats_of=lambda r: read("sample_stats", r))


def compare(runs: list[str]) -> pd.DataFrame:
    return _compare(tuple(runs), tuple(fingerprint(r) for r in runs))


@st.cache_data(show_spinner=False, max_entries=1024)
def _run_row(run_dir: str, fp: tuple) -> dict:
    try:
        return reader.run_row(run_dir)
    except reader.RunReadError as e:
        return {"run_id": Path(run_dir).name, "path": run_dir, "status": "unreadable", "error": str(e)}


def list_runs(root: str) -> pd.DataFrame:
    """reader.list_runs, with each run's row cached until that run folder changes (new run folders
    appear at the next rerun; a finished run's files are checked once)."""
    base = Path(root)
    dirs = sorted(str(m.parent) for m in base.rglob(schema.MANIFEST)) if base.exists() else []
    rows = []
    for d in dirs:
        row = _run_row(d, fingerprint(d))
        if row.get("status") == schema.STATUS_RUNNING:
            # a killed run writes nothing more, so its cached row would say "running" for ever
            try:
                row = {**row, "status": effective_status(reader.manifest(d))}
            except reader.RunReadError as e:
                # the cached row stays; the next rerun reads the manifest again
                log.warning("run %s: status not re-checked, manifest unreadable now: %s", d, e)
        rows.append(row)
    return pd.DataFrame(rows)


def readable_runs() -> list[str]:
    df = list_runs(runs_dir())
    return df.loc[df["status"] != "unreadable", "path"].tolist() if not df.empty else []


#: runs picked when the dashboard opens
DEFAULT_PICKS = 6


def default_picks(runs: pd.DataFrame, n: int = DEFAULT_PICKS, baseline: str = "sft") -> list[str]:
    """The runs picked when the dashboard opens: each SFT run followed by the other runs with its model
    (`reader.same_model`: the weights hash where both runs recorded one), harmful ratio and seed — the
    SFT runs with the most such runs first, failed runs not among them — then the rest, up to `n`; so
    Compare's first view has a baseline to compute win rates against (picking the first `n` folders by
    name left SFT out whenever it sorted late)."""
    if runs.empty:
        return []
    ok = runs[runs["status"] != "unreadable"]
    if "method" not in ok:
        return ok["path"].tolist()[:n]
    picks: list[str] = []
    rows = [r.to_dict() for _, r in ok.iterrows()]

    def pairs(r: dict, b: dict) -> bool:
        return (r.get("harmful_ratio"), r.get("seed")) == (b.get("harmful_ratio"), b.get("seed")) \
            and reader.same_model(r, b)

    # a failed run (killed, crashed) is not a partner: it waits with the rest
    groups = [[b] + [r for r in rows if r["method"] != baseline and r.get("status") != "failed" and pairs(r, b)]
              for b in rows if b["method"] == baseline]
    # SFT runs with the most method runs first: a folder holding an SFT sweep beside the methods' runs
    # opens on the methods and their baseline, not on SFT runs nothing is compared with
    for group in sorted(groups, key=len, reverse=True):
        for r in group:
            if len(picks) < n and r["path"] not in picks:
                picks.append(r["path"])
    for r in rows:
        if len(picks) < n and r["path"] not in picks:
            picks.append(r["path"])
    return picks


def selected_runs() -> list[str]:
    return list(st.session_state.get("selected_runs", []))


def label(run_dir: str) -> str:
    return Path(run_dir).name


def short_labels(run_dirs: list[str]) -> dict[str, str]:
    """Short column labels for side-by-side views: "method p=0.1 s0" when that names one run, else the
    run folder's name."""
    df = list_runs(runs_dir())
    info = df.set_index("path") if not df.empty else None
    out = {}
    for r in run_dirs:
        if info is not None and r in info.index and info.loc[r, "status"] != "unreadable":
            i = info.loc[r]
            p = "" if pd.isna(i.get("harmful_ratio")) else f" p={i['harmful_ratio']:g}"
            s = "" if pd.isna(i.get("seed")) else f" s{int(i['seed'])}"
            out[r] = f"{i['method']}{p}{s}"
        else:
            out[r] = label(r)
    counts = pd.Series(list(out.values())).value_counts()
    return {r: (v if counts[v] == 1 else label(r)) for r, v in out.items()}


def pick_one(key: str, prefer: Callable[[str], bool] | None = None, help: str | None = None) -> str | None:
    """A selectbox over the picked runs (all readable runs when none is picked); runs for which
    `prefer(run)` holds come first, so each page opens on a run that has what it shows."""
    options = selected_runs() or readable_runs()
    if not options:
        st.info(f"No runs found under `{runs_dir()}`. Start one with `explorer run` or `explorer demo`.")
        return None
    if prefer is not None:
        options = sorted(options, key=lambda r: not _safe(prefer, r))
    if st.session_state.get(key) not in options:
        st.session_state.pop(key, None)
    return st.selectbox("Run", options, format_func=label, key=key, help=help)


def _safe(fn: Callable[[str], bool], run: str) -> bool:
    try:
        return bool(fn(run))
    except reader.RunReadError as e:
        # an unreadable run is not preferred; the page itself shows the error when it is picked
        log.warning("run %s: left at the end of the list, cannot be read: %s", run, e)
        return False


def provenance_label(value) -> str:
    """harmful / benign as recorded; anything else (the data's "unknown", a sample missing from the samples
    table) shows as unknown — never as benign."""
    return value if value in (schema.PROVENANCE_HARMFUL, schema.PROVENANCE_BENIGN) else schema.PROVENANCE_UNKNOWN


def show_read_error(e: Exception) -> None:
    st.error(f"This run cannot be read: {e}")


def chart_pick(chart_key: str, memo_key: str) -> str | None:
    """The sample id (custom_data[0]) of a point newly selected in the chart `chart_key`, else None.

    Only a selection that changed since the last rerun counts, so a widget that mirrors the chart
    (a selectbox) is not overridden by a stale chart selection."""
    state = st.session_state.get(chart_key)
    points = []
    try:
        points = state.selection.points if state is not None else []
    except AttributeError:  # older Streamlit (and AppTest) hand the selection over as a plain dict
        points = (state or {}).get("selection", {}).get("points", []) if isinstance(state, dict) else []
    cd = None
    if points:
        cd = points[0].get("customdata")
        cd = cd[0] if isinstance(cd, (list, tuple)) and cd else cd
    if cd == st.session_state.get(memo_key):
        return None
    st.session_state[memo_key] = cd
    return cd
