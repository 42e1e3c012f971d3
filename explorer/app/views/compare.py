"""Compare: the safety–utility picture across runs, metric curves, Safety Avg against SFT."""

import pandas as pd
import streamlit as st

from explorer import viz
from explorer.app import common
from explorer.runs.reader import RunReadError

st.title("Compare")
picked = common.selected_runs()
if not picked:
    st.info("Pick runs in the sidebar.")
    st.stop()
try:
    table = common.compare(picked)
except RunReadError as e:
    common.show_read_error(e)
    st.stop()
st.plotly_chart(viz.safety_utility(table), width="stretch", key="su")
st.subheader("Safety Avg against SFT (win rate per safety suite; SFT = 50)")
show = ["run_id", "method", "harmful_ratio", "seed", "harmful_score", "win_hh", "win_hexphi", "safety_avg",
        "task_acc", "over_refusal", "drop_precision", "drop_recall"]
st.dataframe(table[[c for c in show if c in table]].round(1), hide_index=True, width="stretch")
metric = st.selectbox("Metric over steps", ["harmful_score", "refusal_rate", "over_refusal", "accuracy"], key="metric")
frames = []
for r in picked:
    m = common.read("metrics", r)
    if not m.empty:
        frames.append(m.assign(label=common.label(r)))
st.plotly_chart(viz.metric_curves(pd.concat(frames) if frames else pd.DataFrame(), metric),
                width="stretch", key="curves")
