"""Scoring chunks sized from a memory budget, and one encode for a whole pool.

Per-sample scoring holds, per chunk, the activations autograd keeps for the backward (they grow with
the chunk's padded tokens: rows × its longest row) plus one gradient row of P floats per sample. A
fixed number of rows per chunk either wastes time on short records or runs out of memory on long
ones (issue #14: 64 references of ~250 tokens in chunks of 32 peaked at 20.7 GB on a 135M model where
an SFT step took 3.3 GB). So chunks are planned from a budget:

  chunk_size = N (an int)   at most N rows per chunk (the old behaviour; rows are still grouped by length)
  chunk_size = "auto"       rows per chunk such that  rows · (T_chunk · a + P · 4) ≤ budget, where a is
                            the bytes autograd saves per token (measured once on the model by a probe
                            forward, `saved_bytes_per_token`) and the budget is `memory_mb`; with
                            memory_mb = 0 the budget is the activations of one training step
                            (batch_size × max_length tokens), so scoring peaks about where training does.

Rows are grouped shortest first, so a chunk pads to similar lengths; results are keyed by sample id,
never by position (an encoder may skip over-long records).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from explorer.data.batch import Batch


def parse_chunk_size(value) -> int | str:
    """An int >= 1 or "auto"; anything else is an error naming what was expected."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError(f"chunk_size = {value!r}: expected a positive integer or auto")


def plan_chunks(lengths: list[int], budget: float, per_token: float = 1.0, per_row: float = 0.0,
                max_rows: int | None = None) -> list[list[int]]:
    """Group row indices into chunks, shortest rows first. A chunk's cost is
    rows · (longest · per_token + per_row) and stays within `budget`; `max_rows` caps its rows. A row
    that alone exceeds the budget is a chunk of its own (it has to be scored somehow)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    chunks: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        longest = lengths[i]                      # ascending order: the new row is the longest so far
        cost = (len(cur) + 1) * (longest * per_token + per_row)
        if cur and (cost > budget or (max_rows is not None and len(cur) >= max_rows)):
            chunks.append(cur)
            cur = []
        cur.append(i)
    if cur:
        chunks.append(cur)
    return chunks


def trim(batch: Batch) -> Batch:
    """Drop the padding columns every row of the batch has (right padding)."""
    T = int(batch.attention_mask.sum(1).max()) if len(batch) else 0
    return Batch(batch.input_ids[:, :T], batch.attention_mask[:, :T], batch.labels[:, :T], batch.sample_ids,
                 batch.n_target_tokens)


def saved_bytes_per_token(model, batch: Batch, autocast_dtype=None) -> float:
    """Bytes autograd keeps for the backward per token of `batch` (one forward with graph, counted by
    saved-tensor hooks, each storage once). Probe with the longest rows to be scored: attention that
    materialises T × T scores makes the cost per token grow with T."""
    import contextlib

    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        try:
            st = t.untyped_storage()
            seen[st.data_ptr()] = max(seen.get(st.data_ptr(), 0), st.nbytes())
        except (RuntimeError, NotImplementedError):   # tensors without storage (e.g. functorch wrappers)
            seen[id(t)] = t.numel() * t.element_size()
        return t

    amp = (torch.autocast(batch.input_ids.device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else contextlib.nullcontext())
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), amp, torch.enable_grad():
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        logits_bytes = out.logits.numel() * 4                 # the loss's float32 log-softmax is saved too
    del out
    # parameters (and frozen weights saved by their matmuls) are not activations
    for p in model.parameters():
        seen.pop(p.untyped_storage().data_ptr(), None)
    n_tok = int(batch.attention_mask.numel())
    return (sum(seen.values()) + logits_bytes) / max(n_tok, 1)


@dataclass(frozen=True)
class ChunkPolicy:
    """How scoring groups rows: `size` is an int (rows per chunk) or "auto" (from `memory_mb`)."""

    size: int | str = "auto"
    memory_mb: float = 0.0          # auto: budget of one chunk in MB; 0 = one training step's activations
    probed: dict = field(default_factory=dict, compare=False, repr=False)   # (model, T) -> bytes per token

    def plan(self, model, batch: Batch, n_params: int, train_tokens: int, keep_rows: int = 0,
             autocast_dtype=None) -> tuple[list[list[int]], bool]:
        """(chunks of row indices, whether `keep_rows` extra gradient rows of n_params floats may be
        kept alongside them). Kept rows count against the budget; they are refused when they would
        take more than half of it (the caller then recomputes what it needed them for)."""
        lengths = [int(x) for x in batch.attention_mask.sum(1).tolist()]
        row = 4.0 * n_params
        if self.size != "auto":
            # the old rule: n rows per chunk; kept rows fit when they are no more than one chunk's
            return plan_chunks(lengths, float("inf"), max_rows=int(self.size)), keep_rows <= int(self.size)
        longest = max(range(len(lengths)), key=lambda i: lengths[i])
        key = (id(model), lengths[longest], str(autocast_dtype))
        if key not in self.probed:   # shapes do not change during a run: probe each length once
            self.probed[key] = saved_bytes_per_token(model, trim(batch.subset([longest])), autocast_dtype)
        a = self.probed[key]
        budget = self.memory_mb * 2 ** 20 if self.memory_mb > 0 else train_tokens * a
        keep = keep_rows * row <= budget / 2
        if keep:
            budget -= keep_rows * row
        return plan_chunks(lengths, budget, per_token=a, per_row=row), keep
