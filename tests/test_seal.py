"""SEAL: the selector's weights and gradient against hand-derived formulas, Algorithm 1 vs 2, the
u schedule, the top-p cut, and the method on a random tiny Llama through a minimal Context."""

from __future__ import annotations

import math

import pytest
import torch

from explorer.methods.seal import (Seal, SealConfig, model_loss, selector_loss, selector_weights, top_p_cut,
                                   u_at_epoch)

from _method_helpers import make_context, make_model, train_steps


# -- pure maths -------------------------------------------------------------------------------------

@pytest.mark.unit
def test_selector_weights_are_n_times_softmax_with_mean_one():
    omega = torch.tensor([0.3, -1.2, 2.0])
    e = [math.exp(x) for x in (0.3, -1.2, 2.0)]
    expected = [3 * x / sum(e) for x in e]
    w = selector_weights(omega)
    assert w.tolist() == pytest.approx(expected, rel=1e-6)
    assert float(w.mean()) == pytest.approx(1.0)
    # uniform initialisation (the release: 0.1 everywhere) gives weight 1 for every sample
    assert selector_weights(torch.full((5,), 0.1)).tolist() == pytest.approx([1.0] * 5)


@pytest.mark.unit
@pytest.mark.parametrize("omega", [[0.1, 0.1, 0.1], [0.5, -0.3, 1.1]])
def test_selector_gradient_matches_hand_derived_formula_n3(omega):
    """L = (1/|J|) Σ_{j∈J} σ̃_j ℓ_j,  σ̃ = 3 softmax(ω)  ⇒  ∂L/∂ω_k = (1/|J|) Σ_j ℓ_j · 3 σ_j (δ_jk − σ_k)."""
    om = torch.tensor(omega, requires_grad=True)
    idx = torch.tensor([0, 2])            # a batch holding samples 0 and 2
    losses = torch.tensor([2.0, 0.5])     # ℓ_0, ℓ_2
    selector_loss(om, idx, losses).backward()
    e = [math.exp(x) for x in omega]
    sig = [x / sum(e) for x in e]
    expected = []
    for k in range(3):
        g = 0.0
        for j, l in zip((0, 2), (2.0, 0.5)):
            g += l * 3 * sig[j] * ((1.0 if j == k else 0.0) - sig[k])
        expected.append(g / 2)
    assert om.grad.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-7)
    # the high-loss sample 0 is pushed down (positive gradient ⇒ ω_0 decreases under descent)
    assert om.grad[0] > 0 and om.grad[1] < 0


@pytest.mark.unit
def test_selector_loss_does_not_backpropagate_into_the_losses():
    om = torch.zeros(3, requires_grad=True)
    losses = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    selector_loss(om, torch.arange(3), losses).backward()
    assert losses.grad is None and om.grad is not None


@pytest.mark.unit
def test_algorithm1_loss_gap_vs_algorithm2():
    """Algorithm 1 steps ω on the gap ℓ(θ;z_j) − ℓ(θ̂;z_j); Algorithm 2 assumes the inner min ≈ 0."""
    idx = torch.tensor([0, 1, 2])
    l_theta = torch.tensor([2.0, 1.0, 0.7])
    l_hat = torch.tensor([1.9, 0.2, 0.7])   # θ̂ fits sample 0 as badly as θ does: no signal there

    def grad(signal):
        om = torch.tensor([0.2, 0.0, -0.1], requires_grad=True)
        selector_loss(om, idx, signal).backward()
        return om.grad

    g2 = grad(l_theta)
    g1 = grad(l_theta - l_hat)
    assert not torch.allclose(g1, g2)
    # Algorithm 2 down-weights the sample with the highest loss, Algorithm 1 the one with the largest gap
    assert int(torch.argmax(g2)) == 0 and int(torch.argmax(g1)) == 1
    # with θ̂ at loss 0 the two coincide
    assert torch.allclose(grad(l_theta - torch.zeros(3)), g2)


@pytest.mark.unit
def test_model_loss_mixes_safe_and_weighted_fine_tuning_losses_and_detaches_the_weights():
    safe = torch.tensor(0.4, requires_grad=True)
    ft = torch.tensor([1.0, 3.0], requires_grad=True)
    w = torch.tensor([0.5, 1.5], requires_grad=True)
    loss = model_loss(0.94, safe, ft, w)
    assert float(loss.detach()) == pytest.approx(0.94 * 0.4 + 0.06 * (0.5 * 1.0 + 1.5 * 3.0) / 2)
    loss.backward()
    assert w.grad is None
    assert ft.grad.tolist() == pytest.approx([0.06 * 0.5 / 2, 0.06 * 1.5 / 2])


