"""More than one process: torch.distributed as torchrun (and `accelerate launch`) start it.

    torchrun --nproc_per_node=N -m explorer run CONFIG ...

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `init(cfg)` reads them and
opens the default process group (NCCL on CUDA, gloo on CPU) with a collective timeout of
`cfg.dist.timeout_s`, so a rank that dies or hangs stops the others instead of leaving them waiting
forever. Without those variables (plain `python -m explorer run`) it returns SINGLE, whose collectives
are no-ops that hand their input back unchanged: the single-process path is the same code.

How a run is split (explorer/train/recipe.py): every rank draws the same global batch from the same
seeded order and takes its contiguous shard (`shard`); methods score their shard and gather what a
selection needs (`gather_cat`), so every rank takes the same decision over the global batch; the
trainable gradients are summed across ranks (`all_reduce_grads`) after the method's backward and before
its transform_grads, clipping and AdamW, so every rank applies the same update. Rank 0 alone writes the
run folder; the others send it their per-sample rows (`gather_object`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from explorer.model.plumbing import decoder_layers

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Dist:
    """Where this process stands among the ranks, and the few collectives the recipe and methods use."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str = "none"
    timeout_s: float = 0.0
    owns_group: bool = False      # init() opened the process group (and close() destroys it)
    #: seconds spent inside collectives so far (waiting for the slower rank included); the recipe
    #: records each step's share as steps.time_collectives_s
    clock: dict = field(default_factory=lambda: {"s": 0.0}, compare=False, hash=False)

    @contextlib.contextmanager
    def _timed(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.clock["s"] += time.perf_counter() - t0

    @property
    def collective_s(self) -> float:
        return self.clock["s"]

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        """What the manifest records."""
        return {"world_size": self.world, "backend": self.backend, "timeout_s": self.timeout_s,
                "nodes": int(os.environ.get("GROUP_WORLD_SIZE", "0") or 0) or None}

    # -- sharding ---------------------------------------------------------------------------------
    def shard(self, n: int, rank: int | None = None) -> tuple[int, int]:
        """[start, stop) of this rank's contiguous share of n items (the first n % world ranks take one
        more, as numpy.array_split does)."""
        r = self.rank if rank is None else rank
        q, m = divmod(n, self.world)
        start = r * q + min(r, m)
        return start, start + q + (1 if r < m else 0)

    # -- collectives ------------------------------------------------------------------------------
    def _wire(self, t: torch.Tensor) -> torch.Tensor:
        """A detached copy on a device the backend can reduce (NCCL reduces CUDA tensors only)."""
        t = t.detach()
        if self.backend == "nccl" and t.device.type != "cuda":
            return t.to(torch.device("cuda", self.local_rank))
        return t.clone().contiguous()

    def _all_reduce(self, t: torch.Tensor, op: str) -> torch.Tensor:
        """`op` (a torch.distributed.ReduceOp name) over ranks: a new tensor on the input's device, the
        input left alone; the input itself in a single process."""
        if not self.enabled:
            return t
        import torch.distributed as td

        out = self._wire(t)
        with self._timed():
            td.all_reduce(out, op=getattr(td.ReduceOp, op))
        return out.to(t.device)

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Σ over ranks (a new tensor on the input's device; the input is left alone)."""
        return self._all_reduce(t, "SUM")

    def all_mean(self, t: torch.Tensor) -> torch.Tensor:
        return self.all_sum(t) / self.world if self.enabled else t

    def all_max(self, t: torch.Tensor) -> torch.Tensor:
        return self._all_reduce(t, "MAX")

    def gather_cat(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's tensor along dim 0, in rank order; the lengths may differ (the
        rows are padded to the longest for the all_gather and cut back). Detached."""
        if not self.enabled:
            return t
        import torch.distributed as td

        home = t.device
        t = self._wire(t)
        n = torch.tensor([t.shape[0]], device=t.device, dtype=torch.long)
        sizes = [torch.zeros_like(n) for _ in range(self.world)]
        with self._timed():
            td.all_gather(sizes, n)
        sizes = [int(s) for s in sizes]
        longest = max(sizes)
        pad = t.new_zeros((longest - t.shape[0], *t.shape[1:]))
        buf = [t.new_zeros((longest, *t.shape[1:])) for _ in range(self.world)]
        with self._timed():
            td.all_gather(buf, torch.cat([t, pad]) if pad.shape[0] else t)
        return torch.cat([b[:s] for b, s in zip(buf, sizes)]).to(home)

    def all_gather_object(self, obj: Any) -> list[Any]:
        if not self.enabled:
            return [obj]
        import torch.distributed as td

        out: list[Any] = [None] * self.world
        with self._timed():
            td.all_gather_object(out, obj)
        return out

    def gather_object(self, obj: Any) -> list[Any] | None:
        """Every rank's `obj` on rank 0 (in rank order); None elsewhere."""
        if not self.enabled:
            return [obj]
        import torch.distributed as td

        out: list[Any] | None = [None] * self.world if self.is_main else None
        with self._timed():
            td.gather_object(obj, out, dst=0)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.enabled:
            return obj
        import torch.distributed as td

        box = [obj if self.is_main else None]
        with self._timed():
            td.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as td

            td.barrier()

    def broadcast_params(self, params) -> None:
        """Rank 0's values of `params` on every rank (the same start even if an initialisation drew
        random numbers differently)."""
        if not self.enabled:
            return
        import torch.distributed as td

        with torch.no_grad():
            for p in params:
                td.broadcast(p.data, src=0)

    def all_reduce_grads(self, params, bucket_elems: int = 1 << 24) -> None:
        """.grad ← Σ over ranks of .grad, for every parameter in `params` (a rank without a gradient for
        a parameter some other rank has one for contributes zeros, so every rank reduces the same
        tensors in the same order).
        Gradients are flattened into buckets of about `bucket_elems` elements per all_reduce, as DDP
        does, so a LoRA run costs one collective per step."""
        if not self.enabled:
            return
        import torch.distributed as td

        params = list(params)
        # a parameter no rank has a gradient for stays without one (AdamW then skips it, as with one
        # process); one that only some ranks have gets zeros on the others
        has = self.all_max(torch.tensor([p.grad is not None for p in params], dtype=torch.int32))
        params = [p for p, h in zip(params, has.tolist()) if h]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        buckets: list[list[torch.nn.Parameter]] = []
        size = 0
        for p in params:
            if (not buckets or size + p.numel() > bucket_elems or p.grad.dtype != buckets[-1][0].grad.dtype
                    or p.grad.device != buckets[-1][0].grad.device):
                buckets.append([])
                size = 0
            buckets[-1].append(p)
            size += p.numel()
        for bucket in buckets:
            flat = torch.cat([q.grad.reshape(-1) for q in bucket])
            with self._timed():
                td.all_reduce(flat, op=td.ReduceOp.SUM)
            off = 0
            for q in bucket:
                q.grad.copy_(flat[off:off + q.numel()].view_as(q.grad))
                off += q.numel()

    def close(self) -> None:
        """Destroy the process group if init() opened it; one opened by the caller (a script that
        runs several runs in one torchrun job) stays open for the next run."""
        if self.enabled and self.owns_group:
            import torch.distributed as td

            if td.is_initialized():
                td.destroy_process_group()


SINGLE = Dist()

#: the `shard` settings: none (every rank holds the whole model) or fsdp (fsdp_shard; only methods
#: that declare `shardable`, whose ranks run the same passes every step: config.validate_shard)
SHARDS = ("none", "fsdp")


def fsdp_shard(model, dist: Dist, device: torch.device | None = None) -> dict[str, Any]:
    """dist.shard=fsdp: FSDP2 (`fully_shard`) over every decoder layer and the whole model, so each rank
    holds 1/world of the frozen base weights and all-gathers a layer's weights just before it runs.

    The trainable (LoRA) parameters are passed as `ignored_params`: FSDP leaves them whole on every
    rank and does not reduce their gradients. Everything downstream is then unchanged: the per-sample
    gradients a method reads are over whole adapter tensors, and the recipe's own all-reduce
    (`all_reduce_grads`, the global weighted mean) is the only gradient reduction. The cost: every
    forward and backward of every rank is a sequence of collectives, so all ranks must run the same
    passes in the same order (lockstep) -- the recipe evaluates on every rank (generate with
    synced_gpus) and refuses methods whose ranks score different numbers of chunks (config.validate).
    `model` may sit in host memory: FSDP moves each rank's shards to `device` (the mesh's), and the
    adapter follows with `.to(device)`. Returns what the manifest records (how much of the model this
    rank holds)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    device = device or torch.device("cpu")
    mesh = init_device_mesh(device.type, (dist.world,))
    trainable = {p for p in model.parameters() if p.requires_grad}
    total = sum(p.numel() for p in model.parameters())
    layers = decoder_layers(model)
    for layer in layers:
        fully_shard(layer, mesh=mesh, ignored_params=trainable)
    # the root unit (embeddings, final norm, head) goes on the causal LM inside a peft wrapper: peft's
    # generate() calls that model directly, past the wrapper's forward (and a root unit's hooks there)
    root = model.get_base_model() if hasattr(model, "get_base_model") else model
    fully_shard(root, mesh=mesh, ignored_params=trainable)
    model.to(device)   # the adapter and anything else FSDP does not manage
    local = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in model.parameters())
    return {"shard": "fsdp", "sharded_layers": len(layers), "param_elements": total,
            "param_elements_local": local,
            "trainable_elements": sum(p.numel() for p in trainable)}


def launched() -> bool:
    """True when a launcher (torchrun, accelerate launch) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def init(timeout_s: float = 1800.0, device_type: str = "cpu") -> Dist:
    """The process group from torchrun's environment, or SINGLE without one. NCCL when the run's
    device is CUDA, gloo otherwise. Safe to call twice (reuses an open group)."""
    if not launched():
        return SINGLE
    import torch.distributed as td

    for v in ENV_VARS:
        if v not in os.environ:
            raise RuntimeError(f"WORLD_SIZE > 1 but {v} is not set; expected a launcher such as torchrun to set "
                               f"{', '.join(ENV_VARS)}, MASTER_ADDR and MASTER_PORT")
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    backend = "nccl" if device_type == "cuda" else "gloo"
    owns = not td.is_initialized()
    if owns:
        kw = {}
        if backend == "nccl":
            torch.cuda.set_device(local)
            kw["device_id"] = torch.device("cuda", local)
        td.init_process_group(backend=backend, timeout=_dt.timedelta(seconds=timeout_s), **kw)
    return Dist(world=world, rank=rank, local_rank=local, backend=td.get_backend(), timeout_s=timeout_s,
                owns_group=owns)
