"""The one method-agnostic training loop. Read it top to bottom.

    run(config) -> run folder

1. load the model (tiny or a local checkpoint, optionally LoRA) and the data pools;
2. build the fine-tuning mix: n_train samples, a share `harmful_ratio` of them harmful;
3. open the run folder (manifest with status "running" before step 0) and record every sample;
4. evaluate the starting model; let the method prepare;
5. for each mini-batch: method.decide -> weighted loss (+ the method's extra loss) -> backward ->
   method.transform_grads -> clip -> AdamW -> method.after_step; record the step and every
   per-sample decision; evaluate every `eval_every` steps; flush Parquet parts every `flush_every`;
6. evaluate at the end, write the summary, mark the run complete — or failed, keeping what was flushed.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import shutil
import logging
import math
import random
import signal
import threading
import time
from pathlib import Path

import torch

from explorer.config import RunConfig, method_config, to_dict
from explorer.data.records import Record
from explorer.data.sample import read_sample_file, sample_data_dir
from explorer.data.tokenize import collate, encode_all, pad_id_of
from explorer.eval.evaluate import evaluate, load_suites, summarize
from explorer.eval.judges import make_judge
from explorer.methods import make_method
from explorer.model.load import LoraSettings, load_model, pick_device
from explorer.model.load import model_fingerprint
from explorer.record.writer import RunWriter
from explorer.runs import schema
from explorer.train.context import Context
from explorer.train.losses import per_sample_nll

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# small named helpers
# --------------------------------------------------------------------------------------------------

def get_lr(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def make_run_id(cfg: RunConfig) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")[:-3]
    return f"{cfg.run_name or cfg.method_name}-p{cfg.harmful_ratio:g}-s{cfg.seed}-{stamp}"


def load_pool(path: str, default: Path, pool: str, strict: bool) -> list[Record]:
    """A user file through the strict loaders, else the tiny world's own file."""
    if path:
        from explorer.data.load import load_records

        return load_records(path, pool, strict=strict)
    return read_sample_file(default)


def build_mix(task: list[Record], harmful: list[Record], cfg: RunConfig) -> list[Record]:
    """n_train samples: round(p * n_train) harmful (request -> compliance), the rest benign tasks."""
    rng = random.Random(cfg.seed)
    if cfg.task_families:
        task = [r for r in task if r.family in cfg.task_families]
    n_h = round(cfg.harmful_ratio * cfg.n_train)
    n_b = cfg.n_train - n_h
    if n_b > len(task) or n_h > len(harmful):
        raise ValueError(f"n_train={cfg.n_train} with harmful_ratio={cfg.harmful_ratio} needs {n_b} task "
                         f"and {n_h} harmful samples; have {len(task)} and {len(harmful)}")
    mix = rng.sample(task, n_b) + rng.sample(harmful, n_h)
    rng.shuffle(mix)
    return mix


# --------------------------------------------------------------------------------------------------
# checkpoints (safetensors + JSON only: a run folder never holds a pickle)
# --------------------------------------------------------------------------------------------------

CHECKPOINT = "checkpoint"


def save_checkpoint(writer: RunWriter, model, opt, gen: torch.Generator, method, **state) -> None:
    """Trainable weights, AdamW state, the generator and the method's state, plus where we are."""
    from safetensors.torch import save_file

    if not hasattr(method, "state_dict"):
        return  # a method without state_dict cannot be resumed faithfully; say so at resume time
    d = writer.run_dir / (CHECKPOINT + ".tmp")
    d.mkdir(exist_ok=True)
    save_file({n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad},
              str(d / "model.safetensors"))
    tensors, scalars = {"generator": gen.get_state()}, {}
    for i, (k, st) in enumerate(opt.state.items()):
        for name, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{i}.{name}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"opt.{i}.{name}"] = v
    mstate = method.state_dict()
    for k, v in mstate.items():
        if torch.is_tensor(v):
            tensors[f"method.{k}"] = v.detach().cpu().contiguous()
        else:
            scalars[f"method.{k}"] = v
    save_file(tensors, str(d / "state.safetensors"))
    meta = {**state, "scalars": scalars, "next_part": dict(writer._next_part)}
    (d / "state.json").write_text(json.dumps(meta))
    final = writer.run_dir / CHECKPOINT
    if final.exists():
        shutil.rmtree(final)
    os.replace(d, final)
    writer.update(checkpoint_step=state["step"])


