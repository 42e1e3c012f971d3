"""Scoped forward hooks, in the manner of TransformerLens's ``hook_points.py``: every hook is
registered inside a context manager and removed when the block ends — also when it ends with an
exception — so a model never keeps a stray hook that would silently change later forwards.

    with capture(model, {"resid": layer}) as acts:       # acts["resid"]: list of outputs, one per call
        model(input_ids=ids)

    resid = forward_to(model, layer, input_ids=ids)       # run only up to `layer`, return its output

`modules_named` works on plain Hugging Face models and on peft-wrapped ones, since both keep the
Llama names (model.layers.N.mlp.down_proj); the list of decoder layers is explorer/model/plumbing.py's
`decoder_layers`.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch


class StopForward(Exception):
    """Raised by a hook to end a forward pass early (the rest of the model is not needed)."""


def _first_tensor(x):
    """A decoder layer returns a tensor (transformers 5) or a tuple whose first item is the hidden state."""
    if torch.is_tensor(x):
        return x
    if isinstance(x, (tuple, list)) and x and torch.is_tensor(x[0]):
        return x[0]
    raise TypeError(f"expected a tensor or a tuple starting with one, got {type(x).__name__}")


@contextmanager
def hooks(forward: list[tuple[torch.nn.Module, Callable]] = (),
          pre: list[tuple[torch.nn.Module, Callable]] = ()) -> Iterator[list]:
    """Register forward hooks fn(module, args, output) and forward pre-hooks fn(module, args) for the
    duration of the block; all of them are removed on exit, whatever happens inside."""
    handles = []
    try:
        for m, fn in pre:
            handles.append(m.register_forward_pre_hook(fn))
        for m, fn in forward:
            handles.append(m.register_forward_hook(fn))
        yield handles
    finally:
        for h in handles:
            h.remove()


@contextmanager
def capture(modules: dict[str, torch.nn.Module], what: str = "output", detach: bool = True,
            stop_after: str | None = None) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record each named module's output (what="output") or first positional input (what="input")
    on every forward inside the block: yields name -> list of tensors, one per call.

    detach=False keeps the autograd graph (for a loss on the captured activations).
    stop_after=name raises StopForward right after that module fired, which this context manager
    swallows: the model call must then be the last statement of the block."""
    if what not in ("output", "input"):
        raise ValueError(f"capture(what={what!r}): expected 'output' or 'input'")
    store: dict[str, list[torch.Tensor]] = {n: [] for n in modules}

    def make(name):
        def keep(t):
            store[name].append(t.detach() if detach else t)
            if name == stop_after:
                raise StopForward(name)

        if what == "output":
            return lambda m, args, out: keep(_first_tensor(out))
        return lambda m, args: keep(_first_tensor(args))

    spec = [(m, make(n)) for n, m in modules.items()]
    try:
        with hooks(forward=spec if what == "output" else [], pre=spec if what == "input" else []):
            yield store
    except StopForward:
        pass


def forward_to(model: torch.nn.Module, module: torch.nn.Module, detach: bool = False, **inputs) -> torch.Tensor:
    """Run `model(**inputs)` only as far as `module` and return that module's output (with graph
    unless detach): the layers after it are never computed."""
    with capture({"m": module}, "output", detach=detach, stop_after="m") as got:
        model(**inputs)
    if not got["m"]:
        raise RuntimeError(f"forward_to: {type(module).__name__} did not run during the forward pass")
    return got["m"][0]


def modules_named(model: torch.nn.Module, suffix: str) -> dict[str, torch.nn.Module]:
    """Modules whose qualified name ends with `suffix` (e.g. "mlp.down_proj"), keyed by a name
    without peft's wrapping prefixes (base_model.model.), so names match across LoRA and full runs."""
    out = {}
    for name, m in model.named_modules():
        if name.endswith(suffix):
            out[strip_peft_prefix(name)] = m
    return out


def strip_peft_prefix(name: str) -> str:
    return name[len("base_model.model."):] if name.startswith("base_model.model.") else name
