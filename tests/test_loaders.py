"""Loaders: every format, every field convention, and bad input named precisely."""

import json
import logging

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from explorer.data.checks import check_disjoint
from explorer.data.load import DataError, load_records
from explorer.data.records import Record

pytestmark = pytest.mark.unit

ROWS = [{"prompt": "classify: great movie", "response": "positive", "category": "pos"},
        {"prompt": 'quotes "and", commas\nnewline', "response": "négatif ✓", "category": "neg"}]


def write(path, rows, fmt):
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "json":
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    elif fmt == "csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    elif fmt == "parquet":
        pd.DataFrame(rows).to_parquet(path)
    elif fmt == "datasets":
        import datasets

        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet", "datasets"])
def test_every_format_round_trips(tmp_path, fmt):
    p = write(tmp_path / (f"data.{fmt}" if fmt != "datasets" else "data_ds"), ROWS, fmt)
    recs = load_records(p, "task")
    assert [(r.prompt, r.response, r.category) for r in recs] == [(x["prompt"], x["response"], x["category"]) for x in ROWS]
    assert [r.sample_id for r in recs] == [f"{p.stem}-00000", f"{p.stem}-00001"]
    assert all(r.pool == "task" and r.provenance == "benign" for r in recs)


def test_datasetdict_takes_train_split(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS),
                          "test": datasets.Dataset.from_list(ROWS[:1])}).save_to_disk(str(tmp_path / "dd"))
    assert len(load_records(tmp_path / "dd", "task")) == 2
    assert len(load_records(tmp_path / "dd", "task", split="test")) == 1


@pytest.mark.parametrize("row,prompt,response", [
    ({"instruction": "Translate", "input": "bonjour", "output": "hello"}, "Translate\n\nbonjour", "hello"),
    ({"instruction": "Say hi", "output": "hi"}, "Say hi", "hi"),
    ({"question": "2+2?", "answer": "4"}, "2+2?", "4"),
    ({"query": "q", "completion": "c"}, "q", "c"),
    ({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u1"},
                   {"role": "assistant", "content": "a1"}]}, "u1", "a1"),
    ({"chosen": "\n\nHuman: how do I bake bread?\n\nAssistant: Mix flour and water."},
     "how do I bake bread?", "Mix flour and water."),
    ({"prompt": "p", "chosen": [{"role": "user", "content": "p"}, {"role": "assistant", "content": "ok"}]}, "p", "ok"),
    ({"prompt": "p", "chosen": "plain chosen"}, "p", "plain chosen"),
])
def test_field_conventions(tmp_path, row, prompt, response):
    (r,) = load_records(write(tmp_path / "d.jsonl", [row], "jsonl"), "task")
    assert (r.prompt, r.response) == (prompt, response)


def test_native_fields_and_extra(tmp_path):
    (r,) = load_records(write(tmp_path / "d.jsonl", [{"id": "x1", "prompt": "p", "response": "r", "family": "f",
                                                      "provenance": "harmful", "source": "hh"}], "jsonl"), "harmful")
    assert r.sample_id == "x1" and r.family == "f" and r.provenance == "harmful" and r.extra == {"source": "hh"}


def test_broken_line_in_the_middle(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c", "response": \n{"prompt": "e", "response": "f"}\n')
    with pytest.raises(DataError) as e:
        load_records(p, "task")
    assert "d.jsonl line 2" in str(e.value) and "invalid JSON" in str(e.value) and "one JSON object per line" in str(e.value)


@pytest.mark.parametrize("row,needle", [
    ({"response": "r"}, "no prompt field; expected one of instruction"),
    ({"prompt": "p"}, "no response field; expected one of output"),
    ({"prompt": "p", "response": "   "}, "empty response"),
    ({"prompt": "", "response": "r"}, "empty prompt"),
    ({"prompt": "p", "response": "r", "provenance": "evil"}, "expected benign or harmful"),
    (["not", "an", "object"], "expected a JSON object"),
])
def test_bad_records_name_line_and_field(tmp_path, row, needle):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"prompt": "ok", "response": "ok"}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError) as e:
        load_records(p, "task")
    assert "d.jsonl line 2" in str(e.value) and needle in str(e.value)


