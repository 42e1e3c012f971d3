"""Random: keep the same budget as a selector, chosen at random (seeded).

`scope: batch` keeps `keep` of every mini-batch (DualSelect's per-batch budget, k=4 of 8 = 0.5);
`scope: pool` keeps `keep` of the whole fine-tuning set once, before training (SEAL's top-p budget).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from explorer.methods.base import Batch, Decision, MethodBase, help_field, register


@dataclass(frozen=True)
class RandomConfig:
    keep: float = help_field("share of samples kept (0, 1]", 0.5)
    scope: str = help_field("batch: per mini-batch; pool: once over the set", "batch")

    def __post_init__(self):
        if not 0 < self.keep <= 1:
            raise ValueError(f"method.keep = {self.keep}: expected a share in (0, 1]")
        if self.scope not in ("batch", "pool"):
            raise ValueError(f"method.scope = {self.scope!r}: expected batch or pool")


@register("random", RandomConfig)
class RandomSelect(MethodBase):
    def prepare(self, ctx) -> None:
        if self.config.scope == "pool":
            n = len(ctx.train_ids)
            k = max(1, math.ceil(self.config.keep * n))
            perm = torch.randperm(n, generator=ctx.generator).tolist()
            ctx.train_ids = [ctx.train_ids[i] for i in sorted(perm[:k])]

    def decide(self, batch: Batch, ctx) -> Decision:
        B = len(batch)
        w = torch.ones(B)
        if self.config.scope == "batch":
            k = max(1, math.ceil(self.config.keep * B))
            drop = torch.randperm(B, generator=ctx.generator)[k:]
            w[drop] = 0.0
        return Decision(weights=w.to(batch.input_ids.device), scores={"random_rank": torch.argsort(w, descending=True).float()})
