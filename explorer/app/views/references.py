"""References: the refresh timeline — who was selected, on what scores, who entered and left, and why."""

import pandas as pd
import streamlit as st

from explorer import viz
from explorer.app import common
from explorer.runs.reader import RunReadError

SCORE_COLS = ["sample_id", "rank", "score", "loss", "conflict", "cosine", "weight"]

st.title("References")
run = common.pick_one("ref_run", prefer=lambda r: common.read("source", r, "refreshes") is not None)
if run is None:
    st.stop()
try:
    refs = common.read("refreshes", run)
    summary = common.read("refresh_summary", run)
except RunReadError as e:
    common.show_read_error(e)
    st.stop()
if refs.empty:
    st.info("This run has no reference refreshes (only DualSelect-style methods refresh references).")
    st.stop()

st.plotly_chart(viz.refresh_jaccard(summary), width="stretch", key="jaccard")
st.dataframe(summary, hide_index=True, width="stretch")
st.plotly_chart(viz.reference_swimlane(refs), width="stretch", key="swimlane")

ids = summary["refresh_id"].astype(int).tolist()
if st.session_state.get("refresh") not in ids:
    st.session_state["refresh"] = ids[-1]
rid = st.selectbox("Refresh", ids, key="refresh", format_func=lambda i: f"refresh {i}")
cur = refs[refs["refresh_id"] == rid]
first = cur.iloc[0]
jac = first.get("jaccard_prev")
head = f"step **{int(first['step'])}** · trigger **{first['trigger']}** · estimator {first.get('estimator')}"
head += f" · Jaccard with previous **{jac:.2f}**" if pd.notna(jac) else " · first refresh"
st.markdown(head)
cols = [c for c in SCORE_COLS if c in cur]
c1, c2 = st.columns(2)
entered, left = cur[cur["change"] == "entered"], cur[cur["change"] == "left"]
c1.markdown(f"**Entered** ({len(entered)})")
c1.dataframe(entered[cols], hide_index=True, width="stretch")
score_cols = [c for c in ("score", "loss", "conflict", "cosine") if c in left]
if left.empty or left[score_cols].notna().any().any():
    c2.markdown(f"**Left** ({len(left)}) — their scores at this refresh")
    c2.dataframe(left[cols], hide_index=True, width="stretch")
else:
    # an imported log scores every reference but records the selected ones only
    before = refs[(refs["refresh_id"] < rid) & refs["sample_id"].isin(left["sample_id"])
                  & refs["selected"].fillna(False).astype(bool)]
    before = before.sort_values("refresh_id").drop_duplicates("sample_id", keep="last")
    c2.markdown(f"**Left** ({len(left)}) — their scores at this refresh were not logged: the log records the "
                "selected references only. Shown: their scores at the refresh where they were last selected.")
    c2.dataframe(before[["refresh_id"] + cols], hide_index=True, width="stretch")
n_scored = int(summary.loc[summary["refresh_id"] == rid, "n_scored"].iloc[0])
n_logged = int(cur["score"].notna().sum()) if "score" in cur else len(cur)
if n_scored > n_logged:
    st.markdown(f"**The references recorded at this refresh** — {n_scored} were scored, the log records the "
                f"{n_logged} selected (score = μ_ref·loss + ν·conflict, conflict = −cos(g_r, d); "
                "the top K_ref by score are selected)")
else:
    st.markdown("**Every reference scored at this refresh** (score = μ_ref·loss + ν·conflict, conflict = −cos(g_r, d); "
                "the top K_ref by score are selected)")
st.dataframe(cur[cols + [c for c in ("selected", "change") if c in cur]].sort_values("rank"), hide_index=True,
             width="stretch")

samples = common.read("samples", run)
options = cur.sort_values("rank")["sample_id"].tolist()
ref_id = st.selectbox("Read a reference", options, key="ref_text")
if not samples.empty and ref_id in set(samples["sample_id"]):
    s = samples[samples["sample_id"] == ref_id].iloc[0]
    history = refs[refs["sample_id"] == ref_id]
    n_sel = int(history["selected"].fillna(False).astype(bool).sum())
    st.markdown(f"**{ref_id}** · selected at {n_sel} of {len(ids)} refreshes")
    st.code(f"prompt:   {s['prompt']}\nresponse: {s['response']}", language=None, wrap_lines=True)