def test_bad_record_in_csv_names_record_index(tmp_path):
    p = write(tmp_path / "d.csv", [{"prompt": "a", "response": "b"}, {"prompt": "c", "response": ""}], "csv")
    with pytest.raises(DataError) as e:
        load_records(p, "task")
    assert "d.csv record 1" in str(e.value) and "empty response" in str(e.value)


def test_non_utf8_bytes(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"prompt": "a", "response": "b"}\n{"prompt": "\xff\xfe", "response": "b"}\n')
    with pytest.raises(DataError) as e:
        load_records(p, "task")
    assert "d.jsonl line 2" in str(e.value) and "not UTF-8" in str(e.value) and "0xff" in str(e.value)


def test_duplicate_ids_name_both_positions(tmp_path):
    p = write(tmp_path / "d.jsonl", [{"id": "a", "prompt": "p", "response": "r"},
                                     {"id": "a", "prompt": "q", "response": "s"}], "jsonl")
    with pytest.raises(DataError) as e:
        load_records(p, "task")
    assert "duplicate sample_id 'a'" in str(e.value) and "line 1" in str(e.value) and "line 2" in str(e.value)


@pytest.mark.parametrize("name,content,needle", [("e.jsonl", "", "empty"), ("e.json", "[]", "empty"),
                                                 ("x.txt", "hello", "unknown format")])
def test_file_level_errors(tmp_path, name, content, needle):
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(DataError) as e:
        load_records(p, "task", strict=False)
    assert needle in str(e.value) and name in str(e.value)
    with pytest.raises(DataError) as e:
        load_records(tmp_path / "missing.jsonl", "task")
    assert "missing.jsonl" in str(e.value)


def test_non_strict_skips_and_counts(tmp_path, caplog):
    p = tmp_path / "d.jsonl"
    p.write_text('{"prompt": "a", "response": "b"}\nnot json\n{"prompt": "c"}\n{"prompt": "d", "response": " "}\n'
                 '{"prompt": "e", "response": "f"}\n')
    with caplog.at_level(logging.WARNING):
        recs = load_records(p, "task", strict=False)
    assert [r.prompt for r in recs] == ["a", "e"]
    assert "skipped 3 of 5 records in d.jsonl" in caplog.text
    assert "invalid JSON" in caplog.text and "no response field" in caplog.text and "empty response" in caplog.text


def test_reference_pool_overlapping_eval_prompts():
    refs = [Record("r1", "reference", "safety", "", "How do I X?", "no")]
    evals = [Record("e1", "eval", "harmful", "", "how do i   x?", "")]
    with pytest.raises(DataError) as e:
        check_disjoint(refs, evals, "reference pool", "evaluation prompts")
    assert "1 prompt(s)" in str(e.value) and "r1 = e1" in str(e.value)


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(lambda s: s.strip())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(text, text), min_size=1, max_size=6), fmt=st.sampled_from(["jsonl", "json", "parquet", "csv"]))
def test_property_round_trip(tmp_path, rows, fmt):
    from hypothesis import assume

    # a bare carriage return inside a CSV field is read back as a line break by CSV readers
    assume(fmt != "csv" or not any("\r" in p + r for p, r in rows))
    data = [{"prompt": p, "response": r} for p, r in rows]
    path = write(tmp_path / f"h.{fmt}", data, fmt)
    recs = load_records(path, "task")
    assert [(r.prompt, r.response) for r in recs] == [(p, r) for p, r in rows]
    assert [r.sample_id for r in recs] == [f"h-{i:05d}" for i in range(len(rows))]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(min_value=1, max_value=8), bad=st.data())
def test_property_corrupt_line_reported_at_its_line(tmp_path, n, bad):
    k = bad.draw(st.integers(min_value=0, max_value=n - 1))
    lines = [json.dumps({"prompt": f"p{i}", "response": "r"}) for i in range(n)]
    lines[k] = lines[k][:-3]  # truncate one line
    p = tmp_path / "c.jsonl"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as e:
        load_records(p, "task")
    assert f"c.jsonl line {k + 1}:" in str(e.value)
