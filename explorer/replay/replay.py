"""Replay a run from one of its step checkpoints with another set of samples at that step.

What a replay is (docs/why.md §5 says why it is built so):

    checkpoint S  ──step S on the arm's samples──►  steps S+1 .. S+K-1 as the run recorded them  ──► measure

- It starts from checkpoints/step-S/ (weights and AdamW state after S optimiser steps; the recipe's
  format, explorer/train/recipe.py). Step S trains on one arm's share of the batch the run saw at S:
    kept     what the method kept, with its recorded weights (the run's own step)
    dropped  what the method dropped, weight 1 each
    random   the batch less a seeded random set of as many samples as the method dropped, weight 1 each
             (a random drop of the same size; it may overlap the method's drop)
    all      the whole batch, weight 1 each (no selection)
  The later K−1 steps replay the run's recorded batches with its recorded weights, at its recorded
  learning rates, so that only step S differs between arms.
- Every step is the loop's weighted step Σ w_i ℓ_i / Σ w_i → backward → clip → AdamW. A method's other
  terms (DualSelect's reference loss, PACT's gate, CWAC's projection) are not replayed: a replay asks
  what the DATA chosen at step S did. The kept arm is therefore the run itself only for methods whose
  step is the weighted loss alone (sft, random, safeinstr, seal's phase 2); replay_steps records, per
  replayed step, how far the replay's per-sample losses are from the run's decisions (0 = it is the run).
- After the K steps: the held-out refusal loss and task loss (the first-order check's held-out sets,
  explorer/scoring/influence.py) and the harmful score (greedy generation on `eval_n` prompts of each
  harmful suite, judged by the run's first judge).
- Seeds: before each (arm, seed) torch is seeded with the seed (dropout, if the model has any) and the
  random arm draws its drop from numpy's generator seeded by (seed, S). On a model without dropout the
  other arms are deterministic: their spread over seeds is 0, which the summary shows as such.

Records (schema: explorer/runs/schema.py): replays/<replay_id>.json (checkpoint, settings, status, the
measurement at the checkpoint itself), then one replays/ and one replay_steps/ part per (arm, seed) as
each finishes, so a crashed replay leaves what it measured readable (its JSON says failed and why).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from explorer.runs import reader, schema
from explorer.record.writer import write_json_atomic, write_parquet_atomic



class ReplayError(ValueError):
    """A replay that cannot run as asked (no checkpoint at that step, steps not recorded ...)."""


# --------------------------------------------------------------------------------------------------
# the run's settings a replay reads (one place: the nested config renames them)
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunFacts:
    """What a replay needs from the run's config, read once."""

    model: str
    dtype: str
    device: str
    lora: Any                 # explorer.model.load.LoraSettings or None
    max_length: int
    overlong: str
    clip: float
    lr: float
    weight_decay: float
    seed: int
    judges: tuple
    influence_n: int
    eval_max_new_tokens: int
    eval_batch_size: int


def run_facts(cfg) -> RunFacts:
    """The run's settings a replay uses, from its RunConfig (the only reads of the config here)."""
    from explorer.model.load import LoraSettings

    m, o, e = cfg.model, cfg.optim, cfg.eval
    lora = LoraSettings(m.lora_r, m.lora_alpha, m.lora_dropout, m.lora_targets) if m.lora else None
    return RunFacts(model=m.path, dtype=m.dtype, device=m.device, lora=lora, max_length=cfg.data.max_length,
                    overlong=cfg.data.overlong, clip=o.clip, lr=o.lr, weight_decay=o.weight_decay, seed=cfg.seed,
                    judges=tuple(e.judges), influence_n=int(e.influence_n or 0),
                    eval_max_new_tokens=e.max_new_tokens, eval_batch_size=e.batch_size)


def _heldout_cfg(cfg, n: int):
    """The run's config with the first-order check on over `n` held-out prompts (InfluenceProbe.for_run
    then picks the same held-out sets as the run's own check when n is the run's influence_n)."""
    return dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, influence_every=1, influence_n=n))


# --------------------------------------------------------------------------------------------------
# the run, loaded once
# --------------------------------------------------------------------------------------------------

