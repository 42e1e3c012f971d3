"""Generations: held-out prompts with each run's response and verdicts side by side, filtered to where the
runs disagree (e.g. SFT complies, DualSelect refuses)."""

import pandas as pd
import streamlit as st

from explorer.app import common
from explorer.runs.reader import RunReadError


def verdict(d: pd.DataFrame) -> pd.Series:
    """One word per response of one suite, by the suite's kind as its rows say it (whatever the suite is
    called: eval_suites names them): a task suite (rows with a correctness) by its scorer, a harmful suite
    by the harmful judge (with the refusal judge beside it), an over-refusal suite by refusal."""
    if "correct" in d and d["correct"].notna().any():
        return d["correct"].map({True: "correct", False: "wrong"}).fillna("?")
    refused = d["refusal"].map({True: "refuses", False: "answers"}).fillna("?")
    if "harmful" in d and d["harmful"].notna().any():
        return d["harmful"].map({True: "harmful", False: "safe"}).fillna("?") + " (" + refused + ")"
    return refused


st.title("Generations")
picked = common.selected_runs()
if not picked:
    st.info("Pick runs in the sidebar.")
    st.stop()
names = common.short_labels(picked)
frames = []
for r in picked:
    try:
        e = common.read("evals", r, None, True)  # the run's final evaluation
    except RunReadError as err:
        st.error(f"{common.label(r)}: {err}")
        continue
    if not e.empty:
        frames.append(e.assign(run=names[r]))
if not frames:
    st.info("No evaluations recorded in the picked runs.")
    st.stop()
ev = pd.concat(frames, ignore_index=True)
suites = sorted(ev["suite"].unique())
c1, c2 = st.columns([1, 1])
suite = c1.selectbox("Suite", suites, key="suite")
only = c2.checkbox("Only prompts where the runs disagree", value=True, key="disagree")
d = ev[ev["suite"] == suite]
d = d.assign(verdict=verdict(d))
wide = d.pivot_table(index=["sample_id", "prompt"], columns="run", values="verdict", aggfunc="first")
resp = d.pivot_table(index=["sample_id", "prompt"], columns="run", values="response", aggfunc="first")
if only and wide.shape[1] > 1:
    keep = wide.nunique(axis=1) > 1
    wide, resp = wide[keep], resp[keep]
runs_here = list(wide.columns)
st.caption(f"{len(wide)} prompts · {len(runs_here)} runs · final evaluation of each run"
           + (" · only where the runs disagree" if only and len(runs_here) > 1 else ""))
if wide.empty:
    st.info("The picked runs agree on every prompt of this suite (untick the filter to see them all).")
    st.stop()
table = pd.concat({"verdict": wide, "response": resp}, axis=1).reset_index()
table.columns = [" / ".join(c for c in col if c) if isinstance(col, tuple) else col for col in table.columns]
st.dataframe(table, hide_index=True, width="stretch")

prompts = wide.reset_index()["sample_id"].tolist()
pid = st.selectbox("Read one prompt side by side", prompts, key="prompt_id")
row = wide.reset_index().set_index("sample_id").loc[pid]
st.code(str(row["prompt"]), language=None, wrap_lines=True)
cols = st.columns(len(runs_here))
for col, r in zip(cols, runs_here):
    col.markdown(f"**{r}**  \n{row[r]}")
    col.code(str(resp.reset_index().set_index("sample_id").loc[pid, r]), language=None, wrap_lines=True)
