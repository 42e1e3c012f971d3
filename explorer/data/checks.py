"""Checks across loaded pools and of run settings: a reference pool must not overlap the evaluation
prompts, ids are unique, the harmful ratio is a share."""

from __future__ import annotations

import math
import numbers
from typing import Any

from explorer.data.load import DataError
from explorer.data.records import Record

_FIRST = 5  # how many overlapping / duplicate ids a message lists


def normalise(text: str) -> str:
    """Case-folded, whitespace-collapsed text: "How do I  X?" and "how do i x?" are the same prompt."""
    return " ".join(text.casefold().split())


def check_disjoint(a: list[Record], b: list[Record], what_a: str, what_b: str, key: str = "prompt") -> None:
    """Raise DataError when records of `a` share a `key` text (after normalise) with records of `b`.

    The message says how many records of `a` overlap and lists the first few as "a_id = b_id".
    Used for a reference pool that overlaps the evaluation prompts: evaluation must measure held-out
    behaviour, and references are optimised against directly.
    """
    if key not in ("prompt", "response"):
        raise ValueError(f"check_disjoint: key={key!r}; expected 'prompt' or 'response'")
    index: dict[str, str] = {}
    for r in b:
        index.setdefault(normalise(getattr(r, key)), r.sample_id)
    hits = [(r.sample_id, index[n]) for r in a if (n := normalise(getattr(r, key))) in index]
    if hits:
        first = ", ".join(f"{x} = {y}" for x, y in hits[:_FIRST])
        more = f" and {len(hits) - _FIRST} more" if len(hits) > _FIRST else ""
        raise DataError(f"the {what_a} shares {len(hits)} {key}(s) with the {what_b} (first: {first}{more}; compared "
                        f"after case and whitespace normalisation); expected them disjoint so that evaluation "
                        "measures held-out behaviour", "overlap")


def check_unique_ids(records: list[Record], source: str) -> None:
    """Raise DataError naming both positions (0-based record indices in `source`) of a repeated id."""
    seen: dict[str, int] = {}
    for i, r in enumerate(records):
        if r.sample_id in seen:
            raise DataError(f"{source} record {i}: duplicate sample_id {r.sample_id!r} (first at record "
                            f"{seen[r.sample_id]}); expected unique ids", "duplicate sample_id")
        seen[r.sample_id] = i


def check_harmful_ratio(p: Any) -> float:
    """p as a float when it is a number in [0, 1]; ValueError naming harmful_ratio otherwise."""
    is_number = isinstance(p, numbers.Real) and not isinstance(p, bool)  # numpy numbers count
    if not is_number or math.isnan(p) or not 0.0 <= p <= 1.0:
        shown = f"{p!r}" if is_number else f"{p!r} ({type(p).__name__})"
        raise ValueError(f"harmful_ratio = {shown}; expected a number in the range [0, 1] (the share of harmful "
                         "samples in the fine-tuning mix)")
    return float(p)
