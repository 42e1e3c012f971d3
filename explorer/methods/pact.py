"""PACT — constraining safety tokens ("Few Tokens, Big Leverage").

Paper: arXiv 2603.07445 (KDD 2026). Authors' code: github Glresearch1/PACT
(compute_safety_tokens/compute_safety_tokens_pact.py, finetuning_pact.py). Specification:
docs/methods/pact.md.

Safety behaviour shows up in the model's confidence on a small set of safety-related tokens. PACT
regularises the fine-tuned model towards the aligned model's distribution over those tokens at every
response position and leaves every other token free. No safety data is mixed in.

Stage 1 (offline, in `prepare`). K refusal samples (harmful prompt → refusal); the first R ≤ 64
response tokens are teacher-forced through the aligned model π_A (the run's starting model) and the
base model π_B (`model.base` of the run, or `method.base_model`):

    d   = mean over samples of the mean over positions of (p_A,t − p_B,t)        (vocabulary-sized)
    p̄_A = the same mean of p_A,t
    S   = top-k tokens by p̄_A                                              (k = 50 in the README)
    v   = L2-normalise( z-score of d on S, 0 outside S );   w_s = max(v_s, 0)

The K samples are the first K of the refusal pool; each sample's positions are averaged first, then
the samples (as the release does). [choice] Both models see the run's chat format (the tiny base was
trained on it); the release renders the base model's prompt as plain "User: … Assistant: " because a
real base checkpoint has no chat template. As in the release, the R positions are those of the
response text alone: the template's end-of-turn token is not teacher-forced (`stage1_end_token`
includes it; on the tiny world that put `</s>` into S with weight 0 and made PACT push the end of every
answer down — docs/methods/pact.md).

Stage 2 (in `decide`). L = CE_task + λ · L_PACT. A frozen reference π_ref (the aligned model) gives
logits on the full sequence, z_full, and on the response with the prompt removed, z_post. Per
response position t (counted from 0, as in the release), everything restricted to S:

    I_x   = (number of top tokens of softmax(z_x,S / T_gate) needed to reach mass 0.9) / |S|
    c_t   = sigmoid(α (I_trained − I_post − b)) · exp(−max(t − N, 0) / τ_d)   α=2, b=0, N=8, τ_d=8
    z_mix = (1 − c_t) z_full + c_t z_post
    q_t   ∝ softmax(z_mix,S / T) ⊙ w                                          (renormalised)
    L_PACT = T² · mean_t KL(q_t ‖ softmax(z_θ,S / T))                           T = 2, λ = 1

I_trained uses the logits z_θ of the model being fine-tuned (full context, detached: a count has no
gradient), as the release does (`subset_logits_trn` in finetuning_pact.py). So the gate opens when
the fine-tuned model has become less decided over the safety tokens than the prompt-free reference:
then the target leans on z_post, the reference's prior over how a response begins regardless of the
prompt, and it closes (c_t → 0) after the first N positions. T_gate = 1 (the release's gate_T).

Positions of z_post. The release rebuilds a "post-only" sequence: the assistant header (the string
the chat template adds for add_generation_prompt) followed by the response tokens without the last
one, [header, y_0, …, y_{A−2}]. With h header tokens, the logit at index h − 1 + t predicts y_t —
the same token that the full-context logit at index s − 1 + t predicts, where s is the first
response position in the batch row. Both are gathered into [B, A_max, |S|] and masked past A_i.
The header is taken from the tokenizer, as in the release; if the prompt tokens of a batch do not end
with it (a tokenizer that merges across the boundary) a warning says so once.

Who gets pulled. Tokens outside S do not enter the loss at all: their logits get exactly zero
gradient. A token of S with weight w_s = 0 gets target mass q_s = 0, so the reference's value on it
has no influence whatever (the softmax normaliser cancels in the renormalisation); the KL still
pushes such a token's probability within S down (gradient T · p_θ,s), since all target mass sits on
the positively weighted tokens. This is the release's behaviour, kept as is. Both distributions are
renormalised over S, so the total probability the model puts on S is not constrained either: mass may
move to a token outside S (a compliance opener such as "sure") without any KL cost.

Reductions. `reduction: token` (the release): CE and KL are means over all response tokens of the
batch; the loop's formula Σ w_i ℓ_i / Σ w_i with w_i = n_i response tokens gives exactly the token
mean of the CE. `reduction: sample` uses per-sample means with equal weights (the project's SFT).

Reference model. `reference: auto` uses ctx.reference_model() (a frozen copy of the starting model)
for a full-parameter model and, for a peft (LoRA) model, the run's own model with its adapters
switched off (`with model.disable_adapter():`) — the base weights are exactly the aligned model and
no second copy is held in memory. The reference never changes, so `cache_reference` (on; not in the
release) keeps its logits on S at each sample's response positions, z_full and z_post, after the first
batch that holds the sample; a batch of kept samples (every epoch after the first) runs no reference
forward. The kept values equal a fresh forward's up to the float rounding of another batch's padding.

Records: pact_tokens (step 0, one row per token of S: token_id, token, rank, d, v, weight,
p_aligned, p_base), pact_positions (per step and response position: gate = mean c_t, I_trained,
I_post, kl, n), steps (ce, kl, pact_loss, gate_mean, reference_cached), decisions (per sample ce, kl, gate).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from explorer.data.batch import Batch
from explorer.data.tokenize import ContextLengthError, pad_id_of
from explorer.methods.protocol import Decision, MethodBase, dist_of, help_field as _h
from explorer.methods.registry import register
from explorer.model.losses import loss_kwargs, per_sample_nll
from explorer.model.plumbing import pick_reference, reference_logits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PactConfig:
    """Defaults are the paper's (docs/methods/pact.md) and the release's gate settings."""

    lam: float = _h("λ: weight of L_PACT in L = CE + λ L_PACT (paper: 1)", 1.0, ge=0)
    temperature: float = _h("T: temperature of the KL, which is scaled by T² (release: 2)", 2.0)
    k: int = _h("|S|: safety tokens kept, the top-k by p̄_A (README: 50)", 50)
    k_fraction: float = _h("if > 0, k = ceil(k_fraction · vocabulary) instead of `k` (tiny vocabularies)", 0.0)
    n_refusals: int = _h("K: refusal samples teacher-forced in stage 1 (paper: 512)", 512, gt=0)
    max_response_tokens: int = _h("R: first response tokens per refusal used in stage 1 (≤ 64)", 64)
    refusal_pool: str = _h("pool of refusal samples for stage 1; falls back to `safety` when empty", "reference")
    base_model: str = _h("π_B, the un-aligned base model (spec for load_model); empty = the run's "
                         "model.base", "")
    stage1_batch_size: int = _h("refusal samples per forward pass in stage 1", 8, gt=0)
    exclude_special_tokens: bool = _h("keep the tokenizer's special tokens (</s>, pad, chat markers) out of S; not in "
                                      "the release: a special token of S with weight 0 is pushed down at every "
                                      "position (docs/methods/pact.md)", False)
    stage1_end_token: bool = _h("also teacher-force the template's end-of-turn token in stage 1 (not the release: "
                                "it tokenises the response text alone; with it, `</s>` can enter S with weight 0 "
                                "and be pushed down at every position, docs/methods/pact.md)", False)
    gate_top_p: float = _h("mass that defines I_x: the share of S needed to reach it (release: 0.9)", 0.9)
    gate_temperature: float = _h("T_gate: temperature of softmax(z_x,S) inside I_x (release: 1)", 1.0)
    alpha: float = _h("α: slope of the gate sigmoid (release: 2)", 2.0)
    b: float = _h("b: bias of the gate (release: 0)", 0.0)
    n_prefix: int = _h("N: positions before the gate starts to decay (release: 8)", 8, ge=0)
    tau_d: float = _h("τ_d: decay length of the gate after N (release: 8); ≤ 0 = hard cut at N", 8.0)
    gate: str = _h("gated: c_t as above (PACT) | full: c_t = 0 (target from z_full only) | post: c_t = 1 "
                   "(ablations)", "gated")
    post_bos: bool = _h("prepend BOS to the prompt-free sequence (the release does not)", False)
    reduction: str = _h("token: means over all response tokens of the batch (release) | sample: per-sample "
                        "means, equal weights (the project's SFT)", "token")
    reference: str = _h("auto | copy (ctx.reference_model()) | adapter_off (the peft model with its "
                        "adapters disabled); auto = adapter_off for a peft model, else copy", "auto")
    record_positions: int = _h("response positions recorded per step in pact_positions", 64, ge=0)
    cache_reference: bool = _h("keep the frozen reference's logits on S (z_full and z_post at every response "
                               "position) per training sample after its first batch, so later epochs skip both "
                               "reference forwards (not in the release; the reference never changes, and the "
                               "values differ only by the float rounding of another batch's padding)", True)

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"method.k = {self.k}: expected >= 1")
        if not 0 <= self.k_fraction <= 1:
            raise ValueError(f"method.k_fraction = {self.k_fraction}: expected a share in [0, 1]")
        if not 1 <= self.max_response_tokens <= 64:
            raise ValueError(f"method.max_response_tokens = {self.max_response_tokens}: expected 1..64")
        if self.temperature <= 0 or self.gate_temperature <= 0:
            raise ValueError("method.temperature and method.gate_temperature: expected > 0")
        if not 0 < self.gate_top_p <= 1:
            raise ValueError(f"method.gate_top_p = {self.gate_top_p}: expected a share in (0, 1]")
        if self.gate not in ("gated", "full", "post"):
            raise ValueError(f"method.gate = {self.gate!r}: expected gated, full or post")
        if self.reduction not in ("token", "sample"):
            raise ValueError(f"method.reduction = {self.reduction!r}: expected token or sample")
        if self.reference not in ("auto", "copy", "adapter_off"):
            raise ValueError(f"method.reference = {self.reference!r}: expected auto, copy or adapter_off")
        if self.n_refusals < 1:
            raise ValueError(f"method.n_refusals = {self.n_refusals}: expected >= 1")


# --------------------------------------------------------------------------------------------------
# pure maths
# --------------------------------------------------------------------------------------------------

def position_means(p: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per-sample mean over its first lengths_b positions: p [B, R, V] → [B, V]. Stage 1 then averages
    these over samples (the release: mean over samples of per-sample position means)."""
    R = p.shape[1]
    mask = (torch.arange(R, device=p.device).unsqueeze(0) < lengths.unsqueeze(1)).to(p.dtype)  # [B, R]
    return (p * mask.unsqueeze(-1)).sum(1) / lengths.clamp_min(1).unsqueeze(1).to(p.dtype)


