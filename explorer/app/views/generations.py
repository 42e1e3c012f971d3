"""Generations: held-out prompts with each run's response and verdicts side by side, filtered to where the
runs disagree (e.g. SFT complies, DualSelect refuses); then whether the run's judges agree with each other
on the same answers (explorer/runs/agreement.py, docs/judges.md)."""

import pandas as pd
import streamlit as st

from explorer.app import common
from explorer.runs import agreement
from explorer.runs.reader import RunReadError


def verdict(d: pd.DataFrame) -> pd.Series:
    """One word per response of one suite, by the suite's kind as its rows say it (whatever the suite is
    called: eval_suites names them): a task suite (rows with a correctness) by its scorer, a harmful suite
    by the harmful judge (with the refusal judge beside it), an over-refusal suite by refusal."""
    if "correct" in d and d["correct"].notna().any():
        return d["correct"].map({True: "correct", False: "wrong"}).fillna("?")
    refused = d["refusal"].map({True: "refuses", False: "answers"}).fillna("?")
    if "harmful" in d and d["harmful"].notna().any():
        out = d["harmful"].map({True: "harmful", False: "safe"}).fillna("?") + " (" + refused + ")"
    else:
        out = refused
    # neither harmful nor safe: collapse, or a model judge's output it could not read
    for col, word in (("unparsed", "unparsed by the judge"), ("degenerate", "degenerate")):
        if col in d:
            out = out.where(~d[col].fillna(False).astype(bool), word)
    return out


def side_by_side(ev: pd.DataFrame) -> None:
    """The picked runs' final answers to one suite, verdicts beside responses, and one prompt to read."""
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
        return
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


def judge_agreement(picked: list[str], names: dict[str, str]) -> None:
    """Per run, how often each pair of its judges gives the same harmful verdict to the same answers."""
    st.subheader("Do the judges agree?")
    frames, evals_of = [], {}
    for r in picked:
        try:
            e = common.read("evals", r)             # every evaluation of the run: more answers per pair
        except RunReadError:
            continue                                # named above already
        evals_of[names[r]] = e
        a = agreement.judge_agreement(e)
        if not a.empty:
            frames.append(a.assign(run=names[r]))
    if not frames:
        st.caption("The picked runs recorded one judge's harmful verdicts each. List two or more in "
                   "`eval.judges` (e.g. `[keyword, {kind: llama_guard, path: ...}]`, docs/judges.md) to see "
                   "whether they call the same answers harmful.")
        return
    table = pd.concat(frames, ignore_index=True)
    st.caption("Harmful verdicts of each pair of judges on the same answers (every evaluation of the run; "
               "answers either judge left degenerate or unparsed are excluded). Agreement in %; Cohen's kappa "
               "corrects it for chance (1 = perfect, 0 = chance, blank = undefined: one verdict for all); "
               "only a / only b: answers just one of the two calls harmful.")
    shown = table[["run", *agreement.COLUMNS]].rename(columns={
        "judge_a": "judge a", "judge_b": "judge b", "n": "answers", "agreement": "agreement %",
        "harmful_a": "harmful % (a)", "harmful_b": "harmful % (b)", "only_a": "only a", "only_b": "only b"})
    st.dataframe(shown.round({"agreement %": 1, "kappa": 3, "harmful % (a)": 1, "harmful % (b)": 1}),
                 hide_index=True, width="stretch", key="judge_agreement")
    pairs = table[table["suite"] != agreement.ALL_SUITES].drop_duplicates(["run", "judge_a", "judge_b"])
    choices = [f"{p.run}: {p.judge_a} vs {p.judge_b}" for p in pairs.itertuples()]
    pick = st.selectbox("Answers they disagree on", choices, key="judge_pair")
    p = pairs.iloc[choices.index(pick)]
    dis = agreement.disagreements(evals_of[p.run], p.judge_a, p.judge_b)
    if dis.empty:
        st.info(f"{p.judge_a} and {p.judge_b} agree on every answer both judged.")
    else:
        st.dataframe(dis, hide_index=True, width="stretch", key="judge_disagreements")


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
side_by_side(ev)
judge_agreement(picked, names)
