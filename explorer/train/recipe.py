"""The one method-agnostic training recipe, in the manner of torchtune's single-device recipes.

    run(config) -> run folder          = Recipe(config).setup(); Recipe.train()

`setup()` loads the model and the data, opens the run folder (manifest "running" before step 0),
builds the method's Context and the method, evaluates the starting model, lets the method prepare,
records every sample and builds the optimiser. `train()` walks the epochs and calls `step(batch)`:

    decide -> weighted loss (+ extra) -> backward, or the method's assembled update -> transform_grads
    -> clip -> optimiser -> after_step -> record the step and every per-sample decision

then evaluates every `eval.every` steps, flushes Parquet parts every `record.flush_every` and saves a
checkpoint every `record.checkpoint_every`: the resume checkpoint `checkpoint/` (overwritten) and a step checkpoint
`checkpoints/step-N/` in the same format, of which the last `record.checkpoint_keep` stay (the oldest is
dropped) for counterfactual replays (explorer/replay/, docs/why.md). At the end it evaluates, writes the summary and marks the run complete; any
error (also SIGTERM, Ctrl-C) marks it failed, keeping what was flushed.

Under torchrun (explorer/model/distributed.py) every rank draws the same global batch and steps on its
shard; the gradients of the global weighted loss are summed across ranks before transform_grads (an
assembled update arrives already reduced by its method), so every rank holds the same weights; rank 0
writes the run folder, evaluates and checkpoints, the others send it their rows.

Tests drive the same `step` through `Recipe.for_context(method, ctx, cfg)`, without a run folder.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import math
import os
import random
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch

from explorer.config import RunConfig, from_dict, method_config, run_settings, to_dict
from explorer.data.batch import Batch
from explorer.data.records import Record
from explorer.data.tokenize import collate, encode_all, overlong_counts, pad_id_of
from explorer.eval.evaluate import evaluate, summarize
from explorer.eval.registry import make_judges
from explorer.methods.protocol import Context, Decision
from explorer.methods.registry import make_method
from explorer.model import distributed
from explorer.model.load import LoraSettings, load_model, model_fingerprint, pick_device, pick_dtype
from explorer.model.losses import model_nll
from explorer.model.optim import LrSchedule, OptimStep
from explorer.model.plumbing import autocast, cpu_info, set_flat_grad
from explorer.prepare.specs import resolve_spec
from explorer.record.writer import FollowerWriter, RunWriter, other_ranks_failures
from explorer.runs import schema
from explorer.train.assemble import build_pools

CHECKPOINT = "checkpoint"


def lr_schedule(cfg: RunConfig, total_steps: int) -> LrSchedule:
    """The run's learning rate at each step (linear warm-up, then lr_schedule down to lr_min_ratio)."""
    o = cfg.optim
    return LrSchedule(o.lr, total_steps, o.warmup_steps, o.lr_schedule, o.lr_min_ratio)


