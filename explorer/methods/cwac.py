"""CWAC — coupled weight and activation constraints.

Paper: "Preventing Safety Drift in Large Language Models via Coupled Weight and Activation
Constraints" (arXiv 2604.12384, ACL 2026). No public code; method notes: docs/methods/cwac.md.

A layer's drift under fine-tuning, y = f(W h):  Δy ≈ f′(W₀h₀) ⊙ (W₀ Δh + ΔW h₀) — an activation term
and a weight term. CWAC constrains both:

Weight constraint (in `transform_grads`). For every MLP output projection l (`down_proj`), the inputs
X_l on harmful prompts give C_l = X_l X_lᵀ = U diag(λ) Uᵀ; Û_l = the eigenvectors of the small
eigenvalues — the complement of the top r directions that hold `energy` of Σλ [choice: 0.99] — and
Π_l = Û_l Û_lᵀ. Before every optimiser step:

    G_l ← G_l Π_l          (G_l: the gradient of W_l, [out, in]; right-multiplied on the input side)

so an SGD step satisfies ΔW_l X_l ≈ 0 on harmful inputs (explorer/interp/subspace.py).

Activation constraint (in `decide`). A TopK sparse autoencoder on the residual stream after decoder
layer `sae_layer`, trained on a mix of task text and refused harmful prompts; the m safety-critical
latents are those with the largest mean activation difference between refused-harmful and benign
inputs [choice: the paper does not state the rule]; their base values z_base are cached on a
harmful-prompt set; every step a harmful batch b is forwarded and

    L_safety = mean_b ‖z_b − z_b^base‖²   (over the m latents)        L = L_task + λ L_safety,  λ = 0.5

Pairing z_b with z_b^base [choice]. z_b^base is computed once on the starting (aligned) model for a
fixed set of harmful prompts; each step's harmful batch is drawn from that same set (cycling through a
seeded permutation, so the batch at step t depends only on t), and both sides pool the same positions
of the same prompt: `position: prompt_mean` averages the per-token TopK codes over the prompt tokens
(chat template included; causal attention makes them independent of the response), `last_prompt`
takes the last prompt token, where the model decides how its answer begins. The same pooling defines
the selection rule's per-input activation. Since both read prompt positions only, those forward passes
stop at the batch's longest prompt (`prompt_only`): the refusal tokens after it cannot change a prompt
position's residual under causal attention, so they are not run. `activation: topk` uses the SAE's codes as they are; a
latent that drops out of a token's top-k then has value 0 and no gradient, so `relu` (the ReLU of the
pre-activation, equal to the code whenever the latent is in the top-k) is offered as a variant.

Which data [choices]. Harmful prompts: the `harmful_pool` (the reference pool: harmful prompt →
refusal). Benign inputs: the `benign_pool` (the fine-tuning mix; methods may not read provenance, so
its share p of harmful samples stays in and shrinks each latent's difference by about p). The SAE
trains on every non-padding token (prompt and response) of both pools, up to `sae_texts` records each.
Covariances use the prompt tokens of harmful prompts (`cov_tokens: all` adds the refusal tokens).

LoRA. With peft the update of down_proj is ΔW = s·B A (A: [r, in]). ΔW X = s·B (A X), so ΔW X ≈ 0
needs the rows of A to lie in the range of Π. Projecting only dA ← dA Π does not do this: A starts at a
random A₀ with A₀ X ≠ 0, and Adam's per-coordinate scaling moves A out of the range of Π even with
projected gradients. So with LoRA CWAC (1) projects A₀ ← A₀ Π in `prepare` (B₀ = 0, so the model is
unchanged), (2) projects dA ← dA Π in `transform_grads` (the paper's rule on the only input-side factor),
and (3) re-projects A ← A Π after each optimiser step. Then (B A) Π = B A exactly, whatever the optimiser.
down_proj must then be a LoRA target (lora_targets); otherwise the weight constraint would silently do
nothing, and `prepare` raises.

Full fine-tuning follows the paper: gradients are projected, and AdamW's per-coordinate scaling makes
the applied update only approximately Π-consistent. `project_update: true` also re-projects the
accumulated update after each step, W ← W₀ + (W − W₀) Π (exact; not in the paper). Either way
`cwac_layers.update_protected_share` = ‖(W − W₀) U_r‖ / ‖W − W₀‖ shows how much of the accumulated
update lies in the protected directions.

Variants (the paper's ablation): `constraints: both | weight | activation`.

Records (step 0 unless said): cwac_spectra (layer, index, eigenvalue, energy_cum, in_projector,
part = protected (top r, cut from gradients) | free (small eigenvalues, in Π), threshold, rank_kept,
n_inputs), cwac_sae (layer, n_latents, k, fvu, dead_share, ...; the SAE's weights in
<run>/cwac_sae.safetensors), cwac_safety_latents (latent, rank, diff, mean_harmful, mean_benign),
cwac_latent_prompts (latent, rank, sample_id, pool, prompt, activation); per step and
layer cwac_layers (removed_share = 1 − ‖GΠ‖/‖G‖, grad_norm, grad_norm_after, update_protected_share);
every `latent_every` steps cwac_latents (latent, drift = mean over the drift prompts of
(z − z_base)², z_mean, z_base_mean); steps: l_safety, safety_loss (λ·L_safety), removed_share_mean.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from explorer.data.batch import Batch
from explorer.interp.hooks import capture, forward_to, modules_named
from explorer.interp.sae import TopKSAE, train_sae
from explorer.interp.subspace import CovarianceAccumulator, project_right, removed_share, small_eigen_subspace
from explorer.methods.protocol import Decision, MethodBase, dist_of, help_field as _h
from explorer.methods.registry import register
from explorer.model.plumbing import decoder_layers, eval_mode, is_peft

log = logging.getLogger(__name__)

SAE_FILE = "cwac_sae.safetensors"


@dataclass(frozen=True)
class CwacConfig:
    """Defaults are the paper's where it gives them (λ = 0.5, 100 latents); the rest are choices."""

    constraints: str = _h("both (CWAC) | weight (weight-only ablation) | activation (activation-only)", "both")
    lam: float = _h("λ: weight of L_safety in L = L_task + λ L_safety (paper: 0.5)", 0.5)
    energy: float = _h("share of the eigen-spectrum Σλ held by the top directions that Π removes "
                       "(not in the paper; 0.99)", 0.99)
    weight_modules: str = _h("name suffix of the constrained layers (Llama: mlp.down_proj)", "mlp.down_proj")
    cov_prompts: int = _h("harmful prompts whose inputs X_l form C_l", 512)
    cov_tokens: str = _h("prompt: prompt tokens of the harmful prompts | all: also their refusal tokens", "prompt")
    project_update: bool = _h("full fine-tuning: after each step also set W ← W₀ + (W − W₀)Π (exact under "
                              "AdamW; not in the paper)", False)
    sae_layer: int = _h("decoder layer whose output (residual stream) the SAE reads; -1 = the middle, "
                        "(n_layers − 1) // 2", -1)
    sae_latents: int = _h("SAE dictionary size; 0 = sae_expansion · hidden size", 0)
    sae_expansion: int = _h("latents per residual dimension when sae_latents = 0", 4)
    sae_k: int = _h("TopK: active latents per token", 16)
    sae_steps: int = _h("SAE training steps (Adam)", 1500)
    sae_batch_tokens: int = _h("tokens per SAE training step", 1024)
    sae_lr: float = _h("SAE learning rate", 1e-3, gt=0)
    sae_auxk_coef: float = _h("AuxK coefficient for dead latents (Gao et al.: 1/32); 0 = off", 1 / 32, ge=0)
    sae_texts: int = _h("records per pool (benign and harmful) whose tokens train the SAE", 1000)
    sae_path: str = _h("load a trained SAE (safetensors, from a previous run) instead of training one", "")
    n_safety_latents: int = _h("m: safety-critical latents (paper: 100; scale with the dictionary)", 100)
    selection: str = _h("diff: largest mean(harmful) − mean(benign) | abs_diff: largest |difference|", "diff")
    selection_prompts: int = _h("prompts per side (harmful, benign) for the selection rule", 512)
    position: str = _h("prompt_mean: mean code over prompt tokens | last_prompt: code at the last prompt "
                       "token (selection, z_base and L_safety alike)", "prompt_mean")
    activation: str = _h("topk: the SAE's codes | relu: ReLU of the pre-activation (gradient also when a "
                         "latent leaves the top-k)", "topk")
    harmful_pool: str = _h("pool of harmful prompts (refused): SAE text, selection, z_base, covariances",
                           "reference")
    benign_pool: str = _h("pool of benign inputs for SAE text and selection (the fine-tuning mix)", "task")
    n_base_prompts: int = _h("harmful prompts with cached z_base; the per-step harmful batches cycle "
                             "through them", 256)
    harmful_batch_size: int = _h("harmful prompts forwarded per step for L_safety", 16)
    latent_every: int = _h("record cwac_latents (drift from base) every N steps (and at the last)", 10)
    drift_prompts: int = _h("harmful prompts (from the z_base set) on which drift is measured", 64)
    top_latents_shown: int = _h("safety latents whose top-activating prompts are recorded", 10, ge=0)
    prompts_per_latent: int = _h("top-activating prompts recorded per latent", 5, ge=0)
    encode_batch_size: int = _h("prompts per forward pass in prepare", 64)
    skip_first_tokens: int = _h("leading positions of every sequence left out of the SAE's training tokens, "
                                "the pooled codes and the covariances (not in the paper; 0 = none). 1 leaves out "
                                "an attention-sink first token, e.g. SmolLM2's <|im_start|> whose residual norm "
                                "is ~160x the median's (docs/methods/cwac.md)", 0)
    seed: int = _h("seed of the prompt subsets and the SAE (the loader's generator is left alone, so "
                   "the data order equals the SFT run's of the same run seed)", 0)

    def __post_init__(self):
        if self.constraints not in ("both", "weight", "activation"):
            raise ValueError(f"method.constraints = {self.constraints!r}: expected both, weight or activation")
        if not 0 < self.energy <= 1:
            raise ValueError(f"method.energy = {self.energy}: expected a share in (0, 1]")
        if self.lam < 0:
            raise ValueError(f"method.lam = {self.lam}: expected >= 0")
        for k in ("sae_k", "sae_steps", "sae_batch_tokens", "n_safety_latents", "selection_prompts",
                  "n_base_prompts", "harmful_batch_size", "cov_prompts", "latent_every", "drift_prompts",
                  "encode_batch_size", "sae_expansion", "sae_texts"):
            if getattr(self, k) < 1:
                raise ValueError(f"method.{k} = {getattr(self, k)}: expected >= 1")
        if self.skip_first_tokens < 0:
            raise ValueError(f"method.skip_first_tokens = {self.skip_first_tokens}: expected >= 0")
        if self.sae_latents < 0:
            raise ValueError(f"method.sae_latents = {self.sae_latents}: expected >= 0 (0 = expansion · hidden)")
        if self.sae_latents and self.sae_k > self.sae_latents:
            raise ValueError(f"method.sae_k = {self.sae_k}: expected <= sae_latents = {self.sae_latents}")
        if self.selection not in ("diff", "abs_diff"):
            raise ValueError(f"method.selection = {self.selection!r}: expected diff or abs_diff")
        if self.position not in ("prompt_mean", "last_prompt"):
            raise ValueError(f"method.position = {self.position!r}: expected prompt_mean or last_prompt")
        if self.activation not in ("topk", "relu"):
            raise ValueError(f"method.activation = {self.activation!r}: expected topk or relu")
        if self.cov_tokens not in ("prompt", "all"):
            raise ValueError(f"method.cov_tokens = {self.cov_tokens!r}: expected prompt or all")

    @property
    def weight_on(self) -> bool:
        return self.constraints in ("both", "weight")

    @property
    def activation_on(self) -> bool:
        return self.constraints in ("both", "activation")


