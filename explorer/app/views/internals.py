"""Method internals: per-step quantities of the method, and SEAL / PACT / CWAC sections when the run
recorded their tables (any other method table is shown generically)."""

import pandas as pd
import streamlit as st

from explorer import viz
from explorer.app import common
from explorer.runs import schema
from explorer.runs.reader import RunReadError

SECTIONS = {
    "SEAL": ("seal_selector", "seal_cut", "seal_steps", "seal_epochs"),
    "PACT": ("pact_tokens", "pact_positions"),
    "CWAC": ("cwac_spectra", "cwac_layers", "cwac_latents", "cwac_latent_prompts", "cwac_safety_latents", "cwac_sae"),
}


def has(name: str) -> bool:
    return common.read("source", run, name) is not None


def tbl(name: str):
    return common.read("table", run, name)


def show(df: pd.DataFrame) -> None:
    """A method table as a table, without the run_id column every row repeats."""
    st.dataframe(df.drop(columns=["run_id"], errors="ignore"), hide_index=True, width="stretch")


def seal_section() -> None:
    st.header("SEAL — bilevel data selection")
    st.caption("The selector ω gives each fine-tuning sample a logit; weight = N·softmax(ω). Samples with high loss "
               "under the safety-anchored model are pushed down; after selector training the top-p by ω are kept.")
    sel = tbl("seal_selector") if has("seal_selector") else pd.DataFrame()
    cut = tbl("seal_cut") if has("seal_cut") else pd.DataFrame()
    smp = common.read("samples", run)
    c1, c2 = st.columns(2)
    c1.plotly_chart(viz.seal_weight_distribution(sel, cut), width="stretch", key="seal_dist")
    c2.plotly_chart(viz.seal_cut_bars(cut, smp), width="stretch", key="seal_cut")
    st.plotly_chart(viz.seal_ranking(sel, cut, smp), width="stretch", key="seal_rank")
    if not cut.empty:
        n_kept = int(cut["kept"].astype(bool).sum())
        st.markdown(f"top-p cut: **{n_kept} of {len(cut)}** samples kept (topp = {cut['topp'].iloc[0] if 'topp' in cut else '?'}),"
                    f" ω at the cut **{viz.seal_cut_value(cut):.4f}**")
    if has("seal_steps"):
        st.plotly_chart(viz.step_lines(tbl("seal_steps"), ["safe_loss", "ft_loss", "weighted_loss", "selector_loss", "u"],
                                       "SEAL selector training"), width="stretch", key="seal_steps")
    if has("seal_epochs"):
        show(tbl("seal_epochs"))


def pact_section() -> None:
    st.header("PACT — constraining safety tokens")
    st.caption("The safety tokens S: tokens the aligned model prefers over the base model on refusals. During "
               "fine-tuning a KL term keeps the model's distribution on S close to a gated mix of the reference's.")
    tok = tbl("pact_tokens") if has("pact_tokens") else pd.DataFrame()
    pos = tbl("pact_positions") if has("pact_positions") else pd.DataFrame()
    st.plotly_chart(viz.pact_token_bars(tok), width="stretch", key="pact_tokens")
    c1, c2 = st.columns(2)
    c1.plotly_chart(viz.pact_gates(pos), width="stretch", key="pact_gates")
    c2.plotly_chart(viz.pact_kl_by_position(pos), width="stretch", key="pact_kl")
    if not tok.empty:
        # token_raw is the tokenizer's own spelling ("ĠI" for " I"): a table cell does not show a
        # leading space, and "I" and " I" are different tokens of S with different weights
        cols = [c for c in ("rank", "token", "token_raw", "token_id", "weight", "v", "d", "p_aligned", "p_base")
                if c in tok]
        st.dataframe(tok[cols], hide_index=True, width="stretch")


def cwac_section() -> None:
    st.header("CWAC — coupled weight and activation constraints")
    st.caption("Weights: each constrained layer's gradient is projected onto the small-eigenvalue directions of its "
               "inputs on harmful prompts, so the directions harmful inputs use most are protected. Activations: "
               "safety latents of an SAE are held near their base values.")
    spec = tbl("cwac_spectra") if has("cwac_spectra") else pd.DataFrame()
    lay = tbl("cwac_layers") if has("cwac_layers") else pd.DataFrame()
    lat = tbl("cwac_latents") if has("cwac_latents") else pd.DataFrame()
    st.plotly_chart(viz.cwac_spectrum(spec), width="stretch", key="cwac_spec")
    c1, c2 = st.columns(2)
    c1.plotly_chart(viz.cwac_removed_share(lay), width="stretch", key="cwac_share")
    c2.plotly_chart(viz.cwac_latent_drift(lat), width="stretch", key="cwac_drift")
    sae = tbl("cwac_sae") if has("cwac_sae") else pd.DataFrame()
    if not sae.empty:
        r = sae.iloc[-1]
        st.markdown(f"**The SAE**: layer {r.get('layer')}, {r.get('n_latents')} latents, k {r.get('k')}, "
                    f"held-out FVU {r.get('fvu', float('nan')):.4g}, "
                    f"dead share {r.get('dead_share', float('nan')):.3f}")
    safety = tbl("cwac_safety_latents") if has("cwac_safety_latents") else pd.DataFrame()
    for w in viz.cwac_sae_checks(sae, safety):
        st.warning(w)
    if not safety.empty:
        st.markdown("**The safety latents** (largest mean activation difference, refused-harmful against benign)")
        show(safety)
    if has("cwac_latent_prompts"):
        st.markdown("**Top-activating prompts per safety latent**")
        show(tbl("cwac_latent_prompts"))


st.title("Method internals")
prefer = [n for names in SECTIONS.values() for n in names]
run = common.pick_one("int_run", prefer=lambda r: any(common.read("source", r, n) is not None for n in prefer))
if run is None:
    st.stop()
try:
    steps = common.read("steps", run)
    m = common.read("manifest", run)
    st.caption(f"method **{m.get('method')}**")
    with st.expander("the method's settings, as recorded in the run"):
        st.json(m.get("method_config") or {})
    shown = []
    for title, fn in (("SEAL", seal_section), ("PACT", pact_section), ("CWAC", cwac_section)):
        if any(has(n) for n in SECTIONS[title]):
            fn()
            shown.append(title)
    known = {n for names in SECTIONS.values() for n in names}
    others = [n for n in schema.METHOD_TABLES if n not in known and has(n)]
    for name in others:
        st.subheader(name)
        df = tbl(name)
        st.plotly_chart(viz.method_table(df, name), width="stretch", key=f"t_{name}")
        show(df.head(200))
    if not shown and not others:
        st.info("No SEAL, PACT or CWAC tables in this run: only its per-step quantities are shown.")
    st.subheader("Per training step")
    base = {"run_id", "step", "epoch", "phase", "estimator", "refresh_id"}
    method_cols = [c for c in steps.columns if c not in base and c not in schema.PART_TABLES["steps"]
                   and c not in ("task_loss", "extra_loss", "time_decide_s")]
    st.plotly_chart(viz.step_lines(steps, ["loss", "task_loss", "extra_loss", "kept_frac"], "losses and kept fraction"),
                    width="stretch", key="losses")
    if method_cols:
        st.plotly_chart(viz.step_lines(steps, method_cols, "the method's per-step quantities"), width="stretch",
                        key="method_steps")
except RunReadError as e:
    common.show_read_error(e)
