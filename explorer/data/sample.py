"""Where the tiny world's data lives, and a reader for the generator's own JSONL files.

User data goes through explorer/data/load.py (every format, strict checks). The generator's files
have a fixed schema, and eval prompts legitimately have no response, so they are read here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from explorer.data.records import Record

_FIELDS = ("sample_id", "pool", "family", "category", "prompt", "response", "provenance")


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def sample_data_dir() -> Path:
    """$EXPLORER_DATA, else the repository's sample_data/ (generated there if missing)."""
    env = os.environ.get("EXPLORER_DATA")
    d = Path(env) if env else repo_root() / "sample_data"
    if not (d / "MANIFEST.json").exists():
        from explorer.data.generate import write

        write(d)
    return d


def json_lines(path: Path, label: str, expected: str = "one object per line", error: type = ValueError):
    """(line number, object) for each non-blank line of a JSON Lines file; a line that is not JSON raises
    `error` naming `label`, the line and what was expected."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{label} line {n}: invalid JSON ({e.msg}); expected {expected}") from None


def read_sample_file(path: str | Path) -> list[Record]:
    path = Path(path)
    out = []
    for n, obj in json_lines(path, str(path)):
        missing = [k for k in _FIELDS if k not in obj]
        if missing:
            raise ValueError(f"{path} line {n}: missing field(s) {', '.join(missing)}; "
                             f"expected {', '.join(_FIELDS)}")
        extra = {k: v for k, v in obj.items() if k not in _FIELDS}
        out.append(Record(**{k: obj[k] for k in _FIELDS}, extra=extra))
    return out
