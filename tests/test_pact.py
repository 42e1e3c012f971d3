"""PACT: the safety set, v and w from hand-made p_A / p_B, the competitive index, the gate, the mixed
target, the KL, who gets pulled (no gradient outside S; the reference's value on a zero-weight token
is irrelevant), the z_post alignment, and the method on a random tiny Llama (full and LoRA)."""

from __future__ import annotations

import math

import pytest
import torch

from explorer.methods.pact import (Pact, PactConfig, assistant_header_ids, competitive_index, gate,
                                   gather_positions, mixed_target, pact_kl, position_means, response_span,
                                   safety_set)

from _method_helpers import make_context, train_steps


# -- stage 1 ----------------------------------------------------------------------------------------

@pytest.mark.unit
def test_d_is_the_mean_over_samples_of_position_means():
    # two samples over V = 3, the second with one valid position of two
    p_a = torch.tensor([[[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]],
                        [[0.5, 0.5, 0.0], [9.0, 9.0, 9.0]]])     # row 1, position 1 is padding
    p_b = torch.tensor([[[0.2, 0.4, 0.4], [0.2, 0.6, 0.2]],
                        [[0.1, 0.1, 0.8], [9.0, 9.0, 9.0]]])
    lengths = torch.tensor([2, 1])
    d = (position_means(p_a, lengths) - position_means(p_b, lengths)).mean(0)
    # sample 0: mean p_A = [.4, .25, .35], mean p_B = [.2, .5, .3]; sample 1: [.5,.5,0] − [.1,.1,.8]
    expected = [((0.4 - 0.2) + (0.5 - 0.1)) / 2, ((0.25 - 0.5) + (0.5 - 0.1)) / 2, ((0.35 - 0.3) + (0.0 - 0.8)) / 2]
    assert d.tolist() == pytest.approx(expected)


@pytest.mark.unit
def test_safety_set_v_and_w_from_hand_made_distributions():
    p_bar_a = torch.tensor([0.40, 0.05, 0.30, 0.02, 0.20, 0.03])
    d = torch.tensor([0.30, -0.10, 0.10, 0.00, -0.20, 0.05])
    S, v, w = safety_set(d, p_bar_a, k=3, eps=0.0)
    assert S.tolist() == [0, 2, 4]                       # top-3 by p̄_A, not by d
    dS = [0.30, 0.10, -0.20]
    mean = sum(dS) / 3
    std = math.sqrt(sum((x - mean) ** 2 for x in dS) / 2)  # unbiased, as torch.std and the release
    z = [(x - mean) / std for x in dS]
    norm = math.sqrt(sum(x * x for x in z))
    expected_v = [0.0] * 6
    for s, zz in zip((0, 2, 4), z):
        expected_v[s] = zz / norm
    assert v.tolist() == pytest.approx(expected_v, abs=1e-6)
    assert w.tolist() == pytest.approx([max(x, 0.0) for x in expected_v], abs=1e-6)
    assert float(v.norm()) == pytest.approx(1.0)
    # token 1 has a large |d| but is outside S: zero; token 4 is in S with negative v: zero weight
    assert v[1] == 0 and w[4] == 0 and w[0] > w[2] > 0


# -- the gate ---------------------------------------------------------------------------------------

@pytest.mark.unit
def test_excluded_tokens_never_enter_the_safety_set():
    p_bar_a = torch.tensor([0.40, 0.30, 0.15, 0.10, 0.05])
    d = torch.tensor([-0.2, 0.3, 0.1, -0.1, 0.2])
    S, v, w = safety_set(d, p_bar_a, k=3)
    assert S.tolist() == [0, 1, 2]
    S, v, w = safety_set(d, p_bar_a, k=3, exclude=[0])      # token 0 (say </s>) is kept out
    assert S.tolist() == [1, 2, 3] and v[0] == 0 and w[0] == 0
    assert float(v.norm()) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.unit
def test_competitive_index_counts_tokens_to_mass_09():
    z = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.95, 0.03, 0.01, 0.01]]))
    assert competitive_index(z, 0.9).tolist() == pytest.approx([3 / 4, 1 / 4])
    flat = torch.zeros(10)
    assert float(competitive_index(flat, 0.9)) == pytest.approx(9 / 10)
    # the temperature flattens: at T_gate = 10 the first row needs all four tokens
    assert float(competitive_index(z[0], 0.9, temperature=10.0)) == pytest.approx(1.0)


