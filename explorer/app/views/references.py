"""References: the refresh timeline — who was selected, on what scores, who entered and left."""

import streamlit as st

from explorer import viz
from explorer.app import common
from explorer.runs.reader import RunReadError

st.title("References")
run = common.pick_one("ref_run")
if run is None:
    st.stop()
try:
    refs = common.read("refreshes", run)
except RunReadError as e:
    common.show_read_error(e)
    st.stop()
if refs.empty:
    st.info("This run has no reference refreshes (only DualSelect-style methods refresh references).")
    st.stop()
st.plotly_chart(viz.refresh_timeline(refs), width="stretch", key="timeline")
st.plotly_chart(viz.reference_swimlane(refs), width="stretch", key="swimlane")
ids = sorted(refs["refresh_id"].unique().tolist())
rid = st.selectbox("Refresh", ids, key="refresh", format_func=lambda i: f"refresh {i}")
cur = refs[refs["refresh_id"] == rid]
first = cur.iloc[0]
st.markdown(f"step **{int(first['step'])}** · trigger **{first['trigger']}** · estimator {first.get('estimator')} · "
            f"Jaccard with previous **{first['jaccard_prev']:.2f}**" if first["jaccard_prev"] == first["jaccard_prev"]
            else f"step **{int(first['step'])}** · trigger **{first['trigger']}** · first refresh")
c1, c2 = st.columns(2)
cols = [c for c in ["sample_id", "rank", "score", "loss", "conflict", "cosine", "weight"] if c in cur]
c1.markdown("**Entered**")
c1.dataframe(cur[cur["change"] == "entered"][cols], hide_index=True, width="stretch")
c2.markdown("**Left**")
c2.dataframe(cur[cur["change"] == "left"][cols], hide_index=True, width="stretch")
st.markdown("**All scored references at this refresh** (score = μ_ref·loss + ν·conflict, conflict = −cos(g_r, d))")
st.dataframe(cur[cols + ["selected", "change"]].sort_values("rank"), hide_index=True, width="stretch")
samples = common.read("samples", run)
ref_id = st.selectbox("Read a reference", cur["sample_id"].tolist(), key="ref_text")
if not samples.empty and ref_id in set(samples["sample_id"]):
    s = samples[samples["sample_id"] == ref_id].iloc[0]
    st.code(f"prompt:   {s['prompt']}\nresponse: {s['response']}", language=None)
