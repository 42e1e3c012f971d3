"""Shared plumbing of the methods and the recipe, written once: autocast, eval mode, peft detection,
the decoder layers, the frozen reference model's logits, and flat gradients over a list of parameters."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch


#: what Hugging Face causal LMs call their list of transformer blocks (Llama, Qwen, Mistral:
#: model.layers; GPT-2: transformer.h)
LAYER_LISTS = ("layers", "h")


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The transformer blocks of a Hugging Face causal LM, peft-wrapped or not: the longest
    nn.ModuleList named `layers` or `h` whose blocks are all of one class (a shorter list elsewhere,
    e.g. a vision tower's, is not it). Raises when there is none, or two of that length."""
    found = [(name, m) for name, m in model.named_modules()
             if isinstance(m, torch.nn.ModuleList) and name.rsplit(".", 1)[-1] in LAYER_LISTS and len(m)
             and len({type(b) for b in m}) == 1]
    if not found:
        raise ValueError(f"{type(model).__name__}: found no decoder layers (an nn.ModuleList of one block class "
                         f"named {' or '.join(map(repr, LAYER_LISTS))}); expected a Hugging Face causal LM")
    longest = max(len(m) for _, m in found)
    best = [(name, m) for name, m in found if len(m) == longest]
    if len(best) > 1:
        raise ValueError(f"{type(model).__name__}: two lists of {longest} decoder layers "
                         f"({', '.join(n for n, _ in best)}); expected one")
    return best[0][1]


def cpu_info() -> dict:
    """The CPU a run's floats came from: its model name (/proc/cpuinfo, else platform.processor()), the
    vector instruction set torch's kernels dispatch to (e.g. AVX2, AVX512), and torch's thread count.
    One-thread CPU training is deterministic on one CPU, not across instruction sets: the same tiny
    preparation gave other weights on an AVX-512 machine than on the one README's tables came from
    (docs/reproducing.md)."""
    import platform
    from pathlib import Path

    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"model": name or platform.processor(), "torch_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads()}


def is_peft(model) -> bool:
    """A peft model (LoRA adapters that can be switched off)."""
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def autocast(device: torch.device, dtype: torch.dtype | None):
    """bf16 autocast on the device when `dtype` is set (CUDA), nothing otherwise (CPU)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


@contextmanager
def eval_mode(model: torch.nn.Module):
    """model.eval() inside the block, the previous train/eval mode after it (also on error)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def pick_reference(model, mode: str, who: str, reference_model) -> tuple[str, torch.nn.Module | None]:
    """Resolve a method's `reference` setting: auto -> adapter_off on a peft model, else copy. Returns
    (mode, frozen copy or None); `reference_model` is ctx.reference_model (call it before step 0)."""
    if mode == "auto":
        mode = "adapter_off" if is_peft(model) else "copy"
    if mode == "adapter_off" and not is_peft(model):
        raise ValueError(f"{who}: method.reference = adapter_off needs a peft (LoRA) model; "
                         "set lora: true or reference: copy")
    return mode, (reference_model() if mode == "copy" else None)


def reference_logits(model, ref: torch.nn.Module | None, input_ids: torch.Tensor,
                     attention_mask: torch.Tensor, autocast_dtype: torch.dtype | None,
                     logits_to_keep: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of the frozen starting model, without graph: the copy `ref` if given, else `model` with
    its peft adapters switched off (in eval mode). `logits_to_keep` (sequence positions, as
    explorer/model/losses.loss_kwargs gives them): only those positions' logits, [B, K, V]."""
    kw = {} if logits_to_keep is None else {"logits_to_keep": logits_to_keep}
    with torch.no_grad(), autocast(input_ids.device, autocast_dtype):
        if ref is not None:
            return ref(input_ids=input_ids, attention_mask=attention_mask, **kw).logits
        with eval_mode(model), model.disable_adapter():
            return model(input_ids=input_ids, attention_mask=attention_mask, **kw).logits


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(y_t) at every supervised position: logits [B, L, V], labels [B, L] →
    (logp [B, L−1], mask [B, L−1]); position j holds the token labels[:, j+1]."""
    shift_labels = labels[:, 1:]
    mask = shift_labels != -100
    logp = torch.log_softmax(logits[:, :-1, :].float(), dim=-1)
    logp = logp.gather(-1, shift_labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return logp * mask, mask


def flatten_grads(grads, params) -> torch.Tensor:
    """Gradients (one per parameter, None = zero; e.g. from torch.autograd.grad) as one float32 vector."""
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).float()
                      for g, p in zip(grads, params)])


def flat_grad(params) -> torch.Tensor:
    """The parameters' .grad as one float32 vector (zeros where a parameter has no gradient)."""
    params = list(params)
    return flatten_grads([p.grad for p in params], params)


def set_flat_grad(params, flat: torch.Tensor) -> None:
    """Write a flat vector into the parameters' .grad (each in its own dtype)."""
    off = 0
    for p in params:
        p.grad = flat[off:off + p.numel()].view_as(p).to(p.dtype).clone()
        off += p.numel()


def add_flat_grad(params, flat: torch.Tensor, scale: float = 1.0, only_existing: bool = False) -> None:
    """.grad += scale * flat (each slice cast to its parameter's dtype before scaling). A parameter
    without a gradient gets one, unless `only_existing`."""
    off = 0
    for p in params:
        n = p.numel()
        if p.grad is not None or not only_existing:
            part = scale * flat[off:off + n].view_as(p).to(p.dtype)
            p.grad = part.clone() if p.grad is None else p.grad + part
        off += n
