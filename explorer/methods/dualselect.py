"""DualSelect — coupled task–reference selection for safe fine-tuning.

Paper: "Two to Tango: Coupled Task-Reference Selection for Safe LLM Fine-tuning" (Chen, Zhang, Wu,
Gao; arXiv 2606.09866, EMNLP 2026); authors' code: ChnIRuI/DualSelect,
experiments/dualselect/train_dualselect.py. Method notes: docs/methods/dualselect.md.

    1. warm-up: W task-only steps on uniform mini-batch gradients; their sum is the first direction d
    2. refresh (lazy): for every reference r of the pool,
           conflict_r = −cos(g_r, d)
           score_r    = μ_ref · ℓ_r + ν · conflict_r
       hard: keep the top-K_ref by score, weight 1; soft: w = softmax(score/τ_ref), keep the top-K_ref
       g_ref = Σ w_r g_r / Σ w_r
    3. per mini-batch: compat_i = cos(g_i, g_ref),  s_i = μ_task · ℓ_i − ν · compat_i
       hard: keep the k smallest s_i; soft: w = softmin(s/τ_task), keep the top-k
       g_task = weighted mean of the kept g_i
    4. correction: g = g_task + η · g_ref with the g_ref of the last refresh, added to the assembled
       gradient as the authors' corrected_direction does; variants: PCGrad-style projection, none, and
       `ref_grad=current` (re-differentiate η · Σ_r w_r ℓ_r / Σ_r w_r every step)
    5. refresh schedules: `epoch` (authors': d = mean of the previous epoch's g_task),
       `every_n_steps`, `on_drift` (cos(running task direction, d at the last refresh) < threshold)

Ablations are settings: reference_selection=static (never refresh) | random (periodic random
references); uniform_ref_weights; filter_task=false (correction only); correction=none (task-only
filtering). Per-sample gradients come from explorer.scoring; `estimator` is recorded with every row.

The update is assembled from the per-sample gradients already computed for scoring (g_task = the
weighted mean of the kept g_i, as the authors' select_task_batch does), so an exact estimator costs
one batched forward and backward per step, not a second pass. Sketched features (projected) and
directional products (jvp) cannot be assembled into a parameter update; with those the loop runs
the weighted backward itself and the correction is added to that gradient.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

from explorer.data.batch import Batch
from explorer.methods.protocol import Decision, MethodBase, dist_of, help_field as _h
from explorer.methods.registry import register
from explorer.model.losses import model_nll
from explorer.model.plumbing import add_flat_grad, flat_grad, flatten_grads
from explorer.scoring import (HooksEstimator, cosine, directional, make_estimator, trainable_params,
                              weighted_mean)
from explorer.scoring.chunking import ChunkPolicy, parse_chunk_size, trim


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DualSelectConfig:
    """Defaults are the authors' (sh/run_dualselect_train.sh of their release; the paper's token budget
    and K_ref fraction as options). Their run keeps 4 of every mini-batch of 8; the batch size is the
    run's (optim.batch_size, 32 unless set), so the default here is their keep *rate*, one half,
    which is 4 of 8 at their batch size; `keep` = 4 is their count verbatim. Warm-up is counted in
    optimiser steps as in their code (10 steps of 8 = 80 samples; at batch 32 the same 10 steps see 320).
    configs/dualselect.yaml runs their whole setting (batch 8, 1 epoch, lr 2e-5, no weight decay)."""

    warmup_steps: int = _h("W: unfiltered task-only steps; their summed gradient is the first direction d "
                           "(authors: 10, at batch 8)", 10, ge=0)
    # task filtering
    filter_task: bool = _h("filter task samples (false = correction-only ablation)", True)
    task_mode: str = _h("hard: keep the k smallest s_i | soft: softmin(s/τ_task) weights, keep top-k", "hard")
    keep: int = _h("k: if > 0, exactly this many task samples kept per mini-batch (the authors' --task-top-k 4, "
                   "at their batch of 8); 0 = use keep_fraction", 0, ge=0)
    keep_fraction: float = _h("k = ceil(keep_fraction · batch) when keep = 0 (default ½: the authors' 4 of 8 at "
                              "any batch size); 0 with keep = 0 needs token_budget", 0.5, ge=0, le=1)
    token_budget: float = _h("if > 0, keep the smallest-s samples until this share of supervised target "
                             "tokens is reached (the paper: 0.9)", 0.0, ge=0, le=1)
    mu_task: float = _h("μ_task: weight of the sample loss in s_i", 1.0)
    nu: float = _h("ν: weight of the conflict / compatibility terms", 1.0)
    tau_task: float = _h("τ_task: softmin temperature (soft mode)", 0.1, gt=0)
    # references
    reference_selection: str = _h("scored (DualSelect) | static (select once, never refresh) | "
                                  "random (periodic random references)", "scored")
    ref_mode: str = _h("hard: top-K_ref, weight 1 | soft: softmax(score/τ_ref), keep top-K_ref", "hard")
    k_ref: int = _h("K_ref: references selected per refresh (authors' code: 32)", 32, ge=0)
    k_ref_fraction: float = _h("if > 0, K_ref = ceil(k_ref_fraction · |pool|) (the paper: 0.1)", 0.0, ge=0, le=1)
    mu_ref: float = _h("μ_ref: weight of the reference loss in score_r", 1.0)
    tau_ref: float = _h("τ_ref: softmax temperature (soft mode)", 0.1, gt=0)
    uniform_ref_weights: bool = _h("ablation: weight every selected reference equally", False)
    ref_cap: int = _h("score at most this many references per refresh (0 = the whole pool)", 0, ge=0)
    ref_pool: str = _h("the pool the references come from", "reference")
    # correction
    correction: str = _h("additive: g_task + η g_ref | pcgrad: remove g_task's component against g_ref | none",
                         "additive")
    eta: float = _h("η: weight of the reference gradient in the correction", 0.2, ge=0)
    ref_grad: str = _h("which g_ref the correction adds: refresh = the direction computed at the last refresh "
                       "(the authors' corrected_direction) | current = re-differentiate η·Σ w_r ℓ_r over the "
                       "selected references every step (a variant: fresher, one reference forward per step)",
                       "refresh")
    # refresh schedule
    refresh: str = _h("epoch (authors') | every_n_steps | on_drift", "epoch")
    refresh_every: int = _h("steps between refreshes for every_n_steps", 0, ge=0)
    drift_threshold: float = _h("on_drift: refresh when cos(running task direction, d at last refresh) < this",
                                0.5, ge=-1, le=1)
    drift_min_steps: int = _h("on_drift: steps after a refresh before drift is checked", 3, ge=0)
    # scoring backend
    estimator: str = _h("exact (= hooks) | vmap | loop | projected | jvp", "exact")
    projection_dim: int = _h("D for the projected estimator (the authors' diagnostic: 512)", 512, gt=0)
    chunk_size: int | str = _h("references per scoring chunk: an integer, or auto = as many as fit "
                               "chunk_memory_mb (rows are grouped by length either way)", "auto")
    chunk_memory_mb: float = _h("auto chunks: memory budget in MB of one scoring chunk (the activations "
                                "autograd keeps, measured per token by a probe forward, plus one gradient "
                                "row per reference); 0 = the activations of one training step "
                                "(batch_size × max_length tokens), so a refresh peaks about where a step does", 0.0)
    # records
    ref_cosines_every: int = _h("every N filtered steps record cos(g_i, g_r) of each batch sample with each "
                                "selected reference (table decision_refs: the dashboard's 'references this "
                                "sample conflicts with most'); 0 = never. Keeps the selected references' "
                                "gradient features from the refresh (K_ref × features floats)", 0)

    def __post_init__(self):
        checks = {"task_mode": ("hard", "soft"), "ref_mode": ("hard", "soft"),
                  "reference_selection": ("scored", "static", "random"),
                  "correction": ("additive", "pcgrad", "none"),
                  "refresh": ("epoch", "every_n_steps", "on_drift"),
                  "ref_grad": ("refresh", "current"),
                  "estimator": ("exact", "hooks", "vmap", "loop", "projected", "jvp")}
        for k, allowed in checks.items():
            if getattr(self, k) not in allowed:
                raise ValueError(f"method.{k} = {getattr(self, k)!r}: expected one of {', '.join(allowed)}")
        if self.refresh == "every_n_steps" and self.refresh_every <= 0:
            raise ValueError("method.refresh_every must be > 0 when method.refresh = every_n_steps")
        if self.ref_cosines_every < 0:
            raise ValueError(f"method.ref_cosines_every = {self.ref_cosines_every}: expected >= 0")
        try:
            parse_chunk_size(self.chunk_size)
        except ValueError as e:
            raise ValueError(f"method.{e}") from None
        if self.chunk_memory_mb < 0:
            raise ValueError(f"method.chunk_memory_mb = {self.chunk_memory_mb}: expected >= 0 (0 = one training step)")
        if not 0 <= self.token_budget <= 1 or not 0 <= self.keep_fraction <= 1:
            raise ValueError(f"method.keep_fraction = {self.keep_fraction}, method.token_budget = {self.token_budget}: "
                             "expected each a number in [0, 1]")
        if self.keep < 0:
            raise ValueError(f"method.keep = {self.keep}: expected >= 0 (0 = use method.keep_fraction)")
        if self.filter_task and self.keep == 0 and self.keep_fraction == 0 and self.token_budget == 0:
            raise ValueError("method.keep, method.keep_fraction and method.token_budget are all 0: expected one "
                             "of them > 0 to say how many task samples a mini-batch keeps")


# --------------------------------------------------------------------------------------------------
# pure selection kernels (unit-tested on hand-made numbers)
# --------------------------------------------------------------------------------------------------

def reference_scores(losses: torch.Tensor, cos_to_d: torch.Tensor, mu_ref: float, nu: float):
    """conflict_r = −cos(g_r, d); score_r = μ_ref ℓ_r + ν conflict_r."""
    conflict = -cos_to_d
    return conflict, mu_ref * losses + nu * conflict


def select_references(score: torch.Tensor, k: int, mode: str, tau: float, uniform: bool):
    """Returns (weights over all scored refs, 0 for unselected; rank 0 = highest score)."""
    k = min(k, score.numel())
    order = torch.argsort(score, descending=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(score.numel(), device=score.device)
    selected = rank < k
    if mode == "soft" and not uniform:
        w = torch.softmax(score / tau, dim=0)
    else:
        w = torch.ones_like(score)
    w = torch.where(selected, w, torch.zeros_like(w))
    return w, rank, selected


def task_scores(losses: torch.Tensor, compat: torch.Tensor, mu_task: float, nu: float) -> torch.Tensor:
    """s_i = μ_task ℓ_i − ν compat_i (lower is better)."""
    return mu_task * losses - nu * compat


def n_keep(cfg: DualSelectConfig, batch_size: int) -> int:
    """k for a mini-batch: `keep` when set (a count), else ceil(keep_fraction · batch); with neither
    (token-budget runs) the whole batch, which the token budget then cuts."""
    if cfg.keep > 0:
        return max(1, min(cfg.keep, batch_size))
    if cfg.keep_fraction > 0:
        return max(1, math.ceil(cfg.keep_fraction * batch_size))
    return batch_size


def select_task(s: torch.Tensor, k: int, mode: str, tau: float, n_tokens: torch.Tensor | None = None,
                token_budget: float = 0.0):
    """Weights over the batch (0 = dropped) and the rank of each sample (0 = smallest s).

    hard: the k smallest s_i get weight 1. soft: w = softmin(s/τ) = softmax(−s/τ), the top-k by w
    keep their weights. token_budget > 0: instead of k, keep the smallest-s samples until that share
    of the batch's supervised tokens is covered (the paper's 90% budget)."""
    order = torch.argsort(s)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(s.numel(), device=s.device)
    if token_budget > 0 and n_tokens is not None:
        cum = torch.cumsum(n_tokens[order].float(), 0)
        need = token_budget * n_tokens.sum().float()
        k = int((cum < need).sum().item()) + 1
        k = min(k, s.numel())
    kept = rank < k
    if mode == "soft":
        w = torch.softmax(-s / tau, dim=0)
    else:
        w = torch.ones_like(s)
    return torch.where(kept, w, torch.zeros_like(w)), rank


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if (a or b) else 1.0


# --------------------------------------------------------------------------------------------------
# the method
# --------------------------------------------------------------------------------------------------

@dataclass
class DualSelectState:
    """What DualSelect carries from one step to the next; checkpoints save it (MethodBase.state_dict)."""

    d: torch.Tensor | None = None           # task direction used for the next refresh (feature space)
    d_last: torch.Tensor | None = None      # direction used at the last refresh
    dir_sum: torch.Tensor | None = None     # Σ g_task since the last refresh (feature space)
    dir_n: int = 0
    epoch_sum: torch.Tensor | None = None   # Σ g_task over the current epoch
    epoch_n: int = 0
    epoch_prev: torch.Tensor | None = None  # mean g_task of the last finished epoch (the epoch schedule's d)
    warm_sum: torch.Tensor | None = None    # Σ g_task over the warm-up steps (the first d)
    g_ref_full: torch.Tensor | None = None  # reference gradient in parameter space (flat)
    g_ref: torch.Tensor | None = None       # the same in feature space
    ref_loss: float | None = None           # weighted reference loss at the last refresh
    ref_ids: list[str] = field(default_factory=list)   # the selected references
    ref_w: torch.Tensor | None = None       # their weights
    ref_unit: torch.Tensor | None = None    # their unit gradient features (decision_refs)
    refresh_id: int = -1
    steps_since: int = 0                    # steps since the last refresh
    n_filtered: int = 0                     # filtered steps so far


@register("dualselect", DualSelectConfig)
class DualSelect(MethodBase):
    def __init__(self, config: DualSelectConfig):
        super().__init__(config)
        self.state = DualSelectState()
        self.buf_ = None            # the per-step [B, P] per-sample gradient buffer (hooks estimator)

    # -- set-up ---------------------------------------------------------------------------------
    def prepare(self, ctx) -> None:
        c = self.config
        self.params_ = trainable_params(ctx.model)
        self.names_ = list(self.params_)
        self.estimator_ = make_estimator("hooks" if c.estimator == "jvp" else c.estimator,
                                         projection_dim=c.projection_dim, seed=ctx.settings.seed,
                                         chunk_size=c.chunk_size if isinstance(c.chunk_size, int) else None,
                                         autocast_dtype=ctx.autocast_dtype)
        self.chunking_ = ChunkPolicy(parse_chunk_size(c.chunk_size), c.chunk_memory_mb)
        self.n_params_ = sum(p.numel() for p in self.params_.values())
        self.est_name_ = c.estimator if c.estimator != "exact" else "exact(hooks)"
        self.full_space_ = c.estimator in ("exact", "hooks", "vmap", "loop")  # features = parameter gradients
        self.pool_ = ctx.pools.get(c.ref_pool) or []
        if not self.pool_:
            raise ValueError(f"dualselect: the reference pool {c.ref_pool!r} is empty; expected safety "
                             "references (set reference_data)")
        self.k_ref_ = (math.ceil(c.k_ref_fraction * len(self.pool_)) if c.k_ref_fraction > 0 else c.k_ref)

    def _to_feature(self, v_full: torch.Tensor) -> torch.Tensor:
        return self.estimator_.to_feature(v_full) if hasattr(self.estimator_, "to_feature") else v_full

    # -- refresh --------------------------------------------------------------------------------
    def _encoded(self, ctx, ids: list[str]) -> Batch | None:
        """The references `ids` in one encoded batch. The encoder may leave out records longer than
        max_length, so rows are named by the batch's sample_ids, never by positions in `ids`."""
        from explorer.data.tokenize import ContextLengthError   # here: explorer.data imports explorer.methods

        try:
            b = ctx.encode([ctx.records[i] for i in ids])
        except ContextLengthError:
            raise
        except ValueError:  # collate() of an empty list: no reference fits the context
            return None
        return b if len(b) else None

    def _chunks(self, ctx, b: Batch, keep_rows: int = 0):
        """(chunks of `b`, whether `keep_rows` gradient rows fit beside them): see explorer.scoring.chunking."""
        rows, keep = self.chunking_.plan(ctx.model, b, self.n_params_, ctx.settings.batch_size * ctx.settings.max_length,
                                         keep_rows, ctx.autocast_dtype)
        return [trim(b.subset(r)) for r in rows], keep

    def _refresh(self, ctx, trigger: str) -> None:
        c = self.config
        prev = set(self.state.ref_ids)
        ids = list(self.pool_)
        if c.ref_cap and len(ids) > c.ref_cap:
            pick = torch.randperm(len(ids), generator=ctx.generator)[:c.ref_cap].tolist()
            ids = [ids[i] for i in sorted(pick)]
        enc = self._encoded(ctx, ids)
        if enc is None:
            raise ValueError(f"dualselect: none of the {len(ids)} references of pool {c.ref_pool!r} fits "
                             f"data.max_length={ctx.settings.max_length} tokens; expected references (prompt + "
                             "response) within the context")
        if len(enc) < len(ids) and not getattr(self, "warned_long_", False):
            log.warning("dualselect: %d of %d references are longer than data.max_length=%d and are not scored",
                        len(ids) - len(enc), len(ids), ctx.settings.max_length)
            self.warned_long_ = True
        ids = list(enc.sample_ids)  # the references actually scored, in the order of the rows below
        row_of = {rid: i for i, rid in enumerate(ids)}
        scored = c.reference_selection != "random"
        # several ranks (torchrun): each scores its contiguous share of the pool, then the scores are
        # gathered and every rank selects alike over the whole pool
        dist = dist_of(ctx)
        lo, hi = dist.shard(len(ids))
        mine = enc if not dist.enabled else (enc.subset(list(range(lo, hi))) if hi > lo else None)
        # with parameter-space features the selected references' gradient rows give g_ref directly
        # (Σ w_r g_r / Σ w_r, the authors' way); a running top-K by score keeps K rows, not the pool's
        want_rows = scored and self.full_space_
        chunks, keep = self._chunks(ctx, mine, keep_rows=self.k_ref_ if want_rows else 0) if mine is not None else ([], True)
        keep = keep and want_rows
        if dist.enabled:   # every rank keeps rows, or none does (the fallback below is collective)
            keep = keep and not bool(dist.all_max(torch.tensor(0 if keep else 1)))
        loss = torch.full((len(ids),), float("nan"))
        cos_to_d = torch.full((len(ids),), float("nan") if not scored else 0.0)
        top_ids: list[str] = []
        top_score = top_rows = None
        d = self.state.d
        was_training = ctx.model.training
        ctx.model.eval()  # no dropout while scoring
        try:
            for b in chunks:
                at = torch.tensor([row_of[rid] for rid in b.sample_ids])
                if not scored:
                    with torch.no_grad():
                        loss[at] = model_nll(ctx.model, b.input_ids, b.attention_mask, b.labels).float().cpu()
                    continue
                f = self.estimator_.features(ctx.model, b, self.params_)
                loss[at] = f.losses.float().cpu()
                if d is not None and d.norm() > 0:
                    cos_to_d[at] = cosine(f.grads, d).float().cpu()
                if keep:
                    s_chunk = reference_scores(loss[at], cos_to_d[at], c.mu_ref, c.nu)[1]
                    cand_s = s_chunk if top_score is None else torch.cat([top_score, s_chunk])
                    cand_r = f.grads if top_rows is None else torch.cat([top_rows, f.grads])
                    cand_i = top_ids + list(b.sample_ids)
                    best = torch.topk(cand_s, min(self.k_ref_, len(cand_i))).indices
                    top_score, top_rows = cand_s[best], cand_r[best.to(cand_r.device)].clone()
                    top_ids = [cand_i[j] for j in best.tolist()]
                del f
        finally:
            ctx.model.train(was_training)
        if dist.enabled:
            loss, cos_to_d = dist.gather_cat(loss[lo:hi]), dist.gather_cat(cos_to_d[lo:hi])
        conflict, score = reference_scores(loss, cos_to_d, c.mu_ref, c.nu)
        if c.reference_selection == "random":
            score = torch.rand(len(ids), generator=ctx.generator)  # a random ranking
        w, rank, selected = select_references(score, self.k_ref_, c.ref_mode, c.tau_ref, c.uniform_ref_weights)
        sel_idx = torch.nonzero(selected).flatten().tolist()
        self.state.ref_ids = [ids[i] for i in sel_idx]
        self.state.ref_w = w[sel_idx]
        self.state.refresh_id += 1
        now = set(self.state.ref_ids)
        jac = jaccard(now, prev) if prev else float("nan")
        rows = []
        for i, rid in enumerate(ids):
            sel = bool(selected[i])
            change = ("entered" if sel and rid not in prev else "stayed" if sel else
                      "left" if rid in prev else "out")
            rows.append({"refresh_id": self.state.refresh_id, "step": ctx.step, "trigger": trigger, "sample_id": rid,
                         "loss": float(loss[i]), "cosine": float(cos_to_d[i]), "conflict": float(conflict[i]),
                         "score": float(score[i]), "weight": float(w[i]), "rank": int(rank[i]),
                         "selected": sel, "change": change, "jaccard_prev": jac, "estimator": self.est_name_,
                         "k_ref": self.k_ref_})
        for rid in prev - set(ids):  # left because it was not scored this time (ref_cap, or too long)
            rows.append({"refresh_id": self.state.refresh_id, "step": ctx.step, "trigger": trigger, "sample_id": rid,
                         "selected": False, "change": "left", "jaccard_prev": jac, "estimator": self.est_name_})
        ctx.log("refreshes", rows)
        kept_rows = None
        if dist.enabled:
            if keep:
                kept_rows = self._gathered_rows(ctx, ids[lo:hi], top_ids, top_rows)
        elif keep and set(top_ids) >= now:  # ties at the K-th score can pick another row: then recompute
            pos = {rid: j for j, rid in enumerate(top_ids)}
            kept_rows = top_rows[[pos[rid] for rid in self.state.ref_ids]]
        del top_rows
        if c.ref_cosines_every and c.estimator != "jvp":
            self.state.ref_unit = (kept_rows / kept_rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
                              if kept_rows is not None else self._unit_features(ctx, self.state.ref_ids))
        if kept_rows is not None:
            wr = self.state.ref_w.to(kept_rows.device)
            self.state.g_ref_full = weighted_mean(kept_rows, wr)
            self.state.g_ref = self._to_feature(self.state.g_ref_full)
            self.state.ref_loss = float((self.state.ref_w * loss[sel_idx]).sum() / self.state.ref_w.sum().clamp_min(1e-12))
        else:
            self._update_g_ref(ctx)
        self.state.d_last = self.state.d
        self.state.dir_sum, self.state.dir_n, self.state.steps_since = None, 0, 0

    def _gathered_rows(self, ctx, my_ids: list[str], top_ids: list[str], top_rows) -> torch.Tensor | None:
        """Several ranks: the gradient rows of the selected references, [K, P] in `ref_ids` order,
        each rank contributing those of its share of the pool (a contiguous slice, so rank order is
        pool order). None on every rank when some rank lacks a row it should hold (a tie at the K-th
        score picked another row): the caller then recomputes g_ref."""
        dist = dist_of(ctx)
        mine = set(my_ids)
        want = [rid for rid in self.state.ref_ids if rid in mine]
        pos = {rid: j for j, rid in enumerate(top_ids)}
        missing = any(rid not in pos for rid in want)
        if bool(dist.all_max(torch.tensor(1 if missing else 0))):
            return None
        if want:
            rows = top_rows[[pos[rid] for rid in want]]
        else:
            rows = torch.zeros(0, self.n_params_, device=ctx.device, dtype=top_rows.dtype if top_rows is not None else torch.float32)
        return dist.gather_cat(rows)

    def _unit_features(self, ctx, ids: list[str]) -> torch.Tensor:
        """Unit-norm gradient features [K, D] of the given references (for decision_refs), rows in `ids` order."""
        enc = self._encoded(ctx, ids)
        pos = {rid: i for i, rid in enumerate(enc.sample_ids)}
        out = torch.empty(0)
        for b in self._chunks(ctx, enc)[0]:
            g = self.estimator_.features(ctx.model, b, self.params_).grads
            if out.numel() == 0:
                out = torch.empty(len(enc), g.shape[1], device=g.device)
            out[[pos[rid] for rid in b.sample_ids]] = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return out[[pos[rid] for rid in ids]]

    def _log_ref_cosines(self, ctx, batch: Batch, feats: torch.Tensor) -> None:
        cos = (feats @ self.state.ref_unit.T) / feats.norm(dim=1, keepdim=True).clamp_min(1e-12)   # [B, K]
        vals = cos.float().cpu().tolist()
        rows = [{"step": ctx.step, "sample_id": sid, "reference_id": rid, "cosine": vals[i][k]}
                for i, sid in enumerate(batch.sample_ids) for k, rid in enumerate(self.state.ref_ids)]
        if dist_of(ctx).enabled:   # rank 0 writes: the rows of every rank's samples, in batch order
            got = dist_of(ctx).gather_object(rows)
            rows = [r for g in got for r in g] if got is not None else []
        ctx.log("decision_refs", rows)

    def _ref_loss(self, ctx, b: Batch | None = None) -> torch.Tensor:
        """Σ_r w_r ℓ_r / Σ_r w_r over the selected references (or the rows of `b` of them), with graph."""
        b = b if b is not None else self._encoded(ctx, self.state.ref_ids)
        w_of = dict(zip(self.state.ref_ids, self.state.ref_w.tolist()))
        l = model_nll(ctx.model, b.input_ids, b.attention_mask, b.labels)
        w = torch.tensor([w_of[rid] for rid in b.sample_ids], device=l.device, dtype=l.dtype)
        return (w * l).sum() / self.state.ref_w.sum().clamp_min(1e-12)

    def _ref_grad(self, ctx) -> tuple[torch.Tensor, float]:
        """∇ of the weighted reference loss, flat, accumulated chunk by chunk (the sum splits over rows)."""
        plist = list(self.params_.values())
        total, value = None, 0.0
        ids, dist = self.state.ref_ids, dist_of(ctx)
        if dist.enabled:   # each rank its share of the selected references; the sums are all-reduced
            lo, hi = dist.shard(len(ids))
            ids = ids[lo:hi]
        enc = self._encoded(ctx, ids) if ids else None
        for b in self._chunks(ctx, enc)[0] if enc is not None else []:
            loss = self._ref_loss(ctx, b)
            gs = torch.autograd.grad(loss, plist, allow_unused=True)
            g = flatten_grads(gs, plist)
            total = g if total is None else total + g
            value += float(loss.detach())
        if dist.enabled:
            if total is None:
                total = torch.zeros(self.n_params_, device=ctx.device)
            total = dist.all_sum(total)
            value = float(dist.all_sum(torch.tensor(value, dtype=torch.float64)))
        return total, value

    def _update_g_ref(self, ctx) -> None:
        """g_ref = Σ w_r g_r / Σ w_r = ∇ of the weighted reference loss (one backward per chunk)."""
        self.state.g_ref_full, self.state.ref_loss = self._ref_grad(ctx)
        self.state.g_ref = self._to_feature(self.state.g_ref_full)

    # -- per step -------------------------------------------------------------------------------
    def _due(self, ctx) -> str | None:
        c = self.config
        if c.reference_selection == "static":
            return None
        if c.refresh == "epoch":
            return "epoch" if ctx.steps_per_epoch and ctx.step % ctx.steps_per_epoch == 0 else None
        if c.refresh == "every_n_steps":
            return "every_n_steps" if self.state.steps_since >= c.refresh_every else None
        if (self.state.steps_since >= c.drift_min_steps and self.state.dir_sum is not None and self.state.d_last is not None
                and float(cosine(self.state.dir_sum, self.state.d_last)) < c.drift_threshold):
            return "on_drift"
        return None

    def decide(self, batch: Batch, ctx) -> Decision:
        c = self.config
        B = len(batch)
        dev = batch.input_ids.device
        if ctx.step < c.warmup_steps:  # unfiltered: every sample kept, d accumulates in transform_grads
            nan = torch.full((B,), float("nan"))
            return Decision(weights=torch.ones(B, device=dev),
                            scores={"compat": nan, "score": nan, "rank": nan},
                            step_metrics={"phase": "warmup", "estimator": self.est_name_})
        if self.state.g_ref is None:  # the first refresh, right after warm-up, from d = Σ warm-up gradients
            self.state.d = self._to_feature(self.state.warm_sum) if self.state.warm_sum is not None else None
            self._refresh(ctx, "warmup")
        else:
            trig = self._due(ctx)
            if trig:
                if c.refresh == "epoch":
                    self.state.d = self.state.epoch_prev if self.state.epoch_prev is not None else self.state.d
                else:
                    self.state.d = self.state.dir_sum if self.state.dir_sum is not None else self.state.d
                self._refresh(ctx, trig)

        # per-sample losses and gradient features of the batch
        if c.estimator == "jvp":
            losses, dots = directional(ctx.model, batch, self.state.g_ref_full, self.params_, ctx.autocast_dtype)
            compat = dots / self.state.g_ref_full.norm().clamp_min(1e-12)   # projection length, not a cosine
            feats = None
        else:
            if isinstance(self.estimator_, HooksEstimator):  # reuse one [B, P] buffer across steps
                f = self.estimator_.features(ctx.model, batch, self.params_, buffer=self.buf_)
                self.buf_ = f.grads
            else:
                f = self.estimator_.features(ctx.model, batch, self.params_)
            losses, feats = f.losses, f.grads
            compat = cosine(feats, self.state.g_ref)
        if (c.ref_cosines_every and feats is not None and self.state.ref_unit is not None
                and self.state.n_filtered % c.ref_cosines_every == 0):
            self._log_ref_cosines(ctx, batch, feats)
        self.state.n_filtered += 1
        s = task_scores(losses, compat, c.mu_task, c.nu)
        dist = dist_of(ctx)
        s_all, ntok_all = s, batch.n_target_tokens
        if dist.enabled:   # the decision spans the global batch: gather its scores, select alike everywhere
            s_all = dist.gather_cat(s)
            ntok_all = dist.gather_cat(batch.n_target_tokens.to(s.device))
        if c.filter_task:
            w_all, rank_all = select_task(s_all, n_keep(c, len(s_all)), c.task_mode, c.tau_task, ntok_all,
                                          c.token_budget)
        else:
            w_all, rank_all = torch.ones(len(s_all), device=losses.device), torch.argsort(torch.argsort(s_all))
        w, rank = w_all, rank_all
        if dist.enabled:   # this rank's rows of the global decision
            w, rank = w_all[ctx.batch_offset:ctx.batch_offset + B], rank_all[ctx.batch_offset:ctx.batch_offset + B]

        metrics = {"phase": "train", "estimator": self.est_name_, "refresh_id": self.state.refresh_id,
                   "g_ref_norm": float(self.state.g_ref.norm()), "ref_loss": self.state.ref_loss}
        if feats is not None:
            if dist.enabled:   # Σ over the global batch's kept rows / Σ of the global weights
                g_task = dist.all_sum(w.to(feats.dtype) @ feats) / w_all.sum().clamp_min(1e-12).to(feats.dtype)
            else:
                g_task = weighted_mean(feats, w)
            g_ref = self.state.g_ref
            metrics["cos_task_ref"] = float(cosine(g_task, g_ref))
            metrics["g_task_norm"] = float(g_task.norm())
            if c.correction == "additive":
                total = g_task + c.eta * g_ref
                metrics["correction_share"] = float((c.eta * g_ref).norm() / total.norm().clamp_min(1e-12))
            self._accumulate(g_task.detach())
        extra, grads = None, None
        current = c.correction == "additive" and c.eta > 0 and c.ref_grad == "current"
        if feats is not None and self.full_space_:
            # the update from the scoring pass itself: no second forward/backward over the batch
            grads = g_task
            if current:
                g_cur, value = self._ref_grad(ctx)
                grads = grads + c.eta * g_cur
                extra = torch.tensor(c.eta * value)
        elif current:
            extra = c.eta * self._ref_loss(ctx)
        self.state.steps_since += 1
        return Decision(weights=w.to(dev), scores={"compat": compat, "score": s, "rank": rank.float()},
                        extra_loss=extra, step_metrics=metrics, losses=losses if grads is not None else None,
                        grads=grads)

    def _accumulate(self, g_task: torch.Tensor) -> None:
        self.state.dir_sum = g_task.clone() if self.state.dir_sum is None else self.state.dir_sum + g_task
        self.state.dir_n += 1
        self.state.epoch_sum = g_task.clone() if self.state.epoch_sum is None else self.state.epoch_sum + g_task
        self.state.epoch_n += 1

    def transform_grads(self, ctx):
        c = self.config
        if ctx.step < c.warmup_steps:
            g = flat_grad(self.params_.values())
            self.state.warm_sum = g if self.state.warm_sum is None else self.state.warm_sum + g
            return None
        if self.state.g_ref_full is None:
            return None
        if c.correction == "additive" and c.ref_grad == "refresh" and c.eta > 0:
            # the authors' corrected_direction: g = g_task + η g_ref, g_ref from the last refresh
            add_flat_grad(self.params_.values(), self.state.g_ref_full, scale=c.eta)
            return None
        if c.correction != "pcgrad":
            return None
        # PCGrad-style: remove the component of g_task that points against g_ref
        g = flat_grad(self.params_.values())
        dot = float(g @ self.state.g_ref_full)
        removed = 0.0
        if dot < 0:
            proj = dot / float(self.state.g_ref_full @ self.state.g_ref_full) * self.state.g_ref_full
            removed = float(proj.norm() / g.norm().clamp_min(1e-12))
            add_flat_grad(self.params_.values(), proj, scale=-1.0, only_existing=True)
        return {"pcgrad_dot": dot, "pcgrad_removed_share": removed}

    def after_step(self, ctx) -> None:
        # end of an epoch: its mean g_task becomes the next d (authors' schedule)
        if ctx.steps_per_epoch and (ctx.step + 1) % ctx.steps_per_epoch == 0 and self.state.epoch_sum is not None:
            self.state.epoch_prev = self.state.epoch_sum / max(1, self.state.epoch_n)
            self.state.epoch_sum, self.state.epoch_n = None, 0