def safety_set(d: torch.Tensor, p_aligned: torch.Tensor, k: int, eps: float = 1e-6,
               exclude: list[int] | None = None):
    """Stage 1's last step. d, p_aligned: [V] (p_aligned = p̄_A).

    S = top-k by p̄_A (ordered by p̄_A, descending); d is zeroed outside S, z-scored on S (unbiased
    std, as torch.std and the release) and L2-normalised → v; w = max(v, 0). Token ids in `exclude`
    never enter S (not in the release; see PactConfig.exclude_special_tokens).
    Returns (S [k] long, v [V], w [V])."""
    V = d.numel()
    ranked = p_aligned.float().clone()
    if exclude:
        ranked[torch.tensor(sorted(set(exclude)), dtype=torch.long, device=ranked.device)] = float("-inf")
    k = min(int(k), V - len(set(exclude or [])))
    S = torch.topk(ranked, k).indices
    dS = d.float()[S]
    zS = dS - dS.mean()
    if k > 1:
        zS = zS / (dS.std() + eps)
    v = torch.zeros(V, dtype=torch.float32, device=d.device)
    v[S] = zS
    v = v / (v.norm() + eps)
    return S, v, v.clamp_min(0.0)


def competitive_index(z_S: torch.Tensor, top_p: float = 0.9, temperature: float = 1.0) -> torch.Tensor:
    """I = (smallest number of top tokens of softmax(z_S / T_gate) whose mass reaches top_p) / |S|.
    z_S: [..., |S|] → [...]. No gradient (a count)."""
    p = torch.softmax(z_S.detach().float() / temperature, dim=-1)
    cdf = p.sort(dim=-1, descending=True).values.cumsum(dim=-1)
    count = ((cdf < top_p).sum(dim=-1) + 1).clamp_max(z_S.shape[-1])
    return count.float() / z_S.shape[-1]


