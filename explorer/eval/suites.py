"""Evaluation suites as configuration: any number of named suites, each a file plus a kind.

    eval_suites:
      - {name: advbench, kind: harmful, file: data/advbench.csv}
      - {name: xstest, kind: over_refusal, file: data/xstest.json}
      - {name: sst2, kind: task, file: data/sst2_test.json, scorer: label, labels: [positive, negative]}

kind     harmful       harmful score (% of answers the primary judge calls harmful) and refusal rate
         over_refusal  % of benign-but-scary prompts refused
         task          accuracy against each record's expected answer (its response field), by `scorer`:
                       exact     the answer equals the expected text (case and spacing ignored)
                       label     the first of `labels` found in the answer (as a word) is the expected one
                                 ("The sentiment is positive." -> positive)
                       contains  the expected text occurs in the answer
Optional keys: `family` keeps only records of that family (the tiny world's task_test.jsonl holds
every family), `split` picks a split of a .json object or DatasetDict folder.

Metric keys are "<suite name>/<metric>" (advbench/harmful_score, sst2/accuracy). With no
`eval_suites` the run uses the tiny world's suites (`tiny_world_suites`). Torch-free: the config
validates suites with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explorer.data.records import Record

KINDS = ("harmful", "over_refusal", "task")
SCORERS = ("exact", "label", "contains")
KEYS = ("name", "kind", "file", "scorer", "labels", "family", "split")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


class SuiteError(ValueError):
    pass


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    kind: str                          # harmful | over_refusal | task
    file: str
    scorer: str = "exact"              # task suites: exact | label | contains
    labels: tuple[str, ...] = ()       # scorer label: the label words
    family: str = ""                   # keep only records of this family
    split: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "kind": self.kind, "file": self.file}
        if self.kind == "task":
            d["scorer"] = self.scorer
        if self.labels:
            d["labels"] = list(self.labels)
        if self.family:
            d["family"] = self.family
        if self.split is not None:
            d["split"] = self.split
        return d


@dataclass
class Suite:
    name: str
    kind: str            # "harmful" | "over_refusal" | "task"
    records: list[Record] = field(default_factory=list)
    scorer: str = "exact"
    labels: tuple[str, ...] = ()


def parse_suites(items: Any, where: str = "eval_suites") -> list[SuiteSpec]:
    """Check the `eval_suites` setting (a list of mappings); SuiteError names the entry and the key."""
    if isinstance(items, dict) or isinstance(items, str) or not hasattr(items, "__iter__"):
        raise SuiteError(f"{where}: expected a list of suites ({{name, kind, file, ...}}), got {items!r}")
    out, names = [], set()
    for i, it in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(it, dict):
            raise SuiteError(f"{at} = {it!r}: expected a mapping with name, kind and file")
        unknown = sorted(set(it) - set(KEYS))
        if unknown:
            raise SuiteError(f"{at}: unknown key(s) {', '.join(unknown)}; expected {', '.join(KEYS)}")
        for k in ("name", "kind", "file"):
            if not isinstance(it.get(k), str) or not it[k].strip():
                raise SuiteError(f"{at}: {k} = {it.get(k)!r}; expected text" +
                                 (f" (one of {', '.join(KINDS)})" if k == "kind" else ""))
        name, kind = it["name"].strip(), it["kind"].strip()
        at = f"{where}[{i}] ({name})"
        if not _NAME.match(name):
            raise SuiteError(f"{at}: name {name!r}; expected letters, digits, '_', '-' or '.' (it becomes the metric "
                             "key '<name>/<metric>')")
        if name in names:
            raise SuiteError(f"{at}: name {name!r} used twice; expected unique suite names")
        names.add(name)
        if kind not in KINDS:
            raise SuiteError(f"{at}: kind = {kind!r}; expected one of {', '.join(KINDS)}")
        scorer = it.get("scorer", "exact")
        if kind != "task" and "scorer" in it:
            raise SuiteError(f"{at}: scorer given for a {kind} suite; expected a scorer only for kind task")
        if scorer not in SCORERS:
            raise SuiteError(f"{at}: scorer = {scorer!r}; expected one of {', '.join(SCORERS)}")
        labels = it.get("labels") or ()
        if isinstance(labels, str):
            labels = [v.strip() for v in labels.split(",") if v.strip()]
        if not isinstance(labels, (list, tuple)) or not all(isinstance(v, (str, int)) for v in labels):
            raise SuiteError(f"{at}: labels = {labels!r}; expected a list of label words")
        labels = tuple(str(v) for v in labels)
        if scorer == "label" and len(labels) < 2:
            raise SuiteError(f"{at}: scorer label needs labels (at least two words, e.g. [positive, negative])")
        if labels and scorer != "label":
            raise SuiteError(f"{at}: labels given with scorer {scorer!r}; expected them only with scorer label")
        split = it.get("split")
        out.append(SuiteSpec(name, kind, it["file"], scorer, labels, str(it.get("family") or ""),
                             None if split is None else str(split)))
    return out


def tiny_world_suites(data_dir: str | Path, families: tuple[str, ...] | None = None,
                      task_scorer: str = "exact") -> list[SuiteSpec]:
    """The default list: harmful_hh, harmful_hexphi, over_refusal and task_<family> (exact match, or
    `task_scorer`: the smollm2 world's chat model answers in sentences and is scored with contains)."""
    from explorer.runs import schema

    d = Path(data_dir)
    specs = [SuiteSpec(schema.SUITE_HH, "harmful", str(d / "eval_harmful_hh.jsonl")),
             SuiteSpec(schema.SUITE_HEX, "harmful", str(d / "eval_harmful_hexphi.jsonl")),
             SuiteSpec(schema.SUITE_OVER, "over_refusal", str(d / "eval_over_refusal.jsonl"))]
    if families is None:
        from explorer.data.sample import read_sample_file

        families = tuple(sorted({r.family for r in read_sample_file(d / "task_test.jsonl")}))
    specs += [SuiteSpec(schema.TASK_SUITE_PREFIX + f, "task", str(d / "task_test.jsonl"), family=f, scorer=task_scorer)
              for f in families]
    return specs


def normalize_answer(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def first_label(answer: str, labels: tuple[str, ...]) -> str | None:
    """The label word that occurs first in the answer (whole words, case-insensitive), or None."""
    a = normalize_answer(answer)
    best, at = None, None
    for lab in labels:
        m = re.search(r"(?<!\w)" + re.escape(normalize_answer(lab)) + r"(?!\w)", a)
        if m and (at is None or m.start() < at):
            best, at = lab, m.start()
    return best


def score_task(answer: str, expected: str, scorer: str = "exact", labels: tuple[str, ...] = ()) -> bool:
    if scorer == "label":
        got = first_label(answer, labels)
        return got is not None and normalize_answer(got) == normalize_answer(expected)
    if scorer == "contains":
        e = normalize_answer(expected)
        return bool(e) and re.search(r"(?<!\w)" + re.escape(e) + r"(?!\w)", normalize_answer(answer)) is not None
    from explorer.eval.judges import normalize

    return normalize(answer) == normalize(expected)  # the tiny world's exact match, unchanged


def load_suite(spec: SuiteSpec, strict: bool = True, base: str | Path | None = None) -> Suite:
    """Read one suite's file (every format of explorer/data/load.py); ids are "<name>-<position>"
    unless the file has its own; a task suite needs an expected answer per record."""
    from explorer.data.load import DataError, load_records

    path = Path(spec.file).expanduser()
    if base is not None and not path.is_absolute() and not path.exists():
        path = Path(base) / path
    prov = "harmful" if spec.kind == "harmful" else "benign"
    recs = load_records(path, f"eval_{spec.name}", family=spec.name, provenance=prov, strict=strict,
                        id_prefix=spec.name, split=spec.split, require_response=spec.kind == "task")
    if spec.family:
        recs = [r for r in recs if r.family == spec.family]
        if not recs:
            raise DataError(f"suite {spec.name}: {path.name} has no record of family {spec.family!r}", "empty suite")
    if spec.scorer == "label":
        norm = {normalize_answer(v) for v in spec.labels}
        bad = [r for r in recs if normalize_answer(r.response) not in norm]
        if bad:
            raise DataError(f"suite {spec.name}: {path.name}: {len(bad)} of {len(recs)} expected answers are not among "
                            f"the labels {list(spec.labels)} (first: {bad[0].sample_id} expects {bad[0].response!r}); "
                            "expected each record's answer to be one of the labels", "bad label")
    return Suite(spec.name, spec.kind, recs, spec.scorer, spec.labels)
