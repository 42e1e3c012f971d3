"""Task selection: at any step, which samples were kept or dropped, on what scores, and why."""

import pandas as pd
import streamlit as st

from explorer import viz
from explorer.app import common
from explorer.runs import chance, replays, schema
from explorer.runs.reader import RunReadError, batch_membership
from explorer.runs.selection import batch_cut

#: above this many decision rows a sample's history (a scan of every step) is shown on request only
HISTORY_ROWS = 2_000_000

st.title("Task selection")
run = common.pick_one("ts_run", prefer=lambda r: "score" in common.read("score_columns", r))
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
#: imported runs: "rebuilt" (dropped samples known, their scores not logged) or "unknown" (selected only)
MEMBERSHIP = batch_membership(m)
if MEMBERSHIP == schema.BATCHES_UNKNOWN:
    st.warning("Imported log: it names the selected samples only, and this run's batches could not be rebuilt, so "
               "the samples each step dropped are unknown — every step below shows only what was kept. "
               + str((m.get("batch_membership") or {}).get("detail", "")))
elif MEMBERSHIP == schema.BATCHES_REBUILT:
    st.caption("Imported log: each step's batch was rebuilt from the authors' batching (seed "
               f"{m['batch_membership'].get('seed')}, batch size {m['batch_membership'].get('batch_size')}); "
               "the log records the scores of selected samples only, so dropped samples have no scores.")


def step_picker(steps: list[int]) -> int:
    """The step slider (arrow keys move it); opens on the last step."""
    if st.session_state.get("step") not in steps:
        st.session_state["step"] = steps[-1]
    if len(steps) == 1:
        st.caption(f"step {steps[0]} (the only step with decisions)")
        return steps[0]
    return int(st.select_slider("Step", options=steps, key="step"))


def why_panel(row: pd.Series, batch: pd.DataFrame, cut, numeric: list[str]) -> None:
    """The sample's score terms against the cut (a selection.Cut, None without scores), its rank in
    the batch, provenance and text."""
    st.subheader(f"Why: {row['sample_id']}")
    w1, w2 = st.columns([1, 2])
    with w1:
        st.metric("decision", "kept" if row["kept"] else "dropped",
                  help="kept samples contribute to this step's update (weight > 0)")
        if cut is not None and pd.notna(row.get("score")):
            mc = m.get("method_config") or {}
            if m.get("method") == "dualselect" and {"loss", "compat"} <= set(row.index):
                mu, nu = mc.get("mu_task", 1.0), mc.get("nu", 1.0)
                compat = f"{row['compat']:.4f}" if row["compat"] >= 0 else f"({row['compat']:.4f})"
                st.markdown(f"**score s = μ·loss − ν·compat** = {mu:g}·{row['loss']:.4f} − {nu:g}·{compat} "
                            f"= **{row['score']:.4f}**")
            else:
                terms = " · ".join(f"{c} {row[c]:.4f}" for c in numeric if c not in ("score", "weight", "rank")
                                   and pd.notna(row[c]))
                st.markdown(f"**score** = **{row['score']:.4f}** ({terms})")
            side = ("the largest kept score; smaller scores are kept" if cut.lower_is_kept
                    else "the smallest kept score; larger scores are kept")
            n_scored = int(batch["score"].notna().sum())
            unscored_drops = int((~batch["kept"].astype(bool) & batch["score"].isna()).sum())
            if cut.cut is not None:
                st.markdown(f"cut: **{cut.cut:.4f}** ({side}) · this sample's margin {cut.margin(row['score']):+.4f} "
                            "(positive = on the kept side)")
            elif unscored_drops:
                st.markdown(f"cut: not known — the {unscored_drops} dropped samples' scores were not logged (the "
                            "imported log records the selected samples' scores only)")
            elif MEMBERSHIP == schema.BATCHES_UNKNOWN:
                st.markdown("cut: not known — the imported log names the selected samples only; which samples this "
                            "batch dropped is unknown")
            else:
                st.markdown("no cut at this step: every scored sample was kept")
            if n_scored < len(batch) or MEMBERSHIP == schema.BATCHES_UNKNOWN:
                st.markdown(f"rank among the {n_scored} logged scores: **{cut.rank(row['score'], batch['score'])} of "
                            f"{n_scored}** (1 = the method's favourite; {cut.n_kept} kept)")
            else:
                st.markdown(f"rank in batch: **{cut.rank(row['score'], batch['score'])} of {len(batch)}** "
                            f"(1 = the method's favourite; {cut.n_kept} kept)")
        elif not row["kept"] and MEMBERSHIP is not None:
            st.markdown("dropped at this step; its score was not logged (the imported log records the selected "
                        "samples only; this sample's place in the batch comes from the rebuilt batches)")
        else:
            loss = row.get("loss", float("nan"))
            st.markdown(f"loss {loss:.4f}; this step has no selection scores "
                        "(a warm-up step or a method that keeps everything).")
        st.markdown(f"provenance: **{common.provenance_label(row.get('provenance'))}** · family: "
                    f"{row.get('family', '?')} · weight {row['weight']:.3f}")
    with w2:
        st.markdown("**Prompt**")
        st.code(str(row.get("prompt", "")), language=None, wrap_lines=True)
        st.markdown("**Response (the supervised target)**")
        st.code(str(row.get("response", "")), language=None, wrap_lines=True)


