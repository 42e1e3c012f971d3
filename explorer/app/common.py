"""Shared helpers of the pages: where the runs are, which runs are picked, cached readers (no torch)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
import streamlit as st

from explorer.runs import reader


def runs_dir() -> str:
    """--runs-dir from `streamlit run main.py -- --runs-dir D`, else $EXPLORER_RUNS_DIR, else ./runs."""
    argv = sys.argv
    if "--runs-dir" in argv and argv.index("--runs-dir") + 1 < len(argv):
        return argv[argv.index("--runs-dir") + 1]
    return os.environ.get("EXPLORER_RUNS_DIR", "runs")


def fingerprint(run_dir: str) -> tuple:
    """Changes whenever a part or the manifest is (re)written: the cache key that lets a running run refresh."""
    d = Path(run_dir)
    files = list(d.glob("*.json")) + list(d.glob("*.parquet")) + list(d.glob("*/part-*.parquet"))
    return (len(files), max((f.stat().st_mtime_ns for f in files), default=0))


@st.cache_data(show_spinner=False, max_entries=64)
def _cached(fn_name: str, run_dir: str, fp: tuple, *args):
    return getattr(reader, fn_name)(run_dir, *args)


def read(fn_name: str, run_dir: str, *args):
    """reader.<fn_name>(run_dir, *args), cached until the run folder changes."""
    return _cached(fn_name, run_dir, fingerprint(run_dir), *args)


@st.cache_data(show_spinner=False, max_entries=16)
def _compare(runs: tuple, fps: tuple) -> pd.DataFrame:
    return reader.compare(list(runs))


def compare(runs: list[str]) -> pd.DataFrame:
    return _compare(tuple(runs), tuple(fingerprint(r) for r in runs))


@st.cache_data(show_spinner=False, ttl=2)
def list_runs(root: str) -> pd.DataFrame:
    return reader.list_runs(root)


def selected_runs() -> list[str]:
    return st.session_state.get("selected_runs", [])


def label(run_dir: str) -> str:
    return Path(run_dir).name


def pick_one(key: str = "run", help: str | None = None) -> str | None:
    """A selectbox over the picked runs (or all runs when none is picked)."""
    options = selected_runs()
    if not options:
        df = list_runs(runs_dir())
        options = df.loc[df["status"] != "unreadable", "path"].tolist() if not df.empty else []
    if not options:
        st.info(f"No runs found under `{runs_dir()}`. Start one with `explorer run` or `explorer demo`.")
        return None
    return st.selectbox("Run", options, format_func=label, key=key, help=help)


def show_read_error(e: Exception) -> None:
    st.error(f"This run cannot be read: {e}")
