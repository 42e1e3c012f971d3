"""Loading user data: JSON, JSONL, CSV, Parquet or a `datasets` folder -> list[Record].

Formats (detected from the suffix, case-insensitive, or from a folder's contents):
  .json            a list of objects, or an object holding the list under "train", "data", "examples"
                   (the authors' keys) or "records"; `split=` picks another key
  .jsonl / .ndjson one object per line; blank lines are ignored
  .csv             a header row, then one record per row (every value is text; `messages` may be a
                   JSON string)
  .parquet         one record per row
  a folder         written by `datasets` `save_to_disk`: a Dataset, or a DatasetDict (the "train"
                   split unless `split=` names another)

Field conventions (the DualSelect authors' code, experiments/dualselect/train_dualselect.py,
`example_prompt_response`; ALGORITHMS.md §1). A field "has text" when its value is a string (or a
number, written with str()) that is not empty or whitespace-only; an empty field is passed over,
as in the authors' `first_existing`, and only when every candidate field is empty is that an error.
Texts are kept exactly as written (the authors strip them; we do not, so that texts round-trip).
  messages  a list of {role, content} (or ShareGPT {from, value}) objects. When present it is read
            first, as in the authors' code: the last assistant turn is the response; the user turns
            before it (all of them when there is none; then the response comes from the fields
            below), joined with "\\n", are the prompt; system turns are kept in extra["system"].
            (The authors write non-assistant turns as "role: content" lines; we keep only the
            contents, because the tokenizer's chat template adds the roles.)
  prompt    else the first of `instruction`, `prompt`, `question`, `query`, `goal` (AdvBench) that has text.
            An `input` with text is appended exactly as  prompt + "\\n" + input  (the authors' join),
            unless it equals the prompt (after stripping); with no prompt field, `input` alone is the
            prompt. `input` is not applied to a messages prompt.
  response  else the first of `output`, `response`, `completion`, `answer`, `chosen` that has text.
            `chosen` may also be an HH-RLHF transcript ("\\n\\nHuman: ...\\n\\nAssistant: ...": the
            response is the last Assistant turn and, when no other field gives a prompt, the prompt
            is the last Human turn before it; turns are stripped) or a messages list (read as above).
  native    `sample_id` (else `id`; `id_field=` names another field, "none" ignores both), `pool`,
            `family`, `category`, `provenance` (benign | harmful | unknown) override the arguments.
            `provenance_field=NAME` reads the provenance from another field: harmful / true / yes /
            1 mark a harmful record, benign / safe / false / no / 0 a benign one; blank = the default. The defaults: pool = the `pool` argument, family = `family`
            argument or the pool, category = "", provenance = `provenance` argument or "benign".
            A null or blank native field counts as not given.
  extra     every field not consumed above is kept in Record.extra (null values are dropped: a
            Parquet or datasets row has every column of the file, null where a record lacks it).

Ids: the default sample_id is f"{id_prefix or file stem}-{index:05d}", where index is the record's
0-based position in the file (blank JSONL lines do not count; skipped records do), so ids are stable
by position and the same records give the same ids in every format. When the id field is not unique
(public sets where every record says "id": "user"), every record of the file gets a content-hash id
f"{prefix}-{sha1(prompt, response)[:10]}" (a repeat of identical content adds "-2", "-3" ...) and one
warning says how many records shared an id. A field id equal to another record's positional id is
still a duplicate (an error, or a skip with strict=False): the file mixes two id schemes.

Plain strings: with require_response=False (evaluation prompts), a JSON list of strings (or one
string per JSONL line) is a list of prompts.

Errors (DataError, a ValueError) name the file, the place — "line N" (1-based) for JSONL, "record N"
(0-based, the same N as the default id; CSV adds the line) for the other formats — the field, and
what was expected. With strict=False, problems of one record (unreadable line, not UTF-8, not an
object, missing or empty field, wrong type, bad provenance, duplicate id) skip that record and are
counted in one warning; problems of the file (missing, empty, unknown format, unreadable as a whole,
non-UTF-8 bytes in a JSON or CSV file, no valid record at all) always raise.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

from explorer.data.records import PROVENANCES, Record

PROMPT_FIELDS = ("instruction", "prompt", "question", "query", "goal", "messages")  # goal: AdvBench's CSV
RESPONSE_FIELDS = ("output", "response", "completion", "answer", "chosen")
ID_FIELDS = ("sample_id", "id")
JSON_LIST_KEYS = ("train", "data", "examples", "records")
SUFFIXES = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
SUPPORTED = ".json, .jsonl, .ndjson, .csv, .parquet, or a folder written by datasets' save_to_disk"
_USER_ROLES = ("user", "human")
_ASSISTANT_ROLES = ("assistant", "gpt")
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


class DataError(ValueError):
    """Bad input. The message names the file, the line or record, the field and what was expected.

    `reason` is a short category ("missing response", "invalid JSON" ...) used to count skips.
    """

    def __init__(self, message: str, reason: str = "invalid data"):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class _Place:
    name: str   # the file's name ("data.csv"; "folder[train]" for a DatasetDict split)
    at: str     # "line 7" (JSONL) / "record 3" / "record 3 (line 5)" (CSV)
    index: int  # 0-based position among the file's records: the default id

    @property
    def label(self) -> str:  # the start of every message about this record
        return f"{self.name} {self.at}"


# -- reading files -------------------------------------------------------------------------------


def _decode(data: bytes, name: str, what: str) -> str:
    """UTF-8 text of a whole file (a leading BOM dropped); bad bytes name their line and offset."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1)
        raise DataError(f"{name} line {line}: not UTF-8 (byte 0x{data[e.start]:02x} at byte {col} of the "
                        f"line, byte {e.start} of the file); expected UTF-8 {what}", "not UTF-8") from None
    return text[1:] if text.startswith("\ufeff") else text


