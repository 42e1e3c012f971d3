"""Pure functions DataFrame -> plotly Figure, shared by the dashboard and the notebooks (no torch).

Every figure works on an empty frame (it says so instead of failing). Points that stand for samples
carry their sample_id in `custom_data`, so chart selections can be mapped back to samples.
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

PROVENANCE_COLORS = {"benign": "#4C78A8", "harmful": "#E45756", "unknown": "#9D9D9D"}  # unknown: not labelled


def empty(title: str, note: str = "no data") -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=note, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(title=title, xaxis_visible=False, yaxis_visible=False, height=300)
    return fig


def safety_utility(df: pd.DataFrame) -> go.Figure:
    """One point per run: mean harmful score (x) vs task accuracy (y); SFT runs marked."""
    title = "Safety vs utility (lower-right is unsafe; upper-left is the goal)"
    if df.empty or df["harmful_score"].isna().all():
        return empty(title)
    d = df.assign(kind=df["is_sft"].map({True: "SFT (baseline)", False: "method"}))
    fig = px.scatter(d, x="harmful_score", y="task_acc", color="method", symbol="kind",
                     hover_data=["run_id", "harmful_ratio", "seed"], custom_data=["run_id"],
                     labels={"harmful_score": "harmful score (%)", "task_acc": "task accuracy (%)"}, title=title)
    fig.update_traces(marker_size=13)
    fig.update_xaxes(range=[-5, 105])
    return fig


def metric_curves(metrics: pd.DataFrame, metric: str = "harmful_score") -> go.Figure:
    """A metric over evaluation steps, one line per (run, suite). `metrics` needs run_id or label."""
    title = f"{metric} over steps"
    d = metrics[metrics["metric"] == metric] if not metrics.empty else metrics
    if d.empty:
        return empty(title)
    label = "label" if "label" in d else "run_id"
    fig = px.line(d.sort_values("step"), x="step", y="value", color=label, line_dash="suite", markers=True,
                  title=title, labels={"value": metric})
    return fig


def selection_scatter(batch: pd.DataFrame, x: str = "compat", y: str = "loss", selected: str | None = None,
                      cut: float | None = None) -> go.Figure:
    """One step's batch: x vs y, kept (circle) vs dropped (x), colour = provenance (analysis only).

    Each point carries its sample_id in custom_data[0]. `cut` (the largest kept score) is drawn as a
    line when one of the axes is the score."""
    title = f"batch: {y} against {x}"
    if batch.empty or x not in batch or y not in batch or batch[[x, y]].isna().all().all():
        return empty(title, "no per-sample scores at this step (e.g. a warm-up step)")
    # graph_objects rather than plotly.express: a 5,000-sample batch builds in milliseconds, not a second
    prov = batch["provenance"].fillna("unknown") if "provenance" in batch else pd.Series("unknown", index=batch.index)
    d = batch.assign(decision=batch["kept"].astype(bool).map({True: "kept", False: "dropped"}), provenance=prov)
    hover = [c for c in ("score", "weight", "family") if c in d and c not in (x, y)]
    template = ("%{customdata[0]}<br>" + f"{x}=%{{x:.4f}}<br>{y}=%{{y:.4f}}"
                + "".join(f"<br>{c}=%{{customdata[{i + 1}]}}" for i, c in enumerate(hover)) + "<extra>%{fullData.name}</extra>")
    fig = go.Figure()
    for (p, dec), g in d.groupby(["provenance", "decision"], sort=True):
        fig.add_trace(go.Scatter(
            x=g[x], y=g[y], mode="markers", name=f"{p}, {dec}", legendgroup=p,
            customdata=g[["sample_id", *hover]].to_numpy(), hovertemplate=template,
            marker=dict(size=10, color=PROVENANCE_COLORS.get(p, "#999999"),
                        symbol="circle" if dec == "kept" else "x", opacity=0.85)))
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, legend_title_text="provenance, decision")
    if selected is not None and selected in set(d["sample_id"]):
        s = d[d["sample_id"] == selected]
        fig.add_trace(go.Scatter(x=s[x], y=s[y], mode="markers", name="selected", hoverinfo="skip",
                                 marker=dict(size=22, color="rgba(0,0,0,0)", line=dict(width=3, color="black"))))
    if cut is not None and pd.notna(cut) and "score" in (x, y):
        line = fig.add_vline if x == "score" else fig.add_hline
        line(cut, line_dash="dash", line_color="gray", annotation_text="cut (largest kept score)")
    return fig


def data_map(dm: pd.DataFrame, samples: pd.DataFrame | None = None) -> go.Figure:
    """Dataset cartography: per sample, mean score (x) vs keep rate (y) over the whole run.

    `dm` is reader.sample_stats (it already carries provenance); `samples` is joined when it does not."""
    title = "data map: keep rate against mean score, one point per sample"
    if dm.empty:
        return empty(title)
    d = dm
    if "provenance" not in d and samples is not None and not samples.empty:
        d = dm.merge(samples[[c for c in ("sample_id", "provenance", "family") if c in samples]], on="sample_id",
                     how="left")
    color = "provenance" if "provenance" in d else None
    # SVG up to 5,000 points (drawn everywhere, also without a GPU); WebGL beyond, where SVG gets slow
    return px.scatter(d, x="mean_score", y="keep_rate", color=color, custom_data=["sample_id"],
                      render_mode="svg" if len(d) <= 5000 else "webgl",
                      color_discrete_map=PROVENANCE_COLORS, hover_data=[c for c in ("sample_id", "family", "n_seen") if c in d],
                      opacity=0.6, title=title)


def reference_swimlane(refreshes: pd.DataFrame, top: int = 60) -> go.Figure:
    """Which references were selected at each refresh (rows: references ever selected; columns: refreshes)."""
    title = "references selected per refresh"
    if refreshes.empty or "selected" not in refreshes or not refreshes["selected"].fillna(False).astype(bool).any():
        return empty(title)
    sel = refreshes[refreshes["selected"].fillna(False).astype(bool)]
    ever = sel["sample_id"].value_counts().index[:top]
    grid = (sel[sel["sample_id"].isin(ever)].assign(v=1)
            .pivot_table(index="sample_id", columns="refresh_id", values="v", fill_value=0))
    fig = go.Figure(go.Heatmap(z=grid.values, x=[f"r{c}" for c in grid.columns], y=list(grid.index),
                               colorscale=[[0, "#f2f2f2"], [1, "#2a7f62"]], showscale=False,
                               hovertemplate="%{y}<br>refresh %{x}<extra></extra>"))
    fig.update_layout(title=title, height=max(300, 12 * len(grid)), yaxis_title="reference", xaxis_title="refresh")
    return fig


def refresh_timeline(refreshes: pd.DataFrame) -> go.Figure:
    """Per refresh: the step it happened, its trigger and the Jaccard overlap with the previous one."""
    title = "refreshes: Jaccard overlap with the previous selection"
    if refreshes.empty:
        return empty(title)
    t = refreshes.groupby("refresh_id").agg(step=("step", "first"), trigger=("trigger", "first"),
                                            jaccard=("jaccard_prev", "first")).reset_index()
    return px.bar(t, x="step", y="jaccard", color="trigger", hover_data=["refresh_id"], title=title,
                  labels={"jaccard": "Jaccard with previous"}, range_y=[0, 1])


def refresh_jaccard(summary: pd.DataFrame) -> go.Figure:
    """Per refresh (reader.refresh_summary): Jaccard overlap with the previous selection, by trigger,
    with how many references entered and left."""
    title = "Jaccard overlap of each refresh with the previous one"
    if summary.empty or "jaccard_prev" not in summary:
        return empty(title)
    d = summary.assign(refresh=summary["refresh_id"].map(lambda i: f"r{i}"))
    hover = [c for c in ("step", "n_selected", "n_entered", "n_left") if c in d]
    fig = px.bar(d, x="refresh", y="jaccard_prev", color="trigger", hover_data=hover, custom_data=["refresh_id"],
                 title=title, labels={"jaccard_prev": "Jaccard with previous", "refresh": "refresh"},
                 range_y=[0, 1])
    return fig


def step_lines(steps: pd.DataFrame, columns: list[str], title: str = "per step") -> go.Figure:
    """Any numeric step columns over steps (losses, cos(g_task, g_ref), kept fraction ...)."""
    cols = [c for c in columns if c in steps and pd.api.types.is_numeric_dtype(steps[c]) and steps[c].notna().any()]
    if steps.empty or not cols:
        return empty(title)
    d = steps.melt(id_vars=["step"], value_vars=cols, var_name="quantity")
    return px.line(d, x="step", y="value", color="quantity", title=title)


def method_table(df: pd.DataFrame, name: str) -> go.Figure:
    """A generic picture of a method table: numeric columns against step (or against the first column)."""
    if df.empty:
        return empty(name)
    num = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and c not in ("step",)]
    if "step" in df and num:
        g = df.groupby("step")[num].mean().reset_index().melt(id_vars="step", var_name="quantity")
        return px.line(g, x="step", y="value", color="quantity", title=name)
    if num:
        return px.bar(df, x=df.columns[0], y=num[0], title=name)
    return empty(name, "no numeric columns")
