"""Layers without cycles: no import cycle inside explorer/, and no import from a lower layer to a higher one.

The layers, lowest first (a module may import its own layer and the layers below it). This is the order
the code has, read off its imports; README's Layout section lists the same parts in the order data flows
through a run (data -> model -> ... -> train -> eval -> record), in which the recipe calls eval and record,
so those sit below train here.

    runs        the run-folder format and its reader (the viewing side's base; no torch)
    data        records, pools, loaders, tokenised Batch
    eval        generation on held-out suites, judges, metrics
    model       load a causal LM (+ LoRA), the tiny one, SmolLM2, the per-sample loss; the worlds
                (explorer/worlds.py) that name them
    scoring     per-sample gradient features and scores
    interp      activation hooks, SAEs, subspaces
    methods     the protocol (Method, Decision, Context), the registry, one module per method
    config      RunConfig + each method's config dataclass from the registry
    data.assemble   one run's pools + its evaluation suites from a RunConfig (composes data with eval's
                suites and reads the config; it lives in data/ beside the loaders, so it gets a layer of
                its own above config)
    record      writes the run folder
    train       the recipe
    importers   other tools' logs -> run folders
    demo, cli   entry points
The viewing side (runs, viz, app) imports only the viewing side: it never imports torch.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "explorer"

#: lowest first; each entry is a list of module prefixes (the longest matching prefix decides)
LAYERS: list[tuple[str, ...]] = [
    ("explorer.runs",),
    ("explorer.data",),
    ("explorer.eval",),
    # distributed: torch.distributed helpers, below methods and train; worlds: a world's model specs,
    # data folder and run defaults (beside the model modules it names; config and the recipe read it)
    ("explorer.model", "explorer.distributed", "explorer.worlds"),
    ("explorer.scoring",),
    ("explorer.interp",),
    ("explorer.methods",),
    ("explorer.config",),
    ("explorer.data.assemble",),
    ("explorer.record", "explorer.runs.writer"),
    ("explorer.train",),
    ("explorer.importers", "explorer.runs.importers"),  # importers read data files: above data
    ("explorer.viz",),
    ("explorer.app",),
    ("explorer.demo",),
    ("explorer.cli", "explorer.__main__", "explorer"),
]
VIEWING = ("explorer.runs", "explorer.viz", "explorer.app")
#: in the run-folder package but on the writing side (they read data files; still no torch: test_no_torch)
NOT_VIEWING = ("explorer.runs.writer", "explorer.runs.importers")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """explorer modules imported anywhere in the file (also inside functions and TYPE_CHECKING blocks:
    a lazy import is still a dependency)."""
    name = module_name(path)
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("explorer")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = pkg.rsplit(".", node.level - 1)[0] if node.level > 1 else pkg
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if not mod.startswith("explorer"):
                continue
            for a in node.names:  # `from explorer.methods import sft` imports the submodule
                sub = f"{mod}.{a.name}"
                out.add(sub if sub in modules else mod)
    return {m for m in out if m in modules and m != name}


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {m: imports_of(p, modules) for m, p in modules.items()}


def layer_of(module: str) -> int:
    best, rank = -1, None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), i
    assert rank is not None, f"{module} is in no layer; add it to LAYERS in {__file__}"
    return rank


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(g.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_cycle_inside_explorer():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_from_a_lower_layer_to_a_higher_one():
    bad = [f"{m} (layer {LAYERS[layer_of(m)][0]}) imports {n} (layer {LAYERS[layer_of(n)][0]})"
           for m, deps in sorted(graph().items()) for n in sorted(deps) if layer_of(n) > layer_of(m)]
    assert not bad, "\n".join(bad)


def test_the_viewing_side_imports_only_the_viewing_side():
    bad = [f"{m} imports {n}" for m, deps in sorted(graph().items())
           if m.startswith(VIEWING) and not m.startswith(NOT_VIEWING) for n in sorted(deps) if not n.startswith(VIEWING)]
    assert not bad, "\n".join(bad)


def test_the_checks_notice_a_cycle_and_an_upward_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer_of("explorer.data.tokenize") < layer_of("explorer.methods.base")
    assert layer_of("explorer.data.assemble") > layer_of("explorer.eval.evaluate")