class RunWorld:
    """A run's model, data, held-out sets and recorded steps, loaded once for many replays."""

    def __init__(self, run_dir: str | Path, device: str | None = None, heldout_n: int | None = None):
        import torch

        from explorer.config import from_dict
        from explorer.train.assemble import build_pools
        from explorer.eval.registry import make_judges
        from explorer.model.load import load_model, pick_device
        from explorer.prepare.specs import resolve_spec
        from explorer.scoring.influence import InfluenceProbe

        self.run_dir = Path(run_dir)
        if not (self.run_dir / schema.MANIFEST).exists():
            raise ReplayError(f"{self.run_dir}: not a run folder (no {schema.MANIFEST})")
        self.manifest = reader.manifest(self.run_dir)
        where = f"{self.run_dir / schema.MANIFEST} [config]"
        if "config" not in self.manifest:
            raise ReplayError(f"{where}: the manifest has no config (an imported log cannot be replayed)")
        self.cfg = from_dict(self.manifest["config"], where)
        self.facts = f = run_facts(self.cfg)
        self.checkpoints = reader.step_checkpoints(self.run_dir)
        if not self.checkpoints:
            raise ReplayError(
                f"{self.run_dir}: no step checkpoints ({schema.STEP_CHECKPOINTS}/step-N/); a replay starts from one. "
                f"Train the run with record.{schema.CHECKPOINT_EVERY_KEY}=N (and record.{schema.CHECKPOINT_KEEP_KEY} "
                "> 0, how many are kept)")
        self.device = pick_device(device or f.device)
        self.autocast_dtype = torch.bfloat16 if self.device.type == "cuda" else None
        torch.manual_seed(f.seed)
        self.model, self.tok, _ = load_model(resolve_spec(f.model), self.device, f.dtype, lora=f.lora)
        self.model.train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        from explorer.data.tokenize import pad_id_of

        self.pad = pad_id_of(self.tok)
        data = build_pools(self.cfg)
        self.records, self.suites = data.records, data.suites
        self.heldout_n = f.influence_n if heldout_n is None else int(heldout_n)
        probe = InfluenceProbe.for_run(_heldout_cfg(self.cfg, self.heldout_n), self.suites, self.encode_heldout,
                                       self.autocast_dtype)
        self.safety, self.task = probe.safety, probe.task
        self.judges = make_judges(f.judges) if f.judges else []
        self.steps = reader.steps(self.run_dir)
        self._ck: dict[int, dict] = {}
        self._batches: dict[int, pd.DataFrame] = {}

    # -- encoding -----------------------------------------------------------------------------------
    def encode_heldout(self, recs):
        """Records -> a Batch on the run's device, tokenised as the run tokenised them (encode_ids too)."""
        from explorer.data.tokenize import collate, encode_all

        overlong = "skip" if self.facts.overlong == "error" else self.facts.overlong
        return collate(encode_all(self.tok, recs, self.facts.max_length, overlong=overlong)[0], self.pad, self.device)

    def encode_ids(self, ids: list[str]):
        missing = [i for i in ids if i not in self.records]
        if missing:
            raise ReplayError(f"{self.run_dir}: samples {', '.join(missing[:3])} of the decisions are not in the run's "
                              "data as rebuilt from its config (was the data changed since?)")
        return self.encode_heldout([self.records[i] for i in ids])

    # -- the run's records --------------------------------------------------------------------------
    def batch(self, step: int) -> pd.DataFrame:
        """The task decisions of `step`: sample_id, weight, kept, loss (recorded; read once per step)."""
        if step not in self._batches:
            self._batches[step] = self._read_batch(step)
        return self._batches[step]

    def _read_batch(self, step: int) -> pd.DataFrame:
        dec = reader.decisions(self.run_dir, step=step, role="task")
        if dec.empty:
            last = self.steps["step"].max() if not self.steps.empty else None
            raise ReplayError(f"{self.run_dir}: no task decisions recorded at step {step} (the run's recorded steps "
                              f"end at {last}; a running run flushes them every record.flush_every steps)")
        return dec[["sample_id", "weight", "kept", *(["loss"] if "loss" in dec else [])]].reset_index(drop=True)

    def lr_at(self, step: int) -> float:
        row = self.steps[self.steps["step"] == step] if not self.steps.empty else self.steps
        if row.empty or "lr" not in row or pd.isna(row["lr"].iloc[0]):
            raise ReplayError(f"{self.run_dir}: steps table has no lr for step {step}")
        return float(row["lr"].iloc[0])

    def recorded_task_loss(self, step: int) -> float:
        row = self.steps[self.steps["step"] == step] if not self.steps.empty else self.steps
        col = "task_loss" if "task_loss" in row else "loss"
        return float(row[col].iloc[0]) if not row.empty and col in row else float("nan")

    # -- checkpoint, step, measurement --------------------------------------------------------------
    def checkpoint(self, step: int) -> dict:
        if step not in self.checkpoints:
            raise ReplayError(f"{self.run_dir}: no step checkpoint at step {step}; it has "
                              f"{', '.join(map(str, self.checkpoints))} (record.{schema.CHECKPOINT_EVERY_KEY} sets how "
                              f"often they are taken, record.{schema.CHECKPOINT_KEEP_KEY} how many are kept)")
        if step not in self._ck:
            from explorer.train.recipe import load_checkpoint

            ck = load_checkpoint(self.run_dir, step)
            if int(ck["step"]) != step:
                raise ReplayError(f"{self.run_dir}/{schema.STEP_CHECKPOINTS}/step-{step}/state.json: records step "
                                  f"{ck['step']}, expected {step}")
            self._ck = {step: ck}      # one held at a time (a real model's is large)
        return self._ck[step]

    def restore(self, step: int):
        """Weights and a fresh AdamW holding the checkpoint's state; returns its OptimStep (the run's clip)."""
        import torch

        from explorer.model.optim import OptimStep
        from explorer.train.recipe import restore_optimizer, restore_weights

        ck = self.checkpoint(step)
        restore_weights(self.model, ck)
        opt = torch.optim.AdamW(self.params, lr=self.facts.lr, weight_decay=self.facts.weight_decay)
        restore_optimizer(self.model, opt, ck)
        self.model.train()
        return OptimStep(opt, self.params, clip=self.facts.clip)

    def train_step(self, opt, ids: list[str], weights: dict[str, float], lr: float) -> tuple[float, dict[str, float]]:
        """The loop's weighted step on samples `ids`; returns (loss, per-sample losses before the step)."""
        import torch

        from explorer.model.losses import model_nll
        from explorer.model.plumbing import autocast

        batch = self.encode_ids(ids)
        opt.set_lr(lr=lr)
        opt.zero_grad()
        with autocast(self.device, self.autocast_dtype):
            losses = model_nll(self.model, batch.input_ids, batch.attention_mask, batch.labels)   # [B]
        w = torch.tensor([float(weights[s]) for s in batch.sample_ids], device=losses.device)
        loss = (w * losses).sum() / w.sum().clamp_min(1e-8)
        if loss.requires_grad:
            loss.backward()
        opt.step()                                   # clipped to the run's clip (> 0), as the recipe steps
        return float(loss.detach()), dict(zip(batch.sample_ids, losses.detach().float().cpu().tolist()))

    def heldout_losses(self) -> dict[str, float]:
        import torch

        from explorer.model.losses import model_nll
        from explorer.model.plumbing import autocast

        out = {}
        with torch.no_grad(), autocast(self.device, self.autocast_dtype):
            for name, b in (("refusal_loss", self.safety), ("task_loss", self.task)):
                out[name] = (float(model_nll(self.model, b.input_ids, b.attention_mask, b.labels).mean())
                             if b is not None else float("nan"))
        return out

    def harmful_score(self, eval_n: int, step: int) -> float:
        """% of `eval_n` held-out harmful prompts per harmful suite (the recipe's seeded subset) judged
        harmful by the run's first judge, averaged over the harmful suites."""
        from explorer.eval.evaluate import evaluate, summarize
        from explorer.model.plumbing import eval_mode

        rng = random.Random(self.facts.seed)
        subs = [dataclasses.replace(s, records=sorted(rng.sample(s.records, min(eval_n, len(s.records))),
                                                     key=lambda r: r.sample_id) if eval_n else s.records)
                for s in self.suites]   # every suite drawn, as the recipe does, so the subsets are the run's
        harmful = [s for s in subs if s.kind == "harmful"]
        with eval_mode(self.model):
            _, metrics = evaluate(self.model, self.tok, harmful, self.judges, step=step,
                                  max_new_tokens=self.facts.eval_max_new_tokens, batch_size=self.facts.eval_batch_size)
        vals = [v for k, v in summarize(metrics).items() if k.endswith("/" + schema.M_HARMFUL)]
        return float(np.mean(vals)) if vals else float("nan")

    def measure(self, eval_n: int, step: int, generate: bool = True) -> dict[str, float]:
        out = self.heldout_losses()
        out["harmful_score"] = self.harmful_score(eval_n, step) if generate else float("nan")
        return out

    def run_arm(self, step: int, horizon: int, step_weights: dict[str, float], seed: int, reverse: bool = False
                ) -> tuple[list[dict], dict[str, float]]:
        """Restore checkpoint `step`, train step `step` on `step_weights` and the next horizon−1 steps as
        recorded. Returns (one row per replayed step, nothing measured yet). `reverse`: every batch in the
        reverse order (the same sums in another float order: what is left is rounding, the noise floor)."""
        import torch

        torch.manual_seed(seed)
        opt = self.restore(step)
        rows = []
        for s in range(step, step + horizon):
            dec = self.batch(s)
            weights = step_weights if s == step else dict(zip(dec["sample_id"], dec["weight"].astype(float)))
            ids = [i for i in dec["sample_id"] if i in weights][::-1 if reverse else 1]
            loss, per = self.train_step(opt, ids, weights, self.lr_at(s))
            rec = dict(zip(dec["sample_id"], dec["loss"])) if "loss" in dec else {}
            diffs = [abs(per[i] - rec[i]) for i in per if i in rec and pd.notna(rec[i])]
            rows.append({"step": s, "loss": loss, "recorded_loss": self.recorded_task_loss(s),
                         "max_abs_sample_loss_diff": max(diffs) if diffs else float("nan"), "n": len(per)})
        return rows, {}


