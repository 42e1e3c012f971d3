"""Method internals: per-step quantities of the method and any method tables the run recorded."""

import streamlit as st

from explorer import viz
from explorer.app import common
from explorer.runs import schema
from explorer.runs.reader import RunReadError, source

st.title("Method internals")
run = common.pick_one("int_run")
if run is None:
    st.stop()
try:
    steps = common.read("steps", run)
    m = common.read("manifest", run)
except RunReadError as e:
    common.show_read_error(e)
    st.stop()
st.caption(f"method **{m.get('method')}** · settings: {m.get('method_config')}")
base = {"run_id", "step", "epoch", "phase", "estimator"}
method_cols = [c for c in steps.columns if c not in base and c not in schema.PART_TABLES["steps"]]
st.plotly_chart(viz.step_lines(steps, ["loss", "task_loss", "extra_loss", "kept_frac"], "losses and kept fraction"),
                width="stretch", key="losses")
if method_cols:
    st.plotly_chart(viz.step_lines(steps, method_cols, "the method's per-step quantities"), width="stretch",
                    key="method_steps")
shown = 0
for name, what in schema.METHOD_TABLES.items():
    if source(run, name) is None:
        continue
    shown += 1
    st.subheader(name)
    st.caption(what)
    df = common.read("table", run, name)
    st.plotly_chart(viz.method_table(df, name), width="stretch", key=f"t_{name}")
    st.dataframe(df.head(200), hide_index=True, width="stretch")
if not shown:
    st.info("No SEAL, PACT or CWAC tables in this run.")