def conflicts_panel(step: int, sample: str) -> None:
    """The references this sample conflicts with most (when recorded), else those in force."""
    try:
        own = common.read("sample_reference_conflicts", run, step, sample)
        act = common.read("references_in_force", run, step)
    except RunReadError as e:
        common.show_read_error(e)
        return
    if not own.empty:
        smp = common.read("samples", run).set_index("sample_id")
        own = own.assign(prompt=own["reference_id"].map(smp["prompt"]) if "prompt" in smp else None)
        st.markdown(f"**The references {sample} conflicts with most** (most negative cos(g_i, g_r) at this step)")
        st.dataframe(own, hide_index=True, width="stretch")
    elif not act.empty:
        rid = int(act["refresh_id"].iloc[0])
        st.markdown(f"**References in force at this step** (refresh {rid}, the five most in conflict with the task "
                    "direction; compat is measured against their combined gradient g_ref — this run did not record "
                    "per-sample cosines to each reference)")
        cols = [c for c in ("sample_id", "conflict", "loss", "score", "weight", "prompt") if c in act]
        st.dataframe(act[cols].head(5), hide_index=True, width="stretch")


# -- is the why real? (issue 19): chance levels and the independent check -----------------------------
def chance_panel() -> None:
    """Harmful-drop recall against a random drop of the same size in every batch, the exact permutation
    p-value and the badge, with its rule. Provenance is analysis-only; unknown provenance → unknown."""
    try:
        counts = common.read("selection_counts", run)
    except RunReadError as e:
        common.show_read_error(e)
        return
    if counts.empty or int(counts["d"].sum()) == 0:
        st.caption("Against chance: this run dropped no sample, so there is no selection to test.")
        return
    r = chance.from_counts(counts)
    scope = ("its one cut over the whole mix" if "scope" in counts and counts["scope"].iloc[0] == "pool"
             else "a random drop of the same size in every batch")
    c1, c2, c3, c4 = st.columns(4)
    if r.recall is None:
        c1.metric("harmful-drop recall", "unknown",
                  help="some samples have provenance 'unknown' (no label), so recall cannot be computed")
        c4.metric("verdict", chance.UNKNOWN)
    else:
        c1.metric("harmful-drop recall", f"{100 * r.recall:.1f} %",
                  help=f"{r.n_harmful_dropped} of the {r.n_harmful} harmful sample-decisions were dropped")
        c2.metric("chance", f"{100 * r.chance:.1f} %", help=f"the expected recall of {scope}")
        c3.metric("permutation p", f"{r.p_value:.2g}",
                  help="exact: the share of all within-batch re-shufflings of the drop labels that drop at "
                       "least as many harmful samples")
        c4.metric("verdict", r.badge)
    st.caption(f"Against chance — rule: {chance.BADGE_RULE}.")


