"""Batched per-sample losses and gradient features over the trainable parameters.

Estimators share one interface (`Estimator.features(model, batch) -> Features`):

  hooks      exact per-sample gradients from ONE batched forward and backward: per layer, the
             activations a [B, T, in] and output gradients δ [B, T, out] give
             g_i(W) = Σ_t δ_it a_itᵀ (as differential-privacy libraries compute them). Covers the
             layers a Llama or a LoRA adapter trains: Linear, Embedding (tied or not), RMSNorm.
  vmap       exact per-sample gradients with torch.func (functional_call + vmap(grad)), chunked;
             works for any module, slower on CPU.
  loop       one forward and backward per sample, cloning every gradient: what the DualSelect
             authors' code does; the reference the others are tested and benchmarked against.
  projected  any of the above compressed by a seeded count-sketch to D dimensions (the authors'
             diagnostic sketches LoRA gradients to 512): <Sx, Sy> ≈ <x, y> in expectation.
  jvp        only the directional products <g_i, v> for a fixed v, by forward-mode JVP over the
             whole batch at once (about one forward pass). It gives no norms ‖g_i‖, so a cosine
             needs another estimator; DualSelect can use it for compat when the estimator is `jvp`
             (then compat_i = <g_i, ĝ_ref>, a projection length — recorded as such).

Features live in "feature space": the full flattened parameter space for exact estimators, R^D for
projected ones. `to_feature(v)` maps a full-space vector (e.g. a reference direction computed by a
plain backward) into that space. Per-sample losses are mean NLL over response tokens.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from explorer.data.batch import Batch
from explorer.model.losses import loss_kwargs, model_nll, per_sample_nll
from explorer.model.plumbing import autocast


@dataclass
class Features:
    losses: torch.Tensor          # [B] per-sample losses (detached)
    grads: torch.Tensor | None    # [B, D] per-sample gradient features (None for jvp)
    estimator: str


def trainable_params(model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def flatten(tensors: dict[str, torch.Tensor], names: list[str], batch: bool = False) -> torch.Tensor:
    """Concatenate per-parameter tensors in `names` order: [P] or, with batch=True, [B, P]."""
    if batch:
        return torch.cat([tensors[n].reshape(tensors[n].shape[0], -1) for n in names], dim=1)
    return torch.cat([tensors[n].reshape(-1) for n in names])


def unflatten(flat: torch.Tensor, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out, i = {}, 0
    for n, p in params.items():
        out[n] = flat[i:i + p.numel()].view_as(p)
        i += p.numel()
    return out


def cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Row-wise cosine: a [N, D] with b [D] -> [N]; or a [D] with b [D] -> scalar."""
    if a.dim() == 1:
        return (a @ b) / (a.norm() * b.norm()).clamp_min(eps)
    return (a @ b) / (a.norm(dim=1) * b.norm()).clamp_min(eps)


