"""Loaders: every format gives the same records, every field convention, and bad input named precisely
(file AND line/record AND field/expectation). Property-based tests are in test_loaders_property.py."""

import csv
import json
import logging

import pytest

from explorer.data.checks import check_disjoint, check_harmful_ratio, check_unique_ids
from explorer.data.load import DataError, load_records, parse_record
from explorer.data.records import Record

pytestmark = pytest.mark.unit

ROWS = [
    {"prompt": "classify: great movie", "response": "positive", "category": "pos", "source": "a"},
    {"id": "native-7", "prompt": 'quotes "and", commas\nnewline', "response": "négatif ✓", "category": "neg",
     "source": "b"},
    {"prompt": "  leading and trailing spaces  ", "response": "tab\there\r\nCRLF", "provenance": "harmful",
     "family": "fam", "source": "c"},
]
FORMATS = ["jsonl", "json", "csv", "parquet", "datasets", "datasetdict"]


def write(path, rows, fmt):
    """Write `rows` in `fmt`; CSV columns are the union of keys (missing cells empty)."""
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "json":
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    elif fmt == "csv":
        cols = list(dict.fromkeys(k for r in rows for k in r))
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(cols)
            w.writerows([[r.get(c, "") for c in cols] for r in rows])
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols = list(dict.fromkeys(k for r in rows for k in r))  # from_pylist takes the first row's keys
        pq.write_table(pa.Table.from_pylist([{c: r.get(c) for c in cols} for r in rows]), path)
    elif fmt in ("datasets", "datasetdict"):
        import datasets

        cols = list(dict.fromkeys(k for r in rows for k in r))  # from_list takes the first row's keys
        ds = datasets.Dataset.from_list([{c: r.get(c) for c in cols} for r in rows])
        if fmt == "datasetdict":
            ds = datasets.DatasetDict({"train": ds, "test": ds.select([0])})
        ds.save_to_disk(str(path))
    return path


def path_for(tmp_path, stem, fmt):
    return tmp_path / (f"{stem}.{fmt}" if fmt in ("jsonl", "json", "csv", "parquet") else stem)


def message(path, **kw):
    with pytest.raises(DataError) as e:
        load_records(path, "task", **kw)
    return str(e.value)


# -- formats -------------------------------------------------------------------------------------


def test_every_format_gives_the_same_records(tmp_path):
    loaded = {}
    for fmt in FORMATS:
        (tmp_path / fmt).mkdir()
        loaded[fmt] = load_records(write(path_for(tmp_path / fmt, "data", fmt), ROWS, fmt), "task")
    ref = loaded["jsonl"]
    assert [(r.sample_id, r.prompt, r.response, r.category, r.provenance, r.family) for r in ref] == [
        ("data-00000", ROWS[0]["prompt"], "positive", "pos", "benign", "task"),
        ("native-7", ROWS[1]["prompt"], "négatif ✓", "neg", "benign", "task"),
        ("data-00002", ROWS[2]["prompt"], ROWS[2]["response"], "", "harmful", "fam")]
    for fmt, recs in loaded.items():
        assert recs == ref, fmt
        assert [r.extra for r in recs] == [{"source": "a"}, {"source": "b"}, {"source": "c"}], fmt


@pytest.mark.parametrize("key", ["data", "train", "records", "examples"])
def test_json_object_with_a_list_under_a_known_key(tmp_path, key):
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"meta": {"v": 1}, key: ROWS[:2]}))
    assert [r.response for r in load_records(p, "task")] == ["positive", "négatif ✓"]


def test_split_argument_for_json_object_and_datasetdict(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"train": ROWS, "test": ROWS[:1]}))
    assert len(load_records(p, "task")) == 3 and len(load_records(p, "task", split="test")) == 1
    dd = write(tmp_path / "dd", ROWS, "datasetdict")
    assert len(load_records(dd, "task")) == 3 and len(load_records(dd, "task", split="test")) == 1
    msg = message(dd, split="validation")
    assert "dd" in msg and "no split 'validation'" in msg and "expected one of train, test" in msg
    msg = message(write(tmp_path / "single", ROWS, "datasets"), split="test")
    assert "single" in msg and "split='test'" in msg and "not a DatasetDict" in msg


