"""Random: keep the same budget as a selector, chosen at random (seeded).

`scope: batch` keeps `keep` of every mini-batch (DualSelect's per-batch budget, k=4 of 8 = 0.5);
`scope: pool` keeps `keep` of the whole fine-tuning set once, before training (SEAL's top-p budget).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from explorer.data.batch import Batch
from explorer.methods.protocol import Decision, MethodBase, help_field
from explorer.methods.registry import register


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
    shardable = True   # decides without a forward; the step runs one forward and backward of the shard
    def prepare(self, ctx) -> None:
        if self.config.scope == "pool":
            n = len(ctx.train_ids)
            k = max(1, math.ceil(self.config.keep * n))
            perm = torch.randperm(n, generator=ctx.generator).tolist()
            ctx.train_ids = [ctx.train_ids[i] for i in sorted(perm[:k])]

    def decide(self, batch: Batch, ctx) -> Decision:
        B = len(batch)
        if self.config.scope != "batch":
            return Decision(weights=torch.ones(B, device=batch.input_ids.device))  # the pool was cut in prepare
        # under torchrun every rank draws the same order over the global batch and keeps its own rows
        # of it (the generator advances alike on every rank)
        G = ctx.global_batch_size or B   # one process: the batch is the global batch
        w = torch.ones(G)
        k = max(1, math.ceil(self.config.keep * G))
        perm = torch.randperm(G, generator=ctx.generator)  # the random order: its first k are kept
        w[perm[k:]] = 0.0
        # each sample's rank in that order (1 = drawn first); argsort(w) would be a permutation of
        # positions, not ranks
        rank = torch.empty(G)
        rank[perm] = torch.arange(1, G + 1, dtype=rank.dtype)
        w, rank = w[ctx.batch_offset:ctx.batch_offset + B], rank[ctx.batch_offset:ctx.batch_offset + B]
        return Decision(weights=w.to(batch.input_ids.device), scores={"random_rank": rank})

