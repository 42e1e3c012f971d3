"""Figures of the methods' own records (SEAL, PACT, CWAC): pure DataFrame -> plotly Figure, no torch.

Each takes the method table as the reader returns it (columns: explorer/runs/schema.py METHOD_TABLES)
and works on an empty frame (a figure that says so).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from explorer.viz.figures import PROVENANCE_COLORS, empty


def _need(df: pd.DataFrame, cols: tuple[str, ...]) -> bool:
    return not df.empty and all(c in df for c in cols)


# -- SEAL ------------------------------------------------------------------------------------------
def seal_cut_value(cut: pd.DataFrame) -> float | None:
    """The omega of the last kept sample in SEAL's top-p cut (samples at or above it are kept)."""
    if not _need(cut, ("omega", "kept")) or not cut["kept"].astype(bool).any():
        return None
    return float(cut.loc[cut["kept"].astype(bool), "omega"].min())


def seal_weight_distribution(selector: pd.DataFrame, cut: pd.DataFrame | None = None, column: str = "omega",
                             n_snapshots: int = 4) -> go.Figure:
    """Histogram of the selector's omega (or weight) at a few snapshots (first ... last), with the cut."""
    title = f"SEAL: distribution of {column} over selector training"
    if not _need(selector, ("step", column)):
        return empty(title)
    steps = sorted(selector["step"].unique())
    pick = sorted({steps[int(round(i))] for i in np.linspace(0, len(steps) - 1, min(n_snapshots, len(steps)))})
    d = selector[selector["step"].isin(pick)].assign(snapshot=lambda f: "step " + f["step"].astype(str))
    fig = px.histogram(d, x=column, color="snapshot", barmode="overlay", opacity=0.55, nbins=40, title=title,
                       category_orders={"snapshot": [f"step {s}" for s in pick]})
    c = seal_cut_value(cut) if cut is not None and column == "omega" else None
    if c is not None:
        fig.add_vline(c, line_dash="dash", line_color="black", annotation_text="top-p cut")
    return fig


def seal_ranking(selector: pd.DataFrame, cut: pd.DataFrame | None = None, samples: pd.DataFrame | None = None,
                 max_lines: int = 60) -> go.Figure:
    """Each sample's rank by omega (1 = highest) at each snapshot, a line per sample (an even spread
    over the final ranking when there are many), coloured by provenance; the cut is a horizontal line
    at the number of samples kept."""
    title = "SEAL: ranking by omega over selector training (above the dashed line = kept)"
    if not _need(selector, ("step", "sample_id", "omega")):
        return empty(title)
    d = selector[["step", "sample_id", "omega"]].copy()
    d["rank"] = d.groupby("step")["omega"].rank(ascending=False, method="first")
    last = d[d["step"] == d["step"].max()].sort_values("rank")
    if len(last) > max_lines:
        ids = last["sample_id"].iloc[np.linspace(0, len(last) - 1, max_lines).round().astype(int)]
        d = d[d["sample_id"].isin(set(ids))]
    if samples is not None and not samples.empty and "provenance" in samples:
        d = d.merge(samples[["sample_id", "provenance"]], on="sample_id", how="left")
    else:
        d["provenance"] = "unknown"
    d["provenance"] = d["provenance"].fillna("unknown")
    fig = px.line(d.sort_values(["sample_id", "step"]), x="step", y="rank", line_group="sample_id",
                  color="provenance", color_discrete_map=PROVENANCE_COLORS, hover_data=["sample_id", "omega"],
                  custom_data=["sample_id"], title=title, render_mode="svg")  # WebGL lines vanish without a GPU
    fig.update_traces(opacity=0.6)
    fig.update_yaxes(autorange="reversed", title="rank (1 = highest omega)")
    if cut is not None and _need(cut, ("kept",)):
        fig.add_hline(int(cut["kept"].astype(bool).sum()) + 0.5, line_dash="dash", line_color="black",
                      annotation_text=f"top-p cut ({int(cut['kept'].astype(bool).sum())} kept)")
    return fig


