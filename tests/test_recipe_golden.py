"""Behaviour unchanged: the training step decides and loses exactly what it did when the golden file was
recorded (tests/golden/make_golden.py says how, and how to rewrite it when a change is meant to)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).with_name("golden")))
import make_golden  # noqa: E402

pytestmark = pytest.mark.integration


def test_short_sft_and_dualselect_runs_decide_as_recorded(tmp_path):
    want = json.loads(make_golden.GOLDEN.read_text())
    assert set(want) == set(make_golden.RUNS)
    got = make_golden.record_all(tmp_path)
    # the file is not trivially satisfied: DualSelect drops samples, SFT keeps all
    assert any(not d["kept"] for d in want["dualselect"]["decisions"])
    assert all(d["kept"] for d in want["sft"]["decisions"])
    problems = make_golden.compare(want, got)
    assert not problems, "\n".join(problems[:20])


def test_compare_notices_a_flipped_decision_and_a_changed_loss():
    want = json.loads(make_golden.GOLDEN.read_text())
    got = json.loads(make_golden.GOLDEN.read_text())
    got["dualselect"]["decisions"][-1]["kept"] = not got["dualselect"]["decisions"][-1]["kept"]
    got["sft"]["steps"][1]["loss"] *= 1 + 1e-4
    problems = make_golden.compare(want, got)
    assert len(problems) == 2 and "kept" in problems[0] + problems[1] and "loss" in problems[0] + problems[1]