def weighted_mean(feats: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Σ w_i f_i / Σ w_i over rows: [N, D], [N] -> [D]."""
    return (w.to(feats.dtype) @ feats) / w.sum().clamp_min(1e-12)   # a GEMV: no [N, D] temporary




# --------------------------------------------------------------------------------------------------
# exact: hooks
# --------------------------------------------------------------------------------------------------

def _is_rmsnorm(m: torch.nn.Module) -> bool:
    w = getattr(m, "weight", None)
    return (isinstance(w, torch.nn.Parameter) and w.dim() == 1 and
            (hasattr(m, "variance_epsilon") or hasattr(m, "eps")) and not isinstance(m, torch.nn.LayerNorm)
            and "rmsnorm" in type(m).__name__.lower())


class HooksEstimator:
    """Exact per-sample gradients from one batched backward (activation × output-gradient per layer)."""

    name = "hooks"

    def __init__(self, autocast_dtype=None):
        self.autocast_dtype = autocast_dtype

    def _owners(self, model, params):
        """param name -> list of (module, kind) that use it (tied weights have two owners)."""
        pid = {id(p): n for n, p in params.items()}
        owners: dict[str, list] = {n: [] for n in params}
        for mname, m in model.named_modules():
            for attr in ("weight", "bias"):
                p = m._parameters.get(attr) if hasattr(m, "_parameters") else None
                if p is None or id(p) not in pid:
                    continue
                if isinstance(m, torch.nn.Linear):
                    kind = "linear_" + attr
                elif isinstance(m, torch.nn.Embedding) and attr == "weight":
                    kind = "embedding"
                elif _is_rmsnorm(m) and attr == "weight":
                    kind = "rmsnorm"
                else:
                    raise NotImplementedError(
                        f"hooks estimator: no per-sample rule for {type(m).__name__} ({mname}.{attr}); "
                        "use estimator=vmap for this model")
                owners[pid[id(p)]].append((m, kind))
        missing = [n for n, o in owners.items() if not o]
        if missing:
            raise NotImplementedError(f"hooks estimator: parameters not owned by a supported module: {missing[:3]}")
        return owners

    def features(self, model, batch: Batch, params=None, buffer: torch.Tensor | None = None) -> Features:
        """`buffer`: an optional float32 [B, P] buffer the caller owns and reuses from step to step (then
        the returned grads are that buffer: valid until the caller's next call). It saves allocating
        and first-touching B·P floats every call, a quarter of a tiny-model step on CPU."""
        params = params or trainable_params(model)
        owners = self._owners(model, params)
        modules = {id(m): m for lst in owners.values() for m, _ in lst}
        acts: dict = {}
        handles = []

        outs = {}

        def fwd_hook(m, inp, out):
            acts[id(m)] = inp[0].detach()
            if out.requires_grad:
                outs[id(m)] = out

        for m in modules.values():
            handles.append(m.register_forward_hook(fwd_hook))
        try:
            with autocast(batch.input_ids.device, self.autocast_dtype):
                losses = model_nll(model, batch.input_ids, batch.attention_mask, batch.labels)   # [B]
            # samples are independent, so d(Σ_i l_i)/d(out_i) is sample i's own output gradient;
            # differentiate w.r.t. the layer outputs only (no parameter gradients are formed)
            keys = list(outs)
            gs = torch.autograd.grad(losses.sum(), [outs[k] for k in keys], allow_unused=True)
            gouts = {k: g.detach() for k, g in zip(keys, gs) if g is not None}
        finally:
            for h in handles:
                h.remove()
        B = batch.input_ids.shape[0]
        P = sum(p.numel() for p in params.values())
        dev = next(iter(params.values())).device
        if buffer is not None and buffer.shape == (B, P) and buffer.dtype == torch.float32 and buffer.device == dev:
            buf = buffer
        else:
            buf = torch.empty(B, P, dtype=torch.float32, device=dev)   # [B, P], every block written below
        off = 0
        for n, p in params.items():
            g = buf[:, off:off + p.numel()].view(B, *p.shape)
            off += p.numel()
            first = True       # the first owner writes its block, a second one (tied weights) adds
            for m, kind in owners[n]:
                a, d = acts.get(id(m)), gouts.get(id(m))
                if d is None:          # the module did not influence the loss
                    continue
                d = d.float()
                if kind == "linear_weight":
                    part = torch.bmm(d.transpose(1, 2), a.float())                 # [B, out, in]
                elif kind == "linear_bias":
                    part = d.sum(1)
                elif kind == "embedding":
                    ids = a.long()                                                 # [B, T]
                    part = torch.zeros(B * p.shape[0], p.shape[1], device=dev)     # rows: (sample, token id)
                    idx = (ids + torch.arange(B, device=ids.device)[:, None] * p.shape[0]).reshape(-1)
                    part.index_add_(0, idx, d.reshape(-1, d.shape[-1]))
                    part = part.view(B, *p.shape)
                else:  # rmsnorm
                    eps = getattr(m, "variance_epsilon", getattr(m, "eps", 1e-6))
                    x = a.float()
                    part = (d * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))).sum(1)
                if first:
                    g.copy_(part)
                else:
                    g += part
                first = False
            if first:          # no owner influenced the loss: a zero gradient
                g.zero_()
        return Features(losses.detach().float(), buf, self.name)


# --------------------------------------------------------------------------------------------------
# exact: torch.func
# --------------------------------------------------------------------------------------------------

class VmapEstimator:
    name = "vmap"

    def __init__(self, chunk_size: int = 16, autocast_dtype=None):
        self.chunk_size = chunk_size
        self.autocast_dtype = autocast_dtype

    def features(self, model, batch: Batch, params=None) -> Features:
        from torch.func import functional_call, grad_and_value, vmap

        params = params or trainable_params(model)
        detached = {n: p.detach() for n, p in params.items()}
        dev = batch.input_ids.device

        def loss_one(p, ids, labels):
            # one sample as a [1, T] sequence, no attention mask: right padding comes after the
            # supervised tokens, and a causal LM never attends forward, so the loss is unchanged
            with autocast(dev, self.autocast_dtype):
                out = functional_call(model, p, (ids.unsqueeze(0),))
            return per_sample_nll(out.logits, labels.unsqueeze(0))[0]

        g, l = vmap(grad_and_value(loss_one), in_dims=(None, 0, 0), chunk_size=self.chunk_size)(
            detached, batch.input_ids, batch.labels)
        return Features(l.detach().float(), flatten({n: v.float() for n, v in g.items()}, list(params), batch=True),
                        self.name)


class LoopEstimator:
    """One forward and backward per sample (the authors' way): the reference implementation."""

    name = "loop"

    def __init__(self, autocast_dtype=None):
        self.autocast_dtype = autocast_dtype

    def features(self, model, batch: Batch, params=None) -> Features:
        params = params or trainable_params(model)
        plist = list(params.values())
        losses, rows = [], []
        for i in range(batch.input_ids.shape[0]):
            n = int(batch.attention_mask[i].sum())
            with autocast(batch.input_ids.device, self.autocast_dtype):   # the loss the batched estimators use
                l = model_nll(model, batch.input_ids[i:i + 1, :n], None, batch.labels[i:i + 1, :n])[0]
            gs = torch.autograd.grad(l, plist, allow_unused=True)
            rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).float()
                                   for g, p in zip(gs, plist)]))
            losses.append(l.detach().float())
        return Features(torch.stack(losses), torch.stack(rows), self.name)


