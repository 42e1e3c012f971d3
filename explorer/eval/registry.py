"""Building the judges of `eval.judges`: one item (a string, a mapping or a JudgeSpec) -> one judge.

The kinds and their settings are validated in explorer/eval/judges.py (`judge_spec`, torch-free); the
model kinds are built by explorer/eval/model_judges.py, which loads torch only when a judge is made.
docs/judges.md lists every kind.
"""

from __future__ import annotations

from explorer.eval.judges import EmbeddingJudge, Judge, KeywordJudge, judge_spec, judge_specs
from explorer.eval.model_judges import make_model_judge


def make_judge(spec, where: str = "eval.judges") -> Judge:
    """A judge from one `eval.judges` item: "keyword", "embedding", "<kind>:<path>" or a mapping."""
    spec = judge_spec(spec, where)
    if spec.kind == "keyword":
        j = KeywordJudge()
    elif spec.kind == "embedding":
        j = EmbeddingJudge(model_dir=spec.path or None, device="cpu" if spec.device == "auto" else spec.device,
                           margin=spec.margin)
    else:
        return make_model_judge(spec, where)
    j.name = spec.name
    return j


def make_judges(items, where: str = "eval.judges") -> list[Judge]:
    """Every judge of `eval.judges`, the primary one first (all validated before the first loads, so a
    typo in the third item fails before a model is read)."""
    return [make_judge(s, f"{where}[{i}]") for i, s in enumerate(judge_specs(items, where))]
