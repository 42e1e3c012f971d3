"""Runs: every run found, its method, model, data, harmful ratio, status and headline metrics."""

import streamlit as st

from explorer.app import common

st.title("Runs")
df = common.list_runs(common.runs_dir())
if df.empty:
    st.info(f"No runs under `{common.runs_dir()}`. Try `explorer demo` or `explorer run configs/sft.yaml`.")
    st.stop()
bad = df[df["status"] == "unreadable"]
for _, r in bad.iterrows():
    st.error(f"`{r['run_id']}`: {r['error']}")
ok = df[df["status"] != "unreadable"]
counts = ok["status"].value_counts().to_dict()
st.caption(" · ".join(f"{v} {k}" for k, v in counts.items()))
cols = ["run_id", "method", "harmful_ratio", "seed", "status", "step", "total_steps", "HS hh", "HS hexphi",
        "over-refusal", "task acc", "model", "data", "created_at", "note"]
st.dataframe(ok[[c for c in cols if c in ok]], hide_index=True, width="stretch",
             column_config={"HS hh": st.column_config.NumberColumn(format="%.1f"),
                            "HS hexphi": st.column_config.NumberColumn(format="%.1f"),
                            "task acc": st.column_config.NumberColumn(format="%.1f")})
st.markdown("Pick runs in the sidebar; the other pages show the picked runs. "
            "HS = harmful score (% of held-out harmful prompts answered instead of refused).")