def gate(I_trained: torch.Tensor, I_post: torch.Tensor, t: torch.Tensor, alpha: float = 2.0, b: float = 0.0,
         n_prefix: int = 8, tau_d: float = 8.0) -> torch.Tensor:
    """c_t = sigmoid(α (I_trained − I_post − b)) · exp(−max(t − N, 0) / τ_d); τ_d ≤ 0: hard cut (t < N)."""
    c = torch.sigmoid(alpha * (I_trained - I_post - b))
    t = t.to(c.dtype)
    if tau_d > 0:
        return c * torch.exp(-(t - n_prefix).clamp_min(0.0) / tau_d)
    return c * (t < n_prefix).to(c.dtype)


def mixed_target(z_full_S: torch.Tensor, z_post_S: torch.Tensor, c: torch.Tensor, w_S: torch.Tensor,
                 T: float = 2.0) -> torch.Tensor:
    """q_t ∝ softmax(((1 − c_t) z_full + c_t z_post) / T) ⊙ w, renormalised over S.
    z_*: [..., |S|], c: [...], w_S: [|S|] → q: [..., |S|]."""
    c = c.unsqueeze(-1)
    z_mix = (1.0 - c) * z_full_S.float() + c * z_post_S.float()
    q = torch.softmax(z_mix / T, dim=-1) * w_S.float()
    return q / q.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def pact_kl(q: torch.Tensor, z_theta_S: torch.Tensor, T: float = 2.0) -> torch.Tensor:
    """T² · KL(q ‖ softmax(z_θ,S / T)) per position: [..., |S|] → [...] (gradient flows into z_θ)."""
    log_p = F.log_softmax(z_theta_S.float() / T, dim=-1)
    log_q = q.clamp_min(1e-12).log()
    return (T ** 2) * (q * (log_q - log_p)).sum(dim=-1)