# --------------------------------------------------------------------------------------------------
# pure maths
# --------------------------------------------------------------------------------------------------

def prompt_mask(batch: Batch, skip_first: int = 0) -> torch.Tensor:
    """[B, T] True on prompt tokens (not padding, not supervised response), past the first `skip_first`
    positions (sequences are right-padded, so those are each sequence's first tokens)."""
    return skip_leading(batch.attention_mask.bool() & (batch.labels == -100), skip_first)


def prompt_only(batch: Batch) -> Batch:
    """`batch` cut after the last prompt position of its longest prompt. The pooled codes read prompt
    positions only, and under causal attention a prompt position's residual does not depend on what
    follows it, so the cut rows give the codes the whole rows give (up to float rounding) in a shorter
    forward pass: a refusal's response tokens are never run for selection, z_base, drift or L_safety."""
    prompt = prompt_mask(batch)
    pos = torch.arange(prompt.shape[1], device=prompt.device)
    end = int(torch.where(prompt, pos + 1, 0).max()) if prompt.numel() else 0
    end = max(end, 1)
    return Batch(batch.input_ids[:, :end], batch.attention_mask[:, :end], batch.labels[:, :end],
                 batch.sample_ids, batch.n_target_tokens)


def skip_leading(mask: torch.Tensor, n: int) -> torch.Tensor:
    """`mask` [B, T] with its first `n` positions set False."""
    if n > 0:
        mask = mask.clone()
        mask[:, :n] = False
    return mask


