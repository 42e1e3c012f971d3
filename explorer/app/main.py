"""The dashboard's entry file: `streamlit run explorer/app/main.py -- --runs-dir runs` (or `explorer app`).

An st.navigation router over one small module per page (in views/, not pages/, so that Streamlit's
own pages/ auto-discovery stays out of the way); the sidebar holds what all pages share: the runs
directory, the runs picked, and auto-refresh for runs still training.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from explorer.app import common

HERE = Path(__file__).parent
REFRESH_SECONDS = 5

st.set_page_config(page_title="explorer — safety drift", layout="wide")

PAGES = [
    st.Page(str(HERE / "views" / "runs.py"), title="Runs", icon=":material/list:", default=True),
    st.Page(str(HERE / "views" / "compare.py"), title="Compare", icon=":material/compare_arrows:"),
    st.Page(str(HERE / "views" / "task_selection.py"), title="Task selection", icon=":material/filter_alt:"),
    st.Page(str(HERE / "views" / "references.py"), title="References", icon=":material/shield:"),
    st.Page(str(HERE / "views" / "internals.py"), title="Method internals", icon=":material/memory:"),
    st.Page(str(HERE / "views" / "generations.py"), title="Generations", icon=":material/chat:"),
]
page = st.navigation(PAGES)

with st.sidebar:
    root = common.runs_dir()
    st.caption(f"runs directory: `{root}`")
    runs = common.list_runs(root)
    readable = runs.loc[runs["status"] != "unreadable", "path"].tolist() if not runs.empty else []
    running = runs.loc[runs["status"] == "running", "path"].tolist() if not runs.empty else []
    st.session_state.setdefault("selected_runs", common.default_picks(runs))
    st.session_state["selected_runs"] = [r for r in st.session_state["selected_runs"] if r in readable]
    st.multiselect("Runs to look at", readable, key="selected_runs", format_func=common.label)
    live = st.toggle(f"Auto-refresh ({REFRESH_SECONDS} s)", value=False, key="autorefresh",
                     help=f"{len(running)} run(s) still training; their new parts appear as they are flushed")

if live:
    @st.fragment(run_every=REFRESH_SECONDS)
    def _watch() -> None:
        # only the fingerprints are polled; the page reruns when a picked run wrote something new
        fps = tuple(common.fingerprint(r) for r in common.selected_runs())
        if st.session_state.get("_fps") not in (None, fps):
            st.session_state["_fps"] = fps
            st.rerun()
        st.session_state["_fps"] = fps

    with st.sidebar:
        _watch()

page.run()
