"""data.overlong=truncate|skip|error on a tokenizer with a chat template (built in seconds, no model)."""

import pytest

from explorer.data.records import Record
from explorer.data.tokenize import ContextLengthError, collate, encode_all, encode_record, pad_id_of

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tok():
    from _method_helpers import make_tokenizer  # not tests._method_helpers: kronfluence installs a top-level "tests" package

    return make_tokenizer()


def rec(sid, n_words, response="positive"):
    return Record(sid, "task", "task", "", " ".join(["review"] * n_words), response)


def test_truncate_keeps_the_response_and_cuts_the_prompt_from_the_left(tok):
    short = encode_record(tok, rec("s", 3), 64)
    full = encode_record(tok, rec("l", 200), 10_000)
    e = encode_record(tok, rec("l", 200), 64, overlong="truncate")
    assert len(e.input_ids) == 64 and e.truncated == len(full.input_ids) - 64
    n_resp = len(full.input_ids) - full.n_prompt
    assert e.input_ids[e.n_prompt:] == full.input_ids[full.n_prompt:]                    # the response, whole
    assert e.input_ids[:e.n_prompt] == full.input_ids[full.n_prompt - (64 - n_resp):full.n_prompt]  # prompt's end
    assert short.truncated == 0 and encode_record(tok, rec("s", 3), 64, overlong="truncate") == short
    # labels cover the response only, as for any record
    b = collate([e, short], pad_id_of(tok))
    assert int((b.labels[0] != -100).sum()) == n_resp


def test_a_response_longer_than_the_context_keeps_one_prompt_token(tok):
    e = encode_record(tok, rec("r", 2, " ".join(["positive"] * 100)), 32, overlong="truncate")
    assert len(e.input_ids) == 32 and e.n_prompt == 1


def test_skip_and_error_name_and_count(tok):
    recs = [rec("a", 3), rec("b", 200), rec("c", 3)]
    enc, skipped = encode_all(tok, recs, 64, overlong="skip")
    assert [e.sample_id for e in enc] == ["a", "c"] and skipped == ["b"]   # callers align by sample_id
    enc, skipped = encode_all(tok, recs, 64, overlong="truncate")
    assert [e.sample_id for e in enc] == ["a", "b", "c"] and skipped == []
    with pytest.raises(ContextLengthError, match=r"refs: sample b: \d+ tokens .* exceed the context of 64 tokens"):
        encode_all(tok, recs, 64, overlong="error", source="refs")
    # the older switch still holds when overlong is not given
    assert encode_all(tok, recs, 64, strict=False)[1] == ["b"]
    with pytest.raises(ContextLengthError):
        encode_all(tok, recs, 64, strict=True)