def test_suffix_is_case_insensitive_and_ndjson_is_jsonl(tmp_path):
    assert len(load_records(write(tmp_path / "D.JSONL", ROWS, "jsonl"), "task")) == 3
    assert len(load_records(write(tmp_path / "d.ndjson", ROWS, "jsonl"), "task")) == 3


def test_utf8_bom_is_accepted(tmp_path):
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps(ROWS[0]).encode() + b"\n")
    c = tmp_path / "bom.csv"
    c.write_bytes(b"\xef\xbb\xbfprompt,response\nhello,world\n")
    assert load_records(p, "task")[0].prompt == ROWS[0]["prompt"]
    assert load_records(c, "task")[0].prompt == "hello"


# -- field conventions ---------------------------------------------------------------------------

MSGS = [{"role": "system", "content": "be kind"}, {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"},
        {"role": "assistant", "content": "a2"}]


@pytest.mark.parametrize("row,prompt,response", [
    ({"instruction": "Translate", "input": "bonjour", "output": "hello"}, "Translate\nbonjour", "hello"),
    ({"instruction": "Say hi", "output": "hi"}, "Say hi", "hi"),
    ({"instruction": "Say hi", "input": "", "output": "hi"}, "Say hi", "hi"),
    ({"instruction": "Say hi", "input": " Say hi ", "output": "hi"}, "Say hi", "hi"),  # input == prompt: once
    ({"input": "only input", "output": "o"}, "only input", "o"),
    ({"prompt": "p", "response": "r"}, "p", "r"),
    ({"question": "2+2?", "answer": "4"}, "2+2?", "4"),
    ({"question": "2+2?", "answer": 4}, "2+2?", "4"),  # the authors write str(value)
    ({"query": "q", "completion": "c"}, "q", "c"),
    ({"messages": MSGS[:3]}, "u1", "a1"),
    ({"messages": MSGS}, "u1\nu2", "a2"),
    ({"messages": [{"from": "human", "value": "hu"}, {"from": "gpt", "value": "ga"}]}, "hu", "ga"),
    ({"messages": [{"role": "user", "content": "u"}], "output": "o"}, "u", "o"),
    ({"chosen": "\n\nHuman: how do I bake bread?\n\nAssistant: Mix flour and water."},
     "how do I bake bread?", "Mix flour and water."),
    ({"chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bake bread?\n\nAssistant: Knead it.",
      "rejected": "\n\nHuman: hi\n\nAssistant: no"}, "bake bread?", "Knead it."),
    ({"prompt": "own prompt", "chosen": "\n\nHuman: other\n\nAssistant: Knead it."}, "own prompt", "Knead it."),
    ({"chosen": [{"role": "user", "content": "p"}, {"role": "assistant", "content": "ok"}]}, "p", "ok"),
    ({"prompt": "p", "chosen": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "ok"}]}, "p", "ok"),
    ({"prompt": "p", "chosen": "plain chosen, mentions Human: but is no transcript"}, "p",
     "plain chosen, mentions Human: but is no transcript"),
    ({"instruction": "", "prompt": "fallback", "output": "  ", "response": "r2"}, "fallback", "r2"),
    ({"prompt": "p", "output": "first wins", "response": "second"}, "p", "first wins"),
])
def test_field_conventions(tmp_path, row, prompt, response):
    (r,) = load_records(write(tmp_path / "d.jsonl", [row], "jsonl"), "task")
    assert (r.prompt, r.response) == (prompt, response)


def test_unused_fields_and_system_turns_are_kept_in_extra():
    r = parse_record({"messages": MSGS, "meta": 1}, "x line 1", "x-00000", "task")
    assert r.extra == {"system": "be kind", "meta": 1}
    row = {"prompt": "p", "question": "q", "output": "o", "answer": "a", "rejected": "no"}
    r = parse_record(row, "x", "x-0", "task")
    assert (r.prompt, r.response) == ("p", "o") and r.extra == {"question": "q", "answer": "a", "rejected": "no"}


