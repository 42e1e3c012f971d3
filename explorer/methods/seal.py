"""SEAL — safety-enhanced aligned fine-tuning via bilevel data selection.

Paper: "SEAL: Safety-enhanced Aligned LLM Fine-tuning via Bilevel Data Selection" (Shen, Chen, Das,
Chen; ICLR 2025; arXiv 2410.07471). Authors' code: github hanshen95/SEAL
(seal/trainer/sft_selector_trainer.py, examples/train_sft_selector.py). Specification:
docs/methods/seal.md.

A selector ω ∈ R^N holds one logit per fine-tuning sample (a lookup table, not a network);
σ(ω) = softmax(ω) and the released code uses the mean-one weights σ̃ = N · softmax(ω).

    bilevel:  min_ω (1/M) Σ ℓ(θ*(ω); z_safe)   s.t.  θ*(ω) = argmin_θ (1/N) Σ_i σ_i(ω) ℓ(θ; z_i)
    penalty:  min_{ω,θ} (1−γ) mean ℓ(θ; z_safe) + γ [Σ σ_i(ω) ℓ(θ; z_i) − min_θ' Σ σ_i(ω) ℓ(θ'; z_i)]

Phase 1 (selector training, in `prepare`, on a copy of the model) — per step, one safe mini-batch
zipped with one fine-tuning mini-batch J, u = 1 − γ:

    Algorithm 2 (as released, the default):
        model     θ ← θ − β ∇[ u · ℓ_safe(θ) + (1−u) · mean_{j∈J} σ̃_j.detach() · ℓ(θ; z_j) ]
        selector  ω ← Adam step on  mean_{j∈J} σ̃_j(ω) · ℓ(θ; z_j).detach()
    Algorithm 1 (`algorithm: 1`): an auxiliary model θ̂ approximates the inner min,
        θ̂ ← θ̂ − β ∇ mean_{j∈J} σ̃_j.detach() · ℓ(θ̂; z_j)
        ω ← Adam step on  mean_{j∈J} σ̃_j(ω) · [ℓ(θ; z_j) − ℓ(θ̂; z_j)].detach()    (the loss gap)

    u starts at 1.0 and falls by 0.03 at the start of every epoch after the first (so epoch 0 trains
    the model on the safe data only while the selector already learns from the fine-tuning losses).
    A sample whose loss stays high under the safety-anchored model is down-weighted.

Then the top-p cut keeps the ⌈topp · N⌉ samples with the largest ω (topp = 0.8), ctx.train_ids is
restricted to them, and phase 2 is the loop's ordinary SFT on the kept subset, starting from the
ORIGINAL aligned model (phase 1 never touches ctx.model's weights).

Transfer (as the paper does, Phi-3 → Merlinite-7B): `selector_model` names another model (spec for
ctx.load_model) on which the selector is trained; its ranking is then applied to the run's model.

Records (run folder):
  seal_selector  every `record_every` selector steps and at the last one: one row per fine-tuning
                 sample — step (selector step), epoch, sample_id, omega, weight (σ̃), loss (ℓ_j when
                 it was last in a batch, null before), in_batch, phase "selector" (+ loss_aux, gap
                 under Algorithm 1)
  seal_steps     per selector step: u, gamma, safe_loss, ft_loss, weighted_loss, selector_loss
  seal_epochs    per selector epoch: epoch, u, gamma, safe_loss (epoch mean), steps
  seal_cut       the cut, one row per sample: step (last selector step), omega, weight, rank, kept,
                 topp, phase "cut"
  decisions      phase 2 (the loop): weight 1 for every kept sample, with its final omega and σ̃
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from explorer.data.batch import Batch
from explorer.methods.protocol import Decision, MethodBase, dist_of, help_field as _h
from explorer.methods.registry import register
from explorer.model.losses import model_nll
from explorer.model.optim import LrSchedule, OptimStep
from explorer.model.plumbing import is_peft

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SealConfig:
    """Defaults are the authors' (train_selector_llama3.sh / train_sft_selector.py)."""

    algorithm: int = _h("2: as released (ω steps on σ̃_j·ℓ_j) | 1: with the auxiliary model θ̂ and the "
                        "loss gap ℓ(θ;z_j) − ℓ(θ̂;z_j)", 2)
    topp: float = _h("share of the fine-tuning samples kept by the cut, ranked by ω (authors: 0.8)", 0.8)
    selector_epochs: int = _h("epochs of selector training (authors: 3 for Llama-3)", 3)
    selector_lr: float = _h("Adam learning rate of ω (authors: 5e-3, constant)", 5e-3, gt=0)
    selector_betas: tuple[float, ...] = _h("Adam betas of ω (authors: 0.9, 0.95)", (0.9, 0.95))
    omega_init: float = _h("initial value of every ω_j (authors: 0.1; softmax makes it uniform)", 0.1)
    model_lr: float = _h("learning rate of the model copy in phase 1 (authors: 1e-5, constant)", 1e-5, gt=0)
    model_betas: tuple[float, ...] = _h("Adam betas of the model copy (authors: 0.9, 0.95)", (0.9, 0.95))
    model_warmup_ratio: float = _h("linear warm-up share of phase-1 steps for both optimisers "
                                   "(authors: 0.03)", 0.03, ge=0, le=1)
    model_clip: float = _h("gradient-norm clip of the model copy (authors: max_norm 1.0)", 1.0, ge=0)
    u_start: float = _h("u = 1 − γ in the first epoch (authors: upperlevel_weight 1.0)", 1.0, ge=0, le=1)
    u_decay: float = _h("u falls by this at the start of every later epoch (authors: 0.03)", 0.03, ge=0, le=1)
    selector_batch_size: int = _h("mini-batch of each zipped loader in phase 1 (0 = the run's batch_size)", 0, ge=0)
    safe_pool: str = _h("pool of safe data (harmful prompt → refusal); falls back to `reference` when "
                        "empty", "safety")
    zip_mode: str = _h("shortest: zip(safe, fine-tuning) stops at the shorter loader (as released) | "
                       "cycle_safe: the safe loader restarts so every fine-tuning sample is seen each "
                       "epoch", "shortest")
    record_every: int = _h("record every sample's ω, σ̃ and loss every N selector steps (and at the last)", 1)
    selector_model: str = _h("transfer: train the selector on this model (spec for load_model, e.g. "
                             "tiny:base or a local path) instead of a copy of the run's model", "")
    selector_copy: str = _h("auto | deepcopy | restore: how phase 1 keeps the run's model untouched; "
                            "restore trains the run's model in place and puts back its trainable "
                            "weights afterwards (cheap with LoRA: only the adapters are copied); auto = "
                            "restore for a peft model, deepcopy otherwise", "auto")

    def __post_init__(self):
        if self.algorithm not in (1, 2):
            raise ValueError(f"method.algorithm = {self.algorithm}: expected 1 or 2")
        if not 0 < self.topp <= 1:
            raise ValueError(f"method.topp = {self.topp}: expected a share in (0, 1]")
        if self.selector_epochs < 1:
            raise ValueError(f"method.selector_epochs = {self.selector_epochs}: expected >= 1")
        for k in ("selector_betas", "model_betas"):
            b = getattr(self, k)
            if len(b) != 2 or not all(0 <= x < 1 for x in b):
                raise ValueError(f"method.{k} = {b}: expected two numbers in [0, 1)")
        if self.zip_mode not in ("shortest", "cycle_safe"):
            raise ValueError(f"method.zip_mode = {self.zip_mode!r}: expected shortest or cycle_safe")
        if self.selector_copy not in ("auto", "deepcopy", "restore"):
            raise ValueError(f"method.selector_copy = {self.selector_copy!r}: expected auto, deepcopy or restore")
        if self.record_every < 1:
            raise ValueError(f"method.record_every = {self.record_every}: expected >= 1")
        if self.selector_batch_size < 0:
            raise ValueError(f"method.selector_batch_size = {self.selector_batch_size}: expected >= 0")


