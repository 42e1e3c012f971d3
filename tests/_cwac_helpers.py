"""Fixtures for the CWAC tests: a small CWAC config for the random tiny Llama, and the recipe's real step
with an SGD option."""

from __future__ import annotations

import torch

from _method_helpers import run_steps
from explorer.methods.cwac import CwacConfig


def small_config(**kw) -> CwacConfig:
    """Sized for hidden 32 and a dozen records: a 64-latent SAE with k = 4, 8 safety latents."""
    base = dict(sae_latents=64, sae_k=4, sae_steps=60, sae_batch_tokens=64, n_safety_latents=8,
                harmful_batch_size=2, latent_every=1, drift_prompts=4, encode_batch_size=8)
    base.update(kw)
    return CwacConfig(**base)


def loop_steps(method, ctx, n_steps: int = 2, lr: float = 1e-2, optimizer: str = "adamw",
               on_grads=None) -> list[float]:
    """The recipe's real step (tests/_method_helpers.run_steps); optimizer "sgd" swaps AdamW for plain
    SGD (a projected gradient stays projected only without Adam's per-coordinate scaling)."""
    sgd = (lambda c: torch.optim.SGD([p for p in c.model.parameters() if p.requires_grad], lr=lr)) \
        if optimizer == "sgd" else None
    return run_steps(method, ctx, n_steps, lr, optimizer=sgd, on_grads=on_grads)