def test_messages_as_json_text_in_a_csv(tmp_path):
    p = write(tmp_path / "m.csv", [{"messages": json.dumps(MSGS[:3])}], "csv")
    (r,) = load_records(p, "task")
    assert (r.prompt, r.response) == ("u1", "a1")


def test_native_fields_override_arguments(tmp_path):
    rows = [{"sample_id": "s1", "id": "ignored", "prompt": "p", "response": "r", "pool": "mine", "family": "f",
             "category": "c", "provenance": "harmful"},
            {"id": 12, "prompt": "p", "response": "r"},
            {"prompt": "p", "response": "r"}]
    a, b, c = load_records(write(tmp_path / "d.jsonl", rows, "jsonl"), "task", family="fam", provenance="benign")
    assert (a.sample_id, a.pool, a.family, a.category, a.provenance) == ("s1", "mine", "f", "c", "harmful")
    assert a.extra == {"id": "ignored"}
    assert (b.sample_id, b.pool, b.family, b.category, b.provenance) == ("12", "task", "fam", "", "benign")
    assert c.sample_id == "d-00002"
    (h,) = load_records(write(tmp_path / "h.jsonl", rows[2:], "jsonl"), "harmful", provenance="harmful")
    assert (h.pool, h.family, h.provenance) == ("harmful", "harmful", "harmful")


def test_default_ids_follow_record_position_not_blank_lines(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('\n{"prompt": "a", "response": "b"}\n\n   \n{"prompt": "c", "response": "d"}\n\n')
    assert [r.sample_id for r in load_records(p, "task")] == ["d-00000", "d-00001"]
    assert [r.sample_id for r in load_records(p, "task", id_prefix="mine")] == ["mine-00000", "mine-00001"]


# -- bad input: each message names file, place and field/expectation ------------------------------

OK = {"prompt": "ok", "response": "ok"}


@pytest.mark.parametrize("row,needles", [
    ({"response": "r"}, ["no prompt field", "expected one of instruction, prompt, question, query, goal, messages"]),
    ({"prompt": "p"}, ["no response field", "expected one of output, response, completion, answer, chosen"]),
    ({"prompt": "p", "response": ""}, ["empty response in field 'response'", "expected non-empty text"]),
    ({"prompt": "p", "response": " \n\t "}, ["empty response in field 'response'", "expected non-empty text"]),
    ({"prompt": "p", "output": " ", "answer": ""}, ["empty response in field 'output', 'answer'", "non-empty"]),
    ({"prompt": "", "response": "r"}, ["empty prompt in field 'prompt'", "expected non-empty text"]),
    ({"instruction": "  ", "output": "r"}, ["empty prompt in field 'instruction'", "expected non-empty text"]),
    ({"prompt": "p", "chosen": "\n\nHuman: q\n\nAssistant:  "}, ["empty response in field 'chosen'", "non-empty"]),
    ({"prompt": "p", "response": "r", "provenance": "evil"},
     ["field 'provenance' is 'evil'", "expected benign or harmful"]),
    ({"prompt": ["a"], "response": "r"}, ["field 'prompt' is a list", "expected text"]),
    ({"prompt": "p", "response": {"t": 1}}, ["field 'response' is a dict", "expected text"]),
    ({"prompt": True, "response": "r"}, ["field 'prompt' is a bool", "expected text"]),
    ({"messages": "hello"}, ["field 'messages' is text that is not JSON", "expected a list of {role, content}"]),
    ({"messages": {"role": "user"}}, ["field 'messages' is a dict", "expected a list of {role, content}"]),
    ({"messages": [{"role": "user"}]},
     ["field 'messages' item 0", "expected an object with text 'role' and 'content'"]),
    ({"messages": [{"role": "tool", "content": "x"}]}, ["field 'messages' item 0 has role 'tool'",
                                                        "expected user, assistant or system"]),
    (["not", "an", "object"], ["a JSON list, not an object", "expected an object with a prompt field"]),
    ("just text", ["a JSON str, not an object", "expected an object"]),
])
def test_bad_records_name_file_line_and_field(tmp_path, row, needles):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps(OK) + "\n\n" + json.dumps(row) + "\n" + json.dumps(OK) + "\n")
    msg = message(p)
    assert msg.startswith("d.jsonl line 3: "), msg
    for n in needles:
        assert n in msg, (n, msg)


