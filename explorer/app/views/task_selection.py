"""Task selection: at any step, which samples were kept or dropped, on what scores, and why."""

import pandas as pd
import streamlit as st

from explorer import viz
from explorer.app import common
from explorer.runs.reader import RunReadError

st.title("Task selection")
run = common.pick_one("ts_run")
if run is None:
    st.stop()
try:
    steps = common.read("decision_steps", run)
    m = common.read("manifest", run)
except RunReadError as e:
    common.show_read_error(e)
    st.stop()
if not steps:
    st.info("This run has no per-sample decisions.")
    st.stop()
step = st.select_slider("Step", options=steps, value=steps[min(len(steps) - 1, 12)] if len(steps) > 1 else steps[0],
                        key="step")
batch = common.read("batch_at", run, int(step))
score_cols = [c for c in batch.columns if c in ("loss", "compat", "score", "weight", "rank") or
              (pd.api.types.is_numeric_dtype(batch[c]) and c not in ("step", "kept"))]
c1, c2 = st.columns(2)
x = c1.selectbox("x axis", score_cols, index=score_cols.index("compat") if "compat" in score_cols else 0, key="x")
y = c2.selectbox("y axis", score_cols, index=score_cols.index("loss") if "loss" in score_cols else 0, key="y")

ids = batch["sample_id"].tolist()
# the chart's selection and the selectbox mirror each other (keyboard users and tests drive the selectbox)
chart_state = st.session_state.get("batch_chart")
if chart_state and getattr(chart_state, "selection", None) and chart_state.selection.points:
    cd = chart_state.selection.points[0].get("customdata")
    if cd and cd[0] in ids and st.session_state.get("sample") != cd[0]:
        st.session_state["sample"] = cd[0]
if st.session_state.get("sample") not in ids:
    st.session_state["sample"] = ids[0]
sample = st.session_state["sample"]
st.plotly_chart(viz.selection_scatter(batch, x, y, selected=sample), width="stretch",
                on_select="rerun", selection_mode="points", key="batch_chart")
kept = int(batch["kept"].sum())
st.caption(f"step {step}: {kept} of {len(batch)} kept · colour = provenance (for analysis only; no method reads it)")

sample = st.selectbox("Sample", ids, key="sample")
row = batch[batch["sample_id"] == sample].iloc[0]
st.subheader(f"Why: {sample}")
w1, w2 = st.columns([1, 2])
with w1:
    verdict = "kept" if row["kept"] else "dropped"
    st.metric("decision", verdict, help="kept samples contribute to this step's update")
    if "score" in batch and pd.notna(row.get("score")):
        kept_scores = batch.loc[batch["kept"], "score"]
        cut = kept_scores.max() if len(kept_scores) else float("nan")
        rank = int((batch["score"] < row["score"]).sum()) + 1
        mc = m.get("method_config", {}) or {}
        mu, nu = mc.get("mu_task", 1.0), mc.get("nu", 1.0)
        st.markdown(f"**score s = μ·loss − ν·compat** = {mu:g}·{row['loss']:.4f} − {nu:g}·{row['compat']:.4f} "
                    f"= **{row['score']:.4f}**")
        st.markdown(f"cut (largest kept score): **{cut:.4f}** · rank in batch: **{rank} of {len(batch)}** "
                    "(1 = most compatible)")
    else:
        st.markdown(f"loss {row.get('loss', float('nan')):.4f}; this step has no selection scores "
                    "(a warm-up step or a method that keeps everything).")
    st.markdown(f"provenance: **{row.get('provenance', '?')}** · family: {row.get('family', '?')} · weight {row['weight']:.3f}")
with w2:
    st.markdown("**Prompt**")
    st.code(str(row.get("prompt", "")), language=None)
    st.markdown("**Response (the supervised target)**")
    st.code(str(row.get("response", "")), language=None)
refs = common.read("refreshes", run)
if not refs.empty:
    in_force = refs[(refs["step"] <= int(step))]
    if not in_force.empty:
        rid = in_force["refresh_id"].max()
        act = in_force[(in_force["refresh_id"] == rid) & in_force["selected"].fillna(False).astype(bool)]
        act = act.sort_values("conflict", ascending=False).head(5)
        st.markdown(f"**References in force at this step** (refresh {rid}; the five most in conflict with the task "
                    "direction — the direction this sample's compat is measured against)")
        samples = common.read("samples", run).set_index("sample_id")
        act = act.assign(prompt=act["sample_id"].map(samples["prompt"]) if "prompt" in samples else None)
        st.dataframe(act[["sample_id", "conflict", "loss", "score", "weight", "prompt"]], hide_index=True,
                     width="stretch")

hist = common.read("sample_history", run, sample)
st.plotly_chart(viz.step_lines(hist, ["score", "loss", "compat", "weight"], f"{sample} over the run"),
                width="stretch", key="hist")
st.subheader("Over the whole run")
st.plotly_chart(viz.data_map(common.read("data_map", run), common.read("samples", run)), width="stretch",
                key="datamap")