def _iter_jsonl(path: Path) -> Iterator[tuple[_Place, Any]]:
    index = 0
    offset = 0
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            start, offset = offset, offset + len(raw)
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            place = _Place(path.name, f"line {n}", index)
            index += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield place, DataError(f"{place.label}: not UTF-8 (byte 0x{raw[e.start]:02x} at byte {e.start} "
                                       f"of the line, byte {start + e.start} of the file); expected UTF-8 "
                                       "text", "not UTF-8")
                continue
            try:
                yield place, json.loads(text)
            except json.JSONDecodeError as e:
                yield place, DataError(f"{place.label}: invalid JSON ({e.msg} at column {e.colno}); expected "
                                       "one JSON object per line", "invalid JSON")


def _pick_list(obj: Any, path: Path, split: str | None) -> list:
    if isinstance(obj, list) and split is None:
        return obj
    if isinstance(obj, dict):
        keys = (split,) if split is not None else JSON_LIST_KEYS
        for key in keys:
            if isinstance(obj.get(key), list):
                return obj[key]
        lists = [k for k, v in obj.items() if isinstance(v, list)]
        want = f"a list under {split!r}" if split is not None else "a list under " + ", ".join(JSON_LIST_KEYS)
        raise DataError(f"{path.name}: top-level object has {'lists under ' + ', '.join(lists) if lists else 'no list'}"
                        f"; expected a JSON list of objects or an object with {want}", "not a list")
    if split is not None:
        raise DataError(f"{path.name}: split={split!r} given but the file holds a {type(obj).__name__}; expected an "
                        f"object with a list under {split!r}", "not a list")
    raise DataError(f"{path.name}: top level is a {type(obj).__name__}; expected a JSON list of objects (or an "
                    f"object with the list under {', '.join(JSON_LIST_KEYS)})", "not a list")


def _iter_json(path: Path, split: str | None) -> Iterator[tuple[_Place, Any]]:
    text = _decode(path.read_bytes(), path.name, "JSON")
    if not text.strip():
        return
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        hint = " (several values: is this JSON Lines? then name it .jsonl)" if e.msg == "Extra data" else ""
        raise DataError(f"{path.name} line {e.lineno}: invalid JSON ({e.msg} at column {e.colno}){hint}; expected "
                        "a JSON list of objects", "invalid JSON") from None
    for i, row in enumerate(_pick_list(obj, path, split)):
        yield _Place(path.name, f"record {i}", i), row