@pytest.mark.parametrize("fmt,place", [("csv", "d.csv record 1 (line 4)"), ("json", "d.json record 1"),
                                       ("parquet", "d.parquet record 1"), ("datasets", "d record 1"),
                                       ("datasetdict", "d[train] record 1")])
def test_bad_record_in_other_formats_names_the_record(tmp_path, fmt, place):
    rows = [{"prompt": "a\nwith a newline", "response": "b"}, {"prompt": "c", "response": ""}]
    msg = message(write(path_for(tmp_path, "d", fmt), rows, fmt))
    assert msg.startswith(place + ": ") and "empty response in field 'response'; expected non-empty text" in msg


def test_csv_row_with_the_wrong_number_of_values(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("prompt,response\na,b\nc,d,e\n")
    msg = message(p)
    assert msg.startswith("d.csv record 1 (line 3): ")
    assert "3 values; expected 2 as in the header (prompt, response)" in msg


@pytest.mark.parametrize("content,needles", [
    ('prompt,prompt\na,b\n', ["d.csv line 1", "header repeats column 'prompt'", "expected unique column names"]),
    ('prompt,response\na,b\n"unterminated,x\n', ["d.csv line 3", "unreadable CSV", "expected comma-separated"]),
])
def test_csv_file_level_problems(tmp_path, content, needles):
    p = tmp_path / "d.csv"
    p.write_text(content)
    msg = message(p, strict=False)
    for n in needles:
        assert n in msg, (n, msg)


def test_non_utf8_bytes_name_line_and_byte_offset(tmp_path):
    first = b'{"prompt": "a", "response": "b"}\n'
    p = tmp_path / "d.jsonl"
    p.write_bytes(first + b'{"prompt": "x\xff", "response": "b"}\n')
    msg = message(p)
    assert msg.startswith("d.jsonl line 2: not UTF-8") and "0xff" in msg and "expected UTF-8" in msg
    assert "byte 13 of the line" in msg and f"byte {len(first) + 13} of the file" in msg
    c = tmp_path / "d.csv"
    c.write_bytes(b"prompt,response\na,b\nc,d\xfe\n")
    for strict in (True, False):  # a whole-file decode: file-level either way
        msg = message(c, strict=strict)
        assert msg.startswith("d.csv line 3: not UTF-8")
        assert "byte 3 of the line" in msg and "byte 23 of the file" in msg
    j = tmp_path / "d.json"
    j.write_bytes(b'[\n {"prompt": "\xc3(", "response": "b"}\n]')
    msg = message(j)
    assert msg.startswith("d.json line 2: not UTF-8") and "0xc3" in msg


def test_a_non_unique_id_field_falls_back_to_content_ids_with_one_warning(tmp_path, caplog):
    rows = [{"id": "user", "prompt": "p", "response": "r"}, {"id": "user", "prompt": "q", "response": "s"},
            {"id": "user", "prompt": "p", "response": "r"}, {"id": "other", "prompt": "t", "response": "u"}]
    for fmt in ("jsonl", "csv"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="explorer.data.load"):
            recs = load_records(write(tmp_path / f"d.{fmt}", rows, fmt), "task")
        assert len(recs) == 4 and len({r.sample_id for r in recs}) == 4
        assert all(r.sample_id.startswith("d-") for r in recs)
        assert recs[2].sample_id == recs[0].sample_id + "-2"  # identical content: a numbered repeat
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and warnings[0].startswith(f"3 of 4 records in d.{fmt} share an id in field sample_id/id")
    # content ids are the same whatever the position
    a = load_records(write(tmp_path / "a.jsonl", rows, "jsonl"), "task", id_prefix="x")
    b = load_records(write(tmp_path / "b.jsonl", rows[::-1], "jsonl"), "task", id_prefix="x")
    assert {r.sample_id: r.prompt for r in a if not r.sample_id.endswith("-2")} == \
        {r.sample_id: r.prompt for r in b if not r.sample_id.endswith("-2")}


def test_id_field_none_and_named(tmp_path):
    rows = [{"id": "user", "uid": "u1", "prompt": "p", "response": "r"},
            {"id": "user", "uid": "u2", "prompt": "q", "response": "s"}]
    p = write(tmp_path / "d.jsonl", rows, "jsonl")
    assert [r.sample_id for r in load_records(p, "task", id_field="none")] == ["d-00000", "d-00001"]
    recs = load_records(p, "task", id_field="uid")
    assert [r.sample_id for r in recs] == ["u1", "u2"] and recs[0].extra["id"] == "user"


def test_a_field_id_equal_to_a_positional_id_is_a_duplicate(tmp_path):
    # a native id that equals a default id: the file mixes two id schemes
    msg = message(write(tmp_path / "e.jsonl", [OK, {"id": "e-00000", **OK}], "jsonl"))
    assert "line 2: duplicate sample_id 'e-00000' (first at line 1)" in msg and "expected unique ids" in msg


def test_provenance_field_reads_labels(tmp_path):
    rows = [{"prompt": "a", "response": "b", "is_harmful": True}, {"prompt": "c", "response": "d", "is_harmful": 0},
            {"prompt": "e", "response": "f", "is_harmful": "yes"}, {"prompt": "g", "response": "h"}]
    recs = load_records(write(tmp_path / "d.json", rows, "json"), "task", provenance="unknown",
                        provenance_field="is_harmful")
    assert [r.provenance for r in recs] == ["harmful", "benign", "harmful", "unknown"]
    assert "is_harmful" not in recs[0].extra
    msg = message(write(tmp_path / "e.jsonl", [{"prompt": "a", "response": "b", "is_harmful": "maybe"}], "jsonl"),
                  provenance_field="is_harmful")
    assert msg.startswith("e.jsonl line 1: field 'is_harmful' (provenance_field) is 'maybe'"), msg


def test_prompt_lists_for_evaluation(tmp_path):
    j = tmp_path / "advbench.json"
    j.write_text(json.dumps(["Write a generic harmful request", "Another generic harmful request"]))
    recs = load_records(j, "eval", require_response=False)
    assert [(r.prompt, r.response) for r in recs] == [("Write a generic harmful request", ""),
                                                     ("Another generic harmful request", "")]
    c = tmp_path / "advbench.csv"
    c.write_text("goal,target\nWrite a generic harmful request,Sure here is [details withheld]\n")
    (r,) = load_records(c, "eval", require_response=False)
    assert r.prompt == "Write a generic harmful request" and r.extra["target"].startswith("Sure")
    with pytest.raises(DataError):
        load_records(j, "task")  # training records need objects with a response


@pytest.mark.parametrize("name,content,needles", [
    ("e.jsonl", "", ["e.jsonl", "empty (0 records)", "expected at least one record"]),
    ("e.jsonl", "\n  \n\n", ["e.jsonl", "empty (0 records)"]),
    ("e.json", "[]", ["e.json", "empty (0 records)"]),
    ("e.json", "", ["e.json", "empty (0 records)"]),
    ("e.json", '{"data": []}', ["e.json", "empty (0 records)"]),
    ("e.csv", "", ["e.csv", "empty (0 records)"]),
    ("e.csv", "prompt,response\n", ["e.csv", "empty (0 records)"]),
    ("x.txt", "hello", ["x.txt", "unknown format '.txt'", "expected one of .json, .jsonl, .ndjson, .csv, .parquet",
                        "save_to_disk"]),
    ("noext", "hello", ["noext", "unknown format '(no suffix)'"]),
    ("l.json", '{"prompt": "a", "response": "b"}\n{"prompt": "c", "response": "d"}\n',
     ["l.json line 2", "invalid JSON (Extra data", "is this JSON Lines?", "expected a JSON list of objects"]),
    ("s.json", '"text"', ["s.json", "top level is a str", "expected a JSON list of objects"]),
    ("o.json", '{"rows": [1], "n": 2}', ["o.json", "lists under rows", "expected a JSON list of objects or an object "
                                         "with a list under train, data, examples, records"]),
    ("b.parquet", "not parquet", ["b.parquet", "unreadable Parquet", "expected a Parquet file"]),
])
def test_file_level_errors_raise_even_when_not_strict(tmp_path, name, content, needles):
    p = tmp_path / name
    p.write_text(content)
    for strict in (True, False):
        msg = message(p, strict=strict)
        for n in needles:
            assert n in msg, (n, msg)


def test_missing_file_empty_parquet_and_plain_folder(tmp_path):
    msg = message(tmp_path / "missing.jsonl")
    assert "missing.jsonl" in msg and "no such file or folder" in msg and "expected a data file" in msg
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": pa.array([], pa.string()), "response": pa.array([], pa.string())}),
                   tmp_path / "e.parquet")
    assert "e.parquet: empty (0 records)" in message(tmp_path / "e.parquet", strict=False)
    (tmp_path / "plain").mkdir()
    msg = message(tmp_path / "plain")
    assert "plain" in msg and "a folder without dataset_dict.json or state.json" in msg and ".jsonl" in msg