@pytest.mark.unit
def test_u_schedule_starts_at_one_and_falls_by_003_per_epoch():
    assert [u_at_epoch(e, 1.0, 0.03) for e in range(3)] == pytest.approx([1.0, 0.97, 0.94])
    assert u_at_epoch(100, 1.0, 0.03) == 0.0


@pytest.mark.unit
def test_top_p_cut_keeps_largest_omega_with_ties_in_order():
    omega = torch.tensor([0.1, 0.9, -0.5, 0.1, 0.3])
    rank, kept = top_p_cut(omega, 0.8)           # ceil(0.8 · 5) = 4
    assert rank.tolist() == [2, 0, 4, 3, 1]
    assert kept.tolist() == [True, True, False, True, True]
    _, kept = top_p_cut(omega, 0.5)              # ceil(2.5) = 3
    assert kept.tolist() == [True, True, False, False, True]


@pytest.mark.unit
def test_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="algorithm"):
        SealConfig(algorithm=3)
    with pytest.raises(ValueError, match="topp"):
        SealConfig(topp=0)
    with pytest.raises(ValueError, match="zip_mode"):
        SealConfig(zip_mode="longest")


# -- the method on a random tiny Llama ------------------------------------------------------------

@pytest.mark.contract
@pytest.mark.parametrize("algorithm", [1, 2])
def test_prepare_trains_a_selector_on_a_copy_cuts_and_records(algorithm):
    torch.set_num_threads(1)
    ctx = make_context()
    start = {n: p.detach().clone() for n, p in ctx.model.named_parameters()}
    n = len(ctx.train_ids)
    m = Seal(SealConfig(algorithm=algorithm, selector_epochs=2, model_lr=1e-3, zip_mode="cycle_safe",
                        selector_batch_size=4))
    m.prepare(ctx)
    # phase 1 never touched the run's model
    assert all(torch.equal(start[k], p) for k, p in ctx.model.named_parameters())
    # the cut: ceil(0.8 · 8) = 7 kept, ranked by ω
    assert len(ctx.train_ids) == math.ceil(0.8 * n)
    cut = ctx.logged["seal_cut"]
    assert len(cut) == n and sum(r["kept"] for r in cut) == len(ctx.train_ids)
    dropped = [r for r in cut if not r["kept"]]
    assert all(r["omega"] <= min(k["omega"] for k in cut if k["kept"]) for r in dropped)
    # ω moved away from uniform, and σ̃ keeps mean one
    sel = ctx.logged["seal_selector"]
    last = max(r["step"] for r in sel)
    final = [r for r in sel if r["step"] == last]
    assert len(final) == n
    assert sum(r["weight"] for r in final) / n == pytest.approx(1.0, rel=1e-5)
    assert max(r["omega"] for r in final) - min(r["omega"] for r in final) > 1e-4
    assert {"step", "sample_id", "omega", "weight", "loss", "phase"} <= set(sel[0])
    if algorithm == 1:
        assert "gap" in sel[0] and "aux_loss" in ctx.logged["seal_steps"][0]
    # u per epoch and the safe loss
    ep = ctx.logged["seal_epochs"]
    assert [r["u"] for r in ep] == pytest.approx([1.0, 0.97])
    assert all(math.isfinite(r["safe_loss"]) for r in ep)
    # phase 2: plain SFT on the kept subset, weight 1, parameters move
    before = train_steps(m, ctx, n_steps=2)
    d = ctx.last_decision
    assert torch.all(d.weights == 1) and set(d.scores) == {"omega", "selector_weight"}
    assert d.step_metrics["phase"] == "sft"
    assert any(not torch.equal(before[k], p) for k, p in ctx.model.named_parameters())


@pytest.mark.contract
def test_high_loss_samples_are_down_weighted_under_the_safety_anchored_model():
    """With u = 1 the model sees only safe data; a sample whose loss is high gets the smallest ω."""
    torch.set_num_threads(1)
    ctx = make_context()
    m = Seal(SealConfig(selector_epochs=1, model_lr=1e-3, zip_mode="cycle_safe", selector_batch_size=8,
                        selector_lr=5e-2))
    m.prepare(ctx)
    final = {r["sample_id"]: r for r in ctx.logged["seal_selector"] if r["step"] == 0}
    losses = {s: r["loss"] for s, r in final.items()}
    worst = max(losses, key=losses.get)
    best = min(losses, key=losses.get)
    assert final[worst]["omega"] < final[best]["omega"]