def effect_line(row: pd.Series) -> None:
    """Under the why panel: what the independent check says this sample would have done, where recorded."""
    eff = row.get("effect_safety")
    if eff is None or pd.isna(eff):
        st.caption("independent check: not recorded at this step (run with eval.influence_every > 0 to record it)")
        return
    word = "lowered" if eff > 0 else "raised"
    task = row.get("effect_task")
    task_txt = "" if task is None or pd.isna(task) else (
        f"; held-out task loss {task:+.3g} ({'hurts' if task > 0 else 'helps'} the task)")
    st.markdown(f"**Independent check**: one step on this sample alone would have **{word} safety** "
                f"(held-out refusal loss {eff:+.3g}{task_txt}). Sign: effect = −lr·⟨g_sample, ∇ held-out loss⟩, "
                "the predicted change of that loss; > 0 means the refusal loss rises, i.e. safety falls.")


def effect_view(sample: str | None = None) -> None:
    """The method's score against the measured effect at every recorded step, with Spearman's ρ."""
    try:
        rows = common.read("effect_rows", run)
    except RunReadError as e:
        common.show_read_error(e)
        return
    if rows.empty:
        st.caption("No independent check in this run (set eval.influence_every > 0 to record each sample's "
                   "effect on the held-out refusal and task losses).")
        return
    eff = st.radio("effect on", ["effect_safety", "effect_task"], horizontal=True, key="effect_col",
                   format_func=lambda c: {"effect_safety": "held-out refusal loss",
                                          "effect_task": "held-out task loss"}[c])
    st.plotly_chart(viz.score_vs_effect(rows, eff, selected=sample), width="stretch", key="score_effect")
    st.caption("ρ > 0: the method prefers the samples the check says lower the held-out loss; ρ ≈ 0: its score "
               "is unrelated to the measured effect. The check reads no method score.")


# -- the ground truth (issue 33): counterfactual replays and exact leave-one-out -------------------------
def _replay_command(step: int) -> str:
    return f"explorer replay {run} --step {step} --horizon 5 --seeds 0,1,2"


def replay_line(step: int, row: pd.Series) -> None:
    """Under the why panel: what replaying this step measured — the exact leave-one-out effect of this
    sample, and what the step's drop changed against a random drop of the same size — where recorded."""
    try:
        loo = common.read("loo", run, step)
        rows = common.read("replays", run, step)
        ckpts = common.read("step_checkpoints", run)
    except RunReadError as e:
        common.show_read_error(e)
        return
    mine = loo[loo["sample_id"] == row["sample_id"]] if not loo.empty else loo
    for _, r in mine.iterrows():
        word = "lowered" if r["loo_safety"] > 0 else "raised"
        eff = row.get("effect_safety")
        est = "" if eff is None or pd.isna(eff) else f" (the first-order estimate said {eff:+.3g})"
        floor = r.get("noise_floor")
        if floor is not None and pd.notna(floor) and abs(r["loo_safety"]) <= 3 * floor:
            st.markdown(f"**Measured (exact leave-one-out, {int(r['horizon'])} steps)**: {r['loo_safety']:+.3g}, within "
                        f"three times the float rounding of the replay ({floor:.2g}): no measurable effect{est}.")
            continue
        st.markdown(f"**Measured (exact leave-one-out, {int(r['horizon'])} step{'s' * (int(r['horizon']) != 1)})**: "
                    f"training step {step} with this sample rather than without it **{word} safety**: held-out refusal "
                    f"loss {r['loo_safety']:+.3g}{est}.")
    if not rows.empty:
        summ = replays.summarize(rows)
        for _, s in summ[summ["metric"].isin(["harmful_score", "refusal_loss"])].iterrows():
            st.markdown("**Replayed**: " + replays.sentence(s) + ".")
        note = replays.deterministic_note(rows)
        if note:
            st.caption(note)
    elif mine.empty:
        where = (f"step checkpoints at {', '.join(map(str, ckpts))}" if ckpts else
                 f"this run kept no step checkpoints: train it with record.{schema.CHECKPOINT_EVERY_KEY} > 0")
        st.caption(f"ground truth: no replay of step {step} ({where}); `{_replay_command(step)}` measures what its "
                   "drop did")