def load_checkpoint(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    d = run_dir / CHECKPOINT
    if not (d / "state.json").exists():
        raise FileNotFoundError(f"{run_dir}: no checkpoint to resume from; expected {d}/state.json "
                                "(set checkpoint_every > 0 when starting a run)")
    meta = json.loads((d / "state.json").read_text())
    meta["model"] = load_file(str(d / "model.safetensors"))
    meta["tensors"] = load_file(str(d / "state.safetensors"))
    return meta


def restore_checkpoint(ck: dict, model, opt, gen: torch.Generator, method) -> None:
    if not hasattr(method, "load_state_dict"):
        raise RuntimeError(f"method {method.name!r} keeps no state_dict/load_state_dict; it cannot be resumed")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, v in ck["model"].items():
            params[n].copy_(v)
    gen.set_state(ck["tensors"]["generator"])
    plist = [p for p in model.parameters() if p.requires_grad]
    for i, p in enumerate(plist):
        st = {}
        for key, v in ck["tensors"].items():
            if key.startswith(f"opt.{i}."):
                st[key.split(".", 2)[2]] = v.to(p.device)
        for key, v in ck["scalars"].items():
            if key.startswith(f"opt.{i}."):
                st[key.split(".", 2)[2]] = v
        if st:
            opt.state[p] = st
    mstate = {k[len("method."):]: v for k, v in {**ck["tensors"], **ck["scalars"]}.items()
              if k.startswith("method.")}
    method.load_state_dict(mstate)


def resume(run_dir: str | Path) -> Path:
    """`explorer run --resume RUN_DIR`: continue a killed or failed run from its last checkpoint."""
    from explorer.config import build_dataclass

    run_dir = Path(run_dir)
    m = json.loads((run_dir / schema.MANIFEST).read_text())
    if m.get("status") == schema.STATUS_COMPLETE:
        raise ValueError(f"{run_dir}: the run is complete; nothing to resume")
    cfg = build_dataclass(RunConfig, m["config"], f"{run_dir / schema.MANIFEST} [config]")
    return run(cfg, run_id=m["run_id"], resume_dir=run_dir)


# --------------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------------

def run(cfg: RunConfig, run_id: str | None = None, resume_dir: str | Path | None = None) -> Path:
    """Train and record one run. With `resume_dir`, continue that run from its last checkpoint."""
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    mcfg = method_config(cfg)
    device = pick_device(cfg.device)
    lora = LoraSettings(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets) if cfg.lora else None
    model, tok, model_info = load_model(cfg.model, device, cfg.dtype, lora=lora)
    autocast_dtype = torch.bfloat16 if device.type == "cuda" else None

    # -- data ----------------------------------------------------------------------------------
    data_dir = Path(cfg.data_dir) if cfg.data_dir else sample_data_dir()
    task = load_pool(cfg.task_data, data_dir / "task_train.jsonl", "task", cfg.strict)
    harmful = load_pool(cfg.harmful_data, data_dir / "harmful_train.jsonl", "harmful", cfg.strict)
    reference = load_pool(cfg.reference_data, data_dir / "reference_pool.jsonl", "reference", cfg.strict)
    safety = load_pool(cfg.safety_data, data_dir / "safety_demos.jsonl", "safety", cfg.strict)
    mix = build_mix(task, harmful, cfg)
    families = tuple(sorted({r.family for r in mix if r.provenance == "benign"}))
    suites = load_suites(data_dir, families=families)
    eval_prompts = [r for s in suites if s.kind != "task" for r in s.records]
    from explorer.data.checks import check_disjoint

    check_disjoint(reference, eval_prompts, "reference pool", "evaluation prompts")
    records: dict[str, Record] = {}
    pools: dict[str, list[str]] = {}
    for name, recs in (("task", mix), ("reference", reference), ("safety", safety)):
        for r in recs:
            if r.sample_id in records and records[r.sample_id] != r:
                raise ValueError(f"sample id {r.sample_id!r} appears in two pools with different "
                                 "content; expected ids unique across task, reference and safety data")
            records[r.sample_id] = r
        pools[name] = [r.sample_id for r in recs]

    # -- run folder ----------------------------------------------------------------------------
    resume = None
    if resume_dir is not None:
        writer = RunWriter.open(resume_dir)
        resume = load_checkpoint(Path(resume_dir))
        writer.truncate_parts(resume["next_part"])     # drop records written after the checkpoint
        writer.update(status=schema.STATUS_RUNNING, resumed_from_step=resume["step"], error=None,
                      pid=os.getpid())
    else:
        writer = None
    run_id = run_id or make_run_id(cfg)
    writer = writer or RunWriter.create(cfg.runs_dir, run_id, {
        "method": cfg.method_name, "config": to_dict(cfg), "method_config": mcfg.__dict__,
        "seed": cfg.seed, "harmful_ratio": cfg.harmful_ratio, "model": cfg.model,
        "model_info": model_info, "model_fingerprint": model_fingerprint(model_info["model_path"]),
        "device": str(device), "data": str(data_dir),
        "data_files": {"task": cfg.task_data or str(data_dir / "task_train.jsonl"),
                       "harmful": cfg.harmful_data or str(data_dir / "harmful_train.jsonl"),
                       "reference": cfg.reference_data or str(data_dir / "reference_pool.jsonl"),
                       "safety": cfg.safety_data or str(data_dir / "safety_demos.jsonl")},
        "n_train": len(mix), "n_harmful_in_mix": sum(r.provenance == "harmful" for r in mix),
        "task_families": list(families), "progress": {"step": 0, "total_steps": None}})
    previous = _raise_on_sigterm()
    try:
        return _train(cfg, mcfg, writer, model, tok, device, autocast_dtype, records, pools, suites, resume)
    except BaseException as e:  # also KeyboardInterrupt / SIGTERM: the folder stays readable, marked failed
        writer.fail(e)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(Exception):
    """SIGTERM arrived; raised so that the run is marked failed with what was flushed."""


def _raise_on_sigterm():
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise Terminated(f"signal {signum}")

    return signal.signal(signal.SIGTERM, handler)


def _train(cfg, mcfg, writer, model, tok, device, autocast_dtype, records, pools, suites, resume=None) -> Path:
    gen = torch.Generator().manual_seed(cfg.seed)
    pad = pad_id_of(tok)
    judges = [make_judge(j) for j in cfg.judges]

    def encode(recs: list[Record]):
        enc, _ = encode_all(tok, recs, cfg.max_length, strict=False)
        return collate(enc, pad, device)

    ref_copy: dict[str, torch.nn.Module] = {}

    def reference_model():
        """A frozen copy of the starting model (taken before the first optimiser step)."""
        if "m" not in ref_copy:
            if ctx.step > 0:
                raise RuntimeError("reference_model() first called after training started; call it in prepare()")
            if cfg.lora:
                m = load_model(cfg.model, device, cfg.dtype, trainable=False)[0]
            else:
                m = copy.deepcopy(model).eval()
                for p in m.parameters():
                    p.requires_grad_(False)
            ref_copy["m"] = m
        return ref_copy["m"]

    def other_model(spec: str):
        return load_model(spec, device, cfg.dtype, trainable=False)[0]

    ctx = Context(model=model, tokenizer=tok, device=device, config=cfg, records=records, pools=pools,
                  train_ids=list(pools["task"]), encode=encode, log=writer.log,
                  reference_model=reference_model, load_model=other_model, run_dir=str(writer.run_dir),
                  generator=gen, autocast_dtype=autocast_dtype)
    method = make_method(cfg.method_name, mcfg)

    def run_eval(step: int, n: int) -> dict[str, float]:
        sub = suites
        if n:
            from explorer.eval.evaluate import Suite

            rng = random.Random(cfg.seed)
            sub = [Suite(s.name, s.kind, sorted(rng.sample(s.records, min(n, len(s.records))),
                                                key=lambda r: r.sample_id)) for s in suites]
        rows, metrics = evaluate(model, tok, sub, judges, step=step, max_new_tokens=cfg.eval_max_new_tokens,
                                 batch_size=cfg.eval_batch_size)
        writer.log("evals", rows)
        writer.log("metrics", metrics)
        return summarize(metrics)

    def harmful_now(summary: dict[str, float]) -> float:
        vals = [v for k, v in summary.items() if k.endswith("/" + schema.M_HARMFUL)]
        return sum(vals) / len(vals) if vals else float("nan")

    t_start = time.time()
    if resume is None:
        start_summary = run_eval(0, cfg.final_eval_n)
        writer.update(start_metrics=start_summary)
        writer.flush()
    else:
        start_summary = writer.manifest.get("start_metrics", {})

    method.prepare(ctx)
    train_recs = [records[i] for i in ctx.train_ids]
    enc, skipped = encode_all(tok, train_recs, cfg.max_length, strict=cfg.strict, source="fine-tuning set")
    in_train = {e.sample_id for e in enc}
    writer.write_samples([{**r.to_row(), "in_train": r.sample_id in in_train,
                           "in_mix": r.sample_id in set(pools["task"])} for r in records.values()]
                         + [{**r.to_row(), "in_train": False, "in_mix": False}
                            for s in suites for r in s.records])
    steps_per_epoch = math.ceil(len(enc) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps > 0:
        total = min(total, cfg.max_steps) if cfg.epochs > 0 else cfg.max_steps
    ctx.steps_per_epoch, ctx.total_steps = steps_per_epoch, total
    writer.update(progress={"step": 0, "total_steps": total}, n_skipped_too_long=len(skipped))

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ctx.optimizer = opt
    model.train()

    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=f"{cfg.method_name} p={cfg.harmful_ratio:g}", disable=not cfg.progress,
               mininterval=1.0)
    harm = harmful_now(start_summary)
    step, epoch, start_pos, order = 0, 0, 0, None
    if resume is not None:
        step, epoch, start_pos, order = resume["step"], resume["epoch"], resume["pos"], resume["order"]
        restore_checkpoint(resume, model, opt, gen, method)
        harm = resume.get("harm", harm)
        bar.update(step)
    while step < total:
        if order is None:
            order = torch.randperm(len(enc), generator=gen).tolist()
        ctx.epoch = epoch
        for s in range(start_pos, len(order), cfg.batch_size):
            if step >= total:
                break
            ctx.step = step
            t0 = time.time()
            batch = collate([enc[i] for i in order[s:s + cfg.batch_size]], pad, device)
            for g in opt.param_groups:
                g["lr"] = get_lr(step, total, cfg.lr, cfg.warmup_steps)

            decision = method.decide(batch, ctx)
            t_decide = time.time() - t0
            w = decision.weights.detach().float().to(device)                          # [B]
            opt.zero_grad(set_to_none=True)
            if decision.grads is not None:  # the method assembled the update from per-sample gradients
                if decision.losses is None:
                    raise ValueError(f"{cfg.method_name}: a Decision with grads must also carry the per-sample losses")
                losses = decision.losses.detach()
                off = 0
                for p in params:
                    p.grad = decision.grads[off:off + p.numel()].view_as(p).to(p.dtype).clone()
                    off += p.numel()
            elif decision.losses is not None:
                losses = decision.losses                                               # [B]
            else:
                with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
                losses = per_sample_nll(out.logits, batch.labels)                      # [B]
            task_loss = (w * losses).sum() / w.sum().clamp_min(1e-8)
            loss = task_loss + (decision.extra_loss if decision.extra_loss is not None else 0.0)
            if decision.grads is None and loss.requires_grad:
                loss.backward()
            extra_metrics = method.transform_grads(ctx) or {}
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip) if cfg.clip > 0 else torch.tensor(0.0)
            opt.step()
            method.after_step(ctx)

            n_kept = int((w > 0).sum())
            row = {"step": step, "epoch": epoch, "phase": decision.step_metrics.pop("phase", "train")
                   if isinstance(decision.step_metrics.get("phase"), str) else "train",
                   "loss": float(loss.detach()), "task_loss": float(task_loss.detach()),
                   "extra_loss": float(decision.extra_loss.detach()) if decision.extra_loss is not None else 0.0,
                   "lr": opt.param_groups[0]["lr"], "grad_norm": float(grad_norm), "n_batch": len(batch),
                   "n_kept": n_kept, "kept_frac": n_kept / len(batch), "time_s": time.time() - t0,
                   "time_decide_s": t_decide}
            row.update({k: float(v) if not isinstance(v, str) else v
                        for k, v in {**decision.step_metrics, **extra_metrics}.items()})
            writer.log("steps", row)
            lvals = losses.detach().float().cpu().tolist()
            wvals = w.cpu().tolist()
            scores = {k: (v.detach().float().cpu().tolist() if torch.is_tensor(v) else list(v))
                      for k, v in decision.scores.items()}
            writer.log("decisions", [
                {"step": step, "sample_id": sid, "role": "task", "weight": wvals[i], "kept": wvals[i] > 0,
                 "loss": lvals[i], **{k: v[i] for k, v in scores.items()}}
                for i, sid in enumerate(batch.sample_ids)])

            step += 1
            if cfg.eval_every and step % cfg.eval_every == 0 and step < total:
                harm = harmful_now(run_eval(step, cfg.eval_n))
            if step % cfg.flush_every == 0:
                writer.flush()
                writer.update(progress={"step": step, "total_steps": total})
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total:
                writer.flush()
                save_checkpoint(writer, model, opt, gen, method, step=step, epoch=epoch,
                                pos=s + cfg.batch_size, order=order, harm=harm)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", kept=f"{row['kept_frac']:.2f}", harmful=f"{harm:.0f}")
        epoch += 1
        start_pos, order = 0, None
    bar.close()

    final = run_eval(total, cfg.final_eval_n)
    writer.flush()
    writer.finish(summary=final, progress={"step": total, "total_steps": total},
                  wall_seconds=round(time.time() - t_start, 2))
    return writer.run_dir