@pytest.mark.contract
def test_lora_selector_restores_adapters_and_transfer_uses_another_model():
    torch.set_num_threads(1)
    ctx = make_context(lora=True)
    start = {n: p.detach().clone() for n, p in ctx.model.named_parameters() if p.requires_grad}
    Seal(SealConfig(selector_epochs=1, model_lr=1e-2, zip_mode="cycle_safe")).prepare(ctx)
    assert all(torch.equal(start[n], p) for n, p in ctx.model.named_parameters() if p.requires_grad)


@pytest.mark.contract
def test_transfer_trains_the_selector_on_another_model_with_its_own_tokenizer(tmp_path):
    """selector_model = a saved checkpoint whose tokenizer numbers words differently: SEAL encodes the
    data with that tokenizer (not the run's), trains the selector there, and leaves the run's model alone."""
    from _method_helpers import HARMFUL, REFUSALS, TASK
    from explorer.model.load import load_model
    from explorer.prepare.specs import resolve_spec
    from explorer.prepare.tiny import train_tokenizer

    # another vocabulary: extra words first, so every shared word gets another id
    other_tok = train_tokenizer(["zebra quokka " * 50] + [p + " " + r for p, r in TASK + HARMFUL + REFUSALS])
    make_model(other_tok, seed=3).save_pretrained(tmp_path / "other")
    other_tok.save_pretrained(tmp_path / "other")
    ctx = make_context()
    ctx.load_model = lambda spec: load_model(resolve_spec(spec), "cpu", trainable=False)[0]   # as the recipe does
    rec = ctx.records["task-0"]
    ours = ctx.encode([rec]).input_ids[0].tolist()
    theirs = Seal(SealConfig())._encoder_for(ctx, str(tmp_path / "other"))([rec]).input_ids[0].tolist()
    assert ours != theirs and len(other_tok) != len(ctx.tokenizer)
    start = {n: p.detach().clone() for n, p in ctx.model.named_parameters()}
    m = Seal(SealConfig(selector_epochs=1, model_lr=1e-3, selector_model=str(tmp_path / "other")))
    m.prepare(ctx)
    assert all(torch.equal(start[k], p) for k, p in ctx.model.named_parameters())
    assert len(ctx.train_ids) == 7 and len(ctx.logged["seal_selector"]) > 0


@pytest.mark.unit
def test_resume_reuses_the_recorded_cut(tmp_path):
    """prepare() runs again on --resume: the cut in the run folder is reused, no selector retraining."""
    import pandas as pd

    ctx = make_context()
    (tmp_path / "seal_cut").mkdir()
    ids = list(ctx.train_ids)
    pd.DataFrame([{"step": 5, "sample_id": s, "omega": float(i), "kept": i >= 2}
                  for i, s in enumerate(ids)]).to_parquet(tmp_path / "seal_cut" / "part-00000.parquet")
    ctx.run_dir = str(tmp_path)
    Seal(SealConfig()).prepare(ctx)
    assert ctx.train_ids == ids[2:]
    assert "seal_selector" not in ctx.logged and "seal_cut" not in ctx.logged


@pytest.mark.integration
def test_seal_through_the_loop(short_config):
    from explorer.runs import reader
    from explorer.train.recipe import run

    d = run(short_config("method=seal", "method.selector_epochs=1", "method.zip_mode=cycle_safe",
                         "method.model_lr=2e-4", "optim.max_steps=2"))
    assert reader.manifest(d)["status"] == "complete"
    cut = reader.table(d, "seal_cut")
    samples = reader.samples(d)
    mix = samples[samples["in_mix"]]
    assert len(cut) == len(mix) == 64 and int(cut["kept"].sum()) == math.ceil(0.8 * 64)
    assert set(mix[mix["in_train"]]["sample_id"]) == set(cut[cut["kept"]]["sample_id"])
    sel = reader.table(d, "seal_selector")
    assert sel["sample_id"].nunique() == 64 and (sel["phase"] == "selector").all()
    assert not reader.table(d, "seal_epochs").empty and not reader.table(d, "seal_steps").empty
    steps = reader.steps(d)
    assert list(steps["phase"]) == ["sft", "sft"]
    dec = reader.table(d, "decisions")
    assert set(dec["sample_id"]) <= set(cut[cut["kept"]]["sample_id"]) and dec["omega"].notna().all()
