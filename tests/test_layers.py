"""Folders are layers: one LAYERS entry per folder (or top-level module) of explorer/, no import from a
lower layer to a higher one, and no import cycle, neither between modules nor between the packages
(explorer.data, explorer.model, ...) with every module collapsed into its package. Lazy imports (inside
functions) and TYPE_CHECKING imports count: they are still dependencies.

The layers, lowest first (a module may import its own layer and the layers below it). The run folder is
the only interface between the training side and the viewing side (docs/architecture.md):

    runs        the run-folder format (schema) and its reader (the viewing side's base; no torch)
    data        records, pools, loaders, tokenised Batch
    eval        generation on held-out suites, judges, metrics
    model       load a causal LM from its folder (+ LoRA), the per-sample loss, the optimiser step and
                schedule (optim.py), torch.distributed helpers, the SmolLM2 checkpoint
    worlds      a world's model specs, data folder and run defaults (explorer/worlds/: one YAML file per world)
    prepare     the worlds' preparation: the tiny world trained, the SmolLM2 alignment adapter trained,
                model specs (tiny:aligned) -> folders
    scoring     per-sample gradient features and scores
    interp      activation hooks, SAEs, subspaces
    methods     the protocol (Method, Decision, Context), the registry, one module per method
    config      RunConfig + each method's config dataclass from the registry
    record      writes the run folder
    train       one run's pools (assemble.py) and the recipe
    replay      counterfactual replays from a run's step checkpoints (the recipe's checkpoints, the reader)
    integrations  the recipe's pieces inside Hugging Face / TRL trainers
    importers   other tools' logs -> run folders (they read data files and write with record)
    viz, app    the viewing side: figures and the Streamlit pages (only runs below them)
    cli, demo, __main__   entry points
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "explorer"

#: lowest first: one entry per folder of explorer/ or top-level module; the last holds the entry points
LAYERS: list[tuple[str, ...]] = [
    ("explorer.runs",),
    ("explorer.data",),
    ("explorer.eval",),
    ("explorer.model",),
    ("explorer.worlds",),
    ("explorer.prepare",),
    ("explorer.scoring",),
    ("explorer.interp",),
    ("explorer.methods",),
    ("explorer.config",),
    ("explorer.record",),
    ("explorer.train",),
    ("explorer.replay",),
    ("explorer.integrations",),   # the recipe inside Hugging Face / TRL trainers
    ("explorer.importers",),
    ("explorer.viz",),
    ("explorer.app",),
    ("explorer.cli", "explorer.demo", "explorer.__main__", "explorer"),
]
VIEWING = ("explorer.runs", "explorer.viz", "explorer.app")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_in(name: str, is_package: bool, source: str, modules) -> set[str]:
    """explorer modules imported anywhere in a module's source (also inside functions and
    TYPE_CHECKING blocks: a lazy import is still a dependency)."""
    pkg = name if is_package else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(source)):
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
    return {m: imports_in(m, p.name == "__init__.py", p.read_text(encoding="utf-8"), modules)
            for m, p in modules.items()}


def package_of(module: str) -> str:
    """explorer.data.load -> explorer.data; a top-level module (explorer.cli) is its own package."""
    return ".".join(module.split(".")[:2])


def package_graph(g: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph with every module collapsed into its package (edges inside a package dropped)."""
    out: dict[str, set[str]] = {}
    for m, deps in g.items():
        out.setdefault(package_of(m), set()).update(package_of(n) for n in deps if package_of(n) != package_of(m))
    return out


def layer_of(module: str) -> int:
    for i, names in enumerate(LAYERS):
        if package_of(module) in names:
            return i
    raise AssertionError(f"{module} is in no layer; add its folder to LAYERS in {__file__}")


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


def test_every_folder_is_one_layer_entry():
    units = {package_of(m) for m in all_modules()}
    entries = [n for names in LAYERS for n in names]
    assert len(entries) == len(set(entries)), "a name is in two layers"
    assert units == set(entries), (f"folders/top-level modules without a layer: {sorted(units - set(entries))}; "
                                   f"layers naming nothing: {sorted(set(entries) - units)}")
    assert all(len(names) == 1 for names in LAYERS[:-1]), "only the entry points share a layer"


def test_no_import_cycle_inside_explorer():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_cycle_between_packages():
    g = graph()
    cycle = find_cycle(package_graph(g))
    if cycle:
        why = [f"{m} -> {n}" for a, b in zip(cycle, cycle[1:]) for m, deps in sorted(g.items())
               if package_of(m) == a for n in sorted(deps) if package_of(n) == b]
        raise AssertionError("package import cycle: " + " -> ".join(cycle) + "\n" + "\n".join(why))


def test_no_import_from_a_lower_layer_to_a_higher_one():
    bad = [f"{m} (layer {LAYERS[layer_of(m)][0]}) imports {n} (layer {LAYERS[layer_of(n)][0]})"
           for m, deps in sorted(graph().items()) for n in sorted(deps) if layer_of(n) > layer_of(m)]
    assert not bad, "\n".join(bad)


def test_the_viewing_side_imports_only_the_viewing_side():
    bad = [f"{m} imports {n}" for m, deps in sorted(graph().items())
           if package_of(m) in VIEWING for n in sorted(deps) if package_of(n) not in VIEWING]
    assert not bad, "\n".join(bad)


def test_the_checks_notice_a_cycle_an_upward_import_and_a_package_loop():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer_of("explorer.data.tokenize") < layer_of("explorer.methods.protocol")
    assert layer_of("explorer.train.assemble") > layer_of("explorer.config")
    assert layer_of("explorer.prepare.tiny") > layer_of("explorer.model.load")
    # no cycle between modules, one between their packages (a lazy import in data/ of a module whose
    # package imports data/: how data/assemble.py once looped through config)
    modules = {"explorer.data.load", "explorer.data.assemble", "explorer.config", "explorer.eval.suites"}
    srcs = {"explorer.data.assemble": "def f():\n    from explorer.config import RunConfig\n",
            "explorer.config": "from explorer.eval.suites import parse_suites\n",
            "explorer.eval.suites": "from explorer.data.load import load_records\n",
            "explorer.data.load": ""}
    g = {m: imports_in(m, False, s, modules) for m, s in srcs.items()}
    assert find_cycle(g) is None
    assert find_cycle(package_graph(g)) == ["explorer.config", "explorer.eval", "explorer.data", "explorer.config"]
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("explorer.newfolder.x")


def test_the_architecture_page_lists_the_layers_in_this_order():
    """docs/architecture.md's layer line is LAYERS (the entry points as `cli, demo`)."""
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = page.split("### Layers", 1)[1].split("```", 2)[1]
    drawn = [part.strip() for part in " ".join(block.split()).split("->")]
    want = [n.split(".", 1)[1] for (n,) in LAYERS[:-1]] + ["cli, demo"]
    assert drawn == want, f"docs/architecture.md draws {drawn}; LAYERS is {want}"
