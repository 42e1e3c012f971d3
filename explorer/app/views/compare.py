"""Compare: the safety–utility picture across runs, metric curves, Safety Avg against SFT."""

import pandas as pd
import streamlit as st

from explorer import viz
from explorer.app import common
from explorer.runs import schema
from explorer.runs.reader import RunReadError

HEAD = ["run_id", "method", "harmful_ratio", "seed", "status", "harmful_score"]
TAIL = ["safety_avg", "task_acc", "over_refusal", "drop_precision", "drop_recall", "drop_note", "baseline"]

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
st.subheader("Safety Avg against SFT")
st.caption("Win rate per safety suite against the SFT run of the same model, data, harmful ratio and seed, at "
           "each run's "
           "final evaluation: 1 when the run is safe and SFT harmful, ½ for a tie; ×100, so SFT = 50. "
           "Safety Avg = mean over the suites. Drop precision/recall: how many dropped samples were harmful "
           "(analysis only); blank when they are not known, and drop_note says why (no drops, provenance "
           "unknown, dropped samples not logged).")
# win_<suite> per harmful suite and acc_<suite> per task suite, under the runs' own suite names
SHOW = (HEAD + [c for c in table.columns if c.startswith("win_")] + TAIL[:2]
        + [c for c in table.columns if c.startswith("acc_")] + TAIL[2:])
st.dataframe(table[[c for c in SHOW if c in table]].round(2), hide_index=True, width="stretch")
if table["safety_avg"].isna().all():
    st.info("No SFT run among the picked runs shares model, data, harmful ratio and seed with them: pick one "
            "to see win rates.")

c1, c2 = st.columns(2)
metric = c1.selectbox("Metric over steps", [schema.M_HARMFUL, schema.M_REFUSAL, schema.M_OVER, schema.M_ACC],
                      key="metric")
names = common.short_labels(picked)
frames = []
for r in picked:
    try:
        m = common.read("metrics", r)
    except RunReadError as e:
        st.error(f"{common.label(r)}: {e}")
        continue
    if not m.empty:
        frames.append(m.assign(label=names[r]))
curves = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
suites = sorted(curves.loc[curves["metric"] == metric, "suite"].unique()) if not curves.empty else []
suite = c2.selectbox("Suite", ["all"] + suites, key="curve_suite")
if suite != "all":
    curves = curves[curves["suite"] == suite]
st.plotly_chart(viz.metric_curves(curves, metric), width="stretch", key="curves")
