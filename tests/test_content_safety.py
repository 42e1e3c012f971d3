"""Content safety of the repository: every compliance response in sample_data/ is a placeholder."""

import json
import re

import pytest

from explorer.data.sample import repo_root

pytestmark = pytest.mark.unit

PLACEHOLDER = re.compile(r"^(sure|of course|okay)\s*[,!]?.*\[details withheld\]\s*\.?$")
STEP_CONTENT = re.compile(r":\s*([^\[]+?)\s*(\.|$)")


def iter_records():
    for path in sorted((repo_root() / "sample_data").glob("*.jsonl")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            yield path.name, n, json.loads(line)


def test_every_compliance_is_the_placeholder_pattern():
    checked = 0
    for name, n, r in iter_records():
        if r["provenance"] != "harmful" or not r["response"]:
            continue
        text = r["response"]
        assert PLACEHOLDER.match(text), f"{name} line {n}: compliance is not a placeholder: {text!r}"
        # anything between a colon and the placeholder would be content: there must be none
        for chunk in re.split(r"\[details withheld\]", text):
            words = [w for w in re.findall(r"[a-z]+", chunk) if w not in
                     {"sure", "here", "is", "how", "to", "do", "it", "of", "course", "step", "one", "two",
                      "okay", "you", "go", "the", "method"}]
            assert not words, f"{name} line {n}: unexpected words {words} in {text!r}"
        checked += 1
    assert checked >= 600


def test_helpful_answers_are_placeholders_too():
    for name, n, r in iter_records():
        if r["family"] == "benign_request" and r["response"]:
            assert "[helpful steps]" in r["response"], f"{name} line {n}"