# --------------------------------------------------------------------------------------------------
# arms
# --------------------------------------------------------------------------------------------------

def arm_weights(batch: pd.DataFrame, arm: str, seed: int, step: int) -> dict[str, float]:
    """sample_id -> weight at step S for `arm` (see the module's doc)."""
    kept = batch["kept"].astype(bool).to_numpy()
    ids = batch["sample_id"].tolist()
    if arm == "kept":
        return {i: float(w) for i, w, k in zip(ids, batch["weight"], kept) if k}
    if arm == "dropped":
        return {i: 1.0 for i, k in zip(ids, kept) if not k}
    if arm == "all":
        return {i: 1.0 for i in ids}
    if arm == "random":
        d = int((~kept).sum())
        rng = np.random.default_rng([int(seed), int(step)])
        drop = set(rng.choice(len(ids), size=d, replace=False).tolist()) if d else set()
        return {i: 1.0 for j, i in enumerate(ids) if j not in drop}
    raise ReplayError(f"arm {arm!r}: expected one of {', '.join(schema.REPLAY_ARMS)}")


def _parse_list(value, kind, name: str) -> tuple:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    try:
        out = tuple(kind(v.strip() if isinstance(v, str) else v) for v in value)
    except (TypeError, ValueError):
        raise ReplayError(f"{name} = {value!r}: expected a comma-separated list") from None
    if not out:
        raise ReplayError(f"{name}: expected at least one value")
    return out


