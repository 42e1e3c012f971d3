"""Per-sample losses: l(theta; z) = mean token NLL over the response tokens only (docs/methods/dualselect.md, notation).

The loss needs logits only at the positions that predict a response token. `model_nll` asks the model
for those positions alone (Hugging Face causal LMs take `logits_to_keep`, a tensor of sequence
positions): on a 49k vocabulary the full [B, T, V] logits and their log-softmax are a third of a LoRA
step's time on a CPU (docs/smollm2.md, "What a run costs"), and prompt positions contribute nothing to
the loss. The kept positions are the union over the batch, so the logits that are computed are the
same rows of the same product; `per_sample_nll` gives the same per-sample values either way (to float
rounding of the shorter matrix product).
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F


def per_sample_nll(logits: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
    """Mean NLL over supervised tokens, per sample.

    logits: [B, T, V] (position t predicts token t+1), or [B, K, V] at `positions` (K sequence
    positions, as `logits_to_keep` returns them); labels: [B, T] with -100 where unsupervised.
    Returns [B] in float32. A sample without supervised tokens gets loss 0.
    """
    if positions is not None:
        # [B, K, V] at the kept positions, each row of V reduced on its own (the result does not depend on
        # which other rows or positions the batch holds -- a rank's shard gives what one process gives)
        target = labels[:, positions + 1]                   # [B, K]: the tokens those positions predict
        mask = target != -100
        tok = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.clamp_min(0).reshape(-1),
                              reduction="none").view_as(target) * mask
        return tok.sum(dim=1) / mask.sum(dim=1).clamp_min(1)
    shift_logits = logits[:, :-1, :].float()            # [B, T-1, V]
    shift_labels = labels[:, 1:]                         # [B, T-1]
    mask = shift_labels != -100
    tok = F.cross_entropy(shift_logits.transpose(1, 2), shift_labels.clamp_min(0),
                          reduction="none")              # [B, T-1]
    tok = tok * mask
    n = mask.sum(dim=1).clamp_min(1)
    return tok.sum(dim=1) / n


def loss_positions(labels: torch.Tensor) -> torch.Tensor:
    """[K] sequence positions t whose logits predict a supervised token (labels[:, t+1] != -100) in
    some row of the batch."""
    return (labels[:, 1:] != -100).any(dim=0).nonzero().squeeze(1)


def keeps_logits(model: torch.nn.Module) -> bool:
    """Whether `model`'s forward takes `logits_to_keep` (transformers' causal LMs; a peft wrapper passes
    it through to the model it wraps)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False


def loss_kwargs(model: torch.nn.Module, labels: torch.Tensor) -> dict:
    """{"logits_to_keep": positions} for a model that can keep a subset of its logits and a batch
    whose loss needs fewer than all of them; {} otherwise (the full logits)."""
    if labels.shape[1] < 2 or not keeps_logits(model):
        return {}
    pos = loss_positions(labels)
    if len(pos) == 0 or len(pos) == labels.shape[1] - 1:
        return {}
    return {"logits_to_keep": pos}


def model_nll(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
              labels: torch.Tensor) -> torch.Tensor:
    """Forward a batch and return its per-sample losses [B] (with graph), computing logits only where
    the loss reads them."""
    kw = loss_kwargs(model, labels)
    out = model(input_ids=input_ids, attention_mask=attention_mask, **kw)
    return per_sample_nll(out.logits, labels, kw.get("logits_to_keep"))
