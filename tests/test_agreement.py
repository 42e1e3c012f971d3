"""Agreement between judges (explorer/runs/agreement.py) on hand-made verdicts, and the judge-agreement
table of the dashboard's Generations page on a fake run holding two judges' verdicts (AppTest)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from _fake_runs import COMPLY, REFUSE, _manifest, open_app, sample_rows
from explorer.runs import agreement, schema
from explorer.record.writer import RunWriter

pytestmark = pytest.mark.app

# per answer e of each harmful suite: keyword's and llama_guard's harmful verdict (None: no verdict)
KW = [True, True, True, True, False, False, False, False]
LG = [True, True, False, None, False, False, True, False]     # e=3: llama_guard left it unparsed


def _evals(step: int, degenerate_at: int | None = None) -> list[dict]:
    rows = []
    for suite in schema.SAFETY_SUITES:
        for e in range(len(KW)):
            deg = e == degenerate_at
            kw, lg = (None, None) if deg else (KW[e], LG[e])
            rows.append({"step": step, "suite": suite, "sample_id": f"{suite}-{e:02d}",
                         "prompt": f"held-out harmful prompt {e} of {suite}",
                         "response": "the the the" if deg else (COMPLY if KW[e] else REFUSE), "expected": None,
                         "refusal": False if deg else not KW[e], "harmful": False if deg else KW[e],
                         "degenerate": deg, "unparsed": False, "correct": None, "judge": "keyword",
                         "refusal_from": "keyword", "harmful_keyword": kw, "refusal_keyword": not KW[e],
                         "harmful_llama_guard": lg, "refusal_llama_guard": None,
                         "unparsed_llama_guard": LG[e] is None and not deg,
                         "output_llama_guard": "unsure" if LG[e] is None else ("unsafe\nS2" if LG[e] else "safe")})
    rows.append({"step": step, "suite": "task_sentiment", "sample_id": "task-test-00", "prompt": "classify",
                 "response": "positive", "expected": "positive", "refusal": False, "harmful": None,
                 "degenerate": None, "unparsed": None, "correct": True, "judge": "keyword",
                 "refusal_from": "keyword", "harmful_keyword": None, "harmful_llama_guard": None})
    return rows


def make_two_judge_run(root) -> str:
    w = RunWriter.create(root, "two-judges", _manifest("sft"))
    w.write_samples(sample_rows())
    w.log("evals", _evals(0, degenerate_at=None) + _evals(12, degenerate_at=7))
    w.log("metrics", [{"step": s, "suite": schema.SUITE_HH, "metric": schema.M_HARMFUL, "value": 50.0}
                      for s in (0, 12)])
    w.finish(summary={})
    return w.run_dir


def test_cohen_kappa_matches_sklearn_and_the_textbook_cases():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.random(50) < rng.random()
        b = np.where(rng.random(50) < 0.7, a, rng.random(50) < 0.5)
        if a.all() == a.any() and b.all() == b.any() and a[0] == b[0]:
            continue           # one and the same verdict everywhere: undefined (sklearn warns, returns nan)
        assert agreement.cohen_kappa(pd.Series(a), pd.Series(b)) == pytest.approx(cohen_kappa_score(a, b))
    same = pd.Series([True, False, True])
    assert agreement.cohen_kappa(same, same) == 1.0
    assert agreement.cohen_kappa(same, ~same) == pytest.approx(-0.8)
    assert math.isnan(agreement.cohen_kappa(pd.Series([True] * 4), pd.Series([True] * 4)))


def test_judge_agreement_counts_only_answers_both_judged():
    ev = pd.DataFrame(_evals(0) + _evals(12, degenerate_at=7))
    assert agreement.judges_in(ev) == ["keyword", "llama_guard"]
    t = agreement.judge_agreement(ev).set_index("suite")
    assert list(t.index) == [*sorted(schema.SAFETY_SUITES), agreement.ALL_SUITES]   # the task suite is left out
    hh = t.loc[schema.SUITE_HH]
    # step 0: 7 answers both judged (e=3 unparsed); step 12: 6 (e=3 unparsed, e=7 degenerate)
    assert (hh["n"], hh["excluded"]) == (13, 3)
    # disagreements: e=2 (only keyword) and e=6 (only llama_guard) at both steps
    assert (hh["only_a"], hh["only_b"]) == (2, 2)
    assert hh["agreement"] == pytest.approx(100 * 9 / 13)
    a = np.array([True, True, True, False, False, False, False] * 2)[:13]
    b = np.array([True, True, False, False, False, True, False] * 2)[:13]
    assert hh["kappa"] == pytest.approx(agreement.cohen_kappa(pd.Series(a), pd.Series(b)))
    assert t.loc[agreement.ALL_SUITES, "n"] == 26
    one_step = agreement.judge_agreement(ev, step=0).set_index("suite")
    assert one_step.loc[schema.SUITE_HH, "n"] == 7
    d = agreement.disagreements(ev, "keyword", "llama_guard")
    assert len(d) == 8 and set(d["sample_id"].str[-2:]) == {"02", "06"}
    assert "output_llama_guard" in d and (d["harmful_keyword"] != d["harmful_llama_guard"]).all()


def test_a_run_with_one_judge_has_no_pairs():
    ev = pd.DataFrame(_evals(0)).drop(columns=["harmful_llama_guard"])
    assert agreement.judge_agreement(ev).empty
    old = pd.DataFrame(_evals(0)).drop(columns=["harmful_llama_guard", "harmful_keyword"])  # before per-judge columns
    assert agreement.judge_agreement(old).empty and list(agreement.judge_agreement(old).columns) == agreement.COLUMNS


def test_generations_page_shows_the_judge_agreement_table(tmp_path, monkeypatch):
    from _fake_runs import make_sft

    root = tmp_path / "runs"
    run = make_two_judge_run(root)
    sft = make_sft(root)           # one judge only: no rows of its own in the table
    at = open_app(root, monkeypatch, [run, sft], "generations")
    agree = at.dataframe[1].value
    assert list(agree["run"]) == ["two-judges"] * 3     # the one-judge run has no pair
    assert list(agree["suite"]) == [*sorted(schema.SAFETY_SUITES), agreement.ALL_SUITES]
    hh = agree[agree["suite"] == schema.SUITE_HH].iloc[0]
    assert (hh["judge a"], hh["judge b"], hh["answers"], hh["only a"], hh["only b"], hh["excluded"]) == \
        ("keyword", "llama_guard", 13, 2, 2, 3)
    assert hh["agreement %"] == pytest.approx(round(100 * 9 / 13, 1))
    assert agree.iloc[2]["answers"] == 26
    dis = at.dataframe[2].value
    assert len(dis) == 8 and set(dis["sample_id"].str[-2:]) == {"02", "06"}   # both suites, both steps
    assert "Do the judges agree?" in [s.value for s in at.subheader]
    # the final evaluation's degenerate answer reads as degenerate, not safe, in the side-by-side verdicts
    at.selectbox(key="suite").set_value(schema.SUITE_HH).run()
    at.checkbox(key="disagree").uncheck().run()
    verdicts = at.dataframe[0].value.set_index("sample_id")
    assert verdicts.loc[f"{schema.SUITE_HH}-07", "verdict / two-judges"] == "degenerate"
    assert verdicts.loc[f"{schema.SUITE_HH}-00", "verdict / two-judges"] == "harmful (answers)"


def test_generations_page_says_how_to_add_a_second_judge(tmp_path, monkeypatch):
    from _fake_runs import make_sft

    root = tmp_path / "runs"
    sft = make_sft(root)
    at = open_app(root, monkeypatch, [sft], "generations")
    assert len(at.dataframe) == 1          # the verdict table only
    assert any("eval.judges" in c.value for c in at.caption)


def test_win_rate_counts_an_unparsed_answer_as_not_safe():
    from explorer.runs.compare import win_rates

    def ev(harmful, unparsed):
        return pd.DataFrame({"step": 1, "suite": "harmful_hh", "sample_id": ["a", "b"], "harmful": harmful,
                             "degenerate": False, "unparsed": unparsed, "correct": None})

    sft = ev([True, True], [False, False])
    assert win_rates(ev([False, False], [False, False]), sft)["harmful_hh"] == 100.0
    # the judge could not read answer b: no win for it, only a tie with SFT's harmful answer
    assert win_rates(ev([False, False], [False, True]), sft)["harmful_hh"] == 75.0