@pytest.mark.unit
def test_gate_values_at_chosen_indices_and_positions():
    I_tr = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.1])
    I_post = torch.tensor([0.1, 0.1, 0.1, 0.1, 0.5])
    t = torch.tensor([0, 8, 12, 24, 0])
    c = gate(I_tr, I_post, t, alpha=2.0, b=0.0, n_prefix=8, tau_d=8.0)
    s = 1 / (1 + math.exp(-0.8))
    expected = [s, s, s * math.exp(-0.5), s * math.exp(-2.0), 1 / (1 + math.exp(0.8))]
    assert c.tolist() == pytest.approx(expected, rel=1e-6)
    # the bias shifts the midpoint; τ_d ≤ 0 is a hard cut at N
    assert float(gate(torch.tensor(0.5), torch.tensor(0.1), torch.tensor(0), b=0.4)) == pytest.approx(0.5)
    hard = gate(I_tr[:3], I_post[:3], torch.tensor([7, 8, 9]), tau_d=0.0)
    assert hard.tolist() == pytest.approx([s, 0.0, 0.0])


@pytest.mark.unit
def test_mixed_target_and_kl_by_hand():
    z_full = torch.tensor([2.0, 0.0, 1.0])
    z_post = torch.tensor([0.0, 2.0, 0.0])
    w = torch.tensor([0.5, 1.0, 0.0])
    c, T = torch.tensor(0.25), 2.0
    z_mix = [0.75 * a + 0.25 * b for a, b in zip(z_full.tolist(), z_post.tolist())]   # [1.5, .5, .75]
    e = [math.exp(x / T) for x in z_mix]
    sm = [x / sum(e) for x in e]
    un = [p * ww for p, ww in zip(sm, w.tolist())]
    q_expected = [x / sum(un) for x in un]
    q = mixed_target(z_full, z_post, c, w, T)
    assert q.tolist() == pytest.approx(q_expected, rel=1e-6)
    assert float(q[2]) == 0.0
    z_theta = torch.tensor([0.3, -0.2, 0.9])
    e = [math.exp(x / T) for x in z_theta.tolist()]
    p_theta = [x / sum(e) for x in e]
    kl = sum(qq * math.log(qq / pp) for qq, pp in zip(q_expected, p_theta) if qq > 0)
    assert float(pact_kl(q, z_theta, T)) == pytest.approx(T * T * kl, rel=1e-5)
    # no KL when the model already matches the (reweighted) target
    assert float(pact_kl(q, torch.log(q.clamp_min(1e-30)) * T, T)) == pytest.approx(0.0, abs=1e-4)


@pytest.mark.unit
def test_no_pull_outside_s_and_reference_irrelevant_on_zero_weight_tokens():
    torch.manual_seed(0)
    V, T = 8, 2.0
    S = torch.tensor([1, 4, 6])
    w_S = torch.tensor([0.7, 0.0, 0.3])                   # token 4 has zero weight
    z_theta = torch.randn(V, requires_grad=True)          # the model's full-vocabulary logits
    z_full, z_post = torch.randn(V), torch.randn(V)
    c = torch.tensor(0.4)

    def loss(zf, zp):
        q = mixed_target(zf[S], zp[S], c, w_S, T)
        return pact_kl(q, z_theta[S], T), q

    L, q = loss(z_full, z_post)
    L.backward()
    g = z_theta.grad
    outside = [i for i in range(V) if i not in S.tolist()]
    assert torch.all(g[outside] == 0)                      # tokens outside S: no gradient at all
    # inside S the gradient is T · (p_θ − q): the zero-weight token is only pushed down, towards mass 0
    p_theta = torch.softmax(z_theta.detach()[S] / T, -1)
    assert g[S].tolist() == pytest.approx((T * (p_theta - q)).tolist(), abs=1e-6)
    assert float(q[1]) == 0.0
    # the reference's value on the zero-weight token has no influence on the target or the loss
    zf2, zp2 = z_full.clone(), z_post.clone()
    zf2[4] += 5.0
    zp2[4] -= 3.0
    L2, q2 = loss(zf2, zp2)
    assert torch.allclose(q, q2) and float(L2.detach()) == pytest.approx(float(L.detach()))
    # ... whereas the reference's value on a weighted token does move the target
    zf2[1] += 1.0
    assert not torch.allclose(loss(zf2, z_post)[1], q)


# -- positions ------------------------------------------------------------------------------------

@pytest.mark.unit
def test_response_span_and_gather_positions():
    labels = torch.tensor([[-100, -100, 5, 6, 7, -100], [-100, 8, 9, -100, -100, -100]])
    start, count = response_span(labels)
    assert start.tolist() == [2, 1] and count.tolist() == [3, 2]
    logits = torch.arange(2 * 6 * 2, dtype=torch.float).view(2, 6, 2)
    g = gather_positions(logits, start - 1, 3)
    assert torch.equal(g[0], logits[0, 1:4]) and torch.equal(g[1, :2], logits[1, 0:2])


