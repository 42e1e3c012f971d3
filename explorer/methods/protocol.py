"""The method protocol: what one selection or constraint method looks like to the training recipe, and
what the recipe hands it (Context). One module, so that methods and the recipe import one place and
nothing imports back up.

A method is one module with a frozen config dataclass (its settings, with help text) and a class
that implements :class:`Method`. The recipe (``explorer/train/recipe.py``) calls, in order::

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
        every record.checkpoint_every steps:
            method.state_dict()                what the method carries between steps, into the checkpoint
    on `explorer run --resume` (and a replay), after prepare:
        method.load_state_dict(state)          that state back, so the resumed run decides as the first

and reads, besides the hooks, these attributes:

    method.name        the registry key (explorer/methods/registry.py), recorded as the run's method
    method.config      its frozen config dataclass (recorded in the manifest's method_config)
    method.shardable   class attribute: True when every rank runs the same forward/backward passes each
                       step, so that dist.shard=fsdp may shard it (explorer/config.py validate_shard)
    method.state       the dataclass instance MethodBase's state_dict / load_state_dict save and restore

A method reads the run's settings through `ctx.settings` (RunSettings: seed, batch size, max length,
base model, LoRA), never the whole run config. Under torchrun it reduces what spans the batch or a pool
through `ctx.dist`; with one process those collectives hand their input back, so the same code runs.

Implementation inheritance between methods is ruled out (torchtune's rule): :class:`MethodBase`
only supplies no-op defaults for the optional hooks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

from explorer.data.batch import Batch
from explorer.data.records import Record
from explorer.model import plumbing
from explorer.model.distributed import SINGLE, Dist


def help_field(text: str, default, *, ge=None, gt=None, le=None, lt=None, choices=None):
    """A config dataclass field with its help text (field metadata "help") and, where the meaning fixes
    one, its range (ge, gt, le, lt) or its choices: explorer/config.py checks them when it builds the
    method's config, naming the key, the value, where it was set and what was expected."""
    bounds = {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": tuple(choices) if choices else None}
    return field(default=default, metadata={"help": text, **{k: v for k, v in bounds.items() if v is not None}})


@dataclass(frozen=True)
class RunSettings:
    """The run settings a method may read (the recipe fills it from explorer/config.py's RunConfig;
    anything else that builds a Context, such as a test or a notebook, fills it by hand). A method's own
    settings are its config dataclass; this is the small part of the run's that methods share."""

    seed: int                 # the run's seed (seed): projections and subsets seeded from it
    batch_size: int           # optim.batch_size: samples per optimiser step (the global batch under torchrun)
    max_length: int           # data.max_length: tokens per sample when a method encodes records itself
    base_model: str           # model.base: the un-aligned model spec (PACT's safety tokens)
    lora: bool                # model.lora: the model carries peft LoRA adapters


@dataclass
class Decision:
    """What a method decides for one batch.

    weights: [B] non-negative update weights; 0 means the sample is dropped. The recipe normalises
        them (sum_i w_i l_i / sum_i w_i), so a hard selection is 1 for kept and 0 for dropped.
    scores: named per-sample columns recorded in the `decisions` table (e.g. loss, compat, score).
    extra_loss: a scalar added to the weighted task loss (already multiplied by its coefficient),
        e.g. DualSelect's eta * l_ref, PACT's lambda * L_PACT. None when there is none.
    step_metrics: scalars recorded in the `steps` row of this step (e.g. cos_task_ref).
    losses: the per-sample losses [B] with graph, if the method already computed them on the
        current parameters; the recipe then reuses them instead of a second forward pass.
    grads: the update gradient, flat over the trainable parameters in `named_parameters` order, if
        the method assembled it itself (DualSelect sums the per-sample gradients it scored with, as
        its authors' code does). The recipe then skips its forward and backward, writes these into
        `.grad`, and takes `losses` (required then, graph not needed) for the records.
    """

    weights: torch.Tensor
    scores: dict[str, Any] = field(default_factory=dict)
    extra_loss: torch.Tensor | None = None
    step_metrics: dict[str, float] = field(default_factory=dict)
    losses: torch.Tensor | None = None
    grads: torch.Tensor | None = None


def dist_of(ctx) -> Dist:
    """ctx.dist, or the single process for a hand-made context without one (tests, notebooks)."""
    return getattr(ctx, "dist", SINGLE)


class Method(Protocol):
    """A selection or constraint method: everything the recipe, the config check, checkpoints and the
    TRL integration use (tests/test_method_contract.py runs every registered method through it)."""

    name: str                 # registry key
    config: Any               # the method's frozen config dataclass
    shardable: bool           # may run under dist.shard=fsdp (every rank the same passes each step)
    state: Any                # what carries from step to step (a dataclass instance), or None

    def prepare(self, ctx: Context) -> None:
        """Once, before the loader is built: pools, frozen models, SAEs; may restrict ctx.train_ids."""

    def decide(self, batch: Batch, ctx: Context) -> Decision:
        """The batch's weights ([B], >= 0; 0 drops a sample), score columns and optional extra loss."""

    def transform_grads(self, ctx: Context) -> dict[str, float] | None:
        """Edit .grad after backward, before clipping; returns step metrics or None."""

    def after_step(self, ctx: Context) -> None:
        """After the optimiser step: refresh schedules, selector updates."""

    def state_dict(self) -> dict[str, Any]:
        """Tensors, numbers, strings (and lists of them) that a checkpoint saves (safetensors + JSON)."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put a state_dict back (after prepare), so that a resumed run decides as the uninterrupted one."""


class MethodBase:
    """No-op defaults for the optional hooks, and a default state_dict (not shared logic)."""

    name: str = "base"
    #: runs under shard=fsdp: every rank runs the same forward/backward passes each step
    shardable: bool = False
    #: what the method carries from one step to the next, as a dataclass instance; None = nothing.
    #: The default state_dict / load_state_dict save and restore its fields (tensors, numbers,
    #: strings, lists of them); a method keeping such state elsewhere must override both.
    state: Any = None

    def __init__(self, config):
        self.config = config

    def state_dict(self) -> dict[str, Any]:
        if self.state is None:
            return {}
        return {f.name: getattr(self.state, f.name) for f in dataclasses.fields(self.state)
                if getattr(self.state, f.name) is not None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        known = {f.name for f in dataclasses.fields(self.state)} if self.state is not None else set()
        unknown = sorted(set(state) - known)
        if unknown:
            raise ValueError(f"{self.name}: checkpoint state has unknown key(s) {', '.join(unknown)}; expected "
                             f"{', '.join(sorted(known)) or 'none'} (a checkpoint from another version?)")
        for k, v in state.items():
            setattr(self.state, k, v)

    def prepare(self, ctx: Context) -> None:
        return None

    def transform_grads(self, ctx: Context) -> dict[str, float] | None:
        return None

    def after_step(self, ctx: Context) -> None:
        return None


@dataclass
class Context:
    """Everything a method may use. Built by the recipe; methods read it and may set a few fields.

    Methods may:
      - restrict or extend `train_ids` in `prepare` (the loader is built after `prepare`);
      - call `encode(records)` to tokenise any records into a Batch on `device`;
      - call `log(table, rows)` to record rows (list of dicts) into the run folder; `run_id`
        is added to each row; rows of partitioned tables should carry `step`;
      - call `reference_model()` for a frozen copy of the starting (aligned) model;
      - call `load_model(spec)` for another model (e.g. PACT's base model) in eval mode;
      - wrap forward passes in `with ctx.autocast():` (bf16 on CUDA, nothing on CPU);
      - under torchrun, reduce what aggregates over the batch or a pool through `ctx.dist` (see below);
        only rank 0's `log` writes, so rows computed alike on every rank are recorded once, and rows
        about this rank's own samples must be gathered to rank 0 first.
    Shared helpers (eval mode, reference logits, flat gradients) are in explorer/model/plumbing.py.
    """

    model: torch.nn.Module
    tokenizer: Any
    device: torch.device
    settings: RunSettings             # the run settings a method may read
    records: dict[str, Record]        # every record by sample_id
    pools: dict[str, list[str]]       # pool name -> sample ids: task, reference, safety, eval_* ...
    train_ids: list[str]              # the fine-tuning set the loader draws from
    encode: Callable[[list[Record]], Batch]
    log: Callable[[str, list[dict]], None]
    reference_model: Callable[[], torch.nn.Module]
    load_model: Callable[[str], torch.nn.Module]
    run_dir: str = ""
    step: int = 0                     # global optimiser step about to be taken (0-based)
    epoch: int = 0
    steps_per_epoch: int = 0
    total_steps: int = 0
    optimizer: Any = None
    generator: torch.Generator | None = None   # seeded; use it for any randomness
    autocast_dtype: torch.dtype | None = None  # bf16 on CUDA, None on CPU
    state: dict[str, Any] = field(default_factory=dict)  # scratch space shared within a run
    # more than one process (torchrun; explorer/model/distributed.py): `decide` sees this rank's shard of the
    # global batch, rows [batch_offset, batch_offset + len(batch)) of global_batch_size. A method whose
    # decision spans the batch gathers what it needs with dist (gather_cat, all_sum) so that every rank
    # decides alike over the global batch; with one process dist's collectives hand their input back.
    dist: Dist = SINGLE
    batch_offset: int = 0
    global_batch_size: int = 0

    def autocast(self):
        """bf16 autocast on CUDA, nothing on CPU: wrap the model's forward passes in it."""
        return plumbing.autocast(self.device, self.autocast_dtype)

    def trainable_parameters(self) -> dict[str, torch.nn.Parameter]:
        """The parameters being fine-tuned (all of them on the tiny model, LoRA matrices with peft)."""
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def pool_records(self, pool: str) -> list[Record]:
        return [self.records[i] for i in self.pools.get(pool, [])]
