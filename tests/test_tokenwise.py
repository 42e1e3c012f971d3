"""Token-wise constrained SFT (Qi et al. 2024): the β schedule, the token weights and their clamp,
the gradient against the constrained objective's, the reduction through the loop's formula, and the
method on a random tiny Llama (full and LoRA)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from explorer.methods.tokenwise import Tokenwise, TokenwiseConfig, beta_schedule, response_index, token_weights
from explorer.model.losses import per_sample_nll
from explorer.model.plumbing import token_logprobs

from _method_helpers import make_context, train_steps


@pytest.mark.unit
def test_beta_schedule_is_05_then_2_for_positions_2_to_5_then_01():
    assert beta_schedule(8).tolist() == pytest.approx([0.5, 2.0, 2.0, 2.0, 2.0, 0.1, 0.1, 0.1])
    assert beta_schedule(3).tolist() == pytest.approx([0.5, 2.0, 2.0])
    assert beta_schedule(1).tolist() == pytest.approx([0.5])
    assert beta_schedule(4, beta=0.2, bias_factor=10, bias_length=2, first_token_bias_factor=1).tolist() \
        == pytest.approx([0.2, 2.0, 0.2, 0.2])


@pytest.mark.unit
def test_token_weights_by_hand_and_the_clamp_is_on_the_weight():
    delta = torch.tensor([0.0, 1.0, -1.0, 10.0, 1.0])
    betas = torch.tensor([0.5, 2.0, 2.0, 2.0, 0.1])
    w = token_weights(delta, betas, min_weight=1e-3)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = [1.0, 2 * (1 - sig(2.0)), 2 * (1 - sig(-2.0)), max(2 * (1 - sig(20.0)), 1e-3), 2 * (1 - sig(0.1))]
    assert w.tolist() == pytest.approx(expected, rel=1e-6)
    assert float(w[3]) == pytest.approx(1e-3)          # 2(1 − σ(20)) ≈ 4e-9 is clamped up to 1e-3
    # Δ is detached: the weights carry no gradient
    d = delta.clone().requires_grad_(True)
    assert not token_weights(d, betas).requires_grad


@pytest.mark.unit
def test_weighted_ce_gradient_equals_the_constrained_objective_gradient():
    """∇[−(2/β) log σ(β (log π_θ − log π_ref))] = 2 (1 − σ(β Δ)) ∇(−log π_θ)."""
    torch.manual_seed(0)
    z = torch.randn(4, 6, requires_grad=True)           # 4 positions, vocabulary 6
    z_ref = torch.randn(4, 6)
    y = torch.tensor([1, 0, 5, 2])
    betas = beta_schedule(4)
    logp = F.log_softmax(z, -1).gather(-1, y[:, None]).squeeze(-1)
    ref = F.log_softmax(z_ref, -1).gather(-1, y[:, None]).squeeze(-1)
    objective = (-(2 / betas) * F.logsigmoid(betas * (logp - ref))).sum()
    g_obj, = torch.autograd.grad(objective, z, retain_graph=True)
    weighted = (token_weights(logp - ref, betas, 0.0) * -logp).sum()
    g_w, = torch.autograd.grad(weighted, z)
    assert torch.allclose(g_obj, g_w, atol=1e-6)


@pytest.mark.unit
def test_response_index_counts_within_each_response():
    mask = torch.tensor([[False, True, True, True, False], [True, True, False, False, False]])
    assert response_index(mask).tolist() == [[-1, 0, 1, 2, -1], [0, 1, -1, -1, -1]]


@pytest.mark.unit
def test_token_logprobs_match_per_sample_nll():
    torch.manual_seed(1)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, 1], [-100, 2, 6, -100, -100]])
    logp, mask = token_logprobs(logits, labels)
    assert torch.allclose(-(logp.sum(1) / mask.sum(1)), per_sample_nll(logits, labels), atol=1e-6)


@pytest.mark.contract
def test_decide_starts_as_sft_and_token_reduction_matches_the_release():
    torch.set_num_threads(1)
    ctx = make_context()
    m = Tokenwise(TokenwiseConfig())
    m.prepare(ctx)
    batch = ctx.encode([ctx.records[i] for i in ctx.train_ids[:4]])
    d = m.decide(batch, ctx)
    # θ = aligned at step 0: Δ = 0, every weight is 2(1 − σ(0)) = 1, the loss is plain CE
    assert d.step_metrics["token_weight"] == pytest.approx(1.0)
    with torch.no_grad():
        ce = per_sample_nll(ctx.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits,
                            batch.labels)
    assert torch.allclose(d.losses.detach(), ce, atol=1e-5)
    # the loop's Σ w_i ℓ_i / Σ w_i with w_i = n_i is the mean over all response tokens of the batch
    w = d.weights
    assert torch.equal(w, batch.n_target_tokens.float())
    with torch.no_grad():
        logp, mask = token_logprobs(ctx.model(input_ids=batch.input_ids,
                                              attention_mask=batch.attention_mask).logits, batch.labels)
    token_mean = float(-(logp.sum() / mask.sum()))
    assert float((w * d.losses.detach()).sum() / w.sum()) == pytest.approx(token_mean, rel=1e-5)
    # training moves the model; afterwards the weights leave 1
    before = train_steps(m, ctx, n_steps=3, lr=5e-2)
    assert any(not torch.equal(before[k], p) for k, p in ctx.model.named_parameters())
    d = m.decide(batch, ctx)
    assert abs(d.step_metrics["token_weight"] - 1.0) > 1e-3
    assert {"ce", "token_weight", "delta"} <= set(d.scores)


@pytest.mark.contract
def test_lora_uses_the_adapters_off_as_reference():
    torch.set_num_threads(1)
    ctx = make_context(lora=True)
    m = Tokenwise(TokenwiseConfig(reduction="sample"))
    m.prepare(ctx)
    assert m.reference_mode_ == "adapter_off"
    before = train_steps(m, ctx, n_steps=3, lr=5e-2)
    assert any(not torch.equal(before[k], p) for k, p in ctx.model.named_parameters() if p.requires_grad)
    assert torch.all(ctx.last_decision.weights == 1)
    assert abs(ctx.last_decision.step_metrics["delta"]) > 0      # the adapted model has moved away


@pytest.mark.unit
def test_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="beta"):
        TokenwiseConfig(beta=0)
    with pytest.raises(ValueError, match="reference"):
        TokenwiseConfig(reference="frozen")


@pytest.mark.integration
def test_tokenwise_through_the_loop(short_config):
    from explorer.runs import reader
    from explorer.train.recipe import run

    d = run(short_config("method=tokenwise", "optim.max_steps=2"))
    assert reader.manifest(d)["status"] == "complete"
    steps = reader.steps(d)
    assert {"ce", "weighted_ce", "token_weight", "token_weight_first"} <= set(steps.columns)
    # step 0 starts from the aligned model: every token weight is 1, the loss is plain CE
    assert steps.loc[steps["step"] == 0, "token_weight"].iloc[0] == pytest.approx(1.0, abs=1e-4)
    dec = reader.table(d, "decisions")
    assert {"ce", "token_weight", "delta"} <= set(dec.columns)
