"""An explorer method inside Hugging Face's `Trainer` (and TRL's `SFTTrainer`, explorer/integrations/trl.py),
and a read-only callback that records an ordinary run. The guide: docs/trl.md.

With `method=`, every optimiser step goes through the recipe's protocol (explorer/train/recipe.py), by the
recipe's own pieces -- `Recipe.setup_run` (run folder, method, starting evaluation, prepare, training set),
`weighted_loss`, `assembled_update`, `record`, `after_step_bookkeeping`, `finish` -- while the Trainer keeps
its loop, optimiser, scheduler, clipping, logging (report_to) and checkpoints:

    get_batch_samples   the step's micro-batches -> this rank's shard of the global batch -> method.decide
    training_step       per micro-batch: this share of Σ_i w_i ℓ_i / Σ_i w_i (+ extra once), backward
                        (or the method's assembled update); after the last one the gradients are summed
                        over the ranks and method.transform_grads runs -- before the Trainer clips
    on_optimizer_step   method.after_step, the steps and decisions rows, evaluations and flushes

The data order is the recipe's: each epoch draws torch.randperm(n) from the method's seeded generator, the
global batch of per_device_train_batch_size x gradient_accumulation_steps x processes samples is
order[s:s+B], each rank takes its contiguous shard (explorer/model/distributed.py) and splits it into the
micro-batches. Samples are tokenised as `explorer run` tokenises them (chat template, loss on the response
only, explorer/data/tokenize.py), and ℓ_i is the mean NLL over sample i's response tokens
(explorer/model/losses.py), so the step loss is the recipe's, not TRL's token mean.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import logging
import math
import time
from collections import deque
from typing import Any

import torch
from transformers import Trainer as HFTrainer
from transformers import TrainerCallback

from explorer.model import distributed
from explorer.config import ConfigError, RunConfig, compose, flatten, method_config
from explorer.train.assemble import build_pools
from explorer.data.batch import Batch
from explorer.data.load import ID_FIELDS, DataError, parse_record
from explorer.data.records import UNKNOWN, Record
from explorer.data.tokenize import collate, pad_id_of
from explorer.model.losses import loss_positions, per_sample_nll
from explorer.model.optim import LrSchedule
from explorer.train.recipe import Recipe, harmful_score

log = logging.getLogger(__name__)

#: RunConfig keys (dotted) the Trainer's own arguments decide; `explorer=` may not set them
FROM_TRAINER = ("seed", "optim.batch_size", "optim.lr", "optim.weight_decay", "optim.clip", "optim.epochs",
                "optim.max_steps", "model.path", "model.lora", "optim.lr_schedule", "optim.lr_min_ratio",
                "optim.warmup_steps", "method")
#: transformers' lr_scheduler_type -> the recipe's lr_schedule with the same shape after warm-up (to 0)
HF_SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant", "constant_with_warmup": "constant"}


# --------------------------------------------------------------------------------------------------
# settings: the one place a RunConfig is built from a Trainer
# --------------------------------------------------------------------------------------------------

def run_config(args, model_path: str, lora: bool, method: dict, explorer: dict | None, world: int) -> RunConfig:
    """The run's RunConfig: optimisation settings from the Trainer's `args` (TrainingArguments / SFTConfig),
    the model, the method section, and `explorer` -- RunConfig's other keys (data, eval, record: e.g.
    data.reference, eval.suites, eval.final_n, runs_dir), the dotted names of `explorer run` (or nested
    mappings: {"eval": {"final_n": 8}}). The batch size is the global one: per_device_train_batch_size x
    gradient_accumulation_steps x processes."""
    user = flatten(dict(explorer or {}), "explorer settings")
    clash = sorted(k for k in user if k in FROM_TRAINER or k.startswith("method."))
    if clash:
        raise ConfigError(f"explorer settings {', '.join(clash)}: the Trainer decides these (its model, "
                          "TrainingArguments and method= / method_config=); expected them there, not in explorer=")
    steps = {"optim.epochs": 0, "optim.max_steps": args.max_steps} if args.max_steps > 0 else \
        {"optim.epochs": math.ceil(args.num_train_epochs), "optim.max_steps": 0}
    sched = str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type))
    trainer = {"seed": args.seed, "optim.lr": args.learning_rate, "optim.weight_decay": args.weight_decay,
               "optim.batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * world,
               "optim.warmup_steps": int(args.warmup_steps) if args.warmup_steps >= 1 else 0,
               "optim.lr_schedule": HF_SCHEDULES.get(sched, "cosine"), "optim.lr_min_ratio": 0.0,
               "optim.clip": args.max_grad_norm, "model.path": model_path, "model.lora": lora, "progress": False,
               "method": dict(method), **steps}
    if getattr(args, "max_length", None):
        trainer["data.max_length"] = args.max_length          # SFTConfig.max_length (explorer= may set another)
    cfg = compose([("Trainer arguments", trainer), ("explorer settings", user)])
    if cfg.record.checkpoint_every:
        raise ConfigError("explorer settings: record.checkpoint_every = {}: the Trainer saves its own checkpoints "
                          "(save_steps); expected record.checkpoint_every=0".format(cfg.record.checkpoint_every))
    return cfg


def method_section(method, method_config_: Any) -> tuple[dict, Any]:
    """(the RunConfig `method:` section, the method instance or None) from method= and method_config=."""
    if isinstance(method, str):
        if method_config_ is None:
            values = {}
        elif dataclasses.is_dataclass(method_config_):
            values = dataclasses.asdict(method_config_)
        elif isinstance(method_config_, dict):
            values = dict(method_config_)
        else:
            raise TypeError(f"method_config = {method_config_!r}: expected the method's config dataclass or a dict")
        return {"name": method, **values}, None
    if method_config_ is not None:
        raise TypeError("method_config= with a method instance: the instance carries its config already")
    if not hasattr(method, "decide"):
        raise TypeError(f"method = {method!r}: expected a registered method name (explorer run --help) or an "
                        "instance with decide()")
    return {"name": method.name, **dataclasses.asdict(method.config)}, method


def model_source(model) -> tuple[str, bool]:
    """(where the model's weights came from, whether it carries peft adapters)."""
    if isinstance(model, str):
        return model, False
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    path = getattr(getattr(base, "config", None), "_name_or_path", "") or getattr(base, "name_or_path", "")
    return str(path), hasattr(model, "peft_config")


def tokenizer_of(processing_class):
    tok = getattr(processing_class, "tokenizer", processing_class)   # a processor holds its tokenizer
    if tok is not None and tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token   # as explorer's loader does (explorer/model/load.py)
    return tok


# --------------------------------------------------------------------------------------------------
# the data: a dataset's rows as records with stable ids
# --------------------------------------------------------------------------------------------------

def records_from_dataset(dataset, id_field: str = "", strict: bool = True) -> list[Record]:
    """A Trainer's train_dataset -> records. Rows in TRL's formats (prompt/completion as text or as
    conversational message lists, messages) or explorer's (prompt/response ...; explorer/data/load.py).
    The id: `sample_id` (else `id`, or the column `id_field` names; "none": row positions). A `provenance`
    column (harmful / benign) is kept for the dashboard's analysis; without one provenance is unknown."""
    cols = list(getattr(dataset, "column_names", None) or (dataset[0].keys() if len(dataset) else []))
    id_keys = () if id_field == "none" else (id_field,) if id_field else ID_FIELDS
    if strict and id_keys and not any(k in cols for k in id_keys):
        raise ValueError(
            f"train_dataset has no {' or '.join(id_keys)} column (columns: {', '.join(cols)}); with strict=True "
            "explorer expects a stable id per row, so that a sample is the same sample in every step, run and "
            "table. Add one (dataset.map(lambda row, i: {'sample_id': f'row-{i:05d}'}, with_indices=True)), name "
            "your id column with explorer={'data.id_field': 'my_id'}, or use row positions with "
            "explorer={'data.id_field': 'none'} (or explorer={'data.strict': False})")
    out, seen, skipped = [], {}, 0
    for i, row in enumerate(dataset):
        obj = dict(row)
        if isinstance(obj.get("prompt"), list) and isinstance(obj.get("completion"), list):
            obj["messages"] = obj.pop("prompt") + obj.pop("completion")   # TRL's conversational prompt-completion
        where = f"train_dataset row {i}"
        try:
            rec = parse_record(obj, where, f"row-{i:05d}", "task", provenance=UNKNOWN, id_field=id_field or None)
            if rec.sample_id in seen:
                raise DataError(f"{where}: duplicate sample_id {rec.sample_id!r} (first at row {seen[rec.sample_id]}); "
                                "expected unique ids (data.id_field names the id column; 'none' uses row positions)",
                                "duplicate sample_id")
        except DataError as e:
            if strict:
                raise DataError(f"{e} (explorer={{'data.strict': False}} skips such rows)", e.reason) from None
            skipped += 1
            continue
        seen[rec.sample_id] = i
        out.append(rec)
    if skipped:
        log.warning("skipped %d of %d rows of train_dataset (strict=False)", skipped, len(dataset))
    if not out:
        raise ValueError("train_dataset: no usable row; expected rows with a prompt and a response")
    return out


def recipe_around(cfg: RunConfig, model, processing_class, device) -> Recipe:
    """A Recipe around a model a Trainer already holds (what Recipe.setup would load): its device, the
    process group (accelerate's, when launched), the tokenizer, what the manifest says of the model, and
    no sharding. The method's config is resolved from `cfg`; callers set the rest of their own."""
    r = Recipe(cfg)
    r.mcfg = method_config(cfg)
    r.device = device
    r.dist = distributed.init(cfg.dist.timeout_s, r.device.type)
    r.model, r.tok = model, tokenizer_of(processing_class)
    n = sum(p.numel() for p in model.parameters())
    r.model_info = {"model_path": cfg.model.path, "device": str(r.device), "n_params": n,
                    "n_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
                    "lora": cfg.model.lora}
    r.sharding = {"shard": "none", "param_elements": n, "param_elements_local": n}
    return r


class SampleIdCollator:
    """Encoded samples -> the micro-batch a Trainer steps on, with their `sample_ids` carried along
    (explorer's right-padded collate: labels -100 on prompt and padding)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, encoded) -> dict[str, Any]:
        b = collate(list(encoded), self.pad_id)
        return {"input_ids": b.input_ids, "attention_mask": b.attention_mask, "labels": b.labels,
                "sample_ids": b.sample_ids}


def split_shard(n: int, parts: int) -> list[tuple[int, int]]:
    """[start, stop) of `parts` contiguous pieces of n items, the first n % parts one longer."""
    q, m = divmod(n, parts)
    out, a = [], 0
    for j in range(parts):
        b = a + q + (1 if j < m else 0)
        out.append((a, b))
        a = b
    return out


class RecipeBatches(torch.utils.data.Sampler):
    """The recipe's data order as a batch sampler: per epoch torch.randperm(n) from the run's seeded
    generator (drawn when the epoch starts, after the previous epoch's decisions drew theirs, as
    `explorer run` draws it); per optimiser step the global batch order[s:s+B]; this rank's contiguous
    shard of it in `accum` micro-batches (fewer when a short last batch has fewer samples per rank)."""

    def __init__(self, run: "MethodRun", accum: int):
        self.run, self.accum = run, accum

    def _steps(self, n: int):
        r = self.run.recipe
        B, world = r.cfg.optim.batch_size, r.dist.world
        for s in range(0, n, B):
            g = min(B, n - s)
            a, b = r.dist.shard(g)
            yield s, g, a, b, min(self.accum, g // world)

    def __len__(self) -> int:
        return sum(k for *_, k in self._steps(len(self.run.recipe.enc)))

    def __iter__(self):
        r = self.run.recipe
        r.order = torch.randperm(len(r.enc), generator=r.gen).tolist()
        r.epoch = self.run.epochs_started
        self.run.epochs_started += 1
        for s, g, a, b, k in self._steps(len(r.order)):
            ids = r.order[s:s + g]
            self.run.planned.append((a, g))
            for lo, hi in split_shard(b - a, k):
                yield ids[a + lo:a + hi]          # positions in r.enc, the DataLoader's dataset


@dataclasses.dataclass
class PendingStep:
    """One optimiser step between its decision and its records."""

    batch: Batch                 # this rank's shard of the global batch, as the recipe collates it
    decision: Any
    w: torch.Tensor              # [B_shard] weights
    w_total: torch.Tensor        # Σ w over the global batch
    bounds: list[tuple[int, int]]
    t0: float
    t_decide: float
    c0: float                    # the ranks' collective seconds before the step
    done: int = 0
    losses: list = dataclasses.field(default_factory=list)
    task: Any = 0.0
    loss: Any = 0.0
    extra_metrics: dict = dataclasses.field(default_factory=dict)
    grad_norm: Any = 0.0


class MethodRun:
    """The explorer side of a Trainer with a method: the recipe's pieces, driven by the Trainer's hooks."""

    def __init__(self, trainer, cfg: RunConfig, records: list[Record], instance=None):
        self.trainer, self.cfg, self.records, self.instance = trainer, cfg, records, instance
        self.recipe: Recipe | None = None
        self.pending: PendingStep | None = None
        self.planned: deque = deque()      # (shard offset, global batch size) of each step the sampler planned
        self.epochs_started = 0

    def setup(self) -> None:
        """Recipe.setup with the Trainer's model: run folder, method, starting evaluation, prepare, the set."""
        t, cfg = self.trainer, self.cfg
        r = self.recipe = recipe_around(cfg, t.model, t.processing_class, t.args.device)
        if r.tok is None:
            raise ValueError("processing_class is None: expected the model's tokenizer (processing_class=tokenizer)")
        r.method = self.instance
        if self.instance is not None:
            r.mcfg = self.instance.config
        r.model_info.update(dtype=str(next(r.model.parameters()).dtype).replace("torch.", ""),
                            chat_template=bool(getattr(r.tok, "chat_template", None)))
        r.autocast_dtype = torch.bfloat16 if r.device.type == "cuda" else None
        r.data = build_pools(cfg, task=self.records)
        r.setup_run()
        r.params = [p for p in r.model.parameters() if p.requires_grad]
        r.model.train()
        r.harm = harmful_score(r.start_summary)
        r.writer.update(trainer=trainer_manifest(t))
        self.by_id = {e.sample_id: e for e in r.enc}
        t.train_dataset = r.enc   # what the Trainer counts (num_examples) is the set the method left

    # -- the Trainer's hooks, in the order a step calls them ----------------------------------------

    def decide(self, micro: list[dict]) -> None:
        """The step's micro-batches (this rank's) -> one shard batch -> method.decide."""
        r, t0 = self.recipe, time.time()
        c0 = r.dist.collective_s
        r.step_no = r.ctx.step = self.trainer.state.global_step
        r.ctx.epoch = r.epoch
        r.ctx.batch_offset, r.ctx.global_batch_size = self.planned.popleft()
        ids = [s for mb in micro for s in mb["sample_ids"]]
        batch = collate([self.by_id[s] for s in ids], r.pad, r.device)
        decision = r.method.decide(batch, r.ctx)
        t_decide = time.time() - t0
        if r.probe is not None:
            decision.scores.update(r.probe(r.model, batch, r.step_no, r.opt.param_groups[0]["lr"]))
        r.model.zero_grad(set_to_none=True)    # the recipe zeroes after decide: a method may leave .grad behind
        w = decision.weights.detach().float().to(r.device)                         # [B_shard]
        w_total = r.dist.all_sum(w.sum().detach()).clamp_min(1e-8)
        bounds, a = [], 0
        for mb in micro:
            bounds.append((a, a + len(mb["sample_ids"])))
            a = bounds[-1][1]
        self.pending = PendingStep(batch, decision, w, w_total, bounds, t0, t_decide, c0)

    def micro_step(self, inputs: dict) -> torch.Tensor:
        """One micro-batch's share of the weighted loss, backward; after the last, the ranks' sum and
        transform_grads. Returns the share the Trainer logs (scaled so that its mean over ranks is the
        global loss)."""
        r, st = self.recipe, self.pending
        d, j = st.decision, st.done
        a, b = st.bounds[j]
        first, last = j == 0, j == len(st.bounds) - 1
        st.done += 1
        r.model.train()
        task = loss = torch.zeros((), device=r.device)
        if d.grads is not None or d.losses is not None:   # the method's update or losses span the whole shard
            if first:
                losses = r.assembled_update(d) if d.grads is not None else d.losses
                task, loss = r.weighted_loss(st.w, losses, st.w_total, d.extra_loss)
                if d.grads is None and loss.requires_grad:
                    loss.backward()
                st.losses.append(losses.detach())
        else:
            mb = Batch(inputs["input_ids"], inputs["attention_mask"], inputs["labels"], inputs["sample_ids"],
                       (inputs["labels"] != -100).sum(dim=1)).to(r.device)
            losses = r.per_sample_losses(mb)                                        # [b - a]
            task, loss = r.weighted_loss(st.w[a:b], losses, st.w_total, d.extra_loss if first else None)
            if loss.requires_grad:
                loss.backward()
            st.losses.append(losses.detach())
        st.task, st.loss = st.task + task.detach(), st.loss + loss.detach()
        if last:
            if d.grads is None:            # an assembled update arrives reduced by its method
                r.dist.all_reduce_grads(r.params)
            st.extra_metrics = r.method.transform_grads(r.ctx) or {}
        return (loss.detach() * r.dist.world).to(self.trainer.args.device)

    def after_optimizer_step(self) -> None:
        r, st = self.recipe, self.pending
        r.method.after_step(r.ctx)
        losses = torch.cat(st.losses)
        extra = st.extra_metrics
        if r.dist.enabled:
            extra = {**extra, "time_collectives_s": r.dist.collective_s - st.c0}
        r.record(st.batch, st.decision, st.w, losses, torch.as_tensor(st.task), torch.as_tensor(st.loss),
                 torch.as_tensor(float(st.grad_norm or 0.0)), extra, time.time() - st.t0, st.t_decide)
        r.step_no += 1
        self.pending = None
        r.after_step_bookkeeping()


def trainer_manifest(t) -> dict[str, Any]:
    """What the manifest says about the Trainer that ran the method (its loop decides these, not explorer)."""
    a = t.args
    parent = next(c for c in type(t).__mro__[1:] if c.__module__.startswith(("trl", "transformers")))
    return {"class": f"{parent.__module__.split('.')[0]}.{parent.__name__}",
            "optimizer": type(getattr(t.optimizer, "optimizer", t.optimizer)).__name__ if t.optimizer else a.optim,
            "optim": str(getattr(a.optim, "value", a.optim)),
            "lr_scheduler_type": str(getattr(a.lr_scheduler_type, "value", a.lr_scheduler_type)),
            "learning_rate": a.learning_rate, "warmup_steps": a.warmup_steps, "max_grad_norm": a.max_grad_norm,
            "per_device_train_batch_size": a.per_device_train_batch_size,
            "gradient_accumulation_steps": a.gradient_accumulation_steps, "world_size": a.world_size,
            "report_to": list(a.report_to or [])}


class _StepHooks(TrainerCallback):
    """The Trainer's events a MethodRun needs (its own callback, ahead of the user's)."""

    def __init__(self, run: MethodRun):
        self.run = run

    def on_train_begin(self, args, state, control, optimizer=None, **kw):
        r = self.run.recipe
        r.opt = r.ctx.optimizer = optimizer
        if state.max_steps != r.total_steps:
            raise ValueError(f"the Trainer plans {state.max_steps} optimiser steps, explorer's recipe {r.total_steps} "
                             f"({len(r.enc)} samples in global batches of {r.cfg.optim.batch_size}); expected the same "
                             "(an integral num_train_epochs, or max_steps)")

    def on_optimizer_step(self, args, state, control, **kw):
        self.run.after_optimizer_step()


class MethodTrainerMixin:
    """What `Trainer` and `SFTTrainer` here add to their parents: `method=`, `method_config=`, `explorer=`.
    Without a method the parent runs unchanged, with an ExplorerCallback recording it."""

    def __init__(self, *args, method=None, method_config=None, explorer: dict | None = None, **kwargs):
        parent_init = super().__init__
        bound = inspect.signature(parent_init).bind_partial(*args, **kwargs).arguments
        self._explorer: MethodRun | None = None
        if method is None:
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), ExplorerCallback(explorer)]
            parent_init(*args, **kwargs)
            return
        targs = bound.get("args")
        self._refuse_what_cannot_work(targs, method)
        section, instance = method_section(method, method_config)
        settings = flatten(dict(explorer or {}), "explorer settings")
        records = records_from_dataset(bound.get("train_dataset"), settings.get("data.id_field", ""),
                                       settings.get("data.strict", True))
        parent_init(*args, **kwargs)
        path, lora = model_source(self.model)
        cfg = run_config(self.args, path, lora, section, settings, self.args.world_size)
        self._explorer = MethodRun(self, cfg, records, instance)
        self.add_callback(_StepHooks(self._explorer))

    def _refuse_what_cannot_work(self, args, method) -> None:
        if args is None:
            return
        for flag in ("packing", "padding_free"):
            if getattr(args, flag, False):
                raise ValueError(f"{type(args).__name__}.{flag} = True with method={method!r}: {flag} joins several "
                                 "samples into one sequence, and the method weighs (keeps or drops) each sample on "
                                 f"its own; expected {flag}=False")
        if getattr(args, "fp16", False):
            raise ValueError(f"fp16 = True with method={method!r}: the method's backward runs outside the fp16 "
                             "grad scaler; expected bf16=True or full precision")

    def train(self, *args, **kwargs):
        run = self._explorer
        if run is None:
            return super().train(*args, **kwargs)
        if kwargs.get("resume_from_checkpoint") or (args and args[0]):
            raise ValueError("resume_from_checkpoint with method=...: the method's state and the recipe's data order "
                             "are not in the Trainer's checkpoints; expected a fresh train()")
        try:
            run.setup()
            out = super().train(*args, **kwargs)
            run.recipe.finish()
            return out
        except BaseException as e:
            if run.recipe is not None and getattr(run.recipe, "writer", None) is not None:
                run.recipe.writer.fail(e)
            raise

    def get_train_dataloader(self):
        run = self._explorer
        if run is None:
            return super().get_train_dataloader()
        return torch.utils.data.DataLoader(run.recipe.enc, batch_sampler=RecipeBatches(run, self.args.gradient_accumulation_steps),
                                           collate_fn=SampleIdCollator(run.recipe.pad),
                                           num_workers=self.args.dataloader_num_workers,
                                           pin_memory=self.args.dataloader_pin_memory)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        samples, n_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self._explorer is not None and samples:
            self._explorer.decide(samples)
        return samples, n_items

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self._explorer is None:
            return super().training_step(model, inputs, num_items_in_batch)
        return self._explorer.micro_step(inputs)

    def _get_grad_norm(self, model, grad_norm=None):
        norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        if self._explorer is not None and self._explorer.pending is not None:
            self._explorer.pending.grad_norm = norm
        return norm


