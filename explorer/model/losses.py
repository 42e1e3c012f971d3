"""Per-sample losses: l(theta; z) = mean token NLL over the response tokens only (ALGORITHMS.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def per_sample_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean NLL over supervised tokens, per sample.

    logits: [B, T, V] (position t predicts token t+1); labels: [B, T] with -100 where unsupervised.
    Returns [B] in float32. A sample without supervised tokens gets loss 0.
    """
    shift_logits = logits[:, :-1, :].float()            # [B, T-1, V]
    shift_labels = labels[:, 1:]                         # [B, T-1]
    mask = shift_labels != -100
    tok = F.cross_entropy(shift_logits.transpose(1, 2), shift_labels.clamp_min(0),
                          reduction="none")              # [B, T-1]
    tok = tok * mask
    n = mask.sum(dim=1).clamp_min(1)
    return tok.sum(dim=1) / n


def batch_per_sample_loss(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                          labels: torch.Tensor) -> torch.Tensor:
    """Forward a batch and return per-sample losses [B] (with graph)."""
    out = model(input_ids=input_ids, attention_mask=attention_mask)
    return per_sample_nll(out.logits, labels)
