"""The optimiser step and the learning-rate schedule that every training loop here shares: the recipe
(explorer/train/recipe.py), SEAL's selector phase (explorer/methods/seal.py), the tiny world's two
stages (explorer/prepare/tiny.py), the SmolLM2 alignment adapter (explorer/prepare/smollm2_align.py)
and the SAE (explorer/interp/sae.py).

A loop reads top to bottom as nanoGPT's does:

    step = OptimStep(opt, params, LrSchedule(peak, total, warmup, "cosine"), clip=1.0)
    for i in range(total):
        step.set_lr(i)          # every param group at the scheduled lr
        step.zero_grad()
        loss.backward()         # (the loop's own: all-reduce, gradient transforms ... in between)
        step.step()             # clip the global grad norm (clip > 0), then the optimiser's step

The arithmetic is the one each loop had (docs/architecture.md): the warm-up is `peak * (step + 1) /
warmup`, and a loop that scales several optimisers by one warm-up factor (SEAL) takes the factor
from a schedule with peak 1.0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LR_SCHEDULES = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class LrSchedule:
    """Linear warm-up over `warmup` steps (step s at peak·(s+1)/warmup), then `shape` from the peak
    down to min_ratio·peak at step `total`: constant (stays at the peak), linear, or cosine (min_ratio
    0 gives Hugging Face's linear / cosine schedulers after their warm-up)."""

    peak: float
    total: int
    warmup: int = 0
    shape: str = "constant"
    min_ratio: float = 0.0

    def __post_init__(self):
        if self.shape not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule = {self.shape!r}: expected one of {', '.join(LR_SCHEDULES)}")

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.peak * (step + 1) / max(1, self.warmup)
        if self.shape == "constant":
            return self.peak
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        if self.shape == "linear":
            return self.peak * (self.min_ratio + (1 - self.min_ratio) * (1 - progress))
        return self.peak * (self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class OptimStep:
    """One optimiser's step: the scheduled lr, zero_grad, clipping of the global gradient norm, step.

    The backward pass stays with the caller (the recipe reduces gradients across ranks and lets the
    method transform them between backward and `step`)."""

    def __init__(self, opt: torch.optim.Optimizer, params, schedule: LrSchedule | None = None, clip: float = 0.0):
        self.opt, self.params, self.schedule, self.clip = opt, list(params), schedule, clip

    def set_lr(self, step: int | None = None, lr: float | None = None) -> float:
        """Every param group at `lr`, or at the schedule's lr for `step`; returns it."""
        if lr is None:
            lr = self.schedule(step)
        for g in self.opt.param_groups:
            g["lr"] = lr
        return lr

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    def step(self) -> torch.Tensor:
        """Clip (clip > 0) and step; returns the gradient norm before clipping (0 when not clipped)."""
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip) if self.clip > 0 else torch.tensor(0.0)
        self.opt.step()
        return norm