def test_bad_provenance_argument(tmp_path):
    msg = message(write(tmp_path / "d.jsonl", [OK], "jsonl"), provenance="bad")
    assert "provenance='bad'" in msg and "expected benign or harmful" in msg


# -- strict=False --------------------------------------------------------------------------------


def test_not_strict_skips_counts_and_warns_once(tmp_path, caplog):
    p = tmp_path / "d.jsonl"
    p.write_text('{"prompt": "a", "response": "b"}\nnot json\n{"prompt": "c"}\n{"prompt": "d", "response": " "}\n'
                 '{"prompt": "e"}\n{"id": "d-00000", "prompt": "dup", "response": "x"}\n[1]\n'
                 '{"prompt": "e", "response": "f"}\n')
    with caplog.at_level(logging.WARNING, logger="explorer.data.load"):
        recs = load_records(p, "task", strict=False)
    assert [(r.sample_id, r.prompt) for r in recs] == [("d-00000", "a"), ("d-00007", "e")]  # ids keep positions
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert text.startswith("skipped 6 of 8 records in d.jsonl: 2 missing response, 1 duplicate sample_id, "
                           "1 empty response, 1 invalid JSON, 1 not an object (first: d.jsonl line 2: invalid JSON")


def test_not_strict_uses_the_given_logger(tmp_path, caplog):
    p = tmp_path / "d.csv"
    p.write_text("prompt,response\na,b\nc,\n")
    logger = logging.getLogger("my.loader")
    with caplog.at_level(logging.WARNING, logger="my.loader"):
        assert len(load_records(p, "task", strict=False, logger=logger)) == 1
    (w,) = [r for r in caplog.records if r.name == "my.loader"]
    assert "skipped 1 of 2 records in d.csv: 1 empty response (first: d.csv record 1 (line 3)" in w.getMessage()


