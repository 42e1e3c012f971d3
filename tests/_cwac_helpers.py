"""Fixtures for the CWAC tests: a small CWAC config for the random tiny Llama, and the loop's step in
miniature with transform_grads and after_step (tests/_method_helpers.train_steps has neither)."""

from __future__ import annotations

import torch

from explorer.methods.cwac import CwacConfig
from explorer.train.losses import per_sample_nll


def small_config(**kw) -> CwacConfig:
    """Sized for hidden 32 and a dozen records: a 64-latent SAE with k = 4, 8 safety latents."""
    base = dict(sae_latents=64, sae_k=4, sae_steps=60, sae_batch_tokens=64, n_safety_latents=8,
                harmful_batch_size=2, latent_every=1, drift_prompts=4, encode_batch_size=8)
    base.update(kw)
    return CwacConfig(**base)


def loop_steps(method, ctx, n_steps: int = 2, lr: float = 1e-2, optimizer: str = "adamw",
               on_grads=None) -> list[float]:
    """decide -> weighted loss + extra -> backward -> transform_grads -> on_grads(ctx) -> step ->
    after_step, as explorer/train/loop.py does (without clipping). Returns the losses."""
    params = [p for p in ctx.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0) if optimizer == "adamw" else torch.optim.SGD(params, lr=lr)
    ctx.total_steps = n_steps
    ctx.model.train()
    losses = []
    for step in range(n_steps):
        ctx.step = step
        ids = ctx.train_ids[(step * 4) % len(ctx.train_ids):][:4] or ctx.train_ids[:4]
        batch = ctx.encode([ctx.records[i] for i in ids])
        d = method.decide(batch, ctx)
        l = per_sample_nll(ctx.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits,
                           batch.labels)
        w = d.weights.float()
        loss = (w * l).sum() / w.sum() + (d.extra_loss if d.extra_loss is not None else 0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        extra = method.transform_grads(ctx) or {}
        if on_grads is not None:
            on_grads(ctx)
        opt.step()
        method.after_step(ctx)
        ctx.last_decision, ctx.last_extra = d, extra
        losses.append(float(loss.detach()))
    return losses
