"""Figures for "is the why real?": chance levels and the method's score against the measured effect.
Pure DataFrame -> plotly Figure (no torch); the numbers come from explorer/runs/chance.py."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from explorer.runs import chance
from explorer.viz.figures import PROVENANCE_COLORS, empty

EFFECT_LABELS = {"effect_safety": "effect on the held-out refusal loss (> 0: lowers safety)",
                 "effect_task": "effect on the held-out task loss (> 0: hurts the task)"}


def score_vs_effect(rows: pd.DataFrame, effect: str = "effect_safety", selected: str | None = None) -> go.Figure:
    """Each recorded (step, task sample): the method's preference (its score oriented so that larger =
    kept, chance.preference) against the measured effect, kept (circle) vs dropped (x), colour =
    provenance; Spearman's ρ(preference, −effect) averaged over steps in the title."""
    title = "the method's score against the measured effect"
    if rows.empty or effect not in rows or rows[effect].isna().all():
        return empty(title, "no recorded effects (run with eval.influence_every > 0)")
    parts = []
    col = None
    for _, b in rows[rows[effect].notna()].groupby("step"):
        pref = chance.preference(b)
        if pref is None:
            continue
        col = pref[0]
        parts.append(b.assign(preference=pref[1]))
    if not parts:
        return empty(title, "no per-sample scores at the recorded steps (the method keeps everything)")
    d = pd.concat(parts)
    rho = chance.score_effect_correlation(rows, effect)
    prov = d["provenance"].fillna("unknown") if "provenance" in d else pd.Series("unknown", index=d.index)
    d = d.assign(provenance=prov, decision=d["kept"].astype(bool).map({True: "kept", False: "dropped"}))
    fig = go.Figure()
    for (p, dec), g in d.groupby(["provenance", "decision"], sort=True):
        fig.add_trace(go.Scatter(
            x=g["preference"], y=g[effect], mode="markers", name=f"{p}, {dec}",
            customdata=g[["sample_id", "step"]].to_numpy(),
            hovertemplate="%{customdata[0]} (step %{customdata[1]})<br>preference %{x:.4f}<br>effect %{y:.3g}"
                          "<extra></extra>",
            marker=dict(size=8, color=PROVENANCE_COLORS.get(p, "#999999"),
                        symbol="circle" if dec == "kept" else "x", opacity=0.7)))
    if selected is not None and selected in set(d["sample_id"]):
        s = d[d["sample_id"] == selected]
        fig.add_trace(go.Scatter(x=s["preference"], y=s[effect], mode="markers", name="selected", hoverinfo="skip",
                                 marker=dict(size=18, color="rgba(0,0,0,0)", line=dict(width=3, color="black"))))
    fig.add_hline(0, line_color="gray", line_width=1)
    sign = "" if d["preference"].equals(d[col].astype(float)) else "−"   # DualSelect keeps the smallest s_i
    fig.update_layout(title=f"{title}: Spearman ρ(preference, −effect) = {rho['rho']:.2f} "
                            f"(mean over {rho['n_steps']} steps)",
                      xaxis_title=f"preference = {sign}{col} (larger = the method likes it more)",
                      yaxis_title=EFFECT_LABELS.get(effect, effect), legend_title_text="provenance, decision")
    return fig


def recall_chance_bars(results: pd.DataFrame) -> go.Figure:
    """One bar pair per run (or method): harmful-drop recall and the recall of a random drop of the same
    size; `results` has label, recall, chance, badge (chance.ChanceResult.as_dict + a label)."""
    title = "harmful-drop recall against chance"
    if results.empty or "recall" not in results or results["recall"].isna().all():
        return empty(title, "no recall (no drops, or unknown provenance)")
    d = results.dropna(subset=["recall"])
    lab = d["label"] if "label" in d else d.index.astype(str)
    fig = go.Figure([go.Bar(x=lab, y=100 * d["recall"], name="recall", text=d.get("badge"),
                            marker_color="#2a7f62"),
                     go.Bar(x=lab, y=100 * d["chance"], name="chance (random drop, same size)", marker_color="#bbbbbb")])
    fig.update_layout(title=title, barmode="group", yaxis_title="% of harmful samples dropped", yaxis_range=[0, 105])
    return fig


def estimate_vs_loo(rows: pd.DataFrame, estimate: str = "effect_safety") -> go.Figure:
    """Each sample of one leave-one-out study: an estimate of its effect (x) against the measured one,
    loo_safety = held-out refusal loss with it minus without it (y); Spearman's ρ in the title. Both > 0:
    the sample lowers safety. `rows`: the study's loo rows merged with the step's decisions (+ provenance)."""
    title = f"{estimate} against the exact leave-one-out effect"
    if rows.empty or estimate not in rows or rows[estimate].isna().all():
        return empty(title, f"no {estimate} for these samples")
    rho = chance.spearman(rows[estimate], rows["loo_safety"])
    fig = go.Figure()
    prov = rows["provenance"] if "provenance" in rows else pd.Series("unknown", index=rows.index)
    for p, g in rows.groupby(prov.fillna("unknown")):
        fig.add_trace(go.Scatter(x=g[estimate], y=g["loo_safety"], mode="markers", name=str(p),
                                 marker={"color": PROVENANCE_COLORS.get(p, "#999999"), "size": 9,
                                         "symbol": ["circle" if k else "x" for k in g.get("kept", [True] * len(g))]},
                                 text=g["sample_id"], hovertemplate="%{text}<br>x %{x:.3g}<br>LOO %{y:.3g}"))
    fig.update_layout(title=f"{title}: Spearman ρ = {rho:.2f} ({len(rows)} samples)",
                      xaxis_title=EFFECT_LABELS.get(estimate, estimate),
                      yaxis_title="measured: refusal loss with − without the sample (> 0: lowers safety)",
                      legend_title_text="provenance")
    return fig