def seal_cut_bars(cut: pd.DataFrame, samples: pd.DataFrame | None = None) -> go.Figure:
    """The final omega of every sample in rank order, kept vs cut, coloured by provenance."""
    title = "SEAL: final omega by rank, kept vs cut"
    if not _need(cut, ("sample_id", "omega", "kept")):
        return empty(title)
    d = cut.sort_values("omega", ascending=False).reset_index(drop=True)
    d["rank"] = np.arange(1, len(d) + 1)
    if samples is not None and not samples.empty and "provenance" in samples:
        d = d.merge(samples[["sample_id", "provenance"]], on="sample_id", how="left")
    d["provenance"] = d.get("provenance", pd.Series("unknown", index=d.index)).fillna("unknown")
    d["decision"] = d["kept"].astype(bool).map({True: "kept", False: "cut"})
    return px.scatter(d, x="rank", y="omega", color="provenance", symbol="decision", custom_data=["sample_id"],
                      color_discrete_map=PROVENANCE_COLORS, symbol_map={"kept": "circle", "cut": "x"},
                      hover_data=["sample_id"], title=title)


# -- PACT ------------------------------------------------------------------------------------------
def pact_token_bars(tokens: pd.DataFrame, top: int = 50) -> go.Figure:
    """The safety tokens S with their weights w_s = max(v_s, 0), largest first (hover: d, p_aligned)."""
    title = "PACT: safety tokens and their weights"
    if not _need(tokens, ("weight",)):
        return empty(title)
    label = "token" if "token" in tokens else "token_id"
    d = tokens.sort_values("weight", ascending=False).head(top).copy()
    # plotly reads "<...>" as HTML, and equal labels would stack into one bar: escape and disambiguate
    d["label"] = (d[label].astype(str).map(lambda t: repr(t)[1:-1] if t.strip() != t or not t else t)
                  .str.replace("<", "&lt;").str.replace(">", "&gt;"))
    if "token_id" in d and d["label"].duplicated(keep=False).any():
        dup = d["label"].duplicated(keep=False)
        d.loc[dup, "label"] = d.loc[dup, "label"] + " #" + d.loc[dup, "token_id"].astype(str)
    hover = [c for c in ("token_id", "d", "v", "p_aligned", "p_base") if c in d]
    fig = px.bar(d, x="label", y="weight", hover_data=hover, title=title, labels={"label": "token"})
    fig.update_xaxes(tickangle=-60)
    return fig


def pact_gates(positions: pd.DataFrame, step: int | None = None) -> go.Figure:
    """Per response position: the mean gate c_t and the two concentration indices I_trained, I_post
    (averaged over the recorded steps, or at one `step`)."""
    title = "PACT: gate c_t and I_trained / I_post by response position"
    if not _need(positions, ("position", "gate")):
        return empty(title)
    d = positions if step is None or "step" not in positions else positions[positions["step"] == step]
    if d.empty:
        return empty(title, f"no positions recorded at step {step}")
    cols = [c for c in ("gate", "I_trained", "I_post") if c in d]
    g = d.groupby("position")[cols].mean().reset_index().melt(id_vars="position", var_name="quantity")
    return px.line(g, x="position", y="value", color="quantity", markers=True, title=title)


def pact_kl_by_position(positions: pd.DataFrame) -> go.Figure:
    """Per-position KL of the PACT term over training: a heatmap position x step."""
    title = "PACT: KL(q_t || p_theta) by position and step"
    if not _need(positions, ("position", "step", "kl")):
        return empty(title)
    grid = positions.pivot_table(index="position", columns="step", values="kl", aggfunc="mean")
    fig = go.Figure(go.Heatmap(z=grid.values, x=list(grid.columns), y=list(grid.index), colorscale="Viridis",
                               colorbar_title="KL"))
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="response position")
    return fig