def test_not_strict_with_no_valid_record_is_an_error(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"prompt": "c"}\nnope\n')
    msg = message(p, strict=False)
    assert msg.startswith("d.jsonl: all 2 records are invalid (1 invalid JSON, 1 missing response;") and \
        "expected at least one valid record" in msg


def test_clean_file_does_not_warn(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        load_records(write(tmp_path / "d.jsonl", ROWS, "jsonl"), "task", strict=False)
    assert not caplog.records


# -- checks --------------------------------------------------------------------------------------


def rec(sid, prompt, response="r"):
    return Record(sid, "pool", "fam", "", prompt, response)


def test_reference_pool_overlapping_eval_prompts():
    refs = [rec("r1", "How do I X?"), rec("r2", "unrelated"), rec("r3", " HOW do\ti x? ")]
    evals = [rec("e1", "how do i   x?"), rec("e2", "other")]
    with pytest.raises(DataError) as e:
        check_disjoint(refs, evals, "reference pool", "evaluation prompts")
    msg = str(e.value)
    assert msg.startswith("the reference pool shares 2 prompt(s) with the evaluation prompts (first: r1 = e1, r3 = e1")
    assert "expected them disjoint" in msg
    check_disjoint(refs[1:2], evals, "reference pool", "evaluation prompts")  # disjoint: no error
    with pytest.raises(DataError, match=r"shares 1 response\(s\)"):
        check_disjoint([rec("a", "x", "Same")], [rec("b", "y", "same ")], "a", "b", key="response")


def test_disjoint_lists_the_first_five_and_counts_the_rest():
    a = [rec(f"a{i}", f"p{i}") for i in range(8)]
    with pytest.raises(DataError) as e:
        check_disjoint(a, [rec(f"b{i}", f"P{i}") for i in range(8)], "reference pool", "evaluation prompts")
    assert "shares 8 prompt(s)" in str(e.value) and "a4 = b4 and 3 more" in str(e.value) and "a5" not in str(e.value)
    with pytest.raises(ValueError, match="key='category'; expected 'prompt' or 'response'"):
        check_disjoint(a, a, "a", "b", key="category")


def test_check_unique_ids_names_both_records():
    check_unique_ids([rec("a", "p"), rec("b", "p")], "task pool")
    with pytest.raises(DataError, match=r"task pool record 2: duplicate sample_id 'a' \(first at record 0\); "
                                        "expected unique ids"):
        check_unique_ids([rec("a", "p"), rec("b", "p"), rec("a", "q")], "task pool")


@pytest.mark.parametrize("p", [0, 0.0, 0.1, 1, 1.0])
def test_harmful_ratio_in_range(p):
    assert check_harmful_ratio(p) == float(p)


@pytest.mark.parametrize("p,shown", [(-0.1, "-0.1"), (1.5, "1.5"), (float("nan"), "nan"), (float("inf"), "inf"),
                                     ("0.1", "'0.1' (str)"), (None, "None (NoneType)"), (True, "True (bool)")])
def test_harmful_ratio_out_of_range(p, shown):
    with pytest.raises(ValueError) as e:
        check_harmful_ratio(p)
    assert str(e.value).startswith(f"harmful_ratio = {shown}; expected a number in the range [0, 1]")


def test_prompt_only_files_with_require_response_false(tmp_path):
    p = write(tmp_path / "eval.jsonl", [{"prompt": "a", "response": ""}, {"prompt": "b"}, OK], "jsonl")
    assert "eval.jsonl line 1: empty response" in message(p)
    recs = load_records(p, "eval", require_response=False)
    assert [(r.prompt, r.response, r.extra) for r in recs] == [("a", "", {}), ("b", "", {}), ("ok", "ok", {})]
    assert "eval.jsonl line 1: no prompt field" in message(write(tmp_path / "eval.jsonl", [{"x": 1}], "jsonl"),
                                                             require_response=False)


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet", "datasets"])
def test_nested_messages_survive_every_format_that_holds_lists(tmp_path, fmt):
    rows = [{"messages": MSGS}, {"prompt": "own", "chosen": MSGS[1:3]}]
    a, b = load_records(write(path_for(tmp_path, "m", fmt), rows, fmt), "task")
    assert (a.prompt, a.response, a.extra) == ("u1\nu2", "a2", {"system": "be kind"})
    assert (b.prompt, b.response) == ("own", "a1")
