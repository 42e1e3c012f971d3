"""The record: one prompt/response pair with a stable id, its pool, family/category and provenance."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PROVENANCES = ("benign", "harmful", "unknown")
#: provenance of a sample nobody labelled (a user's pre-mixed task file without a provenance source):
#: counted neither as benign nor as harmful; shares and drop recall over it are "unknown", never 0.
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Record:
    """One sample.

    sample_id:  stable id, unique across all pools of a data set (e.g. "task-sentiment-00012").
    pool:       which pool it belongs to (task, harmful, reference, safety, world, eval_harmful_hh ...).
    family:     task family for task samples (sentiment, topic, arithmetic, comparison); "harmful" for
                harmful requests; "safety" for references; the suite for eval prompts.
    category:   finer label: the HEx-PHI-style category for harmful prompts, the label for tasks.
    prompt:     the user turn.
    response:   the assistant turn the sample supervises (for eval prompts: the expected answer,
                or "" where there is none).
    provenance: "benign", "harmful" or "unknown" (not labelled) — for analysis only; no method may read it.
    extra:      any further fields of the source record (kept, not interpreted).
    """

    sample_id: str
    pool: str
    family: str
    category: str
    prompt: str
    response: str
    provenance: str = "benign"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row.pop("extra")
        return row