def replays_view() -> None:
    """Every replay and leave-one-out study of the run: the sentences, the arms, and how the estimates
    rank the samples against the exact leave-one-out effect."""
    try:
        rows = common.read("replays", run)
        recs = common.read("replay_records", run)
        loo = common.read("loo", run)
        ckpts = common.read("step_checkpoints", run)
    except RunReadError as e:
        common.show_read_error(e)
        return
    if rows.empty and loo.empty:
        msg = ("No counterfactual replay of this run yet. " + (
            f"It kept step checkpoints at {', '.join(map(str, ckpts))}: `{_replay_command(ckpts[-1])}`."
            if ckpts else f"A replay starts from a step checkpoint: train with record.{schema.CHECKPOINT_EVERY_KEY} > 0 "
            f"(record.{schema.CHECKPOINT_KEEP_KEY} bounds how many are kept)."))
        st.caption(msg)
        return
    if not rows.empty:
        summ = replays.summarize(rows)
        for _, s in summ.iterrows():
            st.markdown("- " + replays.sentence(s))
        note = replays.deterministic_note(rows)
        if note:
            st.caption(note)
        meta = pd.DataFrame([{k: m.get(k) for k in ("replay_id", "status", "checkpoint", "step", "horizon", "arms",
                                                     "seeds", "eval_n", "n_refusal_prompts", "checkpoint_loss_diff",
                                                     "error")} for m in recs])
        if not meta.empty:
            meta["arms"] = meta["arms"].map(lambda a: ",".join(a) if isinstance(a, list) else a)
            meta["seeds"] = meta["seeds"].map(lambda a: ",".join(map(str, a)) if isinstance(a, list) else a)
            st.dataframe(meta, hide_index=True, width="stretch")
            st.caption("checkpoint_loss_diff: the largest difference between the replay's per-sample losses at the "
                       "checkpoint and the run's recorded ones (≈ 0: the checkpoint is the run's state)")
    if not loo.empty:
        out = []
        for lid, g in loo.groupby("loo_id", sort=False):
            step = int(g["step"].iloc[0])
            dec = common.read("batch_at", run, step)
            cmp = replays.loo_comparison(g, dec)
            out.append({"study": lid, "step": step, "horizon": int(g["horizon"].iloc[0]), "samples": cmp["n"],
                        "ρ first-order ~ LOO": cmp["rho first-order"],
                        f"ρ score ({cmp['score column'] or 'none'}) ~ LOO benefit": cmp["rho score"]})
        st.markdown("**Exact leave-one-out** — Spearman ρ of each estimate with the measured effect of each sample of "
                    "the batch (1: the estimate ranks the samples as removing them does; 0: unrelated)")
        st.dataframe(pd.DataFrame(out), hide_index=True, width="stretch")