# -- CWAC ------------------------------------------------------------------------------------------
def cwac_spectrum(spectra: pd.DataFrame) -> go.Figure:
    """Eigenvalues of C_l = X_l X_l^T (inputs on harmful prompts) per constrained layer, log scale.

    The top directions holding `energy` of the spectrum are protected — removed from every gradient —
    and the small-eigenvalue rest spans Π (in_projector), where the update stays free: G ← G Π."""
    title = "CWAC: eigen-spectrum of harmful inputs per layer (top directions protected, the rest free)"
    if not _need(spectra, ("layer", "index", "eigenvalue")):
        return empty(title)
    d = spectra.copy()
    d["eigenvalue"] = d["eigenvalue"].clip(lower=1e-12)
    protected, free = "protected: removed from the gradient", "free: in Π, the gradient keeps it"
    d["part"] = (d["in_projector"].astype(bool).map({True: free, False: protected})
                 if "in_projector" in d else "eigenvalue")
    fig = px.scatter(d, x="index", y="eigenvalue", color="part", facet_col="layer", facet_col_wrap=3, log_y=True,
                     hover_data=[c for c in ("energy_cum",) if c in d], title=title,
                     color_discrete_map={protected: "#E45756", free: "#9aa5b1"})
    fig.update_traces(marker_size=5)
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    return fig


def cwac_removed_share(layers: pd.DataFrame) -> go.Figure:
    """Share of each constrained layer's gradient norm removed by the projection, 1 − ‖GΠ‖/‖G‖, per step."""
    title = "CWAC: share of gradient norm removed per layer"
    if not _need(layers, ("step", "layer", "removed_share")):
        return empty(title)
    fig = px.line(layers.sort_values("step"), x="step", y="removed_share", color="layer", title=title,
                  labels={"removed_share": "1 − ‖GΠ‖/‖G‖"})
    fig.update_yaxes(range=[0, 1])
    return fig


def cwac_latent_drift(latents: pd.DataFrame, top: int = 10) -> go.Figure:
    """Drift of the safety latents from their base values over steps: the `top` latents with the
    largest final drift, and the mean over all of them."""
    title = f"CWAC: safety-latent drift from base (top {top} and mean)"
    if not _need(latents, ("step", "latent", "drift")):
        return empty(title)
    last = latents[latents["step"] == latents["step"].max()].nlargest(top, "drift")["latent"]
    d = latents[latents["latent"].isin(set(last))].assign(latent=lambda f: "latent " + f["latent"].astype(str))
    mean = latents.groupby("step")["drift"].mean().reset_index().assign(latent="mean (all)")
    fig = px.line(pd.concat([d, mean]).sort_values("step"), x="step", y="drift", color="latent", title=title)
    fig.for_each_trace(lambda t: t.update(line_width=4, line_color="black") if t.name == "mean (all)" else None)
    return fig


def cwac_sae_checks(sae: pd.DataFrame, safety_latents: pd.DataFrame, max_dead: float = 0.5) -> list[str]:
    """Warnings on whether CWAC's activation constraint holds anything: an SAE most of whose latents
    never fire, and safety latents whose harmful-minus-benign difference is not above 0 (dead latents
    filling the top-m when fewer than m latents differ). On SmolLM2 the first token's residual norm
    (26300.8 against a median of 166.4; docs/methods/cwac.md) took the SAE: 98 % dead, 11 of 16 safety
    latents at difference 0. Empty when the tables are missing."""
    out = []
    if _need(sae, ("dead_share",)):
        r = sae.iloc[-1]
        if float(r["dead_share"]) > max_dead:
            fvu = f"held-out FVU {float(r['fvu']):.4g}, " if "fvu" in r and pd.notna(r["fvu"]) else ""
            out.append(f"{float(r['dead_share']) * 100:.1f} % of the SAE's latents never fired on its training "
                       f"tokens ({fvu}a low FVU here can mean a few huge-norm tokens are reconstructed and "
                       "nothing else): the latents it offers may not describe these prompts.")
    if _need(safety_latents, ("latent", "diff")):
        first = safety_latents[safety_latents["step"] == safety_latents["step"].min()] \
            if "step" in safety_latents else safety_latents
        flat = int((first["diff"] <= 0).sum())
        if flat:
            out.append(f"{flat} of the {len(first)} safety latents are no more active on harmful prompts than on "
                       f"benign ones (difference <= 0): the activation constraint holds only {len(first) - flat}.")
    return out