@pytest.mark.contract
def test_post_only_sequence_is_header_plus_response_without_last_token():
    ctx = make_context()
    m = Pact(PactConfig(k=10))
    m.prepare(ctx)
    assert m.header_ == assistant_header_ids(ctx.tokenizer)
    assert ctx.tokenizer.convert_ids_to_tokens(m.header_) == ["<|assistant|>"]
    batch = ctx.encode([ctx.records["ref-0"], ctx.records["task-2"]])
    start, count = response_span(batch.labels)
    ids, attn = m._post_batch(batch, start, count)
    h = len(m.header_)
    for b in range(2):
        s, a = int(start[b]), int(count[b])
        assert ids[b, :h].tolist() == m.header_
        assert ids[b, h:h + a - 1].tolist() == batch.input_ids[b, s:s + a - 1].tolist()
        assert int(attn[b].sum()) == h + a - 1
        # the prompt ends with the same header, so logit h−1+t of the post-only pass and logit s−1+t of
        # the full pass both predict response token t
        assert batch.input_ids[b, s - h:s].tolist() == m.header_


# -- the method on a random tiny Llama ------------------------------------------------------------

@pytest.mark.contract
def test_prepare_records_the_token_table_and_decide_trains():
    torch.set_num_threads(1)
    ctx = make_context()
    m = Pact(PactConfig(k=12))
    m.prepare(ctx)
    assert ctx.loaded == ["toy:base"]                      # the run's base_model
    rows = ctx.logged["pact_tokens"]
    assert len(rows) == 12 and all(r["step"] == 0 for r in rows)
    assert all(isinstance(r["token"], str) for r in rows)
    assert [r["rank"] for r in rows] == list(range(12))
    assert [r["p_aligned"] for r in rows] == sorted((r["p_aligned"] for r in rows), reverse=True)
    assert all(r["weight"] == pytest.approx(max(r["v"], 0.0)) for r in rows)
    assert sum(r["v"] ** 2 for r in rows) == pytest.approx(1.0, rel=1e-4)
    before = train_steps(m, ctx, n_steps=2)
    d = ctx.last_decision
    assert d.extra_loss is not None and torch.isfinite(d.extra_loss) and d.extra_loss.requires_grad
    assert {"ce", "kl", "pact_loss", "gate_mean"} <= set(d.step_metrics)
    assert d.step_metrics["kl"] > 0
    assert d.losses.requires_grad and torch.equal(d.weights, torch.tensor(
        [float(n) for n in ctx.encode([ctx.records[i] for i in ctx.train_ids[4:8]]).n_target_tokens]))
    pos = ctx.logged["pact_positions"]
    assert {r["step"] for r in pos} == {0, 1}
    assert all(0 <= r["gate"] <= 1 and 0 < r["I_trained"] <= 1 and 0 < r["I_post"] <= 1 for r in pos)
    assert any(not torch.equal(before[k], p) for k, p in ctx.model.named_parameters())
    assert not m._warned_header


@pytest.mark.contract
def test_stage1_teacher_forces_the_response_text_without_the_end_of_turn_token():
    """As the release (which tokenises the response text alone): the position that predicts the
    template's end-of-turn token is not among stage 1's R positions. With it, `</s>` entered S of a
    freshly prepared tiny world with weight 0 and PACT pushed the end of every answer down."""
    torch.set_num_threads(1)
    counts = {}
    for end in (False, True):
        ctx = make_context()
        Pact(PactConfig(k=12, stage1_end_token=end)).prepare(ctx)
        counts[end] = ctx.state["pact"]["n_positions"]
        recs = ctx.pool_records("reference")[:512]
    n_text = [len(ctx.tokenizer(r.response, add_special_tokens=False)["input_ids"]) for r in recs]
    assert counts[False] == sum(min(n, 64) for n in n_text)
    assert counts[True] == sum(min(n + 1, 64) for n in n_text)   # one end-of-turn position per refusal


@pytest.mark.contract
def test_lora_reference_is_the_unadapted_model():
    torch.set_num_threads(1)
    ctx = make_context(lora=True)
    m = Pact(PactConfig(k=10, reduction="sample"))
    m.prepare(ctx)
    assert m.reference_mode_ == "adapter_off" and m.ref_ is None
    base = ctx.reference_model()      # a copy taken while the adapters are still zero (peft: B = 0)
    train_steps(m, ctx, n_steps=3, lr=5e-2)                 # the adapters are now non-zero
    batch = ctx.encode([ctx.records["task-0"]])
    ref = m._ref_logits(ctx, batch.input_ids, batch.attention_mask)
    with torch.no_grad():
        adapted = ctx.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    with torch.no_grad():
        unadapted = base(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert torch.allclose(ref, unadapted, atol=1e-5)
    assert not torch.allclose(ref, adapted, atol=1e-4)
    assert ctx.model.training                                # the mode was restored
    assert torch.all(ctx.last_decision.weights == 1)


@pytest.mark.unit
def test_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="gate"):
        PactConfig(gate="soft")
    with pytest.raises(ValueError, match="max_response_tokens"):
        PactConfig(max_response_tokens=65)
    with pytest.raises(ValueError, match="reduction"):
        PactConfig(reduction="batch")


