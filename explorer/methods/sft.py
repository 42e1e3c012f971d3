"""SFT: plain fine-tuning on every sample (the baseline every other method is compared against)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from explorer.data.batch import Batch
from explorer.methods.protocol import Decision, MethodBase
from explorer.methods.registry import register


@dataclass(frozen=True)
class SftConfig:
    """Standard supervised fine-tuning: no settings of its own."""


@register("sft", SftConfig)
class Sft(MethodBase):
    shardable = True   # one forward and backward of the shard per step
    def decide(self, batch: Batch, ctx) -> Decision:
        return Decision(weights=torch.ones(len(batch), device=batch.input_ids.device))
