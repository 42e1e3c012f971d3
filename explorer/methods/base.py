"""The method protocol: what one selection or constraint method looks like to the training loop.

A method is one module with a frozen config dataclass (its settings, with help text) and a class
that implements :class:`Method`. The loop (``explorer/train/loop.py``) calls, in order::

    method.prepare(ctx)                    once, before the data loader is built; may restrict
                                           ctx.train_ids, build reference pools, frozen models ...
    for each batch:
        decision = method.decide(batch, ctx)   weights over the batch (0 = dropped), score columns,
                                               optional extra loss (already multiplied by its weight)
        loss = sum_i w_i * l_i / sum_i w_i + decision.extra_loss
        loss.backward()                        (or .grad = decision.grads when the method assembled it)
        method.transform_grads(ctx)            optional: edit .grad before clipping (projection ...)
        clip, optimiser step
        method.after_step(ctx)                 optional: refresh schedules, selector updates

Implementation inheritance between methods is ruled out (torchtune's rule): :class:`MethodBase`
only supplies no-op defaults for the optional hooks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from explorer.train.context import Context


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


@dataclass
class Decision:
    """What a method decides for one batch.

    weights: [B] non-negative update weights; 0 means the sample is dropped. The loop normalises
        them (sum_i w_i l_i / sum_i w_i), so a hard selection is 1 for kept and 0 for dropped.
    scores: named per-sample columns recorded in the `decisions` table (e.g. loss, compat, score).
    extra_loss: a scalar added to the weighted task loss (already multiplied by its coefficient),
        e.g. DualSelect's eta * l_ref, PACT's lambda * L_PACT. None when there is none.
    step_metrics: scalars recorded in the `steps` row of this step (e.g. cos_task_ref).
    losses: the per-sample losses [B] with graph, if the method already computed them on the
        current parameters; the loop then reuses them instead of a second forward pass.
    grads: the update gradient, flat over the trainable parameters in `named_parameters` order, if
        the method assembled it itself (DualSelect sums the per-sample gradients it scored with, as
        its authors' code does). The loop then skips its forward and backward, writes these into
        `.grad`, and takes `losses` (required then, graph not needed) for the records.
    """

    weights: "torch.Tensor"
    scores: dict[str, Any] = field(default_factory=dict)
    extra_loss: "torch.Tensor | None" = None
    step_metrics: dict[str, float] = field(default_factory=dict)
    losses: "torch.Tensor | None" = None
    grads: "torch.Tensor | None" = None


class Method(Protocol):
    """A selection or constraint method. `name` is its registry key; `config` its frozen settings."""

    name: str
    config: Any

    def prepare(self, ctx: "Context") -> None: ...

    def decide(self, batch: Batch, ctx: "Context") -> Decision: ...

    def transform_grads(self, ctx: "Context") -> dict[str, float] | None: ...

    def after_step(self, ctx: "Context") -> None: ...


class MethodBase:
    """No-op defaults for the optional hooks (not shared logic)."""

    name: str = "base"

    def __init__(self, config):
        self.config = config

    def prepare(self, ctx: "Context") -> None:
        return None

    def transform_grads(self, ctx: "Context") -> dict[str, float] | None:
        return None

    def after_step(self, ctx: "Context") -> None:
        return None


#: name -> (config dataclass, method class); filled by explorer.methods.__init__
REGISTRY: dict[str, tuple[type, Callable[..., Method]]] = {}


def register(name: str, config_cls: type):
    """Class decorator: register a method under `name` with its config dataclass."""

    def wrap(cls):
        cls.name = name
        REGISTRY[name] = (config_cls, cls)
        return cls

    return wrap