@pytest.mark.integration
def test_pact_through_the_loop(short_config):
    from explorer.runs import reader
    from explorer.train.recipe import run

    d = run(short_config("method=pact", "method.k=10", "method.n_refusals=64", "optim.max_steps=2"))
    assert reader.manifest(d)["status"] == "complete"
    tok = reader.table(d, "pact_tokens")
    assert len(tok) == 10 and tok["token"].str.len().gt(0).all() and (tok["weight"] >= 0).all()
    assert (tok["weight"] > 0).any() and tok["k"].eq(10).all()
    steps = reader.steps(d)
    assert {"ce", "kl", "pact_loss", "gate_mean"} <= set(steps.columns)
    assert (steps["extra_loss"] > 0).all() and steps["loss"].notna().all()
    pos = reader.table(d, "pact_positions")
    assert set(pos["step"]) == {0, 1} and pos["gate"].between(0, 1).all()


@pytest.mark.contract
def test_decide_with_kept_logits_gives_the_full_logits_losses(monkeypatch):
    """decide asks the model (and the reference) for the logits of response positions only; the
    cross-entropy, the KL and their gradients are those of the full logits."""
    import explorer.methods.pact as pact_module

    torch.set_num_threads(1)
    ctx = make_context()
    m = Pact(PactConfig(k=12, cache_reference=False))   # both calls run the reference
    m.prepare(ctx)
    batch = ctx.encode([ctx.records[i] for i in ctx.train_ids[:4]])
    assert pact_module.loss_kwargs(ctx.model, batch.labels)      # this batch does leave positions out

    def losses(d):
        total = (d.losses * d.weights).sum() / d.weights.sum() + d.extra_loss
        grads = torch.autograd.grad(total, [p for p in ctx.model.parameters() if p.requires_grad])
        return d.losses.detach(), d.extra_loss.detach(), grads

    kept = losses(m.decide(batch, ctx))
    monkeypatch.setattr(pact_module, "loss_kwargs", lambda model, labels: {})
    full = losses(m.decide(batch, ctx))
    assert torch.allclose(kept[0], full[0], rtol=1e-5, atol=1e-6)
    assert torch.allclose(kept[1], full[1], rtol=1e-5, atol=1e-7) and float(full[1]) > 0
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(kept[2], full[2]))


@pytest.mark.contract
def test_cached_reference_gives_the_losses_of_a_fresh_reference_forward_and_skips_it():
    """cache_reference: a sample's z_full_S and z_post_S are kept after its first batch. A later batch
    of kept samples, in another order and another padding, runs no reference forward and gives the
    CE, KL and gate that the reference forward gives (up to float rounding)."""
    torch.set_num_threads(1)
    ctx = make_context()
    cached, fresh = Pact(PactConfig(k=12)), Pact(PactConfig(k=12, cache_reference=False))
    cached.prepare(ctx)
    fresh.prepare(ctx)
    calls = []
    real = Pact._ref_logits

    def counting(self, *a, **kw):
        calls.append(self)
        return real(self, *a, **kw)

    Pact._ref_logits = counting
    try:
        ids = ctx.train_ids[:6]
        for chunk in (ids[:3], ids[3:]):                       # epoch 1: every sample seen once
            cached.decide(ctx.encode([ctx.records[i] for i in chunk]), ctx)
        assert len(calls) == 4 and len(cached._ref_cache) == 6  # two reference forwards per batch
        calls.clear()
        later = ctx.encode([ctx.records[i] for i in (ids[4], ids[0], ids[5], ids[2])])
        d_c = cached.decide(later, ctx)
        assert calls == [] and d_c.step_metrics["reference_cached"] == 1.0
        d_f = fresh.decide(later, ctx)
        assert len(calls) == 2 and d_f.step_metrics["reference_cached"] == 0.0
    finally:
        Pact._ref_logits = real
    assert torch.allclose(d_c.losses, d_f.losses)
    assert float(d_c.extra_loss) > 0
    assert float(d_c.extra_loss) == pytest.approx(float(d_f.extra_loss), rel=1e-5, abs=1e-7)
    for k in ("kl", "gate"):
        assert torch.allclose(d_c.scores[k], d_f.scores[k], rtol=1e-5, atol=1e-7), k
    # a batch with one sample not yet kept runs the reference for the whole batch and keeps the new one
    new = ctx.train_ids[6]
    cached.decide(ctx.encode([ctx.records[i] for i in (ids[0], new)]), ctx)
    assert len(cached._ref_cache) == 7
