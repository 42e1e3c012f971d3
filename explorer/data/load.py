"""Loading user data: JSON, JSONL, CSV, Parquet or a `datasets` folder -> list[Record].

Field conventions (the DualSelect authors' code, ALGORITHMS.md §1):
  prompt   `instruction` (+ `input`, joined as "instruction\\n\\ninput"), `prompt`, `question`, `query`,
           or `messages` (a list of {role, content}: user turns joined with "\\n\\n" form the prompt, the
           last assistant turn is the response)
  response `output`, `response`, `completion`, `answer`, or `chosen` (a string, a messages list, or
           an HH-RLHF transcript "\\n\\nHuman: ...\\n\\nAssistant: ..." — then, without another prompt
           field, the prompt is the last Human turn and the response the last Assistant turn)
  native   `sample_id` (or `id`), `pool`, `family`, `category`, `provenance` (benign | harmful)
Every other field is kept in Record.extra. Default ids are "<file stem>-<index:05d>" (stable by position).

Errors name the file, the line (JSONL, 1-based) or record (0-based index in other formats), the field
and what was expected. With strict=False, per-record problems are skipped, counted and summarised in
one warning; file-level problems (missing, empty, unknown format) always raise.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from explorer.data.records import PROVENANCES, Record

log = logging.getLogger(__name__)

PROMPT_FIELDS = ("instruction", "prompt", "question", "query", "messages")
RESPONSE_FIELDS = ("output", "response", "completion", "answer", "chosen")
NATIVE = ("sample_id", "id", "pool", "family", "category", "provenance")
FORMATS = (".json", ".jsonl", ".csv", ".parquet", "a datasets folder (save_to_disk)")
_HH = re.compile(r"\n\n(Human|Assistant):\s?")


class DataError(ValueError):
    """Bad input; the message names the file, line/record, field and what was expected."""


def _where(path: Path, idx: int, is_lines: bool) -> str:
    return f"{path.name} line {idx}" if is_lines else f"{path.name} record {idx}"


def _iter_raw(path: Path, split: str | None) -> Iterator[tuple[int, Any, bool]]:
    """Yield (line number or record index, object or an Exception, is_lines)."""
    if path.is_dir():
        import datasets

        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as e:
            raise DataError(f"{path}: not a datasets folder written by save_to_disk ({e}); expected one of "
                            f"{', '.join(FORMATS)}") from None
        if isinstance(ds, datasets.DatasetDict):
            key = split or ("train" if "train" in ds else next(iter(ds)))
            if key not in ds:
                raise DataError(f"{path}: no split {key!r}; expected one of {', '.join(ds)}")
            ds = ds[key]
        for i, row in enumerate(ds):
            yield i, row, False
        return
    suf = path.suffix.lower()
    if suf == ".jsonl":
        with open(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield n, DataError(f"{path.name} line {n}: not UTF-8 (byte 0x{raw[e.start]:02x} at offset "
                                       f"{e.start}); expected UTF-8 text"), True
                    continue
                if not text.strip():
                    continue
                try:
                    yield n, json.loads(text), True
                except json.JSONDecodeError as e:
                    yield n, DataError(f"{path.name} line {n}: invalid JSON ({e.msg} at column {e.colno}); "
                                       "expected one JSON object per line"), True
        return
    if suf == ".json":
        try:
            obj = json.loads(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as e:
            raise DataError(f"{path.name}: not UTF-8 (offset {e.start}); expected UTF-8 JSON") from None
        except json.JSONDecodeError as e:
            raise DataError(f"{path.name} line {e.lineno}: invalid JSON ({e.msg}); expected a list of "
                            "objects") from None
        if isinstance(obj, dict):
            for key in ("data", "train", "records"):
                if isinstance(obj.get(key), list):
                    obj = obj[key]
                    break
        if not isinstance(obj, list):
            raise DataError(f"{path.name}: expected a JSON list of objects (or one under data/train/records)")
        for i, row in enumerate(obj):
            yield i, row, False
        return
    if suf in (".csv", ".parquet"):
        import pandas as pd

        try:
            df = (pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8") if suf == ".csv"
                  else pd.read_parquet(path))
        except UnicodeDecodeError as e:
            raise DataError(f"{path.name}: not UTF-8 (offset {e.start}); expected UTF-8 CSV") from None
        except Exception as e:
            raise DataError(f"{path.name}: unreadable {suf[1:].upper()} ({type(e).__name__}: {e})") from None
        for i, row in enumerate(df.to_dict(orient="records")):
            yield i, row, False
        return
    raise DataError(f"{path}: unknown format {suf or '(no suffix)'!r}; expected one of {', '.join(FORMATS)}")


def _text(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v if isinstance(v, str) else None


def _messages(v: Any) -> tuple[str | None, str | None]:
    if hasattr(v, "tolist"):
        v = v.tolist()
    if not isinstance(v, list) or not all(isinstance(m, dict) for m in v):
        return None, None
    users = [m.get("content", "") for m in v if m.get("role") in ("user", "human")]
    assistants = [m.get("content", "") for m in v if m.get("role") in ("assistant", "gpt")]
    return ("\n\n".join(users) if users else None), (assistants[-1] if assistants else None)


def _hh_transcript(text: str) -> tuple[str | None, str | None]:
    parts = _HH.split("\n\n" + text.lstrip("\n")) if "Human:" in text else []
    turns = [(parts[i], parts[i + 1].strip()) for i in range(1, len(parts) - 1, 2)]
    humans = [t for r, t in turns if r == "Human"]
    assistants = [t for r, t in turns if r == "Assistant"]
    return (humans[-1] if humans else None), (assistants[-1] if assistants else None)


def parse_record(obj: Any, where: str, default_id: str, pool: str, family: str | None,
                 provenance: str | None) -> Record:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object with prompt and response fields, got {type(obj).__name__}")
    prompt = response = None
    if _text(obj.get("instruction")) is not None:
        prompt = obj["instruction"]
        if _text(obj.get("input")):
            prompt = f"{prompt}\n\n{obj['input']}"
    for k in ("prompt", "question", "query"):
        if prompt is None and _text(obj.get(k)) is not None:
            prompt = obj[k]
    msg_prompt, msg_response = _messages(obj.get("messages")) if "messages" in obj else (None, None)
    if prompt is None:
        prompt = msg_prompt
    for k in ("output", "response", "completion", "answer"):
        if response is None and _text(obj.get(k)) is not None:
            response = obj[k]
    if response is None and "chosen" in obj:
        ch = obj["chosen"]
        if isinstance(ch, str) and "Human:" in ch and "Assistant:" in ch:
            hp, hr = _hh_transcript(ch)
            response = hr
            if prompt is None:
                prompt = hp
        elif isinstance(ch, str):
            response = ch
        else:
            mp, mr = _messages(ch)
            response = mr
            if prompt is None:
                prompt = mp
    if response is None:
        response = msg_response
    if prompt is None:
        raise DataError(f"{where}: no prompt field; expected one of {', '.join(PROMPT_FIELDS)}")
    if response is None:
        raise DataError(f"{where}: no response field; expected one of {', '.join(RESPONSE_FIELDS)}")
    if not str(prompt).strip():
        raise DataError(f"{where}: empty prompt; expected non-empty text")
    if not str(response).strip():
        raise DataError(f"{where}: empty response; expected non-empty text")
    sid = obj.get("sample_id", obj.get("id"))
    sid = str(sid) if sid is not None and str(sid).strip() else default_id
    prov = obj.get("provenance") or provenance or "benign"
    if prov not in PROVENANCES:
        raise DataError(f"{where}: provenance {prov!r}; expected benign or harmful")
    used = set(PROMPT_FIELDS) | set(RESPONSE_FIELDS) | set(NATIVE) | {"input"}
    extra = {k: v for k, v in obj.items() if k not in used}
    return Record(sid, str(obj.get("pool") or pool), str(obj.get("family") or family or pool),
                  str(obj.get("category") or ""), str(prompt), str(response), prov, extra)


def load_records(path: str | Path, pool: str, *, family: str | None = None, provenance: str | None = None,
                 strict: bool = True, id_prefix: str | None = None, split: str | None = None,
                 logger: logging.Logger | None = None) -> list[Record]:
    """Read a data file into records. See the module docstring for formats and conventions."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; expected one of {', '.join(FORMATS)}")
    prefix = id_prefix or path.stem
    out: list[Record] = []
    seen: dict[str, str] = {}
    skipped: Counter = Counter()
    total = 0
    for idx, obj, is_lines in _iter_raw(path, split):
        total += 1
        where = _where(path, idx, is_lines)
        try:
            if isinstance(obj, Exception):
                raise obj
            rec = parse_record(obj, where, f"{prefix}-{(idx - 1 if is_lines else idx):05d}", pool, family, provenance)
            if rec.sample_id in seen:
                raise DataError(f"{where}: duplicate sample_id {rec.sample_id!r} (first at {seen[rec.sample_id]}); "
                                "expected unique ids")
            seen[rec.sample_id] = where
            out.append(rec)
        except DataError as e:
            if strict:
                raise
            reason = str(e).split(": ", 1)[1].split(";")[0].split(" (")[0]
            skipped[reason] += 1
    if total == 0:
        raise DataError(f"{path}: empty (no records); expected at least one record")
    if skipped:
        (logger or log).warning("skipped %d of %d records in %s: %s", sum(skipped.values()), total, path.name,
                                ", ".join(f"{n} {r}" for r, n in skipped.most_common()))
    if not out:
        raise DataError(f"{path}: all {total} records were invalid; expected at least one valid record")
    return out