@st.fragment
def step_view() -> None:
    """The step slider and everything that depends on the step: a fragment, so that moving the slider
    reruns only this part, not the whole-run data map below."""
    try:
        step = step_picker(steps)
        batch = common.read("batch_at", run, step)
    except RunReadError as e:
        common.show_read_error(e)
        return
    if batch.empty:
        st.info(f"No task decisions at step {step}.")
        return
    numeric = [c for c in batch.columns if pd.api.types.is_numeric_dtype(batch[c]) and c not in ("step", "kept")
               and batch[c].notna().any()]
    c1, c2 = st.columns(2)
    x = c1.selectbox("x axis", numeric, index=numeric.index("compat") if "compat" in numeric else 0, key="x")
    y = c2.selectbox("y axis", numeric, index=numeric.index("loss") if "loss" in numeric else 0, key="y")

    cut = batch_cut(batch, "score")
    order = batch.sort_values("score" if cut is not None else "sample_id", ascending=cut.lower_is_kept if cut else True)
    ids = order["sample_id"].tolist()
    # the chart's selection and the selectbox mirror each other (keyboard users and tests drive the selectbox)
    picked = common.chart_pick("batch_chart", "_batch_chart_seen")
    if picked in ids:
        st.session_state["sample"] = picked
    if st.session_state.get("sample") not in ids:
        st.session_state["sample"] = ids[0]
    st.plotly_chart(viz.selection_scatter(batch, x, y, selected=st.session_state["sample"],
                                          cut=cut.cut if cut else None),
                    width="stretch", on_select="rerun", selection_mode="points", key="batch_chart")
    n_kept = int(batch["kept"].sum())
    count = (f"{n_kept} selected samples logged (the dropped ones are unknown)" if MEMBERSHIP == schema.BATCHES_UNKNOWN
             else f"{n_kept} of {len(batch)} kept")
    unscored = int(batch[[x, y]].isna().any(axis=1).sum())
    st.caption(f"step {step}: {count} · circle = kept, x = dropped · colour = provenance (for analysis only; no "
               "method reads it; grey = unknown) · click a point or choose below"
               + (f" · {unscored} samples without logged {x}/{y} are not drawn" if unscored else ""))

    sample = st.selectbox("Sample", ids, key="sample",
                          help="ordered by score, the method's favourite first; mirrors the chart selection")
    row = batch[batch["sample_id"] == sample].iloc[0]
    why_panel(row, batch, cut, numeric)
    effect_line(row)
    replay_line(step, row)
    conflicts_panel(step, sample)
    try:
        n_dec = common.read("n_rows", run, "decisions")
    except RunReadError as e:
        common.show_read_error(e)
        return
    if st.toggle(f"Show {sample} over the whole run", value=n_dec <= HISTORY_ROWS, key="show_hist",
                 help=f"reads every step's decisions ({n_dec:,} rows); off by default above {HISTORY_ROWS:,}"):
        try:
            hist = common.read("sample_history", run, sample)
            st.plotly_chart(viz.step_lines(hist, ["score", "loss", "compat", "weight"], f"{sample} over the run"),
                            width="stretch", key="hist")
        except RunReadError as e:
            common.show_read_error(e)


step_view()
st.subheader("Is the score real? Against chance, and against the measured effect")
chance_panel()
effect_view(st.session_state.get("sample"))
st.subheader("The ground truth: counterfactual replays")
replays_view()

st.subheader("Over the whole run: the data map")
try:
    stats = common.read("sample_stats", run)
except RunReadError as e:
    common.show_read_error(e)
    st.stop()
st.caption("each point a task sample: how often it was kept (y) against its mean score (x) over every step it was "
           "seen — easy and hard, kept and dropped regions, in the manner of dataset cartography")
dm_pick = common.chart_pick("datamap", "_datamap_seen")
dm_ids = stats["sample_id"].tolist() if not stats.empty else []
if dm_pick in dm_ids:
    st.session_state["dm_sample"] = dm_pick
if st.session_state.get("dm_sample") not in dm_ids and dm_ids:
    cur = st.session_state.get("sample")
    st.session_state["dm_sample"] = cur if cur in dm_ids else dm_ids[0]
st.plotly_chart(viz.data_map(stats), width="stretch", on_select="rerun", selection_mode="points", key="datamap")
if dm_ids:
    who = st.selectbox("Sample on the map", dm_ids, key="dm_sample")
    s = stats[stats["sample_id"] == who].iloc[0]
    st.markdown(f"**{who}** · seen {int(s['n_seen'])}× · kept {int(s['n_kept'])}× (keep rate **{s['keep_rate']:.2f}**) · "
                f"mean score {s['mean_score']:.4f} · provenance {common.provenance_label(s.get('provenance'))}")