# --------------------------------------------------------------------------------------------------
# projected: count-sketch
# --------------------------------------------------------------------------------------------------

class CountSketch:
    """x ∈ R^P -> Sx ∈ R^D with S having one ±1 per column at a seeded random row (unbiased inner products)."""

    def __init__(self, P: int, D: int, seed: int, device):
        g = torch.Generator().manual_seed(seed)
        self.bucket = torch.randint(0, D, (P,), generator=g).to(device)
        self.sign = (torch.randint(0, 2, (P,), generator=g) * 2 - 1).float().to(device)
        self.P, self.D = P, D

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 1:
            return torch.zeros(self.D, device=x.device).index_add_(0, self.bucket, x * self.sign)
        out = torch.zeros(x.shape[0], self.D, device=x.device)
        return out.index_add_(1, self.bucket, x * self.sign)


class ProjectedEstimator:
    name = "projected"

    def __init__(self, base, dim: int = 512, seed: int = 0):
        self.base, self.dim, self.seed = base, dim, seed
        self._sketch: CountSketch | None = None

    def sketch(self, P: int, device) -> CountSketch:
        if self._sketch is None or self._sketch.P != P:
            self._sketch = CountSketch(P, self.dim, self.seed, device)
        return self._sketch

    def features(self, model, batch: Batch, params=None) -> Features:
        f = self.base.features(model, batch, params)
        return Features(f.losses, self.sketch(f.grads.shape[1], f.grads.device)(f.grads), self.name)

    def to_feature(self, v: torch.Tensor) -> torch.Tensor:
        return self.sketch(v.shape[0], v.device)(v)


# --------------------------------------------------------------------------------------------------
# directional products: forward-mode JVP
# --------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def eager_attention(model):
    """Forward-mode AD has no rule for fused SDPA kernels: use eager attention inside."""
    cfg = getattr(model, "config", None)
    old = getattr(cfg, "_attn_implementation", None)
    setter = getattr(model, "set_attn_implementation", None)
    if old not in (None, "eager") and setter is not None:
        setter("eager")
    try:
        yield
    finally:
        if old not in (None, "eager") and setter is not None:
            setter(old)


def directional(model, batch: Batch, v_flat: torch.Tensor, params=None, autocast_dtype=None):
    """(losses [B], <g_i, v> [B]) for the whole batch in one forward pass with tangents."""
    from torch.func import functional_call, jvp

    params = params or trainable_params(model)
    primals = {n: p.detach() for n, p in params.items()}
    tangents = unflatten(v_flat.to(next(iter(primals.values())).dtype), primals)

    kw = loss_kwargs(model, batch.labels)          # logits only where the loss reads them

    def losses_of(p):
        with autocast(batch.input_ids.device, autocast_dtype):
            out = functional_call(model, p, (batch.input_ids,), {"attention_mask": batch.attention_mask, **kw})
        return per_sample_nll(out.logits, batch.labels, kw.get("logits_to_keep"))

    with eager_attention(model):
        losses, dots = jvp(losses_of, (primals,), (tangents,))
    return losses.detach().float(), dots.detach().float()


ESTIMATORS = ("hooks", "vmap", "loop", "projected", "jvp")


def make_estimator(name: str, *, projection_dim: int = 512, seed: int = 0, chunk_size: int = 16,
                   autocast_dtype=None, base: str = "hooks"):
    """`exact` is an alias of `hooks`; `projected` sketches the `base` exact estimator."""
    if name in ("exact", "hooks"):
        return HooksEstimator(autocast_dtype)
    if name == "vmap":
        return VmapEstimator(chunk_size, autocast_dtype)
    if name == "loop":
        return LoopEstimator(autocast_dtype)
    if name == "projected":
        return ProjectedEstimator(make_estimator(base, autocast_dtype=autocast_dtype, chunk_size=chunk_size),
                                  projection_dim, seed)
    raise ValueError(f"estimator {name!r} unknown; expected one of exact, {', '.join(ESTIMATORS)}")