def make_run_id(cfg: RunConfig, p_label: str | None = None) -> str:
    """p_label: the harmful share as the data knows it ("0.1", "0.0967", "unknown")."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")[:-3]
    if p_label is None:
        p_label = "unknown" if cfg.data.harmful_ratio is None else f"{cfg.data.harmful_ratio:g}"
    return f"{cfg.run_name or cfg.method_name}-p{p_label}-s{cfg.seed}-{stamp}"


class Recipe:
    """One run's state: model, data, run folder, method, optimiser and where the loop stands."""

    def __init__(self, cfg: RunConfig, run_id: str | None = None, resume_dir: str | Path | None = None):
        self.cfg = cfg
        self.run_id = run_id
        self.resume_dir = Path(resume_dir) if resume_dir is not None else None
        self.writer: RunWriter | None = None
        self.log = None                       # (table, rows) -> None: the writer's, or a test's
        self.step_no, self.epoch, self.pos, self.order = 0, 0, 0, None
        self.total_steps = 0
        self.harm = float("nan")              # latest harmful score, for the progress bar
        self.probe = None                     # scoring/influence.InfluenceProbe when eval.influence_every > 0
        self.dist = distributed.SINGLE        # under torchrun: this rank and the collectives (explorer/model/distributed.py)

    # ----------------------------------------------------------------------------------------------
    # setup
    # ----------------------------------------------------------------------------------------------

    def setup(self) -> "Recipe":
        """Model, data, run folder, method, starting evaluation, method.prepare, optimiser."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.mcfg = method_config(cfg)
        self.device = pick_device(cfg.model.device)
        self.dist = distributed.init(cfg.dist.timeout_s, self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)   # one GPU per rank
        mc = cfg.model
        lora = LoraSettings(mc.lora_r, mc.lora_alpha, mc.lora_dropout, mc.lora_targets) if mc.lora else None
        shard = cfg.dist.shard == "fsdp" and self.dist.enabled
        if shard:
            # dist.shard=fsdp (config.validate_shard has checked that the method runs its ranks in lockstep):
            # the whole model is loaded into host memory, in the dtype the device would get, and FSDP
            # moves each rank's 1/world share of the frozen base weights onto its device -- a model
            # larger than one device never lands on one whole
            dtype = str(pick_dtype(cfg.model.dtype, self.device)).replace("torch.", "")
            self.model, self.tok, self.model_info = load_model(resolve_spec(cfg.model.path), torch.device("cpu"), dtype,
                                                               lora=lora)
            self.sharding = distributed.fsdp_shard(self.model, self.dist, self.device)
            self.model_info["device"] = str(self.device)
        else:
            self.model, self.tok, self.model_info = load_model(resolve_spec(cfg.model.path), self.device, cfg.model.dtype, lora=lora)
            n = sum(p.numel() for p in self.model.parameters())
            self.sharding = {"shard": "none", "param_elements": n, "param_elements_local": n}
        # every rank starts from rank 0's trainable weights (a LoRA initialisation draws random numbers)
        self.dist.broadcast_params(p for p in self.model.parameters() if p.requires_grad)
        self.autocast_dtype = torch.bfloat16 if self.device.type == "cuda" else None
        self.data = build_pools(cfg)
        self.setup_run()
        self._setup_optimizer(cfg)
        self.model.train()
        self.harm = harmful_score(self.start_summary)
        if self.checkpoint is not None:
            self.restore_checkpoint(self.checkpoint)
        return self

    def setup_run(self) -> None:
        """Everything between the loaded model (self.model, tok, model_info, device, dist, sharding,
        data) and the optimiser: run folder, method, starting evaluation, method.prepare, the training
        set. explorer/integrations calls it with a Hugging Face Trainer's model and data."""
        cfg = self.cfg
        self.records, self.pools, self.suites = self.data.records, self.data.pools, self.data.suites
        self._open_run_folder()
        self._count_overlong()
        self._setup_method()
        self.t_start = time.time()
        if self.checkpoint is None:
            self.start_summary = self.evaluate(0, cfg.eval.final_n)
            self.writer.update(start_metrics=self.start_summary)
            self.writer.flush()
        else:
            self.start_summary = self.writer.manifest.get("start_metrics", {})
        self.method.prepare(self.ctx)
        self._setup_training_set()
        from explorer.scoring.influence import InfluenceProbe

        self.probe = InfluenceProbe.for_run(cfg, self.suites, self.encode, self.autocast_dtype)

    def _open_run_folder(self) -> None:
        """Rank 0 creates (or re-opens) the run folder and writes it; the other ranks learn its path
        and hold a FollowerWriter (their per-sample rows reach rank 0 through `record`)."""
        cfg, dist = self.cfg, self.dist
        self.checkpoint = None
        if self.resume_dir is not None:
            if dist.is_main:
                self.writer = RunWriter.open(self.resume_dir)
                self.checkpoint = load_checkpoint(self.resume_dir)
                self.writer.truncate_parts(self.checkpoint["next_part"])  # drop records written after it
                for note in self.resume_dir.glob("failed_rank*.json"):   # the failure being resumed from
                    note.unlink()
                self.writer.update(status=schema.STATUS_RUNNING, resumed_from_step=self.checkpoint["step"],
                                   error=None, failed_rank=None, pid=os.getpid(), **self._dist_manifest())
            dist.barrier()   # the other ranks read the folder once rank 0 has cut it back to the checkpoint
            if not dist.is_main:
                self.writer = FollowerWriter(self.resume_dir, dist.rank)
                self.checkpoint = load_checkpoint(self.resume_dir)
        else:
            run_dir = None
            if dist.is_main:
                self.writer = RunWriter.create(cfg.runs_dir, self.run_id or make_run_id(cfg, self.data.run_label), {
                    "method": cfg.method_name, "config": to_dict(cfg), "method_config": self.mcfg.__dict__,
                    "seed": cfg.seed, "model": cfg.model.path, "model_info": self.model_info,
                    "model_fingerprint": model_fingerprint(self.model_info["model_path"]),
                    "device": str(self.device), "cpu": cpu_info(), **self._dist_manifest(), **self.data.manifest,
                    "progress": {"step": 0, "total_steps": None}})
                run_dir = str(self.writer.run_dir)
            run_dir = dist.broadcast_object(run_dir)
            if not dist.is_main:
                self.writer = FollowerWriter(run_dir, dist.rank)
        self.log = self.writer.log

    def _dist_manifest(self) -> dict[str, Any]:
        """world_size and backend at the top of the manifest; the rest under `distributed`."""
        d = {**self.dist.describe(), **self.sharding}
        return {"world_size": d["world_size"], "backend": d["backend"], "distributed": d}

    def _count_overlong(self) -> None:
        """Over-long records of every pool, counted (and refused up front with overlong=error)."""
        cfg = self.cfg
        self.writer.update(overlong={
            "policy": cfg.data.overlong, "max_length": cfg.data.max_length,
            **{name: overlong_counts(self.tok, [self.records[i] for i in ids], cfg.data.max_length, cfg.data.overlong,
                                     f"{name} pool") for name, ids in self.pools.items()}})

    def _setup_method(self) -> None:
        cfg = self.cfg
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.pad = pad_id_of(self.tok)
        self.judges = make_judges(cfg.eval.judges)
        self._reference: torch.nn.Module | None = None
        self.ctx = Context(model=self.model, tokenizer=self.tok, device=self.device, settings=run_settings(cfg),
                           records=self.records, pools=self.pools, train_ids=list(self.pools["task"]),
                           encode=self.encode, log=self.writer.log, reference_model=self.reference_model,
                           load_model=self.other_model, run_dir=str(self.writer.run_dir),
                           generator=self.gen, autocast_dtype=self.autocast_dtype, dist=self.dist)
        if getattr(self, "method", None) is None:   # explorer/integrations may hand in an instance
            self.method = make_method(cfg.method_name, self.mcfg)
        if (cfg.record.checkpoint_every or self.resume_dir) and not hasattr(self.method, "load_state_dict"):
            raise ValueError(f"method {cfg.method_name!r} keeps no state_dict/load_state_dict (MethodBase "
                             "has them); it cannot be checkpointed or resumed: set record.checkpoint_every=0")

    def _setup_training_set(self) -> None:
        """Tokenise the fine-tuning set the method left in ctx.train_ids; record every sample."""
        cfg, records = self.cfg, self.records
        train_recs = [records[i] for i in self.ctx.train_ids]
        self.enc, skipped = encode_all(self.tok, train_recs, cfg.data.max_length, source="fine-tuning set",
                                       overlong=cfg.data.overlong)
        in_train = {e.sample_id for e in self.enc}
        in_mix = set(self.pools["task"])
        self.writer.write_samples([{**r.to_row(), "in_train": r.sample_id in in_train,
                                    "in_mix": r.sample_id in in_mix} for r in records.values()]
                                  + [{**r.to_row(), "in_train": False, "in_mix": False}
                                     for s in self.suites for r in s.records])
        steps_per_epoch = math.ceil(len(self.enc) / cfg.optim.batch_size)
        tail = len(self.enc) % cfg.optim.batch_size
        if self.dist.enabled and (cfg.optim.batch_size < self.dist.world or 0 < tail < self.dist.world):
            small = cfg.optim.batch_size if cfg.optim.batch_size < self.dist.world else tail
            raise ValueError(f"optim.batch_size = {cfg.optim.batch_size} over {len(self.enc)} fine-tuning samples gives a "
                             f"global batch of {small}, fewer samples than the {self.dist.world} ranks; expected "
                             f"every global batch to have at least one sample per rank (change batch_size, "
                             f"n_train or the number of processes)")
        total = cfg.optim.epochs * steps_per_epoch
        if cfg.optim.max_steps > 0:
            total = min(total, cfg.optim.max_steps) if cfg.optim.epochs > 0 else cfg.optim.max_steps
        self.ctx.steps_per_epoch, self.ctx.total_steps = steps_per_epoch, total
        self.total_steps = total
        self.writer.update(progress={"step": 0, "total_steps": total}, n_skipped_too_long=len(skipped))

    def _setup_optimizer(self, cfg: RunConfig, optimizer: torch.optim.Optimizer | None = None) -> None:
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = optimizer or torch.optim.AdamW(self.params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.ctx.optimizer = self.opt
        self.optim = OptimStep(self.opt, self.params, lr_schedule(cfg, self.total_steps), cfg.optim.clip)

    @classmethod
    def for_context(cls, method, ctx: Context, cfg: RunConfig, total_steps: int,
                    optimizer: torch.optim.Optimizer | None = None) -> "Recipe":
        """A recipe around a Context built elsewhere (tests, notebooks): the same `step`, recording
        into `ctx.log`, with no run folder or evaluation. `optimizer` replaces AdamW (e.g. plain SGD
        to test a projection that Adam's per-coordinate scaling would blur)."""
        self = cls(cfg)
        self.model, self.device, self.autocast_dtype = ctx.model, ctx.device, ctx.autocast_dtype
        self.ctx, self.method, self.log, self.gen = ctx, method, ctx.log, ctx.generator
        self.total_steps = ctx.total_steps = total_steps
        self._setup_optimizer(cfg, optimizer)
        self.model.train()
        return self

    # -- what the Context offers methods ----------------------------------------------------------

    def encode(self, recs: list[Record]) -> Batch:
        # the Batch's sample_ids are the records kept (overlong=skip may leave some out): align by them
        enc, _ = encode_all(self.tok, recs, self.cfg.data.max_length,
                            overlong="skip" if self.cfg.data.overlong == "error" else self.cfg.data.overlong)
        return collate(enc, self.pad, self.device)

    def reference_model(self) -> torch.nn.Module:
        """A frozen copy of the starting model (taken before the first optimiser step)."""
        if self._reference is None:
            if self.ctx.step > 0:
                raise RuntimeError("reference_model() first called after training started; call it in prepare()")
            if self.cfg.model.lora:
                m = load_model(resolve_spec(self.cfg.model.path), self.device, self.cfg.model.dtype, trainable=False)[0]
            else:
                m = copy.deepcopy(self.model).eval()
                for p in m.parameters():
                    p.requires_grad_(False)
            self._reference = m
        return self._reference

    def other_model(self, spec: str) -> torch.nn.Module:
        return load_model(resolve_spec(spec), self.device, self.cfg.model.dtype, trainable=False)[0]

    # ----------------------------------------------------------------------------------------------
    # training
    # ----------------------------------------------------------------------------------------------

    def train(self) -> Path:
        """All epochs (from the checkpoint when resuming), the final evaluation, the summary."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        p_shown = self.writer.manifest.get("harmful_ratio")
        bar = tqdm(total=self.total_steps, desc=f"{cfg.method_name} p={'unknown' if p_shown is None else p_shown}",
                   disable=not cfg.progress or not self.dist.is_main, mininterval=1.0)
        bar.update(self.step_no)
        while self.step_no < self.total_steps:
            if self.order is None:
                self.order = torch.randperm(len(self.enc), generator=self.gen).tolist()
            self.ctx.epoch = self.epoch
            for s in range(self.pos, len(self.order), cfg.optim.batch_size):
                if self.step_no >= self.total_steps:
                    break
                self.pos = s + cfg.optim.batch_size
                # the global batch; each rank takes its contiguous shard of it
                ids = self.order[s:self.pos]
                a, b = self.dist.shard(len(ids))
                self.ctx.batch_offset, self.ctx.global_batch_size = a, len(ids)
                row = self.step(collate([self.enc[i] for i in ids[a:b]], self.pad, self.device))
                self.after_step_bookkeeping()
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.3f}", kept=f"{row['kept_frac']:.2f}",
                                harmful=f"{self.harm:.0f}")
            self.epoch += 1
            self.pos, self.order = 0, None
        bar.close()
        return self.finish()

    def finish(self) -> Path:
        """The final evaluation, the summary, the run marked complete."""
        final = self.evaluate(self.total_steps, self.cfg.eval.final_n)
        self.writer.flush()
        self.writer.finish(summary=final, progress={"step": self.total_steps, "total_steps": self.total_steps},
                           wall_seconds=round(time.time() - self.t_start, 2))
        self.dist.barrier()   # no rank leaves before the run folder is complete
        return self.writer.run_dir

    def step(self, batch: Batch) -> dict[str, Any]:
        """One optimiser step on `batch`; records it and returns the `steps` row."""
        t0 = time.time()
        c0 = self.dist.collective_s
        self.ctx.step = self.step_no
        self.optim.set_lr(self.step_no)
        decision = self.method.decide(batch, self.ctx)
        t_decide = time.time() - t0
        if self.probe is not None:   # the independent check: effect_safety / effect_task columns at its steps
            decision.scores.update(self.probe(self.model, batch, self.step_no, self.opt.param_groups[0]["lr"]))
        w = decision.weights.detach().float().to(self.device)                          # [B]
        self.optim.zero_grad()
        if decision.grads is not None:      # the method assembled the update from per-sample gradients
            losses = self.assembled_update(decision)
        else:
            losses = decision.losses if decision.losses is not None else self.per_sample_losses(batch)
        if not self.dist.enabled:
            task_loss = (w * losses).sum() / w.sum().clamp_min(1e-8)
            loss = task_loss + (decision.extra_loss if decision.extra_loss is not None else 0.0)
            if decision.grads is None and loss.requires_grad:
                loss.backward()
        else:
            task_loss, loss = self.distributed_backward(decision, w, losses)
        extra_metrics = self.method.transform_grads(self.ctx) or {}
        grad_norm = self.optim.step()                  # clip (clip > 0), then AdamW's step
        self.method.after_step(self.ctx)
        if self.dist.enabled:   # time spent in collectives this step (before the records' gather)
            extra_metrics = {**extra_metrics, "time_collectives_s": self.dist.collective_s - c0}
        row = self.record(batch, decision, w, losses, task_loss, loss, grad_norm, extra_metrics,
                          time.time() - t0, t_decide)
        self.step_no += 1
        return row

    # -- the pieces of a step ---------------------------------------------------------------------

    def distributed_backward(self, decision: Decision, w: torch.Tensor, losses: torch.Tensor):
        """Several ranks: the gradient of the GLOBAL weighted mean Σ_i w_i ℓ_i / Σ_i w_i over the whole
        global batch (not the mean of the ranks' means, which differs whenever the ranks keep different
        weight), plus the mean over ranks of the method's extra loss (a method whose extra term sums
        over its shard scales it so; one computed alike on every rank needs nothing). Each rank
        differentiates its share, Σ_{i in shard} w_i ℓ_i / W + extra / world with W the all-reduced
        Σ w, and the gradients are summed across ranks before transform_grads. An update the method
        assembled (decision.grads) is already global: the method reduced it. Returns this rank's
        (task, total) loss terms; `record` turns them into the global values."""
        dist = self.dist
        w_total = dist.all_sum(w.sum().detach()).clamp_min(1e-8)
        task_loss, loss = self.weighted_loss(w, losses, w_total, decision.extra_loss)
        if decision.grads is None:
            if torch.is_tensor(loss) and loss.requires_grad:
                loss.backward()
            dist.all_reduce_grads(self.params)   # every rank, also one whose loss had no graph
        return task_loss, loss

    def weighted_loss(self, w: torch.Tensor, losses: torch.Tensor, w_total: torch.Tensor,
                      extra: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(task, total) terms of this share of the global batch: Σ_i w_i ℓ_i / W over its samples, plus
        extra / world (W: Σ w over the whole global batch; a share is a rank's shard, or one micro-batch
        of it under gradient accumulation in explorer/integrations, which passes `extra` with one of them)."""
        task_loss = (w * losses).sum() / w_total
        return task_loss, task_loss + (extra / self.dist.world if extra is not None else 0.0)

    def per_sample_losses(self, batch: Batch) -> torch.Tensor:
        with autocast(self.device, self.autocast_dtype):
            return model_nll(self.model, batch.input_ids, batch.attention_mask, batch.labels)   # [B]

    def assembled_update(self, decision: Decision) -> torch.Tensor:
        """Write the method's flat update into .grad; return its per-sample losses (for the records)."""
        if decision.losses is None:
            raise ValueError(f"{self.method.name}: a Decision with grads must also carry the per-sample losses")
        set_flat_grad(self.params, decision.grads)
        return decision.losses.detach()

    def record(self, batch, decision, w, losses, task_loss, loss, grad_norm, extra_metrics, seconds,
               t_decide) -> dict[str, Any]:
        """The `steps` row and one `decisions` row per sample of this step. Under torchrun every rank
        sends rank 0 its shard's rows and loss terms (one gather): rank 0 writes the global batch's rows
        in batch order, the step's global losses and counts, and each numeric step metric averaged over
        the ranks (equal on every rank for the methods that reduce their metrics themselves)."""
        extra_v = float(decision.extra_loss.detach()) if decision.extra_loss is not None else 0.0
        metrics = {k: float(v) if not isinstance(v, str) else v
                   for k, v in {**decision.step_metrics, **extra_metrics}.items()}
        lvals = losses.detach().float().cpu().tolist()
        wvals = w.cpu().tolist()
        scores = {k: (v.detach().float().cpu().tolist() if torch.is_tensor(v) else list(v))
                  for k, v in decision.scores.items()}
        decisions = [{"step": self.step_no, "sample_id": sid, "role": "task", "weight": wvals[i], "kept": wvals[i] > 0,
                      "loss": lvals[i], **{k: v[i] for k, v in scores.items()}}
                     for i, sid in enumerate(batch.sample_ids)]
        task_v, loss_v = float(task_loss.detach()), float(loss.detach())
        n_batch = len(batch)
        if self.dist.enabled:
            got = self.dist.gather_object((decisions, metrics, task_v, extra_v))
            if got is not None:
                decisions = [r for g in got for r in g[0]]
                metrics = _mean_metrics([g[1] for g in got])
                task_v = sum(g[2] for g in got)          # each rank's share already divides by the global W
                extra_v = sum(g[3] for g in got) / len(got)
                loss_v = task_v + extra_v
                n_batch = len(decisions)
        n_kept = sum(1 for r in decisions if r["kept"])
        row = {"step": self.step_no, "epoch": self.epoch, "phase": "train",  # a method's "phase" overrides it
               "loss": loss_v, "task_loss": task_v, "extra_loss": extra_v,
               "lr": self.opt.param_groups[0]["lr"], "grad_norm": float(grad_norm), "n_batch": n_batch,
               "n_kept": n_kept, "kept_frac": n_kept / n_batch, "time_s": seconds, "time_decide_s": t_decide}
        row.update(metrics)
        self.log("steps", row)
        self.log("decisions", decisions)
        return row

    def after_step_bookkeeping(self) -> None:
        """Evaluate, flush and checkpoint on their schedules (self.step_no steps are done)."""
        cfg, step, total = self.cfg, self.step_no, self.total_steps
        if cfg.eval.every and step % cfg.eval.every == 0 and step < total:
            self.harm = harmful_score(self.evaluate(step, cfg.eval.n))
        if step % cfg.record.flush_every == 0:
            self.flush()
        every, keep = checkpoint_settings(cfg)
        if every and step % every == 0 and step < total:
            self.writer.flush()
            if self.dist.is_main:   # weights, optimiser and method state are the same on every rank
                self.save_checkpoint(keep)

    # ----------------------------------------------------------------------------------------------
    # evaluation, flushing, checkpoints
    # ----------------------------------------------------------------------------------------------

    def evaluate(self, step: int, n: int) -> dict[str, float]:
        """Generate and judge on every suite (a seeded subset of `n` prompts each when n > 0). Under
        torchrun rank 0 evaluates (its weights are every rank's) while the others wait at a barrier,
        which `dist.timeout_s` must outlast. With dist.shard=fsdp no rank holds the whole model, so every
        rank runs the same evaluation in lockstep (generate with synced_gpus) and rank 0 records it."""
        cfg, sub = self.cfg, self.suites
        lockstep = self.sharding["shard"] == "fsdp"
        if self.dist.enabled and not self.dist.is_main and not lockstep:
            self.dist.barrier()
            return {}
        if n:
            rng = random.Random(cfg.seed)
            sub = [dataclasses.replace(s, records=sorted(rng.sample(s.records, min(n, len(s.records))),
                                                         key=lambda r: r.sample_id)) for s in self.suites]
        rows, metrics = evaluate(self.model, self.tok, sub, self.judges, step=step,
                                 max_new_tokens=cfg.eval.max_new_tokens, batch_size=cfg.eval.batch_size,
                                 synced_gpus=lockstep)
        self.dist.barrier()
        if not self.dist.is_main:
            return {}
        self.writer.log("evals", rows)
        self.writer.log("metrics", metrics)
        return summarize(metrics)

    def flush(self) -> None:
        if self.dist.enabled and self.dist.is_main:
            notes = other_ranks_failures(self.writer.run_dir)
            if notes:   # a rank failed while this one was between collectives: stop here, naming it
                raise RuntimeError("another rank failed: " + "; ".join(f"rank {n.get('rank')}: {n.get('error')}"
                                                                      for n in notes))
        self.writer.flush()
        self.writer.update(progress={"step": self.step_no, "total_steps": self.total_steps})

    def save_checkpoint(self, keep: int = 0) -> None:
        """The resume checkpoint and, when `keep` > 0, the step checkpoint checkpoints/step-N/ (a copy),
        keeping the newest `keep` of those. Reads no random number (the demo decides as before)."""
        run_dir = self.writer.run_dir
        d = self._write_checkpoint(run_dir / (CHECKPOINT + ".tmp"))
        if keep > 0:
            steps_dir = run_dir / schema.STEP_CHECKPOINTS   # <run>/checkpoints/step-<N>/ for replays
            steps_dir.mkdir(exist_ok=True)
            tmp, final = steps_dir / f".step-{self.step_no}.tmp", steps_dir / f"step-{self.step_no}"
            if tmp.exists():
                shutil.rmtree(tmp)
            shutil.copytree(d, tmp)
            if final.exists():     # a resumed run passing the same step again
                shutil.rmtree(final)
            os.replace(tmp, final)
            kept = sorted(int(p.name.split("-")[1]) for p in steps_dir.glob("step-*") if p.name.split("-")[1].isdigit())
            for old in kept[:-keep]:
                shutil.rmtree(steps_dir / f"step-{old}")
            self.writer.update(step_checkpoints=kept[-keep:])
        final = run_dir / CHECKPOINT
        if final.exists():
            shutil.rmtree(final)
        os.replace(d, final)
        self.writer.update(checkpoint_step=self.step_no)

    def _write_checkpoint(self, d: Path) -> Path:
        """Trainable weights, AdamW state, the generator, the method's state and where the loop is, into
        folder `d` (safetensors + JSON only: a run folder never holds a pickle)."""
        from safetensors.torch import save_file

        d.mkdir(exist_ok=True)
        save_file({n: p.detach().cpu().contiguous() for n, p in self.model.named_parameters() if p.requires_grad},
                  str(d / "model.safetensors"))
        tensors, scalars = {"generator": self.gen.get_state()}, {}
        # keyed by parameter name: AdamW keeps no state for a parameter that has had no gradient yet,
        # so positions in opt.state need not match positions among the trainable parameters
        for n, p in self.model.named_parameters():
            for name, v in self.opt.state.get(p, {}).items():
                if torch.is_tensor(v):
                    tensors[f"opt/{n}/{name}"] = v.detach().cpu().contiguous()
                else:
                    scalars[f"opt/{n}/{name}"] = v
        for k, v in self.method.state_dict().items():
            if torch.is_tensor(v):
                tensors[f"method.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"method.{k}"] = v
        save_file(_unshared(tensors), str(d / "state.safetensors"))
        meta = {"step": self.step_no, "epoch": self.epoch, "pos": self.pos, "order": self.order,
                "harm": self.harm, "scalars": scalars, "next_part": self.writer.next_parts()}
        (d / "state.json").write_text(json.dumps(meta))
        return d

    def restore_checkpoint(self, ck: dict) -> None:
        """Put weights, optimiser, generator, method state and the loop position back."""
        restore_weights(self.model, ck)
        self.gen.set_state(ck["tensors"]["generator"])
        restore_optimizer(self.model, self.opt, ck)
        self.method.load_state_dict({k[len("method."):]: v for k, v in {**ck["tensors"], **ck["scalars"]}.items()
                                     if k.startswith("method.")})
        self.step_no, self.epoch, self.pos, self.order = ck["step"], ck["epoch"], ck["pos"], ck["order"]
        self.harm = ck.get("harm", self.harm)


def _mean_metrics(per_rank: list[dict[str, Any]]) -> dict[str, Any]:
    """Step metrics of every rank -> one dict: numbers averaged over the ranks that report them,
    strings (phase, estimator) from the first rank that has them."""
    out: dict[str, Any] = {}
    for m in per_rank:
        for k, v in m.items():
            out.setdefault(k, [] if not isinstance(v, str) else v)
    for k in list(out):
        if isinstance(out[k], list):
            vals = [m[k] for m in per_rank if k in m and not isinstance(m[k], str)]
            out[k] = sum(vals) / len(vals) if vals else float("nan")
    return out


def harmful_score(summary: dict[str, float]) -> float:
    """Mean harmful score over the harmful suites of an evaluation summary."""
    vals = [v for k, v in summary.items() if k.endswith("/" + schema.M_HARMFUL)]
    return sum(vals) / len(vals) if vals else float("nan")


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (a method's state may hold one tensor under two
    names, e.g. DualSelect's d and d_last on a CPU run): each later sharer gets its own copy."""
    seen: set[int] = set()
    out = {}
    for k, v in tensors.items():
        key = v.untyped_storage().data_ptr() if v.numel() else -id(v)
        out[k] = v.clone() if key in seen and v.numel() else v
        seen.add(key)
    return out


def checkpoint_settings(cfg: RunConfig) -> tuple[int, int]:
    """(record.checkpoint_every, record.checkpoint_keep): the one place the recipe reads them."""
    return int(cfg.record.checkpoint_every or 0), int(cfg.record.checkpoint_keep or 0)


def restore_weights(model: torch.nn.Module, ck: dict) -> None:
    """A checkpoint's trainable weights into `model` (the replay uses it too)."""
    params = dict(model.named_parameters())
    missing = sorted(set(ck["model"]) - set(params))
    if missing:
        raise ValueError(f"checkpoint holds weights the model lacks: {', '.join(missing[:5])}"
                         + (" ..." if len(missing) > 5 else "") + "; expected the run's own model")
    with torch.no_grad():
        for n, v in ck["model"].items():
            params[n].copy_(v)


def restore_optimizer(model: torch.nn.Module, opt: torch.optim.Optimizer, ck: dict) -> None:
    """A checkpoint's AdamW state (keyed by parameter name) into `opt` over `model`'s parameters. The
    tensors are copied: AdamW updates its state in place, and `ck` may be restored again (replays)."""
    for n, p in model.named_parameters():
        st = {key.rsplit("/", 1)[1]: v.to(p.device, copy=True) if torch.is_tensor(v) else v
              for key, v in {**ck["tensors"], **ck["scalars"]}.items() if key.startswith(f"opt/{n}/")}
        if st:
            opt.state[p] = st


def load_checkpoint(run_dir: Path, step: int | None = None) -> dict:
    """The resume checkpoint, or with `step` the step checkpoint checkpoints/step-<step>/."""
    from safetensors.torch import load_file

    if step is None:
        d = Path(run_dir) / CHECKPOINT
        hint = "(set record.checkpoint_every > 0 when starting a run)"
    else:
        d = Path(run_dir) / schema.STEP_CHECKPOINTS / f"step-{int(step)}"
        hint = "(set record.checkpoint_every > 0 and record.checkpoint_keep > 0 when starting a run)"
    if not (d / "state.json").exists():
        raise FileNotFoundError(f"{run_dir}: no checkpoint to {'resume' if step is None else 'replay'} from; "
                                f"expected {d}/state.json {hint}")
    meta = json.loads((d / "state.json").read_text())
    meta["model"] = load_file(str(d / "model.safetensors"))
    meta["tensors"] = load_file(str(d / "state.safetensors"))
    return meta


# --------------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------------

def run(cfg: RunConfig, run_id: str | None = None, resume_dir: str | Path | None = None) -> Path:
    """Train and record one run. With `resume_dir`, continue that run from its last checkpoint."""
    recipe = Recipe(cfg, run_id=run_id, resume_dir=resume_dir)
    previous = raise_on_sigterm()
    try:
        return recipe.setup().train()
    except BaseException as e:  # also KeyboardInterrupt / SIGTERM: the folder stays readable, marked failed
        if recipe.writer is not None:
            if recipe.dist.enabled and recipe.dist.is_main:
                # another rank that failed first left its error beside the manifest: name it first,
                # rank 0's own error (a broken collective, torchrun's SIGTERM) is only the consequence
                notes = other_ranks_failures(recipe.writer.run_dir)
                if notes:
                    e = RuntimeError("; ".join(f"rank {n.get('rank')}: {n.get('error')}" for n in notes)
                                     + f"; then rank 0: {type(e).__name__}: {e}")
            recipe.writer.fail(e)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        recipe.dist.close()


def resume(run_dir: str | Path) -> Path:
    """`explorer run --resume RUN_DIR`: continue a killed or failed run from its last checkpoint."""
    run_dir = Path(run_dir)
    m = json.loads((run_dir / schema.MANIFEST).read_text())
    if m.get("status") == schema.STATUS_COMPLETE:
        raise ValueError(f"{run_dir}: the run is complete; nothing to resume")
    cfg = from_dict(m["config"], f"{run_dir / schema.MANIFEST} [config]")
    return run(cfg, run_id=m["run_id"], resume_dir=run_dir)


class Terminated(Exception):
    """SIGTERM arrived; raised so that the run is marked failed with what was flushed."""


def raise_on_sigterm():
    """SIGTERM -> Terminated in the main thread, so that a run (or a replay, explorer/replay) is marked
    failed with what it flushed; returns the previous handler (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise Terminated(f"signal {signum}")

    return signal.signal(signal.SIGTERM, handler)