def _iter_csv(path: Path) -> Iterator[tuple[_Place, Any]]:
    text = _decode(path.read_bytes(), path.name, "CSV")
    # Long responses exceed csv's default 128 KiB field limit; raising it only widens what parses.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    # strict: a broken quote is an error at its line, not a field that swallows the rest of the file
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    index = 0
    last_line = 0
    try:
        for row in reader:
            first_line, last_line = last_line + 1, reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # a blank line
            if header is None:
                header = row
                dup = [c for c, n in Counter(header).items() if n > 1]
                if dup:
                    raise DataError(f"{path.name} line {first_line}: header repeats column {dup[0]!r}; expected "
                                    "unique column names", "bad header")
                continue
            place = _Place(path.name, f"record {index} (line {first_line})", index)
            index += 1
            if len(row) != len(header):
                yield place, DataError(f"{place.label}: {len(row)} values; expected {len(header)} as in the header "
                                       f"({', '.join(header)})", "wrong column count")
                continue
            yield place, dict(zip(header, row))
    except csv.Error as e:
        raise DataError(f"{path.name} line {reader.line_num}: unreadable CSV ({e}); expected comma-separated "
                        "values with a header row", "invalid CSV") from None


def _iter_parquet(path: Path) -> Iterator[tuple[_Place, Any]]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path.name}: unreadable Parquet ({type(e).__name__}: {e}); expected a Parquet file",
                        "invalid Parquet") from None
    for i, row in enumerate(rows):
        # pandas stores a non-default index as a column; it is not a field of the record
        yield _Place(path.name, f"record {i}", i), {k: v for k, v in row.items() if not k.startswith("__index_level_")}


def _iter_datasets(path: Path, split: str | None) -> Iterator[tuple[_Place, Any]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:
        raise DataError(f"{path}: unreadable datasets folder ({type(e).__name__}: {e}); expected a folder written "
                        "by save_to_disk", "invalid datasets folder") from None
    label = path.name
    if isinstance(ds, datasets.DatasetDict):
        key = split or "train"
        if key not in ds:
            raise DataError(f"{path.name}: no split {key!r}; expected one of {', '.join(ds)} (pass split=...)",
                            "no such split")
        ds, label = ds[key], f"{path.name}[{key}]"
    elif split is not None:
        raise DataError(f"{path.name}: split={split!r} given but the folder holds one Dataset, not a DatasetDict; "
                        "expected no split", "no such split")
    for i, row in enumerate(ds.to_list()):
        yield _Place(label, f"record {i}", i), row


def detect_format(path: Path) -> str:
    """"json", "jsonl", "csv", "parquet" or "datasets"; DataError listing the supported ones otherwise."""
    if path.is_dir():
        if any((path / f).is_file() for f in ("dataset_dict.json", "state.json", "dataset_info.json")):
            return "datasets"
        raise DataError(f"{path}: a folder without dataset_dict.json or state.json; expected one of {SUPPORTED}",
                        "unknown format")
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown format {path.suffix or '(no suffix)'!r}; expected one of {SUPPORTED}",
                        "unknown format")
    return fmt


def _iter_raw(path: Path, fmt: str, split: str | None) -> Iterator[tuple[_Place, Any]]:
    if split is not None and fmt not in ("json", "datasets"):
        raise DataError(f"{path.name}: split={split!r} given; expected splits only for a .json object or a "
                        "DatasetDict folder", "no such split")
    if fmt == "jsonl":
        return _iter_jsonl(path)
    if fmt == "json":
        return _iter_json(path, split)
    if fmt == "csv":
        return _iter_csv(path)
    if fmt == "parquet":
        return _iter_parquet(path)
    return _iter_datasets(path, split)


# -- reading one record --------------------------------------------------------------------------


def _text(obj: dict, key: str, where: str) -> str | None:
    """The field's text, None when absent/null/NaN; DataError for a value that is not text."""
    v = obj.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)  # the authors write str(value); "answer": 4 is a common form
    raise DataError(f"{where}: field {key!r} is a {type(v).__name__}; expected text", "wrong type")


def _first_with_text(obj: dict, keys: tuple[str, ...], where: str) -> tuple[str | None, str | None, list[str]]:
    """(field, text) of the first key with non-blank text, and the keys present but blank."""
    blank = []
    for k in keys:
        t = _text(obj, k, where)
        if t is None:
            continue
        if t.strip():
            return k, t, blank
        blank.append(k)
    return None, None, blank