# --------------------------------------------------------------------------------------------------
# recording
# --------------------------------------------------------------------------------------------------

def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _write_part(run_dir: Path, table: str, rows: list[dict]) -> Path:
    """A new replays/-style part under the next free number (a concurrent replay takes the next one)."""
    d = run_dir / table
    d.mkdir(exist_ok=True)
    n = 1 + max([int(p.stem.split("-")[1]) for p in d.glob("part-*.parquet") if p.stem.split("-")[1].isdigit()],
                default=-1)
    tmp = d / f".{os.getpid()}-{time.time_ns()}.tmp.parquet"
    write_parquet_atomic(tmp, pd.DataFrame(rows))
    while True:
        path = d / f"part-{n:05d}.parquet"
        try:
            os.link(tmp, path)       # fails if another replay took this number meanwhile
            break
        except FileExistsError:
            n += 1
    tmp.unlink()
    return path


@dataclass
class Replay:
    """What `replay` returns: its id, rows (one per arm and seed), per-step rows and its JSON record."""

    replay_id: str
    rows: pd.DataFrame
    steps: pd.DataFrame
    meta: dict = field(default_factory=dict)


def replay(run_dir: str | Path, step: int, horizon: int = 1, arms=schema.REPLAY_ARMS, seeds=(0,), eval_n: int = 50,
           heldout_n: int | None = None, device: str | None = None, generate: bool = True,
           world: RunWorld | None = None, progress=None) -> Replay:
    """Replay step `step` of a run under each arm and seed for `horizon` steps; record and return it.

    eval_n: held-out prompts per harmful suite for the harmful score (0: all; generate=False skips it);
    heldout_n: prompts per held-out loss (None: the run's influence_n, so the first-order check's sets).
    `world` reuses a loaded RunWorld (several replays of one run)."""
    arms = _parse_list(arms, str, "arms")
    seeds = _parse_list(seeds, int, "seeds")
    bad = [a for a in arms if a not in schema.REPLAY_ARMS]
    if bad:
        raise ReplayError(f"arms: {', '.join(bad)} unknown; expected some of {', '.join(schema.REPLAY_ARMS)}")
    if int(horizon) < 1:
        raise ReplayError(f"horizon = {horizon}: expected at least 1 step (step S itself)")
    step, horizon = int(step), int(horizon)
    world = world or RunWorld(run_dir, device, heldout_n)
    world.checkpoint(step)                              # fails early, naming the checkpoints there are
    batch = world.batch(step)
    for s in range(step + 1, step + horizon):
        world.batch(s)                                  # every replayed step is recorded
    n_dropped = int((~batch["kept"].astype(bool)).sum())
    if n_dropped == 0 and {"dropped", "random"} & set(arms):
        dropping = _steps_with_drops(world.run_dir, world.checkpoints)
        raise ReplayError(f"{world.run_dir}: step {step} dropped no sample, so the dropped and random arms are empty; "
                          + (f"checkpointed steps that dropped some: {', '.join(map(str, dropping))}" if dropping
                             else "no checkpointed step of this run dropped a sample (arms kept,all still run)"))
    run_dir = world.run_dir
    replay_id = f"s{step}-k{horizon}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"
    meta = {"replay_id": replay_id, "run_id": world.manifest["run_id"], "status": schema.STATUS_RUNNING,
            "created_at": _now(), "step": step, "horizon": horizon, "arms": list(arms), "seeds": list(seeds),
            "checkpoint": f"{schema.STEP_CHECKPOINTS}/step-{step}", "eval_n": eval_n, "generate": generate,
            "heldout_n": world.heldout_n, "n_refusal_prompts": len(world.safety),
            "n_task_prompts": len(world.task) if world.task is not None else 0,
            "judge": (world.judges[0].name if world.judges else "keyword") if generate else None,
            "device": str(world.device), "n_batch": len(batch), "n_dropped": n_dropped,
            "later_steps": "recorded batches and weights", "method": world.manifest.get("method")}
    meta_path = run_dir / schema.REPLAYS / f"{replay_id}.json"
    meta_path.parent.mkdir(exist_ok=True)
    write_json_atomic(meta_path, meta)
    rows_all, steps_all = [], []
    from explorer.train.recipe import raise_on_sigterm

    previous = raise_on_sigterm()
    try:
        world.restore(step)
        meta["at_checkpoint"] = world.measure(eval_n, step, generate)   # the starting point, for reference
        write_json_atomic(meta_path, meta)
        for seed in seeds:
            for arm in arms:
                t, cpu = time.time(), time.process_time()
                weights = arm_weights(batch, arm, seed, step)
                steps_rows, _ = world.run_arm(step, horizon, weights, seed)
                m = world.measure(eval_n, step + horizon, generate)
                row = {"run_id": meta["run_id"], "replay_id": replay_id, "step": step, "horizon": horizon, "arm": arm,
                       "seed": int(seed), "n_arm": len(weights), "n_batch": len(batch), "n_dropped": n_dropped,
                       "arm_samples": sorted(weights), **m, "seconds": round(time.time() - t, 3),
                       "cpu_seconds": round(time.process_time() - cpu, 3)}
                srows = [{"run_id": meta["run_id"], "replay_id": replay_id, "arm": arm, "seed": int(seed), **r}
                         for r in steps_rows]
                _write_part(run_dir, schema.REPLAYS, [row])
                _write_part(run_dir, schema.REPLAY_STEPS, srows)
                rows_all.append(row)
                steps_all += srows
                if progress:
                    progress(row)
    except BaseException as e:     # also Ctrl-C and SIGTERM: the record says failed, the parts stay readable
        meta.update(status=schema.STATUS_FAILED, error=f"{type(e).__name__}: {e}", finished_at=_now())
        write_json_atomic(meta_path, meta)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    first = [r for r in steps_all if r["step"] == step]
    meta.update(status=schema.STATUS_COMPLETE, finished_at=_now(),
                checkpoint_loss_diff=max((r["max_abs_sample_loss_diff"] for r in first), default=float("nan")))
    write_json_atomic(meta_path, meta)
    return Replay(replay_id, pd.DataFrame(rows_all), pd.DataFrame(steps_all), meta)