def pool_codes(z: torch.Tensor, mask: torch.Tensor, position: str) -> torch.Tensor:
    """Per-input latent values from per-token codes z [B, T, n] and the prompt mask [B, T] → [B, n].

    prompt_mean: mean over prompt tokens; last_prompt: the last prompt token (prompts are a prefix)."""
    if position == "prompt_mean":
        m = mask.to(z.dtype).unsqueeze(-1)                                   # [B, T, 1]
        return (z * m).sum(1) / m.sum(1).clamp_min(1.0)
    pos = torch.arange(mask.shape[1], device=mask.device)
    last = torch.where(mask.bool(), pos, -1).max(1).values.clamp_min(0)       # [B] last True position
    return z[torch.arange(z.shape[0], device=z.device), last]


def select_safety_latents(mean_harmful: torch.Tensor, mean_benign: torch.Tensor, m: int,
                          rule: str = "diff") -> tuple[torch.Tensor, torch.Tensor]:
    """The m latents with the largest mean activation difference (harmful − benign) ('diff') or its
    absolute value ('abs_diff'). Returns (indices [m] in rank order, diff [n])."""
    diff = mean_harmful.float() - mean_benign.float()
    key = diff.abs() if rule == "abs_diff" else diff
    m = min(int(m), diff.numel())
    return key.topk(m).indices, diff


