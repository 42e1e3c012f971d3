"""Property-based tests (hypothesis) for the loaders: arbitrary texts round-trip through every file
format with stable ids, and a corrupted JSONL line is reported (or skipped) at exactly its line."""

import csv
import json
import logging
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.data.load import DataError, load_records

pytestmark = pytest.mark.unit

# Any text a user might have: unicode (no lone surrogates, which no UTF-8 file can hold), quotes,
# commas, newlines, carriage returns, tabs, NUL, leading/trailing blanks; never blank as a whole
# (a blank prompt or response is an error by design).
TRICKY = st.sampled_from(['"', "'", ",", "\n", "\r", "\r\n", "\t", "\x00", " ", "\u2028", "\ufeff", "é", "✓",
                          "😀", "\\", "Human:", "\n\nAssistant:", "[", "{", "null", "NaN", "1e5"])
TEXT = st.lists(st.one_of(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12), TRICKY),
                min_size=1, max_size=6).map("".join).filter(lambda s: s.strip())


def write(path: Path, rows: list[dict], fmt: str) -> Path:
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "json":
        path.write_text(json.dumps({"data": rows}), encoding="utf-8")
    elif fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["prompt", "response"])
            w.writeheader()
            w.writerows(rows)
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@settings(max_examples=60, deadline=None)
@given(pairs=st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=6),
       fmt=st.sampled_from(["jsonl", "json", "csv", "parquet"]))
def test_arbitrary_texts_round_trip_with_stable_ids(pairs, fmt):
    rows = [{"prompt": p, "response": r} for p, r in pairs]
    with tempfile.TemporaryDirectory() as d:
        recs = load_records(write(Path(d) / f"h.{fmt}", rows, fmt), "task")
    assert [(r.prompt, r.response) for r in recs] == pairs
    assert [r.sample_id for r in recs] == [f"h-{i:05d}" for i in range(len(pairs))]
    assert all(r.extra == {} for r in recs)


def _corrupt(line: str, how: str) -> bytes:
    """A JSONL line made bad in one of the ways users' files are bad."""
    if how == "truncated":
        return line[: len(line) // 2].encode()
    if how == "garbage":
        return b"this is not json"
    if how == "not_utf8":
        return line[:-1].encode() + b"\xff}"
    if how == "not_object":
        return json.dumps([line]).encode()
    if how == "no_response":
        return json.dumps({"prompt": "p"}).encode()
    return json.dumps({"prompt": "p", "response": " \t"}).encode()  # blank response


class _Collect(logging.Handler):
    def __init__(self, into: list[str]):
        super().__init__()
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


HOW = ["truncated", "garbage", "not_utf8", "not_object", "no_response", "blank_response"]


@settings(max_examples=60, deadline=None)
@given(data=st.data(), n=st.integers(min_value=1, max_value=10), how=st.sampled_from(HOW))
def test_a_corrupted_jsonl_line_is_reported_at_its_line(data, n, how):
    texts = data.draw(st.lists(TEXT, min_size=n, max_size=n))
    k = data.draw(st.integers(min_value=0, max_value=n - 1), label="corrupted record")
    blanks = data.draw(st.lists(st.booleans(), min_size=n + 1, max_size=n + 1), label="blank line before")
    lines: list[bytes] = []
    line_of: list[int] = []  # 1-based line number of each record
    for i, t in enumerate(texts):
        if blanks[i]:
            lines.append(b"   ")
        good = json.dumps({"prompt": t, "response": t}, ensure_ascii=False)
        lines.append(_corrupt(good, how) if i == k else good.encode())
        line_of.append(len(lines))
    if blanks[n]:
        lines.append(b"")
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "c.jsonl"
        p.write_bytes(b"\n".join(lines) + b"\n")
        with pytest.raises(DataError) as e:
            load_records(p, "task")
        assert str(e.value).startswith(f"c.jsonl line {line_of[k]}: "), str(e.value)
        assert "expected" in str(e.value)
        if n == 1:
            return
        # not strict: only that record goes, the others keep their texts and position ids
        seen: list[str] = []
        logger = logging.Logger("loader-property")  # not registered globally: no handler leaks between examples
        logger.addHandler(_Collect(seen))
        recs = load_records(p, "task", strict=False, logger=logger)
    assert [(r.sample_id, r.prompt) for r in recs] == [(f"c-{i:05d}", t) for i, t in enumerate(texts) if i != k]
    assert len(seen) == 1 and seen[0].startswith(f"skipped 1 of {n} records in c.jsonl: 1 ")
    assert f"(first: c.jsonl line {line_of[k]}: " in seen[0]
