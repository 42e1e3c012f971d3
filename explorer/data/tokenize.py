"""Chat formatting and tokenisation: records -> Batch with response-only labels.

The prompt is rendered with the tokenizer's chat template (`add_generation_prompt=True`); the
response tokens are what the full conversation adds after it. Labels are -100 on prompt and padding
tokens so that l(theta; z) is the mean NLL over response tokens only. Right padding for training (a
causal LM never attends to later padding); generation uses left padding (explorer/eval/generate.py).
A tokenizer without a chat template gets a plain "User: ...\\nAssistant: " format.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from explorer.data.records import Record
from explorer.data.batch import Batch

log = logging.getLogger(__name__)

PLAIN_PROMPT = "User: {prompt}\nAssistant:"


class ContextLengthError(ValueError):
    """A record does not fit the model's context."""


def render_prompt(tokenizer, prompt: str) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    return PLAIN_PROMPT.format(prompt=prompt)


def render_conversation(tokenizer, prompt: str, response: str) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt},
                                              {"role": "assistant", "content": response}],
                                             tokenize=False)
    eos = tokenizer.eos_token or ""
    return PLAIN_PROMPT.format(prompt=prompt) + " " + response + eos


OVERLONG = ("truncate", "skip", "error")


@dataclass
class Encoded:
    sample_id: str
    input_ids: list[int]
    n_prompt: int  # tokens before the response
    truncated: int = 0  # tokens cut to fit max_length (overlong=truncate)


def encode_record(tokenizer, rec: Record, max_length: int, overlong: str = "error") -> Encoded:
    """Tokenise one record; one longer than `max_length` tokens is truncated (overlong="truncate") or
    raises ContextLengthError (the caller skips it or stops)."""
    p_text = render_prompt(tokenizer, rec.prompt)
    full = render_conversation(tokenizer, rec.prompt, rec.response)
    p_ids = tokenizer(p_text, add_special_tokens=False)["input_ids"]
    if full.startswith(p_text):
        r_ids = tokenizer(full[len(p_text):], add_special_tokens=False)["input_ids"]
    else:  # a template that rewrites the prompt part: fall back to the response text + eos
        r_ids = tokenizer(" " + rec.response, add_special_tokens=False)["input_ids"]
        if tokenizer.eos_token_id is not None:
            r_ids = r_ids + [tokenizer.eos_token_id]
    ids = p_ids + r_ids
    if len(ids) > max_length and overlong == "truncate":
        n = len(ids)
        keep_p = max(1, max_length - len(r_ids))          # the prompt's last tokens (the generation prompt)
        p_ids, r_ids = p_ids[-keep_p:], r_ids[:max_length - keep_p]
        return Encoded(rec.sample_id, p_ids + r_ids, len(p_ids), truncated=n - len(p_ids) - len(r_ids))
    if len(ids) > max_length:
        raise ContextLengthError(
            f"sample {rec.sample_id}: {len(ids)} tokens (prompt {len(p_ids)}, response {len(r_ids)}) "
            f"exceed the context of {max_length} tokens; expected prompt + response <= {max_length}")
    return Encoded(rec.sample_id, ids, len(p_ids))


def encode_all(tokenizer, records: list[Record], max_length: int, strict: bool = False,
               source: str = "records", overlong: str | None = None) -> tuple[list[Encoded], list[str]]:
    """Encode many records -> (encoded, skipped ids). `overlong` (truncate | skip | error) says what
    happens to a record over max_length; None keeps the older switch: error when strict, else skip.
    The encoded list holds the kept records in input order; align by Encoded.sample_id."""
    overlong = overlong or ("error" if strict else "skip")
    if overlong not in OVERLONG:
        raise ValueError(f"data.overlong={overlong!r}; expected one of {', '.join(OVERLONG)}")
    out, skipped = [], []
    for r in records:
        try:
            out.append(encode_record(tokenizer, r, max_length, overlong))
        except ContextLengthError as e:
            if overlong == "error":
                raise ContextLengthError(f"{source}: {e} (overlong=truncate or skip to go on)") from None
            skipped.append(r.sample_id)
    if skipped:
        log.warning("skipped %d of %d records in %s: longer than the context of %d tokens (first: %s)",
                    len(skipped), len(records), source, max_length, skipped[0])
    return out, skipped


def overlong_counts(tokenizer, records: list[Record], max_length: int, overlong: str, source: str) -> dict:
    """{"n", "over", "truncated", "skipped"}: how many records of a pool exceed max_length and what
    became of them (overlong=error raises at the first, naming the pool)."""
    enc, skipped = encode_all(tokenizer, records, max_length, source=source, overlong=overlong)
    n_trunc = sum(e.truncated > 0 for e in enc)
    return {"n": len(records), "over": n_trunc + len(skipped), "truncated": n_trunc, "skipped": len(skipped)}


def collate(encoded: list[Encoded], pad_id: int, device=None) -> Batch:
    """Right-pad a list of encoded records into a Batch."""
    T = max(len(e.input_ids) for e in encoded)
    B = len(encoded)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    attn = torch.zeros((B, T), dtype=torch.long)
    labels = torch.full((B, T), -100, dtype=torch.long)
    for i, e in enumerate(encoded):
        n = len(e.input_ids)
        input_ids[i, :n] = torch.tensor(e.input_ids)
        attn[i, :n] = 1
        labels[i, e.n_prompt:n] = input_ids[i, e.n_prompt:n]
    n_target = (labels != -100).sum(dim=1)
    b = Batch(input_ids, attn, labels, [e.sample_id for e in encoded], n_target)
    return b.to(device) if device is not None else b


def pad_id_of(tokenizer) -> int:
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    if tokenizer.eos_token_id is not None:
        return tokenizer.eos_token_id
    return 0


def encode_batch(tokenizer, records: list[Record], max_length: int = 64, device=None) -> Batch:
    """Records -> one right-padded Batch (strict: a record longer than the context raises), for
    notebooks, tests and benchmarks that score a hand-picked set of records."""
    enc, _ = encode_all(tokenizer, records, max_length, strict=True)
    return collate(enc, pad_id_of(tokenizer), device)