def safety_loss(z: torch.Tensor, z_base: torch.Tensor) -> torch.Tensor:
    """L_safety = mean_b ‖z_b − z_b^base‖² over the safety latents; z, z_base: [B, m]."""
    return ((z.float() - z_base.float()) ** 2).sum(-1).mean()


# --------------------------------------------------------------------------------------------------
# the method
# --------------------------------------------------------------------------------------------------

def _recorded(ctx, table: str) -> bool:
    return bool(ctx.run_dir) and (any((Path(ctx.run_dir) / table).glob("part-*.parquet"))
                                  or (Path(ctx.run_dir) / f"{table}.parquet").exists())


@register("cwac", CwacConfig)
class Cwac(MethodBase):
    """See the module docstring. State learned in `prepare` carries a trailing underscore."""

    def __init__(self, config: CwacConfig):
        super().__init__(config)
        self.sae_: TopKSAE | None = None
        self.layer_idx_: int | None = None
        self.latents_: torch.Tensor | None = None          # [m] safety latents, by rank
        self.base_ids_: list[str] = []                     # the z_base prompt set
        self.z_base_: torch.Tensor | None = None           # [n_base, m]
        self.subspaces_: dict = {}                         # layer name -> Subspace
        self.targets_: dict[str, list[torch.nn.Parameter]] = {}   # layer name -> constrained weights
        self.lora_: bool = False
        self.w0_: dict[str, torch.Tensor] = {}             # full fine-tuning: W₀ per layer

    # -- helpers --------------------------------------------------------------------------------
    def _subset(self, ctx, pool: str, n: int) -> list:
        """The first n records of `pool` in a seeded permutation (fixed for the run)."""
        recs = ctx.pool_records(pool)
        if not recs:
            return []
        g = torch.Generator().manual_seed(self.config.seed)
        order = torch.randperm(len(recs), generator=g).tolist()
        return [recs[i] for i in order[:n]]

    def _batches(self, ctx, recs):
        """Yield encoded batches (records too long for the context are skipped by ctx.encode)."""
        bs = self.config.encode_batch_size
        from explorer.data.tokenize import ContextLengthError

        for i in range(0, len(recs), bs):
            try:
                b = ctx.encode(recs[i:i + bs])
            except ContextLengthError:   # overlong=error: the user asked for the error
                raise
            except ValueError:           # collate() of an empty list: every record of the chunk was too long
                continue
            if len(b):
                yield b

    def _resid(self, ctx, batch: Batch, grad: bool) -> torch.Tensor:
        """Residual stream after decoder layer `sae_layer`: [B, T, d] (the rest of the model is skipped)."""
        layer = decoder_layers(ctx.model)[self.layer_idx_]
        with (nullcontext() if grad else torch.no_grad()), ctx.autocast():
            h = forward_to(ctx.model, layer, detach=not grad, input_ids=batch.input_ids,
                           attention_mask=batch.attention_mask)
        return h.float()

    def _codes(self, h: torch.Tensor) -> torch.Tensor:
        pre = self.sae_.pre_activations(h)
        return self.sae_.topk(pre, self.sae_.k) if self.config.activation == "topk" else torch.relu(pre)

    def _pooled(self, ctx, recs, latents: torch.Tensor | None = None):
        """(sample_ids, pooled codes [N, n or m]) on the current model, no gradient."""
        ids, out = [], []
        for b in self._batches(ctx, recs):
            b = prompt_only(b)
            with torch.no_grad():
                z = self._codes(self._resid(ctx, b, grad=False))
                z = z if latents is None else z[..., latents]
                out.append(pool_codes(z, prompt_mask(b, self.config.skip_first_tokens), self.config.position))
            ids += b.sample_ids
        return ids, (torch.cat(out) if out else torch.zeros(0, 0))

    # -- prepare --------------------------------------------------------------------------------
    def prepare(self, ctx) -> None:
        c = self.config
        harmful = self._subset(ctx, c.harmful_pool, max(c.selection_prompts, c.n_base_prompts, c.cov_prompts,
                                                        c.sae_texts))
        if not harmful:
            raise ValueError(f"cwac: pool {c.harmful_pool!r} is empty; expected harmful prompts with refusals "
                             "(method.harmful_pool)")
        with eval_mode(ctx.model):
            if c.weight_on:
                self._prepare_weight(ctx, harmful[:c.cov_prompts])
            if c.activation_on:
                self._prepare_activation(ctx, harmful)

    def _prepare_weight(self, ctx, harmful) -> None:
        c = self.config
        mods = modules_named(ctx.model, c.weight_modules)
        if not mods:
            raise ValueError(f"cwac: no module named *{c.weight_modules} in {type(ctx.model).__name__}; "
                             "expected Llama-style MLP projections (method.weight_modules)")
        self.lora_ = is_peft(ctx.model)
        for name, m in mods.items():
            if hasattr(m, "lora_A"):
                params = [m.lora_A[a].weight for a in m.lora_A if m.lora_A[a].weight.requires_grad]
            else:
                params = [m.weight] if m.weight.requires_grad else []
            if params:
                self.targets_[name] = params
        if not self.targets_:
            raise ValueError(f"cwac: constraints={c.constraints!r} needs trainable *{c.weight_modules} weights, "
                             f"but none is trainable (with LoRA add {c.weight_modules.split('.')[-1]} to "
                             "lora_targets), or use method.constraints=activation")
        # X_l: inputs of each constrained layer on harmful prompts (prompt tokens, or all tokens)
        acc = {n: None for n in self.targets_}
        dist = dist_of(ctx)
        # each rank its share of the prompts (one process: all of them); C and the token count are
        # all-reduced below (one process: handed back as they are)
        harmful = harmful[slice(*dist.shard(len(harmful)))]
        with capture({n: mods[n] for n in self.targets_}, what="input") as got:
            for b in self._batches(ctx, harmful):
                with torch.no_grad(), ctx.autocast():
                    ctx.model(input_ids=b.input_ids, attention_mask=b.attention_mask)
                mask = prompt_mask(b, c.skip_first_tokens) if c.cov_tokens == "prompt" else \
                    skip_leading(b.attention_mask.bool(), c.skip_first_tokens)
                for n in self.targets_:
                    x = got[n].pop()                                          # [B, T, in]
                    if acc[n] is None:
                        acc[n] = CovarianceAccumulator(x.shape[-1], device=x.device)
                    acc[n].add(x.float(), mask)
        for n, params in self.targets_.items():
            if acc[n] is None:   # this rank had no prompt that fits: it adds zeros
                acc[n] = CovarianceAccumulator(params[0].shape[-1], device=params[0].device)
            acc[n].C = dist.all_sum(acc[n].C)
            acc[n].n = int(dist.all_sum(torch.tensor(acc[n].n, dtype=torch.long)))
        rows = []
        for n, a in acc.items():
            sub = small_eigen_subspace(a.C, c.energy, a.n)
            self.subspaces_[n] = sub
            cum = sub.energy_cum().tolist()
            rows += [{"step": 0, "layer": n, "index": i, "eigenvalue": float(e), "energy_cum": cum[i],
                      "in_projector": i >= sub.rank_kept, "part": "protected" if i < sub.rank_kept else "free",
                      "threshold": c.energy, "rank_kept": sub.rank_kept, "n_inputs": a.n}
                     for i, e in enumerate(sub.evals.tolist())]
            log.info("cwac: %s: %d of %d input directions hold %.3g of the energy (%d tokens)", n,
                     sub.rank_kept, sub.evals.numel(), c.energy, a.n)
        if not _recorded(ctx, "cwac_spectra"):
            ctx.log("cwac_spectra", rows)
        with torch.no_grad():
            for n, params in self.targets_.items():
                if self.lora_:   # A₀ ← A₀ Π (B₀ = 0: the model does not change)
                    for p in params:
                        p.copy_(project_right(p, self.subspaces_[n].U_top.to(p.device)))
                else:
                    self.w0_[n] = params[0].detach().clone()

    def _prepare_activation(self, ctx, harmful) -> None:
        c = self.config
        layers = decoder_layers(ctx.model)
        self.layer_idx_ = (len(layers) - 1) // 2 if c.sae_layer < 0 else c.sae_layer
        if not 0 <= self.layer_idx_ < len(layers):
            raise ValueError(f"cwac: method.sae_layer = {c.sae_layer}: the model has {len(layers)} decoder layers")
        benign = self._subset(ctx, c.benign_pool, max(c.sae_texts, c.selection_prompts))
        if not benign:
            raise ValueError(f"cwac: pool {c.benign_pool!r} is empty; expected benign inputs (method.benign_pool)")
        g = torch.Generator().manual_seed(c.seed)
        sae_info: dict = {}
        if c.sae_path:
            self.sae_ = TopKSAE.load(c.sae_path).to(ctx.device)
            sae_info = {"loaded_from": c.sae_path}
        else:
            # SAE text: every non-padding token of benign and refused-harmful samples
            acts = []
            for b in self._batches(ctx, benign[:c.sae_texts] + harmful[:c.sae_texts]):
                h = self._resid(ctx, b, grad=False)
                acts.append(h[skip_leading(b.attention_mask.bool(), c.skip_first_tokens)])   # [n_tok, d]
            acts = torch.cat(acts)
            n_lat = c.sae_latents or c.sae_expansion * acts.shape[-1]
            self.sae_, sae_info = train_sae(acts, n_lat, c.sae_k, steps=c.sae_steps,
                                            batch_size=c.sae_batch_tokens, lr=c.sae_lr,
                                            auxk_coef=c.sae_auxk_coef, generator=g)
            if ctx.run_dir and dist_of(ctx).is_main:   # one file, written by rank 0 (the SAE is the same on every rank)
                self.sae_.save(Path(ctx.run_dir) / SAE_FILE, layer=self.layer_idx_, **sae_info)
        st = self.sae_.settings
        if not _recorded(ctx, "cwac_sae"):
            ctx.log("cwac_sae", [{"step": 0, "layer": self.layer_idx_, "d_model": st.d_model,
                                  "n_latents": st.n_latents, "k": st.k, "n_safety_latents": c.n_safety_latents,
                                  "file": SAE_FILE if ctx.run_dir and not c.sae_path else c.sae_path,
                                  **sae_info}])
        # selection rule: mean pooled activation on refused-harmful minus benign prompts
        h_ids, z_h = self._pooled(ctx, harmful[:c.selection_prompts])
        b_ids, z_b = self._pooled(ctx, benign[:c.selection_prompts])
        self.latents_, diff = select_safety_latents(z_h.mean(0), z_b.mean(0), c.n_safety_latents, c.selection)
        n_pos = int((diff[self.latents_] > 0).sum())
        if n_pos < len(self.latents_):
            log.warning("cwac: only %d of the %d selected latents fire more on harmful prompts", n_pos,
                        len(self.latents_))
        mh, mb = z_h.mean(0), z_b.mean(0)
        if not _recorded(ctx, "cwac_safety_latents"):
            ctx.log("cwac_safety_latents", [{"step": 0, "latent": int(j), "rank": r, "diff": float(diff[j]),
                                             "mean_harmful": float(mh[j]), "mean_benign": float(mb[j])}
                                            for r, j in enumerate(self.latents_.tolist())])
            recs = {r.sample_id: r for r in harmful + benign}
            rows = []
            for r, j in enumerate(self.latents_.tolist()[:c.top_latents_shown]):
                allz = torch.cat([z_h[:, j], z_b[:, j]])
                allids = [(c.harmful_pool, s) for s in h_ids] + [(c.benign_pool, s) for s in b_ids]
                top = allz.topk(min(c.prompts_per_latent, len(allz)))
                for rank, (v, i) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
                    pool, sid = allids[i]
                    rows.append({"step": 0, "latent": j, "latent_rank": r, "rank": rank, "sample_id": sid,
                                 "pool": pool, "prompt": recs[sid].prompt, "activation": v})
            ctx.log("cwac_latent_prompts", rows)
        # z_base on the harmful-prompt set, paired with each step's harmful batch by sample id
        base = harmful[:c.n_base_prompts]
        self.base_ids_, self.z_base_ = self._pooled(ctx, base, self.latents_)
        self._base_recs = {r.sample_id: r for r in base}
        self._record_drift(ctx, step=0)

    # -- per step -------------------------------------------------------------------------------
    def _harmful_batch_ids(self, step: int) -> list[int]:
        """Rows of the z_base set for step t: consecutive slices of a seeded permutation, cycling."""
        n = len(self.base_ids_)
        if not hasattr(self, "_order"):
            self._order = torch.randperm(n, generator=torch.Generator().manual_seed(self.config.seed + 1)).tolist()
        hb = min(self.config.harmful_batch_size, n)
        start = (step * hb) % n
        return [self._order[(start + i) % n] for i in range(hb)]

    def decide(self, batch: Batch, ctx) -> Decision:
        weights = torch.ones(len(batch), device=batch.input_ids.device)
        if not self.config.activation_on:
            return Decision(weights=weights)
        rows = self._harmful_batch_ids(ctx.step)
        hb = prompt_only(ctx.encode([self._base_recs[self.base_ids_[i]] for i in rows]))
        # pair each encoded row with its own z_base row by sample id, never by position
        row_of = {sid: i for i, sid in enumerate(self.base_ids_)}
        z = pool_codes(self._codes(self._resid(ctx, hb, grad=True))[..., self.latents_],
                       prompt_mask(hb, self.config.skip_first_tokens), self.config.position)   # [b, m]
        l_safety = safety_loss(z, self.z_base_[[row_of[sid] for sid in hb.sample_ids]].to(z.device))
        extra = self.config.lam * l_safety
        return Decision(weights=weights, extra_loss=extra,
                        step_metrics={"l_safety": float(l_safety.detach()), "safety_loss": float(extra.detach())})

    def transform_grads(self, ctx) -> dict[str, float] | None:
        if not self.config.weight_on:
            return None
        rows, shares = [], []
        for n, params in self.targets_.items():
            U = self.subspaces_[n].U_top
            for p in params:
                if p.grad is None:
                    continue
                G = p.grad
                Gp = project_right(G, U.to(G.device))
                share = removed_share(G, Gp)
                row = {"step": ctx.step, "layer": n, "removed_share": share, "grad_norm": float(G.float().norm()),
                       "grad_norm_after": float(Gp.float().norm())}
                p.grad.copy_(Gp)
                rows.append(row)
                shares.append(share)
        self._pending_rows = rows
        return {"removed_share_mean": sum(shares) / len(shares) if shares else float("nan")}

    @torch.no_grad()
    def after_step(self, ctx) -> None:
        c = self.config
        if c.weight_on:
            rows = getattr(self, "_pending_rows", [])
            for n, params in self.targets_.items():
                U = self.subspaces_[n].U_top
                if self.lora_:   # A ← A Π: Adam's per-coordinate steps leave the range of Π otherwise
                    for p in params:
                        p.copy_(project_right(p, U.to(p.device)))
                    continue
                W = params[0]
                dW = W - self.w0_[n]
                if c.project_update:
                    W.copy_(self.w0_[n] + project_right(dW, U.to(W.device)))
                    dW = W - self.w0_[n]
                norm = float(dW.float().norm())
                share = float((dW.float() @ U.to(W.device).float()).norm()) / norm if norm > 0 else 0.0
                for r in rows:
                    if r["layer"] == n:
                        r["update_protected_share"] = share
            ctx.log("cwac_layers", rows)
            self._pending_rows = []
        done = ctx.step + 1
        if c.activation_on and (done % c.latent_every == 0 or done == ctx.total_steps):
            self._record_drift(ctx, step=done)

    def _record_drift(self, ctx, step: int) -> None:
        """cwac_latents at `step` (optimiser steps taken): drift = mean over the drift prompts of
        (z − z_base)² per safety latent."""
        n = min(self.config.drift_prompts, len(self.base_ids_))
        with eval_mode(ctx.model):
            ids, z = self._pooled(ctx, [self._base_recs[s] for s in self.base_ids_[:n]], self.latents_)
        row_of = {sid: i for i, sid in enumerate(self.base_ids_)}
        zb = self.z_base_[[row_of[s] for s in ids]].to(z.device)     # by sample id, never by position
        drift = ((z - zb) ** 2).mean(0)
        ctx.log("cwac_latents", [{"step": step, "latent": int(j), "rank": r, "drift": float(drift[r]),
                                  "z_mean": float(z[:, r].mean()), "z_base_mean": float(zb[:, r].mean())}
                                 for r, j in enumerate(self.latents_.tolist())])

    # -- resume ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """prepare() recomputes everything deterministically on the starting model; the saved state
        pins it anyway (SAE, latents, z_base, U_r, W₀)."""
        st: dict = {}
        if self.sae_ is not None:
            st.update({f"sae.{k}": v for k, v in self.sae_.state_dict().items()})
            st["latents"] = self.latents_
            st["z_base"] = self.z_base_
        for i, (n, sub) in enumerate(self.subspaces_.items()):
            st[f"U_top.{i}"] = sub.U_top
            if n in self.w0_:
                st[f"w0.{i}"] = self.w0_[n]
        return st

    def load_state_dict(self, state: dict) -> None:
        if self.sae_ is not None and "latents" in state:
            self.sae_.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("sae.")})
            self.latents_ = state["latents"].to(self.latents_.device).long()
            self.z_base_ = state["z_base"].to(self.z_base_.device)
        for i, n in enumerate(self.subspaces_):
            if f"U_top.{i}" in state:
                self.subspaces_[n].U_top = state[f"U_top.{i}"].to(self.subspaces_[n].U_top.device)
            if f"w0.{i}" in state and n in self.w0_:
                self.w0_[n] = state[f"w0.{i}"].to(self.w0_[n].device)