def response_span(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(start [B], count [B]) of the supervised response tokens (contiguous, labels != -100)."""
    mask = labels != -100
    count = mask.sum(dim=1)
    start = torch.where(count > 0, mask.int().argmax(dim=1), torch.zeros_like(count))
    return start, count


def at_positions(logits_S: torch.Tensor, positions: torch.Tensor | None, L: int) -> torch.Tensor:
    """[B, K, k] logits kept at sequence `positions` -> [B, L, k] with them in place and zeros elsewhere
    (None: already [B, L, k]). Every position that the KL reads (a response token's predictor) is kept."""
    if positions is None:
        return logits_S
    full = logits_S.new_zeros(logits_S.shape[0], L, logits_S.shape[-1])
    return full.index_copy(1, positions, logits_S)


def gather_positions(logits_S: torch.Tensor, first: torch.Tensor, n: int) -> torch.Tensor:
    """logits_S [B, L, k] → [B, n, k]: rows first_b + t for t < n (clamped into range; mask later)."""
    B, L, k = logits_S.shape
    idx = (first.unsqueeze(1) + torch.arange(n, device=logits_S.device).unsqueeze(0)).clamp(0, L - 1)
    return logits_S.gather(1, idx.unsqueeze(-1).expand(B, n, k))


# --------------------------------------------------------------------------------------------------
# the method
# --------------------------------------------------------------------------------------------------

def _recorded(ctx, table: str) -> bool:
    from pathlib import Path

    return bool(ctx.run_dir) and any((Path(ctx.run_dir) / table).glob("part-*.parquet"))


def assistant_header_ids(tokenizer) -> list[int]:
    """The tokens the chat template adds for add_generation_prompt (as the release derives them);
    without a template, the plain format's "Assistant:"."""
    header = ""
    if getattr(tokenizer, "chat_template", None):
        msgs = [{"role": "user", "content": "hello"}]
        try:
            s0 = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
            s1 = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            header = s1[len(s0):] if s1.startswith(s0) else ""
        except Exception as e:  # templates raise many types; fall back like the release, and say so
            log.warning("pact: the chat template did not render a generation prompt (%s: %s); using the "
                        "plain 'Assistant:' header", type(e).__name__, e)
            header = ""
    ids = tokenizer(header if header.strip() else "Assistant:", add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError("pact: the assistant header tokenises to nothing; expected a chat template "
                         "whose generation prompt is non-empty")
    return list(ids)


@register("pact", PactConfig)
class Pact(MethodBase):
    def __init__(self, config: PactConfig):
        super().__init__(config)
        self.S_: torch.Tensor | None = None     # safety-token ids [k]
        self.w_S_: torch.Tensor | None = None   # their weights [k]
        self.header_: list[int] = []
        self._warned_header = False
        self._ref_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}   # cache_reference: tokens -> (z_full_S, z_post_S)

    # -- reference plumbing ---------------------------------------------------------------------
    def _setup_reference(self, ctx) -> None:
        self.reference_mode_, self.ref_ = pick_reference(ctx.model, self.config.reference, "pact",
                                                         ctx.reference_model)

    def _ref_logits(self, ctx, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    logits_to_keep: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of the frozen aligned model (no graph); [B, K, V] at `logits_to_keep` when given."""
        return reference_logits(ctx.model, self.ref_, input_ids, attention_mask, ctx.autocast_dtype, logits_to_keep)

    # -- stage 1 --------------------------------------------------------------------------------
    def prepare(self, ctx) -> None:
        c = self.config
        self._setup_reference(ctx)
        recs = ctx.pool_records(c.refusal_pool) or ctx.pool_records("safety")
        if not recs:
            raise ValueError(f"pact: the {c.refusal_pool!r} pool and the 'safety' pool are both empty; "
                             "expected refusal samples (harmful prompt -> refusal): set reference_data")
        recs = recs[:c.n_refusals]
        base_spec = c.base_model or ctx.settings.base_model
        if not base_spec:
            raise ValueError("pact: no base model; expected method.base_model or the run's model.base")
        base = ctx.load_model(base_spec)
        # the release teacher-forces the response text alone (add_special_tokens=False): the positions
        # of the template's end-of-turn tokens are not among R
        text_len = {r.sample_id: len(ctx.tokenizer(r.response, add_special_tokens=False)["input_ids"])
                    for r in recs}
        d_sum = p_a_sum = p_b_sum = None
        n = n_pos = 0
        starts = list(range(0, len(recs), c.stage1_batch_size))
        dist = dist_of(ctx)
        # each rank its share of the refusal chunks (one process: all); the sums are all-reduced below
        starts = starts[slice(*dist.shard(len(starts)))]
        for i in starts:
            try:
                batch = ctx.encode(recs[i:i + c.stage1_batch_size])
            except ContextLengthError:
                raise     # overlong=error: the user asked for the error
            except ValueError:  # every record of the chunk was too long (collate() of an empty list)
                log.warning("pact: stage 1 skips records %d-%d of the safety set: none fits data.max_length=%d",
                            i, i + len(recs[i:i + c.stage1_batch_size]) - 1, ctx.settings.max_length)
                continue
            z_a = self._ref_logits(ctx, batch.input_ids, batch.attention_mask).float()
            with torch.no_grad():
                z_b = base(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.float()
            if z_a.shape[-1] != z_b.shape[-1]:
                raise ValueError(f"pact: the base model {base_spec!r} has a vocabulary of {z_b.shape[-1]} "
                                 f"tokens, the aligned model {z_a.shape[-1]}; expected the same tokenizer")
            start, count = response_span(batch.labels)
            if not c.stage1_end_token:
                count = torch.minimum(count, torch.tensor([text_len[i] for i in batch.sample_ids],
                                                          device=count.device, dtype=count.dtype))
            R = int(count.clamp_max(c.max_response_tokens).max())
            if R == 0:
                continue
            r_i = count.clamp_max(c.max_response_tokens)                              # [B]
            idx = (start - 1).clamp_min(0).unsqueeze(1) + torch.arange(R, device=z_a.device)
            idx = idx.clamp_max(z_a.shape[1] - 1)
            p_a = torch.softmax(z_a.gather(1, idx.unsqueeze(-1).expand(-1, -1, z_a.shape[-1])), -1)
            p_b = torch.softmax(z_b.gather(1, idx.unsqueeze(-1).expand(-1, -1, z_b.shape[-1])), -1)
            keep = r_i > 0
            pa_i = position_means(p_a, r_i)[keep]                                       # [B', V]
            pb_i = position_means(p_b, r_i)[keep]
            d_sum = (pa_i - pb_i).sum(0) if d_sum is None else d_sum + (pa_i - pb_i).sum(0)
            p_a_sum = pa_i.sum(0) if p_a_sum is None else p_a_sum + pa_i.sum(0)
            p_b_sum = pb_i.sum(0) if p_b_sum is None else p_b_sum + pb_i.sum(0)
            n += int(keep.sum())
            n_pos += int(r_i[keep].sum())
        del base
        if dist.enabled:
            V = int(dist.all_max(torch.tensor(d_sum.numel() if d_sum is not None else 0)))
            zero = torch.zeros(V, device=ctx.device)
            d_sum, p_a_sum, p_b_sum = (dist.all_sum(x if x is not None else zero) for x in (d_sum, p_a_sum, p_b_sum))
            n, n_pos = (int(dist.all_sum(torch.tensor(x, dtype=torch.long))) for x in (n, n_pos))
        if n == 0:
            raise ValueError("pact: no refusal sample fits the context; expected refusals shorter than max_length")
        d, p_a, p_b = d_sum / n, p_a_sum / n, p_b_sum / n
        V = d.numel()
        k = math.ceil(c.k_fraction * V) if c.k_fraction > 0 else c.k
        exclude = list(getattr(ctx.tokenizer, "all_special_ids", []) or []) if c.exclude_special_tokens else None
        S, v, w = safety_set(d, p_a, k, exclude=exclude)
        self.S_, self.w_S_ = S.to(ctx.device), w[S].to(ctx.device)
        self.header_ = assistant_header_ids(ctx.tokenizer)
        self.pad_ = pad_id_of(ctx.tokenizer)
        if c.post_bos and getattr(ctx.tokenizer, "bos_token_id", None) is not None:
            self.header_ = [ctx.tokenizer.bos_token_id] + self.header_
        tok = ctx.tokenizer
        rows = []
        for rank, s in enumerate(S.tolist()):
            rows.append({"step": 0, "token_id": s, "token": tok.decode([s]),
                         "token_raw": tok.convert_ids_to_tokens(s), "rank": rank,
                         "d": float(d[s]), "v": float(v[s]), "weight": float(w[s]),
                         "p_aligned": float(p_a[s]), "p_base": float(p_b[s]), "k": len(S),
                         "k_requested": c.k, "vocab_size": V, "n_refusals": n})
        if not _recorded(ctx, "pact_tokens"):  # on --resume prepare() runs again: record once
            ctx.log("pact_tokens", rows)
        ctx.state["pact"] = {"k": len(S), "vocab_size": V, "n_refusals": n, "n_positions": n_pos,
                             "base_model": base_spec,
                             "n_positive_weight": int((w[S] > 0).sum()), "reference": self.reference_mode_,
                             "header_ids": self.header_}

    # -- stage 2 --------------------------------------------------------------------------------
    def _post_batch(self, batch: Batch, start: torch.Tensor, count: torch.Tensor):
        """[header, y_0, …, y_{A−2}] per row, right-padded (see the module docstring)."""
        header = torch.tensor(self.header_, dtype=batch.input_ids.dtype, device=batch.input_ids.device)
        seqs = []
        for b in range(len(batch)):
            s, a = int(start[b]), int(count[b])
            seqs.append(torch.cat([header, batch.input_ids[b, s:s + max(a - 1, 0)]]))
        L = max(x.numel() for x in seqs)
        ids = batch.input_ids.new_full((len(seqs), L), self.pad_)
        attn = torch.zeros_like(ids)
        for b, x in enumerate(seqs):
            ids[b, :x.numel()] = x
            attn[b, :x.numel()] = 1
        return ids, attn

    def _check_header(self, batch: Batch, start: torch.Tensor) -> None:
        if self._warned_header:
            return
        h = len(self.header_) - (1 if self.config.post_bos else 0)
        hdr = self.header_[-h:]
        for b in range(len(batch)):
            s = int(start[b])
            if s >= h and batch.input_ids[b, s - h:s].tolist() != hdr:
                log.warning("pact: the prompt of %s does not end with the assistant header %s; z_post "
                            "may be misaligned by the tokenizer", batch.sample_ids[b], hdr)
                self._warned_header = True
                return

    def decide(self, batch: Batch, ctx) -> Decision:
        c = self.config
        T = c.temperature
        # logits only at the positions that predict a response token (explorer/model/losses.py): the
        # cross-entropy and the safety-token KL read no others; at_positions puts them back in place
        kw = loss_kwargs(ctx.model, batch.labels)
        keep, L = kw.get("logits_to_keep"), batch.input_ids.shape[1]
        with ctx.autocast():
            out = ctx.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **kw)
        ce = per_sample_nll(out.logits, batch.labels, keep)                           # [B]
        start, count = response_span(batch.labels)
        dist = dist_of(ctx)
        # several ranks: A is the longest response of the global batch, so every rank takes the same
        # path and reduces tensors of one shape
        A = int(dist.all_max(count.max()))
        B = len(batch)
        if A == 0:
            return Decision(weights=torch.ones(B, device=ce.device), losses=ce)
        self._check_header(batch, start)
        S = self.S_
        z_theta_S = gather_positions(at_positions(out.logits.index_select(-1, S), keep, L),
                                     (start - 1).clamp_min(0), A)                                  # [B, A, k]
        z_full_S, z_post_S, cached = self._reference_S(ctx, batch, keep, start, count, A)
        t = torch.arange(A, device=ce.device).unsqueeze(0).expand(B, A)
        mask = (t < count.unsqueeze(1)).float()                                       # [B, A]

        I_trained = competitive_index(z_theta_S, c.gate_top_p, c.gate_temperature)     # [B, A]
        I_post = competitive_index(z_post_S, c.gate_top_p, c.gate_temperature)
        if c.gate == "gated":
            c_t = gate(I_trained, I_post, t, c.alpha, c.b, c.n_prefix, c.tau_d) * mask
        else:
            c_t = mask * (1.0 if c.gate == "post" else 0.0)
        q = mixed_target(z_full_S, z_post_S, c_t, self.w_S_, T)
        kl = pact_kl(q, z_theta_S, T) * mask                                          # [B, A]
        n_tok = mask.sum(1)                                                           # [B]
        kl_i = kl.sum(1) / n_tok.clamp_min(1)
        # means over the GLOBAL batch: with several ranks each takes its local sum over the global
        # count, times the number of ranks, because the recipe averages extra losses and step metrics
        # over the ranks (world = 1 and the global count = the local one with a single process)
        W = dist.world
        if c.reduction == "token":
            M = dist.all_sum(mask.sum()).clamp_min(1)
            L_pact = W * kl.sum() / M
            weights = count.float()
            ce_step = W * (ce * weights).sum() / dist.all_sum(weights.sum()).clamp_min(1)
        else:
            M = dist.all_sum(mask.sum()).clamp_min(1)
            L_pact = kl_i.mean() if not dist.enabled else W * kl_i.sum() / dist.all_sum(torch.tensor(float(B)))
            weights = torch.ones(B, device=ce.device)
            ce_step = ce.mean() if not dist.enabled else W * ce.sum() / dist.all_sum(torch.tensor(float(B)))
        self._record_positions(ctx, c_t, I_trained, I_post, kl, mask)
        gate_i = (c_t * mask).sum(1) / n_tok.clamp_min(1)
        return Decision(
            weights=weights, losses=ce, extra_loss=c.lam * L_pact,
            scores={"ce": ce.detach(), "kl": kl_i.detach(), "gate": gate_i.detach()},
            step_metrics={"ce": float(ce_step.detach()), "kl": float(L_pact.detach()),
                          "pact_loss": float(c.lam * L_pact.detach()),
                          "gate_mean": float(W * (c_t * mask).sum() / M), "reference_cached": float(cached)})

    def _reference_S(self, ctx, batch: Batch, keep, start: torch.Tensor, count: torch.Tensor, A: int):
        """(z_full_S, z_post_S [B, A, |S|], cached): the frozen reference's logits on S at the A response
        positions of each row (positions past a row's response are masked by the caller). With
        `cache_reference`, a row's values are kept under its tokens after the first batch that holds it;
        a batch whose rows are all kept takes them from the cache and runs no reference forward."""
        S, L = self.S_, batch.input_ids.shape[1]
        keys = None
        if self.config.cache_reference:
            keys = [tuple(batch.input_ids[b][batch.attention_mask[b].bool()].tolist()) for b in range(len(batch))]
            if all(k in self._ref_cache for k in keys):
                z_full_S = batch.input_ids.new_zeros((len(batch), A, len(S)), dtype=self._ref_cache[keys[0]][0].dtype)
                z_post_S = torch.zeros_like(z_full_S)
                for b, k in enumerate(keys):
                    f, p = self._ref_cache[k]
                    z_full_S[b, :f.shape[0]], z_post_S[b, :p.shape[0]] = f[:A], p[:A]
                return z_full_S, z_post_S, True
        z_full = self._ref_logits(ctx, batch.input_ids, batch.attention_mask, keep)
        z_full_S = gather_positions(at_positions(z_full.index_select(-1, S), keep, L), (start - 1).clamp_min(0), A)
        post_ids, post_attn = self._post_batch(batch, start, count)
        z_post = self._ref_logits(ctx, post_ids, post_attn)
        z_post_S = gather_positions(z_post.index_select(-1, S), torch.full_like(start, len(self.header_) - 1), A)
        if keys is not None:
            for b, k in enumerate(keys):
                n = int(count[b])
                self._ref_cache[k] = (z_full_S[b, :n].detach().clone(), z_post_S[b, :n].detach().clone())
        return z_full_S, z_post_S, False

    def _record_positions(self, ctx, c_t, I_trained, I_post, kl, mask) -> None:
        dist = dist_of(ctx)   # position means over the global batch (A is the same on every rank)
        n_t = dist.all_sum(mask.sum(0))                                               # [A]
        A = min(int(mask.shape[1]), self.config.record_positions)

        def mean(x):
            return (dist.all_sum((x.detach().float() * mask).sum(0)) / n_t.clamp_min(1)).cpu().tolist()

        g, it, ip, k_ = mean(c_t), mean(I_trained), mean(I_post), mean(kl)
        n_list = n_t.cpu().tolist()
        ctx.log("pact_positions", [{"step": ctx.step, "position": t, "gate": g[t], "I_trained": it[t],
                                    "I_post": ip[t], "kl": k_[t], "n": int(n_list[t])}
                                   for t in range(A) if n_list[t] > 0])

    def state_dict(self) -> dict:
        return {"S": self.S_, "w_S": self.w_S_} if self.S_ is not None else {}

    def load_state_dict(self, state: dict) -> None:
        # prepare() recomputes stage 1 deterministically on resume; keep the saved set if given
        if "S" in state and torch.is_tensor(state["S"]):
            dev = self.S_.device if self.S_ is not None else "cpu"
            self.S_, self.w_S_ = state["S"].to(dev), state["w_S"].to(dev)