def _messages(v: Any, key: str, where: str) -> tuple[str | None, str | None, str | None]:
    """(prompt, response, system) of a {role, content} list; see the module docstring."""
    if isinstance(v, str):  # CSV cells and some exports hold the list as JSON text
        try:
            v = json.loads(v)
        except json.JSONDecodeError:
            raise DataError(f"{where}: field {key!r} is text that is not JSON; expected a list of {{role, content}} "
                            "objects", "bad messages") from None
    if not isinstance(v, list):
        raise DataError(f"{where}: field {key!r} is a {type(v).__name__}; expected a list of {{role, content}} "
                        "objects", "bad messages")
    turns = []
    for j, m in enumerate(v):
        role = m.get("role", m.get("from")) if isinstance(m, dict) else None
        content = m.get("content", m.get("value")) if isinstance(m, dict) else None
        if not isinstance(role, str) or not isinstance(content, str):
            raise DataError(f"{where}: field {key!r} item {j} is {json.dumps(m, default=str)[:80]}; expected an "
                            "object with text 'role' and 'content'", "bad messages")
        role = role.lower()
        if role not in _USER_ROLES + _ASSISTANT_ROLES + ("system",):
            raise DataError(f"{where}: field {key!r} item {j} has role {role!r}; expected user, assistant or "
                            "system", "bad messages")
        turns.append((role, content))
    last_a = max((j for j, (r, _) in enumerate(turns) if r in _ASSISTANT_ROLES), default=None)
    before = turns if last_a is None else turns[:last_a]
    users = [c for r, c in before if r in _USER_ROLES]
    system = [c for r, c in turns if r == "system"]
    return ("\n".join(users) if users else None, None if last_a is None else turns[last_a][1],
            "\n".join(system) if system else None)


def _hh_transcript(text: str) -> tuple[str | None, str | None] | None:
    """(last Human turn before the last Assistant turn, last Assistant turn), or None if not a transcript."""
    body = text.lstrip("\n ")
    if not body.startswith("Human:") or "\n\nAssistant:" not in text:
        return None
    parts = _HH_TURN.split("\n\n" + body)  # ["", role, text, role, text, ...]
    turns = [(parts[i], parts[i + 1].strip()) for i in range(1, len(parts) - 1, 2)]
    last_a = max(j for j, (r, _) in enumerate(turns) if r == "Assistant")
    humans = [t for r, t in turns[:last_a] if r == "Human"]
    return (humans[-1] if humans else None), turns[last_a][1]


_TRUE = ("harmful", "true", "yes", "1", "1.0")
_FALSE = ("benign", "safe", "false", "no", "0", "0.0")


def _provenance_value(obj: dict, key: str, where: str) -> str | None:
    """harmful / benign from a user's label field (text, bool or number); None when blank."""
    v = obj.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip()):
        return None
    t = str(v).strip().casefold()
    if t in _TRUE:
        return "harmful"
    if t in _FALSE:
        return "benign"
    if t == "unknown":
        return "unknown"
    raise DataError(f"{where}: field {key!r} (provenance_field) is {v!r}; expected harmful/benign, true/false, yes/no "
                    "or 1/0", "bad provenance")


