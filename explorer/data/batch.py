"""One tokenised mini-batch: what the data layer hands to scoring, methods and the recipe."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """One tokenised mini-batch of task samples.

    input_ids, attention_mask, labels: [B, T]; labels are -100 on prompt and padding tokens, so the
    per-sample loss is the mean NLL over response tokens only. Right padding.
    """

    input_ids: "torch.Tensor"
    attention_mask: "torch.Tensor"
    labels: "torch.Tensor"
    sample_ids: list[str]
    n_target_tokens: "torch.Tensor"  # [B] number of supervised (response) tokens per sample

    def __len__(self) -> int:
        return len(self.sample_ids)

    def to(self, device) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device),
                     self.labels.to(device), self.sample_ids, self.n_target_tokens.to(device))

    def subset(self, idx) -> "Batch":
        """The rows `idx` (a list or index tensor) of this batch."""
        idx = list(idx) if not hasattr(idx, "tolist") else idx.tolist()
        return Batch(self.input_ids[idx], self.attention_mask[idx], self.labels[idx],
                     [self.sample_ids[i] for i in idx], self.n_target_tokens[idx])
