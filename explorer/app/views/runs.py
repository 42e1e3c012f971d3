"""Runs: every run found, its method, model, data, harmful ratio, status and headline metrics."""

import streamlit as st

from explorer.app import common

HEAD = ["run_id", "method", "harmful_ratio", "seed", "status"]
TAIL = ["HS", "task acc", "over-refusal", "step", "total_steps", "model", "data", "created_at", "updated_at", "note"]

st.title("Runs")
df = common.list_runs(common.runs_dir())
if df.empty:
    st.info(f"No runs under `{common.runs_dir()}`. Try `explorer demo` or `explorer run configs/sft.yaml`.")
    st.stop()
for _, r in df[df["status"] == "unreadable"].iterrows():
    st.error(f"`{r['run_id']}` cannot be read and is left out: {r['error']}")
ok = df[df["status"] != "unreadable"].reset_index(drop=True)
counts = ok["status"].value_counts().to_dict()
st.caption(" · ".join(f"{v} {k}" for k, v in counts.items()))
# one "HS <suite>" column per harmful suite, named as each run names its suites (its eval_suites), in the
# order the runs list them; a run without that suite leaves it blank
per_suite = [c for c in ok.columns if c.startswith("HS ")]
COLUMNS = HEAD + per_suite + TAIL
event = st.dataframe(ok[[c for c in COLUMNS if c in ok]], hide_index=True, width="stretch", key="runs_table",
                     on_select="rerun", selection_mode="multi-row",
                     column_config={c: st.column_config.NumberColumn(format="%.1f")
                                    for c in (*per_suite, "HS", "over-refusal", "task acc")})
rows = list(getattr(getattr(event, "selection", None), "rows", []) or [])


def _look_at(paths: list[str]) -> None:
    # a callback runs before the script, so it may set the sidebar widget's state
    st.session_state["selected_runs"] = paths


if rows:
    paths = ok.loc[rows, "path"].tolist()
    st.button(f"Look at the {len(paths)} selected run(s)", on_click=_look_at, args=(paths,), key="look_at")
st.markdown("Pick runs here (tick rows, then the button) or in the sidebar; the other pages show the picked "
            "runs. HS <suite> = harmful score on that harmful suite (% of its held-out harmful prompts the judge calls "
            "harmful), HS = their mean. A run that "
            "says *running* on another machine is shown as running: nothing here can tell otherwise.")