def parse_record(obj: Any, where: str, default_id: str, pool: str, family: str | None = None,
                 provenance: str | None = None, require_response: bool = True, id_field: str | None = None,
                 provenance_field: str | None = None) -> Record:
    """One source object -> Record, by the conventions of the module docstring.

    `where` starts every error message ("data.jsonl line 7"). require_response=False accepts a
    record without a response (evaluation prompts): its response is "".
    """
    if isinstance(obj, str) and not require_response:
        obj = {"prompt": obj}  # a list of prompts (AdvBench-style evaluation files)
    if not isinstance(obj, dict):
        raise DataError(f"{where}: a JSON {type(obj).__name__}, not an object; expected an object with a prompt "
                        "field and a response field", "not an object")
    consumed: set[str] = set()
    extra: dict[str, Any] = {}
    prompt = response = None
    blank_p: list[str] = []
    blank_r: list[str] = []

    if obj.get("messages") is not None:
        prompt, response, system = _messages(obj["messages"], "messages", where)
        consumed.add("messages")
        if system is not None:
            extra["system"] = system
        if prompt is not None and not prompt.strip():
            prompt, blank_p = None, ["messages"]
        if response is not None and not response.strip():
            response, blank_r = None, ["messages"]

    if prompt is None:
        key, prompt, blank = _first_with_text(obj, PROMPT_FIELDS[:-1], where)
        blank_p += blank
        if key is not None:
            consumed.add(key)
        inp = _text(obj, "input", where)
        if inp is not None and inp.strip():
            consumed.add("input")
            if prompt is None:
                prompt = inp
            elif inp.strip() != prompt.strip():
                prompt = prompt + "\n" + inp  # the authors' join

    if response is None:
        key, response, blank = _first_with_text(obj, RESPONSE_FIELDS[:-1], where)
        blank_r += blank
        if key is not None:
            consumed.add(key)
    if response is None and obj.get("chosen") is not None:
        ch = obj["chosen"]
        consumed.add("chosen")
        if isinstance(ch, (list, tuple)):
            mp, response, _ = _messages(list(ch), "chosen", where)
        else:
            text = _text(obj, "chosen", where)
            hh = _hh_transcript(text)
            mp, response = hh if hh is not None else (None, text)
        if prompt is None and mp is not None and mp.strip():
            prompt = mp
        if response is not None and not response.strip():
            response, blank_r = None, blank_r + ["chosen"]

    if prompt is None:
        if blank_p:
            raise DataError(f"{where}: empty prompt in field {', '.join(map(repr, blank_p))}; expected non-empty "
                            "text", "empty prompt")
        raise DataError(f"{where}: no prompt field; expected one of {', '.join(PROMPT_FIELDS)} (or input)",
                        "missing prompt")
    if response is None and not require_response:
        response = ""
        consumed.update(k for k in RESPONSE_FIELDS if k in obj)
    if response is None:
        if blank_r:
            raise DataError(f"{where}: empty response in field {', '.join(map(repr, blank_r))}; expected non-empty "
                            "text", "empty response")
        raise DataError(f"{where}: no response field; expected one of {', '.join(RESPONSE_FIELDS)}",
                        "missing response")

    # Native fields are consumed whenever present; a null or blank one (a CSV's empty cell, a Parquet
    # null where another row has the column) means "not given" and the default applies.
    id_keys = () if id_field == "none" else (id_field,) if id_field else ID_FIELDS
    natives = {k: _text(obj, k, where) for k in id_keys + ("pool", "family", "category", "provenance")}
    natives = {k: v for k, v in natives.items() if v is not None and v.strip()}
    consumed.update(k for k in id_keys + ("pool", "family", "category", "provenance", "input") if k in obj)
    sid = next((natives[k] for k in id_keys if k in natives), None)
    if id_keys == ID_FIELDS and "sample_id" in natives and "id" in natives:
        consumed.discard("id")  # both given: sample_id is the id, `id` stays a field of the source
    prov = natives.get("provenance", provenance or "benign")
    if provenance_field:
        consumed.add(provenance_field)
        prov = _provenance_value(obj, provenance_field, where) or prov
    if prov not in PROVENANCES:
        raise DataError(f"{where}: field 'provenance' is {prov!r}; expected benign or harmful (or unknown)",
                        "bad provenance")
    extra.update({k: v for k, v in obj.items() if k not in consumed and v is not None})
    return Record(sample_id=sid if sid is not None else default_id, pool=natives.get("pool", pool),
                  family=natives.get("family", family or pool), category=natives.get("category", ""),
                  prompt=prompt, response=response, provenance=prov, extra=extra)


# -- the loader ----------------------------------------------------------------------------------


def content_id(prefix: str, rec: Record) -> str:
    """A stable id from the record's content: f"{prefix}-{sha1(prompt NUL response)[:10]}"."""
    return f"{prefix}-{hashlib.sha1((rec.prompt + chr(0) + rec.response).encode('utf-8')).hexdigest()[:10]}"


