"""Cross-pool checks: a reference pool must not overlap the evaluation prompts; ids are unique."""

from __future__ import annotations

from explorer.data.load import DataError
from explorer.data.records import Record


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def check_disjoint(a: list[Record], b: list[Record], what_a: str, what_b: str, key: str = "prompt") -> None:
    """Raise DataError when records of `a` share a prompt (whitespace/case-normalised) with `b`."""
    index = {_norm(getattr(r, key)): r.sample_id for r in b}
    hits = [(r.sample_id, index[_norm(getattr(r, key))]) for r in a if _norm(getattr(r, key)) in index]
    if hits:
        first = ", ".join(f"{x} = {y}" for x, y in hits[:3])
        raise DataError(f"the {what_a} shares {len(hits)} {key}(s) with the {what_b} (first: {first}); "
                        f"expected them disjoint so that evaluation measures held-out behaviour")


def check_unique_ids(records: list[Record], source: str) -> None:
    seen: dict[str, int] = {}
    for i, r in enumerate(records):
        if r.sample_id in seen:
            raise DataError(f"{source} record {i}: duplicate sample_id {r.sample_id!r} (first at record "
                            f"{seen[r.sample_id]}); expected unique ids")
        seen[r.sample_id] = i
