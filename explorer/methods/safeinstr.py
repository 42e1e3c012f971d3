"""SafeInstr (Bianchi et al., "Safety-Tuned LLaMAs"): mix a share of safety demonstrations
(harmful prompt -> safe response) into the task data, then fine-tune on everything."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from explorer.data.batch import Batch
from explorer.methods.protocol import Decision, MethodBase, help_field
from explorer.methods.registry import register


@dataclass(frozen=True)
class SafeInstrConfig:
    share: float = help_field("safety demonstrations added, as a share of the fine-tuning set "
                              "(the paper: a few %)", 0.03)
    pool: str = help_field("pool the demonstrations come from", "safety")

    def __post_init__(self):
        if not 0 <= self.share <= 1:
            raise ValueError(f"method.share = {self.share}: expected a share in [0, 1]")


@register("safeinstr", SafeInstrConfig)
class SafeInstr(MethodBase):
    shardable = True   # one forward and backward of the shard per step
    def prepare(self, ctx) -> None:
        pool = ctx.pools.get(self.config.pool) or []
        if not pool:
            raise ValueError(f"safeinstr: the {self.config.pool!r} pool is empty; expected safety "
                             "demonstrations (set safety_data)")
        n = min(len(pool), math.ceil(self.config.share * len(ctx.train_ids)))
        pick = torch.randperm(len(pool), generator=ctx.generator)[:n].tolist()
        self.added_ = [pool[i] for i in sorted(pick)]
        ctx.train_ids = list(ctx.train_ids) + self.added_

    def decide(self, batch: Batch, ctx) -> Decision:
        return Decision(weights=torch.ones(len(batch), device=batch.input_ids.device))