def load_records(path: str | Path, pool: str, *, family: str | None = None, provenance: str | None = None,
                 strict: bool = True, id_prefix: str | None = None, split: str | None = None,
                 require_response: bool = True, logger: logging.Logger | None = None,
                 id_field: str | None = None, provenance_field: str | None = None) -> list[Record]:
    """Read a data file or `datasets` folder into records (formats and conventions: module docstring).

    strict=True raises DataError at the first bad record; strict=False skips bad records, counts
    them by reason and logs one warning ("skipped N of M records in FILE: k missing response, ...")
    on `logger` (default: this module's logger). File-level problems raise either way.
    require_response=False reads prompt-only files (evaluation prompts): a missing or empty response
    becomes "". id_field: the field holding the id (None: sample_id, else id; "none": positions
    only); a non-unique id field gives content-hash ids and one warning. provenance_field: the field
    saying whether a record is harmful (see the module docstring).
    """
    if provenance is not None and provenance not in PROVENANCES:
        raise DataError(f"argument provenance={provenance!r}; expected benign or harmful (or unknown)",
                        "bad provenance")
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; expected a data file ({SUPPORTED})", "missing file")
    fmt = detect_format(path)
    prefix = id_prefix or path.stem
    log = logger or logging.getLogger(__name__)
    id_keys = () if id_field == "none" else (id_field,) if id_field else ID_FIELDS
    parsed: list[tuple[_Place, Record, bool]] = []   # (place, record, id taken from the id field)
    skipped: Counter = Counter()
    first_problem = ""
    total = 0

    def bad(e: DataError) -> None:
        nonlocal first_problem
        if strict:
            raise e
        skipped[e.reason] += 1
        first_problem = first_problem or str(e)

    for place, obj in _iter_raw(path, fmt, split):
        total += 1
        try:
            if isinstance(obj, DataError):
                raise obj
            rec = parse_record(obj, place.label, f"{prefix}-{place.index:05d}", pool, family, provenance,
                               require_response, id_field, provenance_field)
        except DataError as e:
            bad(e)
            continue
        from_field = isinstance(obj, dict) and any(
            isinstance(obj.get(k), (str, int, float)) and not isinstance(obj.get(k), bool)
            and str(obj.get(k)).strip() for k in id_keys)
        parsed.append((place, rec, from_field))
    if total == 0:
        raise DataError(f"{path.name}: empty (0 records); expected at least one record", "empty file")

    # a non-unique id field (every record "id": "user") says nothing about identity: use the content
    field_ids = Counter(r.sample_id for _, r, f in parsed if f)
    n_shared = sum(n for n in field_ids.values() if n > 1)
    if n_shared:
        seen_c: Counter = Counter()
        rehashed = []
        for place, r, _ in parsed:
            cid = content_id(prefix, r)
            seen_c[cid] += 1
            rehashed.append((place, replace(r, sample_id=cid if seen_c[cid] == 1 else f"{cid}-{seen_c[cid]}"), False))
        parsed = rehashed
        field = id_field if id_field else "/".join(ID_FIELDS)
        log.warning("%d of %d records in %s share an id in field %s (%d distinct values); using content-hash ids "
                    "(%s-<sha1 of prompt and response>) for every record of the file (id_field=none uses positions)",
                    n_shared, len(parsed), path.name, field, len([v for v, n in field_ids.items() if n > 1]), prefix)

    out: list[Record] = []
    seen: dict[str, str] = {}
    for place, rec, _ in parsed:
        if rec.sample_id in seen:  # a field id equal to a positional id: two id schemes in one file
            try:
                raise DataError(f"{place.label}: duplicate sample_id {rec.sample_id!r} (first at "
                                f"{seen[rec.sample_id]}); expected unique ids", "duplicate sample_id")
            except DataError as e:
                bad(e)
                continue
        seen[rec.sample_id] = place.at
        out.append(rec)
    summary = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0])))
    if not out:
        raise DataError(f"{path.name}: all {total} records are invalid ({summary}; first: {first_problem}); "
                        "expected at least one valid record", "no valid record")
    if skipped:
        log.warning("skipped %d of %d records in %s: %s (first: %s)", sum(skipped.values()), total, path.name,
                    summary, first_problem)
    return out
