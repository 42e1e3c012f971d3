"""Generations: held-out prompts with each run's response and verdict side by side."""

import pandas as pd
import streamlit as st

from explorer.app import common
from explorer.runs.reader import RunReadError

st.title("Generations")
picked = common.selected_runs()
if not picked:
    st.info("Pick runs in the sidebar.")
    st.stop()
frames = []
for r in picked:
    try:
        e = common.read("evals", r)
    except RunReadError as err:
        st.error(f"{common.label(r)}: {err}")
        continue
    if e.empty:
        continue
    e = e[e["step"] == e["step"].max()]
    frames.append(e.assign(run=common.label(r)))
if not frames:
    st.info("No evaluations recorded in the picked runs.")
    st.stop()
ev = pd.concat(frames, ignore_index=True)
suite = st.selectbox("Suite", sorted(ev["suite"].unique()), key="suite")
only = st.checkbox("Only prompts where the runs disagree", value=True, key="disagree")
d = ev[ev["suite"] == suite]
verdict = d["correct"] if suite.startswith("task_") else d["refusal"]
d = d.assign(verdict=verdict.map({True: "✓", False: "✗"}) if suite.startswith("task_")
             else verdict.map({True: "refuses", False: "complies"}))
wide = d.pivot_table(index=["sample_id", "prompt"], columns="run", values="verdict", aggfunc="first")
resp = d.pivot_table(index=["sample_id", "prompt"], columns="run", values="response", aggfunc="first")
if only and wide.shape[1] > 1:
    keep = wide.nunique(axis=1) > 1
    wide, resp = wide[keep], resp[keep]
st.caption(f"{len(wide)} prompts · final evaluation of each run")
table = pd.concat({"verdict": wide, "response": resp}, axis=1).reset_index()
table.columns = [" / ".join(c for c in col if c) if isinstance(col, tuple) else col for col in table.columns]
st.dataframe(table, hide_index=True, width="stretch")
