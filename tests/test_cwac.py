"""CWAC: the small-eigenvalue projector (idempotent, annihilates the harmful-input directions after a
projected SGD step), the energy cut, pooling and the selection rule, L_safety by hand, and the method
on a random tiny Llama (full and LoRA): prepare / decide / transform_grads / after_step, finite loss,
projected down_proj gradients, records, the variants."""

from __future__ import annotations

import math

import pytest
import torch

from explorer.interp.hooks import capture, modules_named
from explorer.interp.subspace import (CovarianceAccumulator, energy_cut, project_right, removed_share,
                                      small_eigen_subspace)
from explorer.methods.cwac import (Cwac, CwacConfig, pool_codes, prompt_mask, prompt_only, safety_loss,
                                   select_safety_latents, skip_leading)

from _cwac_helpers import loop_steps, small_config
from _method_helpers import make_context


def _low_rank_inputs(d=24, rank=3, N=200, noise=1e-3, seed=0):
    """X [d, N] (columns are inputs) of rank `rank` plus a little isotropic noise."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(d, rank, generator=g, dtype=torch.float64))[0]
    X = basis @ (torch.randn(rank, N, generator=g, dtype=torch.float64) * torch.tensor([[5.0], [3.0], [2.0]]))
    return X + noise * torch.randn(d, N, generator=g, dtype=torch.float64), basis


# -- the projector --------------------------------------------------------------------------------

@pytest.mark.unit
def test_projector_is_idempotent_symmetric_and_complements_the_top_directions():
    X, basis = _low_rank_inputs()
    acc = CovarianceAccumulator(X.shape[0])
    acc.add(X.T.float())
    assert torch.allclose(acc.C, X.float().double().T.T @ X.float().double().T, atol=1e-6)  # C = X Xᵀ
    sub = small_eigen_subspace(acc.C, energy=0.99, n_inputs=acc.n, dtype=torch.float64)
    assert sub.rank_kept == 3                       # the noise holds far less than 1% of the energy
    Pi = sub.projector()
    assert torch.allclose(Pi @ Pi, Pi, atol=1e-10)
    assert torch.allclose(Pi, Pi.T, atol=1e-12)
    assert abs(float(torch.trace(Pi)) - (24 - 3)) < 1e-8
    assert float((Pi @ basis).norm()) < 1e-3       # the harmful-input directions are annihilated
    G = torch.randn(5, 24, dtype=torch.float64)
    assert torch.allclose(project_right(G, sub.U_top), G @ Pi, atol=1e-10)


@pytest.mark.unit
def test_projected_sgd_step_leaves_harmful_inputs_unchanged():
    X, _ = _low_rank_inputs()
    sub = small_eigen_subspace(X @ X.T, energy=0.99, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    W = torch.randn(7, 24, dtype=torch.float64, requires_grad=True)
    # a task loss on task inputs that do use the harmful directions
    T = torch.randn(24, 50, generator=g, dtype=torch.float64)
    loss = ((W @ T - torch.randn(7, 50, generator=g, dtype=torch.float64)) ** 2).mean()
    loss.backward()
    G = W.grad
    dW_free = -0.1 * G
    dW = -0.1 * project_right(G, sub.U_top)
    rel = float((dW @ X).norm()) / (float(dW.norm()) * float(X.norm()))
    rel_free = float((dW_free @ X).norm()) / (float(dW_free.norm()) * float(X.norm()))
    assert rel < 1e-3 < rel_free, (rel, rel_free)
    # and ‖Ûᵀx‖² is bounded by the spectrum's tail
    share = removed_share(G, project_right(G, sub.U_top))
    assert 0.0 < share < 1.0


@pytest.mark.unit
def test_energy_cut_counts_the_leading_eigenvalues():
    ev = torch.tensor([6.0, 3.0, 0.9, 0.1], dtype=torch.float64)
    assert energy_cut(ev, 0.6) == 1
    assert energy_cut(ev, 0.9) == 2
    assert energy_cut(ev, 0.99) == 3
    assert energy_cut(ev, 1.0) == 4
    assert energy_cut(torch.zeros(3), 0.99) == 0
    with pytest.raises(ValueError, match="energy"):
        energy_cut(ev, 0.0)


# -- activation side --------------------------------------------------------------------------------

@pytest.mark.unit
def test_pooling_and_selection_and_safety_loss_by_hand():
    z = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    assert torch.allclose(pool_codes(z, mask, "prompt_mean"), torch.stack([z[0, :2].mean(0), z[1, :3].mean(0)]))
    assert torch.equal(pool_codes(z, mask, "last_prompt"), torch.stack([z[0, 1], z[1, 2]]))
    # skip_first_tokens: the first position leaves the mean, and the last prompt token stays the last
    skipped = skip_leading(mask, 1)
    assert torch.allclose(pool_codes(z, skipped, "prompt_mean"), torch.stack([z[0, 1], z[1, 1:3].mean(0)]))
    assert torch.equal(pool_codes(z, skipped, "last_prompt"), torch.stack([z[0, 1], z[1, 2]]))
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 0]]   # not changed in place
    idx, diff = select_safety_latents(torch.tensor([1.0, 5.0, 0.0, 2.0]), torch.tensor([1.0, 1.0, 3.0, 0.5]), 2)
    assert idx.tolist() == [1, 3] and torch.allclose(diff, torch.tensor([0.0, 4.0, -3.0, 1.5]))
    idx, _ = select_safety_latents(torch.tensor([1.0, 5.0, 0.0, 2.0]), torch.tensor([1.0, 1.0, 3.0, 0.5]), 2,
                                   "abs_diff")
    assert idx.tolist() == [1, 2]
    a, b = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    assert math.isclose(float(safety_loss(a, b)), (1 + 4 + 9) / 2)


@pytest.mark.unit
def test_bad_settings_are_refused():
    for kw, msg in (({"constraints": "neither"}, "constraints"), ({"energy": 1.5}, "energy"),
                    ({"position": "first"}, "position"), ({"sae_k": 0}, "sae_k"),
                    ({"sae_latents": 8, "sae_k": 9}, "sae_k")):
        with pytest.raises(ValueError, match=msg):
            CwacConfig(**kw)


# -- the method on a random tiny Llama -----------------------------------------------------------------

def _check_projected(method, seen):
    def check(ctx):
        for n, params in method.targets_.items():
            Pi = method.subspaces_[n].projector()
            for p in params:
                assert p.grad is not None
                assert torch.allclose(p.grad @ Pi, p.grad, atol=1e-5), n
                seen.append(n)
    return check


@pytest.mark.contract
def test_cwac_full_model_runs_and_projects_down_proj_grads():
    ctx = make_context()
    m = Cwac(small_config())
    m.prepare(ctx)
    assert sorted(m.targets_) == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    assert len(m.latents_) == 8 and m.z_base_.shape == (len(m.base_ids_), 8)
    seen: list[str] = []
    w0 = {n: p[0].detach().clone() for n, p in m.targets_.items()}
    losses = loop_steps(m, ctx, n_steps=3, on_grads=_check_projected(m, seen))
    assert all(math.isfinite(x) for x in losses) and len(seen) == 6
    d = ctx.last_decision
    assert d.extra_loss is not None and math.isclose(float(d.extra_loss.detach()), 0.5 * d.step_metrics["l_safety"],
                                                     rel_tol=1e-5)
    assert 0.0 < ctx.last_extra["removed_share_mean"] < 1.0
    assert any(not torch.equal(w0[n], p[0]) for n, p in m.targets_.items())     # the weights did move
    # records
    lg = ctx.logged
    spec = lg["cwac_spectra"]
    assert {r["layer"] for r in spec} == set(m.targets_) and all(r["threshold"] == 0.99 for r in spec)
    r0 = [r for r in spec if r["layer"] == "model.layers.0.mlp.down_proj"]
    assert len(r0) == 64 and sum(not r["in_projector"] for r in r0) == m.subspaces_[r0[0]["layer"]].rank_kept
    assert len(lg["cwac_layers"]) == 3 * 2 and all(0 <= r["removed_share"] <= 1 and "update_protected_share"
                                                    in r for r in lg["cwac_layers"])
    assert {r["step"] for r in lg["cwac_latents"]} == {0, 1, 2, 3}
    assert all(r["drift"] == 0 for r in lg["cwac_latents"] if r["step"] == 0)      # z_base is the start
    assert any(r["drift"] > 0 for r in lg["cwac_latents"] if r["step"] == 3)
    assert len(lg["cwac_safety_latents"]) == 8 and lg["cwac_sae"][0]["n_latents"] == 64
    lp = lg["cwac_latent_prompts"]
    assert lp and all(ctx.records[r["sample_id"]].prompt == r["prompt"] for r in lp)
    for lat in {r["latent"] for r in lp}:
        acts = [r["activation"] for r in sorted(lp, key=lambda r: r["rank"]) if r["latent"] == lat]
        assert acts == sorted(acts, reverse=True)


@pytest.mark.contract
def test_projected_sgd_keeps_down_proj_outputs_on_harmful_prompts_nearly_fixed():
    """Through the real method: after projected SGD steps (activation constraint off, so only the
    weight constraint acts) ΔW X_harmful is small relative to ‖ΔW‖ ‖X‖, unlike an unprojected step."""
    def rel_change(constraints):
        ctx = make_context()
        m = Cwac(small_config(constraints=constraints, energy=0.999))
        m.prepare(ctx)
        mods = modules_named(ctx.model, "mlp.down_proj")
        name = "model.layers.1.mlp.down_proj"
        harmful = ctx.pool_records("reference")
        b = ctx.encode(harmful)
        ctx.model.eval()
        with torch.no_grad(), capture({name: mods[name]}, what="input") as got:
            ctx.model(input_ids=b.input_ids, attention_mask=b.attention_mask)
        X = got[name][0][prompt_mask(b)].T                                    # [in, N]
        W0 = mods[name].weight.detach().clone()
        loop_steps(m, ctx, n_steps=1, lr=0.5, optimizer="sgd")
        dW = mods[name].weight.detach() - W0
        return float((dW @ X).norm()) / (float(dW.norm()) * float(X.norm()))

    projected = rel_change("weight")
    free = rel_change("activation")         # no weight constraint: a plain SGD step on down_proj
    print(f"relative ‖ΔW X‖: projected {projected:.2e}, free {free:.2e}")
    assert projected < 0.05 * free, (projected, free)


@pytest.mark.contract
@pytest.mark.parametrize("constraints", ["weight", "activation"])
def test_ablations_switch_one_constraint_off(constraints):
    ctx = make_context()
    m = Cwac(small_config(constraints=constraints))
    m.prepare(ctx)
    loop_steps(m, ctx, n_steps=1)
    d = ctx.last_decision
    if constraints == "weight":
        assert d.extra_loss is None and m.sae_ is None and "cwac_latents" not in ctx.logged
        assert ctx.logged["cwac_layers"]
    else:
        assert d.extra_loss is not None and not m.targets_ and ctx.last_extra == {}
        assert "cwac_spectra" not in ctx.logged and "cwac_layers" not in ctx.logged


@pytest.mark.contract
def test_cwac_with_lora_keeps_the_adapter_update_in_the_free_subspace():
    from explorer.interp.hooks import modules_named as named

    ctx = make_context(lora=True)
    with pytest.raises(ValueError, match="lora_targets"):
        Cwac(small_config()).prepare(ctx)                    # q_proj/v_proj only: down_proj is frozen
    from peft import LoraConfig, get_peft_model

    from _method_helpers import make_model
    model = get_peft_model(make_model(ctx.tokenizer), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], lora_dropout=0.0))
    ctx = make_context(model, ctx.tokenizer)
    m = Cwac(small_config())
    m.prepare(ctx)
    assert sorted(m.targets_) == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    seen: list[str] = []
    losses = loop_steps(m, ctx, n_steps=3, lr=5e-2, on_grads=_check_projected(m, seen))   # AdamW
    assert all(math.isfinite(x) for x in losses) and len(seen) == 6
    for n, mod in named(ctx.model, "mlp.down_proj").items():
        A, B = mod.lora_A["default"].weight, mod.lora_B["default"].weight
        Pi = m.subspaces_[n].projector()
        assert float(B.norm()) > 0                           # the adapter did learn something
        delta = B @ A                                        # [out, in]
        assert torch.allclose(delta @ Pi, delta, atol=1e-5)  # (B A) Π = B A exactly, despite AdamW


@pytest.mark.contract
def test_state_dict_round_trip_restores_what_prepare_learned():
    ctx = make_context()
    m = Cwac(small_config())
    m.prepare(ctx)
    st = m.state_dict()
    m2 = Cwac(small_config(seed=5))                          # a different seed learns something else
    m2.prepare(make_context())
    m2.load_state_dict(st)
    assert torch.equal(m2.latents_, m.latents_) and torch.equal(m2.z_base_, m.z_base_)
    assert all(torch.equal(m2.subspaces_[n].U_top, m.subspaces_[n].U_top) for n in m.subspaces_)
    assert torch.equal(m2.sae_.W_enc, m.sae_.W_enc)


@pytest.mark.integration
@pytest.mark.slow           # ~45-80 s on the shared 2-core machine, mostly the start and end evaluations
def test_cwac_through_the_loop(short_config):
    """The real loop on the prepared tiny model: every CWAC table lands in the run folder, the SAE is
    saved with safetensors, step metrics are recorded, and checkpoints take the method's state."""
    from safetensors import safe_open

    from explorer.interp.sae import TopKSAE
    from explorer.runs import reader
    from explorer.train.recipe import run

    d = run(short_config("method=cwac", "method.sae_steps=30", "method.sae_batch_tokens=256",
                         "method.n_safety_latents=8", "method.latent_every=2", "method.cov_prompts=128",
                         "method.selection_prompts=128", "method.n_base_prompts=64", "method.sae_texts=200",
                         "optim.max_steps=3", "eval.every=0", "eval.final_n=4", "record.checkpoint_every=2"))
    assert reader.manifest(d)["status"] == "complete"
    steps = reader.steps(d)
    assert {"l_safety", "safety_loss", "removed_share_mean"} <= set(steps.columns)
    assert steps["loss"].notna().all() and steps["removed_share_mean"].between(0, 1).all()
    spec = reader.table(d, "cwac_spectra")
    assert set(spec["layer"]) == {"model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"}
    assert (spec.groupby("layer")["index"].count() == 384).all() and spec["threshold"].eq(0.99).all()
    lay = reader.table(d, "cwac_layers")
    assert sorted(set(lay["step"])) == [0, 1, 2] and lay["removed_share"].between(0, 1).all()
    lat = reader.table(d, "cwac_latents")
    assert sorted(set(lat["step"])) == [0, 2, 3] and lat["latent"].nunique() == 8
    sae_row = reader.table(d, "cwac_sae").iloc[0]
    assert sae_row["n_latents"] == 512 and sae_row["k"] == 16 and 0 <= sae_row["fvu"] < 1 and sae_row["steps"] == 30
    prompts = reader.table(d, "cwac_latent_prompts")
    assert len(prompts) and prompts["prompt"].str.len().gt(0).all()
    sae = TopKSAE.load(d / "cwac_sae.safetensors")
    assert sae.settings.n_latents == 512
    with safe_open(str(d / "checkpoint" / "state.safetensors"), "pt") as f:
        assert "method.z_base" in f.keys()


@pytest.mark.contract
@pytest.mark.parametrize("position", ["prompt_mean", "last_prompt"])
def test_prompt_only_batches_give_the_pooled_codes_of_whole_batches(position):
    """Selection, z_base, drift and L_safety run harmful prompts without their refusal tokens: the cut
    batch is shorter, and its pooled codes are those of the whole batch (causal attention)."""
    torch.set_num_threads(1)
    ctx = make_context()
    m = Cwac(small_config(position=position, constraints="activation"))
    m.prepare(ctx)
    recs = ctx.pool_records("reference")[:6]
    whole = ctx.encode(recs)
    cut = prompt_only(whole)
    n_prompt = (whole.attention_mask.bool() & (whole.labels == -100)).sum(1)
    assert cut.input_ids.shape[1] == int(n_prompt.max()) < whole.input_ids.shape[1]
    assert torch.equal(prompt_mask(cut), prompt_mask(whole)[:, :cut.input_ids.shape[1]])
    with torch.no_grad():
        z = [pool_codes(m._codes(m._resid(ctx, b, grad=False)), prompt_mask(b), position) for b in (whole, cut)]
    assert z[0].abs().sum() > 0
    assert torch.allclose(z[0], z[1], rtol=1e-4, atol=1e-5)