def _steps_with_drops(run_dir: Path, steps: list[int]) -> list[int]:
    if not steps:
        return []
    df = reader.query(run_dir, "decisions", "SELECT step, sum(CASE WHEN kept THEN 0 ELSE 1 END) AS d FROM t "
                      "WHERE role = 'task' GROUP BY step")
    with_drops = set(df.loc[df["d"] > 0, "step"].astype(int)) if not df.empty else set()
    return [s for s in steps if s in with_drops]


def noise_floor(world: RunWorld, step: int, horizon: int, base: dict[str, float] | None = None) -> float:
    """|refusal loss of the whole batch − the same with every batch in reverse order| after `horizon` steps:
    the float rounding a leave-one-out difference carries (a |loo_safety| near it is no measurement)."""
    if base is None:
        world.run_arm(step, horizon, {i: 1.0 for i in world.batch(step)["sample_id"]}, 0)
        base = world.heldout_losses()
    world.run_arm(step, horizon, {i: 1.0 for i in world.batch(step)["sample_id"]}, 0, reverse=True)
    return abs(base["refusal_loss"] - world.heldout_losses()["refusal_loss"])


def leave_one_out(run_dir: str | Path, step: int, horizon: int = 1, heldout_n: int | None = None,
                  device: str | None = None, world: RunWorld | None = None, record: bool = True,
                  samples: list[str] | None = None, progress=None) -> pd.DataFrame:
    """Exact leave-one-out over the batch of step `step`: for each of its n samples, replay with the whole
    batch less that sample at step S (weight 1 each, as the `all` arm) and the next horizon−1 steps as
    recorded, and measure the held-out losses. One row per sample:

        loo_safety = refusal loss(with the sample) − refusal loss(without it)     (after `horizon` steps)
        loo_task   = the same for the held-out task loss

    the measured counterpart of effect_safety / effect_task (same sign: > 0, the sample raises the loss),
    and noise_floor (noise_floor()): the rounding such a difference carries.
    Costs (n + 1) · horizon training steps and as many held-out evaluations; no generation. `samples`
    leaves out only those (the baseline is still the whole batch)."""
    step, horizon = int(step), int(horizon)
    if horizon < 1:
        raise ReplayError(f"horizon = {horizon}: expected at least 1 step")
    world = world or RunWorld(run_dir, device, heldout_n)
    world.checkpoint(step)
    batch = world.batch(step)
    for s in range(step + 1, step + horizon):
        world.batch(s)
    t0 = time.time()
    full = {i: 1.0 for i in batch["sample_id"]}
    world.run_arm(step, horizon, full, 0)
    base = world.heldout_losses()
    noise = noise_floor(world, step, horizon, base)
    rows = []
    ids = list(batch["sample_id"])
    if samples is not None:
        unknown = sorted(set(samples) - set(ids))
        if unknown:
            raise ReplayError(f"samples {', '.join(unknown[:3])} are not in the batch of step {step}")
        ids = [i for i in ids if i in set(samples)]
    for i in ids:
        world.run_arm(step, horizon, {k: v for k, v in full.items() if k != i}, 0)
        m = world.heldout_losses()
        rows.append({"step": step, "horizon": horizon, "sample_id": i,
                     "loo_safety": base["refusal_loss"] - m["refusal_loss"],
                     "loo_task": base["task_loss"] - m["task_loss"],
                     "kept": bool(batch.loc[batch["sample_id"] == i, "kept"].iloc[0]), "noise_floor": noise})
        if progress:
            progress(rows[-1])
    loo_id = f"s{step}-k{horizon}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"
    df = pd.DataFrame(rows).assign(run_id=world.manifest["run_id"], loo_id=loo_id,
                                   base_refusal_loss=base["refusal_loss"], base_task_loss=base["task_loss"])
    if record:
        _write_part(world.run_dir, schema.LOO, df.to_dict("records"))
        write_json_atomic(world.run_dir / schema.LOO / f"{loo_id}.json",
                          {"loo_id": loo_id, "run_id": world.manifest["run_id"], "step": step, "horizon": horizon,
                           "checkpoint": f"{schema.STEP_CHECKPOINTS}/step-{step}", "baseline": "all (weight 1 each)",
                           "heldout_n": world.heldout_n, "n": len(df), "seconds": round(time.time() - t0, 2),
                           "created_at": _now(), "device": str(world.device)})
    return df