class Trainer(MethodTrainerMixin, HFTrainer):
    """transformers' Trainer with an explorer method: Trainer(..., method="dualselect")."""

    model_accepts_loss_kwargs = False   # the loss is explorer's weighted mean, not the model's own


def recipe_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 5,
                     schedule: str = "cosine", min_ratio: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """`explorer run`'s learning-rate schedule (explorer/model/optim.py) as a scheduler for a Trainer:
    Trainer(..., optimizers=(AdamW(params, lr), recipe_scheduler(opt, total_steps))). Its peak is each
    parameter group's lr."""
    factor = LrSchedule(1.0, total_steps, warmup_steps, schedule, min_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: factor(s))


# --------------------------------------------------------------------------------------------------
# the read-only callback: an ordinary run, recorded
# --------------------------------------------------------------------------------------------------

def content_id(ids: list[int]) -> str:
    """A sample's id from its tokens (a run without a method has no dataset ids in its batches)."""
    return "h-" + hashlib.sha1(",".join(map(str, ids)).encode()).hexdigest()[:12]


class ExplorerCallback(TrainerCallback):
    """Records any Trainer / SFTTrainer run, changing nothing: per step the loss of every sample the model
    saw (its mean NLL over supervised tokens, read from the forward the run makes anyway), the steps'
    learning rate, and evaluations on the configured suites at the start, every eval.every steps and at
    the end. `explorer` (or keyword arguments): RunConfig keys as in `explorer run`, dotted or nested
    (runs_dir, run_name, eval.suites, eval.final_n, eval.every, eval.judges, data.reference ...; as keyword
    arguments nested: eval={"final_n": 8}). Sample ids are content hashes of the tokens."""

    def __init__(self, explorer: dict | None = None, **settings):
        self.settings = {**(explorer or {}), **settings}
        self.recipe: Recipe | None = None
        self.rows: list[dict] = []
        self.samples: dict[str, dict] = {}
        self.handle = None

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kw):
        path, lora = model_source(model)
        world = getattr(args, "world_size", 1)
        cfg = run_config(args, path, lora, {"name": "sft"}, self.settings, world)
        r = self.recipe = recipe_around(cfg, model, processing_class, args.device)
        r.model_info["model_path"] = path or "unknown"
        r.autocast_dtype = None
        r.data = build_pools(cfg, task=[])
        r.records, r.pools, r.suites = r.data.records, r.data.pools, r.data.suites
        r._open_run_folder()
        from explorer.eval.registry import make_judges

        r.judges = make_judges(cfg.eval.judges)
        r.writer.update(trainer={"callback": "ExplorerCallback", "loss": "the Trainer's own (not reweighted)",
                                 "optim": str(getattr(args.optim, "value", args.optim)),
                                 "lr_scheduler_type": str(getattr(args.lr_scheduler_type, "value",
                                                                  args.lr_scheduler_type))})
        r.t_start = time.time()
        r.total_steps = state.max_steps
        r.start_summary = r.evaluate(0, cfg.eval.final_n)
        r.writer.update(start_metrics=r.start_summary, progress={"step": 0, "total_steps": state.max_steps})
        r.writer.flush()
        model.train()
        self.t0 = time.time()
        self.handle = model.register_forward_hook(self._seen, with_kwargs=True)

    @torch.no_grad()
    def _seen(self, module, args, kwargs, output) -> None:
        """Per-sample losses of a training forward, from what it computed (TRL's fused head returns per-token
        log-probabilities; otherwise the logits at the supervised positions)."""
        if not module.training:
            return
        ids, labels = kwargs.get("input_ids"), kwargs.get("labels")
        if ids is None or labels is None or ids.dim() != 2:
            return
        mask = kwargs.get("attention_mask")
        if getattr(output, "log_probs", None) is not None and getattr(output, "label_mask", None) is not None:
            lp, lm = output.log_probs.detach().float(), output.label_mask
            losses = -(lp * lm).sum(dim=1) / lm.sum(dim=1).clamp_min(1)
        elif getattr(output, "logits", None) is not None and output.logits.shape[1] == ids.shape[1]:
            pos = loss_positions(labels)
            losses = per_sample_nll(output.logits.detach()[:, pos], labels, pos)
        else:
            return
        n_tok = (labels[:, 1:] != -100).sum(dim=1).cpu().tolist()
        ids_c, lab_c = ids.cpu(), labels.cpu()
        keep = (mask.cpu() > 0) if mask is not None else torch.ones_like(ids_c, dtype=torch.bool)
        for i, l in enumerate(losses.float().cpu().tolist()):
            toks = ids_c[i][keep[i]].tolist()
            sid = content_id(toks)
            if sid not in self.samples:
                lab = lab_c[i][keep[i]]
                resp = [t for t, y in zip(toks, lab.tolist()) if y != -100]
                prompt = [t for t, y in zip(toks, lab.tolist()) if y == -100]
                self.samples[sid] = {"sample_id": sid, "pool": "task", "family": "task", "category": "",
                                     "prompt": self.recipe.tok.decode(prompt, skip_special_tokens=True),
                                     "response": self.recipe.tok.decode(resp, skip_special_tokens=True),
                                     "provenance": UNKNOWN, "in_train": True, "in_mix": True}
            self.rows.append({"sample_id": sid, "loss": l, "n_tokens": n_tok[i]})

    def on_optimizer_step(self, args, state, control, optimizer=None, **kw):
        self.lr = optimizer.param_groups[0]["lr"] if optimizer is not None else float("nan")   # before the scheduler

    def on_step_end(self, args, state, control, **kw):
        r = self.recipe
        if r is None:
            return
        step = state.global_step - 1
        rows, samples = self.rows, list(self.samples.values())
        self.rows = []
        if r.dist.enabled:
            got = r.dist.gather_object((rows, samples))
            if got is None:
                self._bookkeeping(state)
                return
            rows = [x for g in got for x in g[0]]
            samples = list({s["sample_id"]: s for g in got for s in g[1]}.values())
            self.samples = {s["sample_id"]: s for s in samples}
        r.writer.log("decisions", [{"step": step, "role": "task", "weight": 1.0, "kept": True, **x} for x in rows])
        # the step's loss as the Trainer computes it: the mean over the batch's supervised tokens
        n_tok = sum(x["n_tokens"] for x in rows)
        loss = sum(x["loss"] * x["n_tokens"] for x in rows) / n_tok if n_tok else float("nan")
        now = time.time()
        r.writer.log("steps", {"step": step, "epoch": int(state.epoch or 0), "phase": "train", "loss": loss,
                               "task_loss": loss, "extra_loss": 0.0, "lr": getattr(self, "lr", float("nan")),
                               "grad_norm": float("nan"), "n_batch": len(rows),
                               "n_kept": len(rows), "kept_frac": 1.0, "time_s": now - self.t0,
                               "time_decide_s": 0.0})
        self.t0 = now
        self._bookkeeping(state)

    def _write_samples(self) -> None:
        """The samples seen so far, the reference and safety pools and the evaluation prompts."""
        r = self.recipe
        if r.dist.is_main:
            r.writer.write_samples(list(self.samples.values())
                                   + [{**x.to_row(), "in_train": False, "in_mix": False} for x in r.records.values()]
                                   + [{**x.to_row(), "in_train": False, "in_mix": False}
                                      for s in r.suites for x in s.records])

    def _bookkeeping(self, state) -> None:
        r = self.recipe
        r.step_no = state.global_step
        if r.step_no % r.cfg.record.flush_every == 0:
            self._write_samples()
        r.after_step_bookkeeping()

    def on_train_end(self, args, state, control, **kw):
        r = self.recipe
        if r is None:
            return
        if self.handle is not None:
            self.handle.remove()
        r.total_steps = state.global_step
        self._write_samples()
        r.finish()
