"""Token-wise constrained SFT (Qi et al. 2024) — a baseline next to PACT.

Paper: "Safety Alignment Should Be Made More Than Just a Few Tokens Deep" (Qi, Panda, Lyu, Ma, Roy,
Beirami, Mittal, Henderson; arXiv 2406.05946, ICLR 2025). Authors' code: github
Unispac/shallow-vs-deep-alignment (finetuning_buckets/trainer/trainer.py, `soft_sft_loss`,
`get_beta_list`). Method notes: docs/methods/tokenwise.md.

The constrained objective  −Σ_t (2/β_t) log σ(β_t Δ_t),  Δ_t = log π_θ(y_t | x, y_<t) − log π_aligned(y_t | x, y_<t),
has the gradient of a cross-entropy on each response token weighted by 2(1 − σ(β_t Δ_t)). The release
implements exactly that (their Appendix D.2): per response token t (1-based)

    weight_t = max( 2 (1 − sigmoid(β_t Δ_t)), 1e-3 )       Δ_t detached; the clamp is on the WEIGHT
    loss     = mean over the batch's response tokens of  weight_t · (−log π_θ(y_t))

    β_t = β · first_token_bias_factor = 0.5   for t = 1
          β · bias_factor             = 2.0   for t = 2 … bias_length (= 5)
          β                           = 0.1   afterwards          (β = 0.1, factors 5 and 20)

At the start θ = aligned, Δ = 0 and every weight is 1 (plain SFT); a token whose probability has
risen above the aligned model's gets a smaller weight — sharply so in the first five positions,
where large β_t saturates the sigmoid — and one that has fallen gets up to 2.

How it meets the loop (loss = Σ_i w_i ℓ_i / Σ_i w_i + extra_loss): decide() returns
Decision.losses = ℓ_i = (1/n_i) Σ_t weight_t · CE_t, the per-sample mean of the weighted token CE,
and Decision.weights = n_i (the sample's response-token count) under `reduction: token`, so that
Σ_i n_i ℓ_i / Σ_i n_i is exactly the release's mean over all response tokens of the batch; under
`reduction: sample` the weights are 1 (the project's SFT averaging). No extra loss. This keeps the
loss in the loop's per-sample column, so the decisions table shows each sample's weighted CE next
to its plain CE and mean token weight.

Reference model: the frozen aligned model — ctx.reference_model() for a full-parameter model, the
run's own peft model with its adapters disabled for LoRA (`reference: auto`), as in PACT (the
plumbing is the same; the code is not shared).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from explorer.data.batch import Batch
from explorer.methods.protocol import Decision, MethodBase, dist_of, help_field as _h
from explorer.methods.registry import register
from explorer.model.plumbing import pick_reference, reference_logits, token_logprobs


@dataclass(frozen=True)
class TokenwiseConfig:
    """Defaults are the authors' (ConstrainedSFTTrainer: beta 0.1, bias_factor 20, bias_length 5,
    first_token_bias_factor 5, weights clamped at 1e-3)."""

    beta: float = _h("β: the β_t of positions after bias_length (authors: 0.1)", 0.1)
    bias_factor: float = _h("β_t = β · bias_factor for t = 2 … bias_length (authors: 20 → 2.0)", 20.0, ge=0)
    bias_length: int = _h("number of leading response tokens with the larger β (authors: 5)", 5)
    first_token_bias_factor: float = _h("β_1 = β · this (authors: 5 → 0.5; the first token's loss is "
                                        "already high, so its sigmoid would saturate fast)", 5.0, ge=0)
    min_weight: float = _h("lower clamp on each token weight 2(1 − σ(β_t Δ_t)) (authors: 1e-3)", 1e-3)
    reduction: str = _h("token: mean over all response tokens of the batch (authors) | sample: "
                        "per-sample means, equal weights (the project's SFT)", "token")
    reference: str = _h("auto | copy (ctx.reference_model()) | adapter_off (the peft model with its "
                        "adapters disabled); auto = adapter_off for a peft model, else copy", "auto")

    def __post_init__(self):
        if self.beta <= 0:
            raise ValueError(f"method.beta = {self.beta}: expected > 0")
        if self.bias_length < 0:
            raise ValueError(f"method.bias_length = {self.bias_length}: expected >= 0")
        if not 0 <= self.min_weight < 2:
            raise ValueError(f"method.min_weight = {self.min_weight}: expected a number in [0, 2)")
        if self.reduction not in ("token", "sample"):
            raise ValueError(f"method.reduction = {self.reduction!r}: expected token or sample")
        if self.reference not in ("auto", "copy", "adapter_off"):
            raise ValueError(f"method.reference = {self.reference!r}: expected auto, copy or adapter_off")


# --------------------------------------------------------------------------------------------------
# pure maths
# --------------------------------------------------------------------------------------------------

def beta_schedule(n: int, beta: float = 0.1, bias_factor: float = 20.0, bias_length: int = 5,
                  first_token_bias_factor: float = 5.0) -> torch.Tensor:
    """β_t for response positions t = 1 … n (returned 0-based: [n])."""
    b = torch.full((n,), float(beta))
    b[:bias_length] = beta * bias_factor
    if bias_length > 0 and n > 0:
        b[0] = beta * first_token_bias_factor
    return b


def token_weights(delta: torch.Tensor, betas: torch.Tensor, min_weight: float = 1e-3) -> torch.Tensor:
    """max(2 (1 − sigmoid(β_t Δ_t)), min_weight) with Δ detached: the weights carry no gradient."""
    return (2.0 * (1.0 - torch.sigmoid(betas * delta.detach()))).clamp_min(min_weight)


def response_index(mask: torch.Tensor) -> torch.Tensor:
    """0-based position of each supervised token within its response (t − 1), −1 elsewhere."""
    return torch.where(mask, mask.long().cumsum(dim=1) - 1, torch.full_like(mask, -1, dtype=torch.long))


# --------------------------------------------------------------------------------------------------
# the method
# --------------------------------------------------------------------------------------------------

@register("tokenwise", TokenwiseConfig)
class Tokenwise(MethodBase):
    def prepare(self, ctx) -> None:
        # the copy must be taken before step 0
        self.reference_mode_, self.ref_ = pick_reference(ctx.model, self.config.reference, "tokenwise",
                                                         ctx.reference_model)

    def _ref_logits(self, ctx, batch: Batch) -> torch.Tensor:
        return reference_logits(ctx.model, self.ref_, batch.input_ids, batch.attention_mask, ctx.autocast_dtype)

    def decide(self, batch: Batch, ctx) -> Decision:
        c = self.config
        with ctx.autocast():
            out = ctx.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        logp, mask = token_logprobs(out.logits, batch.labels)                    # [B, L-1]
        ref_logp, _ = token_logprobs(self._ref_logits(ctx, batch), batch.labels)
        delta = (logp - ref_logp).detach()                                       # Δ_t
        t = response_index(mask)                                                 # [B, L-1]
        n_max = int(t.max()) + 1 if mask.any() else 0
        betas = beta_schedule(max(n_max, 1), c.beta, c.bias_factor, c.bias_length,
                              c.first_token_bias_factor).to(logp.device)
        beta_t = betas[t.clamp_min(0)]
        weight = token_weights(delta, beta_t, c.min_weight) * mask              # [B, L-1]
        n = mask.sum(dim=1).clamp_min(1).float()
        nll = -logp
        losses = (weight * nll).sum(dim=1) / n                                   # ℓ_i (with graph)
        ce = (nll.detach() * mask).sum(dim=1) / n
        w_mean = weight.sum(dim=1) / n
        first = mask & (t < c.bias_length)
        later = mask & (t >= c.bias_length)
        B = len(batch)
        if c.reduction == "token":
            sample_w = mask.sum(dim=1).float()
        else:
            sample_w = torch.ones(B, device=logp.device)

        dist = dist_of(ctx)

        def avg(x, m):
            # over the global batch: this rank's sum over the global count, times the number of ranks
            # (the recipe averages step metrics over the ranks); one process: sum / count
            n = dist.all_sum(m.sum())
            return float(dist.world * (x * m).sum() / n) if n > 0 else float("nan")

        return Decision(
            weights=sample_w, losses=losses,
            scores={"ce": ce, "token_weight": w_mean.detach(),
                    "delta": ((delta * mask).sum(dim=1) / n).detach()},
            step_metrics={"ce": avg(nll.detach(), mask), "weighted_ce": avg((weight * nll).detach(), mask),
                          "token_weight": avg(weight, mask), "token_weight_first": avg(weight, first),
                          "token_weight_later": avg(weight, later), "delta": avg(delta, mask)})

    def state_dict(self) -> dict:
        return {}  # stateless between steps: the reference is rebuilt in prepare()

    def load_state_dict(self, state: dict) -> None:
        return None