# --------------------------------------------------------------------------------------------------
# pure maths
# --------------------------------------------------------------------------------------------------

def selector_weights(omega: torch.Tensor) -> torch.Tensor:
    """σ̃ = N · softmax(ω): mean-one weights (the released TrainableTensorModule, softmax activation)."""
    return omega.numel() * torch.softmax(omega, dim=0)


def selector_loss(omega: torch.Tensor, idx: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
    """mean_{j ∈ idx} σ̃_j(ω) · signal_j, with `signal` detached.

    Algorithm 2: signal = ℓ(θ; z_j); Algorithm 1: signal = ℓ(θ; z_j) − ℓ(θ̂; z_j). Its gradient is
    ∂/∂ω_k = (1/|idx|) Σ_j signal_j · N σ_j (δ_jk − σ_k): a sample with a large signal loses weight
    and, through the softmax, every other sample gains a little."""
    return (selector_weights(omega)[idx] * signal.detach()).mean()


def model_loss(u: float, safe_loss: torch.Tensor, ft_losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """u · ℓ_safe + (1 − u) · mean_j(σ̃_j.detach() · ℓ_j) — the released upper/lower-level mix."""
    return u * safe_loss + (1.0 - u) * (weights.detach() * ft_losses).mean()


def u_at_epoch(epoch: int, u_start: float, u_decay: float) -> float:
    """u = 1 − γ: u_start in epoch 0, then minus u_decay per epoch (clamped to [0, 1])."""
    return min(1.0, max(0.0, u_start - u_decay * epoch))


def top_p_cut(omega: torch.Tensor, topp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank by ω (descending; ties keep the original order) and keep the first ⌈topp · N⌉.

    Returns (rank [N], 0 = largest ω; kept [N] bool). The rounding up is a [choice]: the paper says
    "top 80%", the release does not show the cut's rounding."""
    n = omega.numel()
    k = min(n, max(1, math.ceil(topp * n - 1e-9)))
    order = sorted(range(n), key=lambda i: (-float(omega[i]), i))
    rank = torch.empty(n, dtype=torch.long)
    rank[torch.tensor(order, dtype=torch.long)] = torch.arange(n)
    return rank, rank < k


# --------------------------------------------------------------------------------------------------
# the method
# --------------------------------------------------------------------------------------------------

def _encode_or_none(encode, recs):
    """encode() skips records longer than the context; a batch of only such records gives None."""
    try:
        b = encode(recs)
    except ValueError:  # collate() of an empty list: every record is longer than the context
        log.warning("seal: a batch of %d records is skipped: none fits the context (overlong=skip)", len(recs))
        return None
    return b if b is not None and len(b) > 0 else None


@register("seal", SealConfig)
class Seal(MethodBase):
    def __init__(self, config: SealConfig):
        super().__init__(config)
        self.omega_: torch.Tensor | None = None   # final selector logits, in the order of ids_
        self.ids_: list[str] = []                 # the fine-tuning set the selector was trained on
        self.kept_: list[str] = []
        self.index_: dict[str, int] = {}

    # -- phase 1 --------------------------------------------------------------------------------
    def prepare(self, ctx) -> None:
        c = self.config
        self.ids_ = list(ctx.train_ids)
        self.index_ = {s: i for i, s in enumerate(self.ids_)}
        if self._reuse_recorded_cut(ctx):
            return
        safe = ctx.pool_records(c.safe_pool) or ctx.pool_records("reference")
        if not safe:
            raise ValueError(f"seal: the {c.safe_pool!r} pool and the 'reference' pool are both empty; "
                             "expected safe data (harmful prompt -> refusal): set safety_data or reference_data")
        ft = [ctx.records[i] for i in self.ids_]
        encode = ctx.encode
        restore = None
        if c.selector_model:
            model = ctx.load_model(c.selector_model)
            for p in model.parameters():
                p.requires_grad_(True)
            encode = self._encoder_for(ctx, c.selector_model)
        elif c.selector_copy == "restore" or (c.selector_copy == "auto" and is_peft(ctx.model)):
            model = ctx.model
            restore = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        else:
            model = copy.deepcopy(ctx.model)
        try:
            omega = self._train_selector(ctx, model, encode, safe, ft)
        finally:
            if restore is not None:
                with torch.no_grad():
                    for n, p in model.named_parameters():
                        if n in restore:
                            p.copy_(restore[n])
            if model is not ctx.model:
                del model
        self._cut(ctx, omega)

    def _encoder_for(self, ctx, spec: str):
        """The selector model's own tokenizer (transfer across model families)."""
        from explorer.data.tokenize import collate, encode_all, pad_id_of
        from explorer.model.load import load_tokenizer
        from explorer.prepare.specs import resolve_spec

        tok = load_tokenizer(resolve_spec(spec))
        pad = pad_id_of(tok)

        def encode(recs):
            enc, _ = encode_all(tok, recs, ctx.settings.max_length, strict=False)
            return collate(enc, pad, ctx.device) if enc else None

        return encode

    def _forward_losses(self, ctx, model, batch: Batch) -> torch.Tensor:
        with ctx.autocast():
            return model_nll(model, batch.input_ids, batch.attention_mask, batch.labels)

    def _train_selector(self, ctx, model, encode, safe: list, ft: list) -> torch.Tensor:
        c = self.config
        N = len(ft)
        bs = c.selector_batch_size or ctx.settings.batch_size
        device = ctx.device
        omega = torch.full((N,), float(c.omega_init), device=device, requires_grad=True)
        sel_opt = OptimStep(torch.optim.Adam([omega], lr=c.selector_lr, betas=tuple(c.selector_betas),
                                             weight_decay=0.0), [omega])
        params = [p for p in model.parameters() if p.requires_grad]
        model_opt = OptimStep(torch.optim.AdamW(params, lr=c.model_lr, betas=tuple(c.model_betas), weight_decay=0.0),
                              params, clip=c.model_clip)
        aux = aux_opt = None
        if c.algorithm == 1:
            aux = copy.deepcopy(model)   # θ̂ starts where θ starts
            aux_params = [p for p in aux.parameters() if p.requires_grad]
            aux_opt = OptimStep(torch.optim.AdamW(aux_params, lr=c.model_lr, betas=tuple(c.model_betas),
                                                  weight_decay=0.0), aux_params, clip=c.model_clip)
        n_ft_batches = math.ceil(N / bs)
        n_safe_batches = math.ceil(len(safe) / bs)
        per_epoch = n_ft_batches if c.zip_mode == "cycle_safe" else min(n_ft_batches, n_safe_batches)
        total = per_epoch * c.selector_epochs
        # the authors' constant schedule with a linear warm-up over ratio · total steps, one factor for
        # every optimiser of the phase (each at its own lr times the factor)
        warm = LrSchedule(1.0, total, math.ceil(c.model_warmup_ratio * total), "constant")
        if c.zip_mode == "shortest" and n_safe_batches < n_ft_batches:
            log.warning("seal: zip(safe, fine-tuning) visits only %d of %d fine-tuning batches per epoch "
                        "(safe pool %d < fine-tuning set %d); zip_mode=cycle_safe visits all",
                        n_safe_batches, n_ft_batches, len(safe), N)
        last_loss = torch.full((N,), float("nan"))
        last_aux = torch.full((N,), float("nan"))
        model.train()
        step = 0
        dist = dist_of(ctx)
        for epoch in range(c.selector_epochs):
            u = u_at_epoch(epoch, c.u_start, c.u_decay)
            ft_order = torch.randperm(N, generator=ctx.generator).tolist()
            safe_order = torch.randperm(len(safe), generator=ctx.generator).tolist()
            safe_sum, n_steps = 0.0, 0
            for b in range(per_epoch):
                idx_list = ft_order[b * bs:(b + 1) * bs]
                sb = b % n_safe_batches
                s_list = safe_order[sb * bs:(sb + 1) * bs]
                if dist.enabled:   # data-parallel phase 1: each rank its contiguous share of both batches
                    idx_list = idx_list[slice(*dist.shard(len(idx_list)))]
                    s_list = s_list[slice(*dist.shard(len(s_list)))]
                ft_batch = _encode_or_none(encode, [ft[i] for i in idx_list]) if idx_list else None
                safe_batch = _encode_or_none(encode, [safe[i] for i in s_list]) if s_list else None
                skip = ft_batch is None or safe_batch is None
                if dist.enabled:   # the ranks skip together (a rank with nothing to contribute skips the step)
                    skip = bool(dist.all_max(torch.tensor(1 if skip else 0)))
                if skip:
                    continue  # every record of the batch was too long for the context
                # encode() skips over-long records: map the rows back to selector indices
                idx = torch.tensor([self.index_[s] for s in ft_batch.sample_ids], device=device)
                lr_scale = warm(step)
                model_opt.set_lr(lr=c.model_lr * lr_scale)
                sel_opt.set_lr(lr=c.selector_lr * lr_scale)

                if dist.enabled:   # means over the global batches: local sums over the global counts
                    n_safe = float(dist.all_sum(torch.tensor(float(len(safe_batch)))))
                    n_ft = float(dist.all_sum(torch.tensor(float(len(ft_batch)))))
                    safe_local = self._forward_losses(ctx, model, safe_batch).sum() / n_safe
                    ft_losses = self._forward_losses(ctx, model, ft_batch)
                    weights = selector_weights(omega)[idx]
                    loss = u * safe_local + (1.0 - u) * (weights.detach() * ft_losses).sum() / n_ft
                    safe_loss = dist.all_sum(safe_local.detach())
                else:
                    safe_loss = self._forward_losses(ctx, model, safe_batch).mean()        # ℓ_safe
                    ft_losses = self._forward_losses(ctx, model, ft_batch)                 # [B] ℓ(θ; z_j)
                    weights = selector_weights(omega)[idx]                                 # σ̃_j
                    loss = model_loss(u, safe_loss, ft_losses, weights)
                model_opt.zero_grad()
                loss.backward()
                dist.all_reduce_grads(params)
                model_opt.step()                                       # clipped to model_clip (> 0)

                signal = ft_losses.detach().float()
                row_extra = {}
                if aux is not None:
                    aux_opt.set_lr(lr=c.model_lr * lr_scale)
                    aux_losses = self._forward_losses(ctx, aux, ft_batch)             # ℓ(θ̂; z_j)
                    if dist.enabled:
                        aux_loss = (weights.detach() * aux_losses).sum() / n_ft
                    else:
                        aux_loss = (weights.detach() * aux_losses).mean()
                    aux_opt.zero_grad()
                    aux_loss.backward()
                    dist.all_reduce_grads(aux_params)
                    if dist.enabled:
                        aux_loss = dist.all_sum(aux_loss.detach())
                    aux_opt.step()
                    signal = signal - aux_losses.detach().float()                      # the loss gap
                    last_aux[idx.cpu()] = aux_losses.detach().float().cpu()
                    row_extra = {"aux_loss": float(aux_loss.detach())}
                if dist.enabled:
                    s_loss = (selector_weights(omega)[idx] * signal.detach()).sum() / n_ft
                else:
                    s_loss = selector_loss(omega, idx, signal)
                sel_opt.zero_grad()
                s_loss.backward()
                dist.all_reduce_grads([omega])
                sel_opt.step()

                if dist.enabled:   # every rank's samples, for the records and the step's values
                    if aux is not None:
                        aux_all = dist.gather_cat(aux_losses.detach().float())
                    ft_all = dist.gather_cat(ft_losses.detach().float())
                    w_all = dist.gather_cat(weights.detach().float())
                    idx = dist.gather_cat(idx)
                    s_loss = dist.all_sum(s_loss.detach())
                    loss = u * safe_loss + (1.0 - u) * (w_all * ft_all).mean()
                    ft_losses, weights = ft_all, w_all
                    if aux is not None:
                        last_aux[idx.cpu()] = aux_all.cpu()
                last_loss[idx.cpu()] = ft_losses.detach().float().cpu()
                safe_sum += float(safe_loss.detach())
                n_steps += 1
                ctx.log("seal_steps", {"step": step, "epoch": epoch, "phase": "selector", "u": u,
                                       "gamma": 1.0 - u, "safe_loss": float(safe_loss.detach()),
                                       "ft_loss": float(ft_losses.detach().mean()),
                                       "weighted_loss": float((weights.detach() * ft_losses.detach()).mean()),
                                       "selector_loss": float(s_loss.detach()), "model_loss": float(loss.detach()),
                                       "n_batch": len(ft_batch), **row_extra})
                if step % c.record_every == 0 or step == total - 1:
                    self._snapshot(ctx, step, epoch, omega, last_loss, last_aux if aux is not None else None,
                                   set(idx.tolist()))
                step += 1
            ctx.log("seal_epochs", {"step": max(step - 1, 0), "epoch": epoch, "u": u, "gamma": 1.0 - u,
                                    "safe_loss": safe_sum / max(n_steps, 1), "steps": n_steps})
        self.last_step_ = max(step - 1, 0)
        if aux is not None:
            del aux
        return omega.detach().float().cpu()

    def _snapshot(self, ctx, step, epoch, omega, last_loss, last_aux, in_batch: set) -> None:
        om = omega.detach().float().cpu()
        w = selector_weights(om)
        rows = []
        for i, sid in enumerate(self.ids_):
            lv = float(last_loss[i])
            row = {"step": step, "epoch": epoch, "phase": "selector", "sample_id": sid,
                   "omega": float(om[i]), "weight": float(w[i]), "loss": None if math.isnan(lv) else lv,
                   "in_batch": i in in_batch}
            if last_aux is not None:
                av = float(last_aux[i])
                row["loss_aux"] = None if math.isnan(av) else av
                row["gap"] = None if (math.isnan(av) or math.isnan(lv)) else lv - av
            rows.append(row)
        ctx.log("seal_selector", rows)

    def _cut(self, ctx, omega: torch.Tensor) -> None:
        c = self.config
        rank, kept = top_p_cut(omega, c.topp)
        w = selector_weights(omega)
        ctx.log("seal_cut", [{"step": getattr(self, "last_step_", 0), "phase": "cut", "sample_id": sid,
                              "omega": float(omega[i]), "weight": float(w[i]), "rank": int(rank[i]),
                              "kept": bool(kept[i]), "topp": c.topp} for i, sid in enumerate(self.ids_)])
        self._apply(ctx, omega, kept)

    def _apply(self, ctx, omega: torch.Tensor, kept: torch.Tensor) -> None:
        self.omega_ = omega
        self.kept_ = [sid for i, sid in enumerate(self.ids_) if bool(kept[i])]
        ctx.train_ids = list(self.kept_)
        ctx.state["seal"] = {"n_selected": len(self.kept_), "n_dropped": len(self.ids_) - len(self.kept_),
                             "topp": self.config.topp}

    def _reuse_recorded_cut(self, ctx) -> bool:
        """On `--resume`, prepare() runs again: reuse the cut already recorded in the run folder
        instead of retraining the selector (and recording its rows twice)."""
        d = Path(ctx.run_dir) / "seal_cut" if ctx.run_dir else None
        if d is None or not d.is_dir() or not any(d.glob("part-*.parquet")):
            return False
        import pandas as pd

        df = pd.concat([pd.read_parquet(p) for p in sorted(d.glob("part-*.parquet"))])
        df = df.drop_duplicates("sample_id", keep="last").set_index("sample_id")
        missing = [s for s in self.ids_ if s not in df.index]
        if missing:
            raise ValueError(f"{d}: the recorded cut lacks {len(missing)} fine-tuning samples "
                             f"(first: {missing[0]}); expected the same fine-tuning set as the run")
        omega = torch.tensor([float(df.loc[s, "omega"]) for s in self.ids_])
        kept = torch.tensor([bool(df.loc[s, "kept"]) for s in self.ids_])
        self.last_step_ = int(df["step"].max())
        self._apply(ctx, omega, kept)
        return True

    # -- phase 2 --------------------------------------------------------------------------------
    def decide(self, batch: Batch, ctx) -> Decision:
        B = len(batch)
        scores = {}
        if self.omega_ is not None:
            w = selector_weights(self.omega_)
            idx = [self.index_[s] for s in batch.sample_ids]
            scores = {"omega": self.omega_[idx], "selector_weight": w[idx]}
        return Decision(weights=torch.ones(B, device=batch.input_ids.device), scores=scores,
                        step_metrics={"phase": "sft"})

    def state_dict(self) -> dict:
        return {}  # phase 2 is plain SFT; the cut is recovered from the run folder on resume

    def load_state_dict(self, state: dict) -> None:
        return None
