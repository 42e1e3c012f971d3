"""An independent check of a selection: each task sample's first-order effect on held-out losses.

TracIn (Pruthi et al. 2020) scores a training sample z against a test loss by the change one gradient
step on z alone would cause, to first order:

    effect(z) = L_test(θ − η ∇ℓ_z) − L_test(θ) ≈ −η · ⟨∇ℓ_z(θ), ∇L_test(θ)⟩

explorer records two such effects for every task sample at chosen steps, whatever the method:

    effect_safety   L_test = the held-out refusal loss: the mean NLL of a refusal on held-out harmful
                    prompts (the evaluation suites' prompts, never trained on, paired with the tiny
                    world's refusal sentences — eval prompts carry no response of their own)
    effect_task     L_test = the held-out task loss: the mean NLL of the answers of held-out task prompts

Sign convention: an effect is the predicted change of a held-out LOSS, so negative is good.
effect_safety > 0 means one step on this sample alone would raise the refusal loss — lower safety;
effect_safety < 0 means it would raise safety. η is the step's learning rate (the TracIn convention;
AdamW rescales each coordinate, so this is the SGD step the gradient points along, not AdamW's).

The check is independent of every method: it reads no method score, and its held-out prompts are
disjoint from DualSelect's reference pool (the loop checks it) and from SEAL's safety data.

`InfluenceProbe` is what the training loop calls (off by default, `eval.influence_every` in RunConfig):

    probe = InfluenceProbe.for_run(cfg, suites, encode, autocast_dtype)   # None when eval.influence_every = 0
    cols = probe(model, batch, step, lr)     # {} at other steps, else {"effect_safety": [...], ...}

Why not a library here: dattri 0.3 (TracIn, TRAK) requires pretty_midi and computes the same dot
products through its own task abstraction; explorer's own per-sample gradients (estimators.py, exact
and tested) give TracIn directly, over every trainable parameter. The stronger check, EK-FAC influence
at the end of a run, does use a library (kronfluence, optional): ekfac.py; see docs/why.md.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from explorer.data.records import Record
from explorer.data.batch import Batch
from explorer.scoring.estimators import directional, flatten, make_estimator, trainable_params
from explorer.model.losses import model_nll
from explorer.model.plumbing import autocast

EFFECT_SAFETY = "effect_safety"
EFFECT_TASK = "effect_task"


def refusal_records(prompts: list[Record], refusals: list[str] | None = None) -> list[Record]:
    """Held-out harmful prompts paired with refusal targets (the i-th prompt gets refusal i mod k):
    the held-out refusal loss is the NLL of refusing them."""
    if refusals is None:
        from explorer.data.generate import REFUSALS

        refusals = REFUSALS
    if not refusals:
        raise ValueError("refusal_records: expected at least one refusal sentence")
    return [Record(r.sample_id, r.pool, r.family, r.category, r.prompt, refusals[i % len(refusals)], r.provenance)
            for i, r in enumerate(prompts)]


def heldout_gradient(model, batch: Batch, params: dict | None = None, autocast_dtype=None) -> torch.Tensor:
    """∇ of the mean per-sample NLL over a held-out batch, flattened over the trainable parameters [P].
    Uses autograd.grad: the parameters' .grad (the training step's) is left untouched."""
    params = params or trainable_params(model)
    with autocast(batch.input_ids.device, autocast_dtype):
        loss = model_nll(model, batch.input_ids, batch.attention_mask, batch.labels).mean()
    names = list(params)
    gs = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
    return flatten({n: (g if g is not None else torch.zeros_like(params[n])).float() for n, g in zip(names, gs)},
                   names)


def first_order_effects(model, batch: Batch, directions: dict[str, torch.Tensor], lr: float,
                        estimator: str = "hooks", autocast_dtype=None) -> dict[str, torch.Tensor]:
    """{name: −lr·⟨g_i, v⟩ [B]} for each held-out gradient v in `directions`.

    estimator "hooks": the exact per-sample gradients g_i [B, P] once, then one GEMV per direction;
    "jvp": the products by forward-mode AD, one pass per direction, never forming [B, P] (for models
    whose B·P floats do not fit)."""
    params = trainable_params(model)
    if estimator == "jvp":
        return {k: -lr * directional(model, batch, v, params, autocast_dtype)[1] for k, v in directions.items()}
    feats = make_estimator(estimator, autocast_dtype=autocast_dtype).features(model, batch, params)
    return {k: -lr * (feats.grads @ v.to(feats.grads.dtype)) for k, v in directions.items()}


@dataclass
class InfluenceProbe:
    """Records effect_safety and effect_task for every task sample every `every` steps."""

    every: int
    safety: Batch                 # held-out harmful prompts → refusals
    task: Batch | None            # held-out task prompts → answers (None: no task column)
    estimator: str = "hooks"
    autocast_dtype: torch.dtype | None = None

    @classmethod
    def for_run(cls, cfg, suites, encode, autocast_dtype=None) -> "InfluenceProbe | None":
        """From the run's config and evaluation suites: `cfg.eval.influence_n` prompts of each held-out set
        (a seeded subset; 0 = all). None when cfg.eval.influence_every is 0 (the default: off)."""
        every = int(cfg.eval.influence_every or 0)
        if every <= 0:
            return None
        n = int(cfg.eval.influence_n or 0)
        rng = random.Random(cfg.seed)
        harmful = [r for s in suites if s.kind == "harmful" for r in s.records]
        task = [r for s in suites if s.kind == "task" for r in s.records if r.response]
        if not harmful:
            raise ValueError("eval.influence_every > 0 needs held-out harmful prompts (the harmful evaluation suites); "
                             "none were loaded")
        pick = (lambda rs: sorted(rng.sample(rs, min(n, len(rs))), key=lambda r: r.sample_id) if n else rs)
        return cls(every, encode(refusal_records(pick(harmful))), encode(pick(task)) if task else None,
                   "hooks", autocast_dtype)

    def directions(self, model) -> dict[str, torch.Tensor]:
        params = trainable_params(model)
        d = {EFFECT_SAFETY: heldout_gradient(model, self.safety, params, self.autocast_dtype)}
        if self.task is not None:
            d[EFFECT_TASK] = heldout_gradient(model, self.task, params, self.autocast_dtype)
        return d

    def __call__(self, model, batch: Batch, step: int, lr: float) -> dict[str, list[float]]:
        """Per-sample columns for the decisions table at a recorded step (step % every == 0), else {}."""
        if self.every <= 0 or step % self.every:
            return {}
        eff = first_order_effects(model, batch, self.directions(model), lr, self.estimator, self.autocast_dtype)
        return {k: v.detach().float().cpu().tolist() for k, v in eff.items()}

    def pool_effects(self, model, batches, lr: float) -> dict[str, dict[str, float]]:
        """sample_id -> {effect_safety, effect_task} over any batches at the model's current weights
        (e.g. SEAL's whole fine-tuning mix at the starting model, before its one-off cut)."""
        dirs = self.directions(model)
        out: dict[str, dict[str, float]] = {}
        for b in batches:
            eff = first_order_effects(model, b, dirs, lr, self.estimator, self.autocast_dtype)
            for i, sid in enumerate(b.sample_ids):
                out[sid] = {k: float(v[i]) for k, v in eff.items()}
        return out
