"""One import path per name: every explorer name is imported from the module that defines it.

No compat aliases: no `sys.modules[...] =` trick, no module that only re-exports, no name imported into
a module and handed on (listed in `__all__` or marked `# noqa: F401`). The one exception is a package's
public face, torchtune's habit: a package's __init__ may gather its own submodules' names
(`from explorer import viz; viz.data_map(...)`), and then outside that package those names are imported
from the package only, never from the submodule. Checked over the package, tests, benchmarks, the
notebooks' sources and the code blocks of README.md and docs/ (an import of a module that no longer
exists fails too).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_sources(root: Path = ROOT) -> dict[str, tuple[bool, str]]:
    """{module: (is a package __init__, source)} for explorer/."""
    return {module_name(p, root): (p.name == "__init__.py", p.read_text(encoding="utf-8"))
            for p in (root / "explorer").rglob("*.py")}


def _bound(target) -> set[str]:
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, (ast.Tuple, ast.List)):
        return set().union(*(_bound(t) for t in target.elts))
    return set()


def defined_names(tree: ast.Module) -> set[str]:
    """Names a module binds itself at top level (also under if/try/with), imports excluded."""
    out: set[str] = set()
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, ast.Assign):
            out |= set().union(*(_bound(t) for t in node.targets))
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            out |= _bound(node.target)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            out |= _bound(node.target)
            todo += node.body + node.orelse
        elif isinstance(node, (ast.If, ast.While)):
            todo += node.body + node.orelse
        elif isinstance(node, ast.Try):
            todo += node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            todo += node.body
    return out


def imported_names(tree: ast.Module, name: str, is_package: bool) -> dict[str, str]:
    """{local name: explorer module it comes from} for the module's top-level `from explorer... import`."""
    pkg = name if is_package else name.rsplit(".", 1)[0]
    out = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = pkg.rsplit(".", node.level - 1)[0] if node.level > 1 else pkg
                mod = f"{base}.{mod}" if mod else base
            if mod.startswith("explorer"):
                out.update({a.asname or a.name: mod for a in node.names})
    return out


def all_of(tree: ast.Module) -> set[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return {e.value for e in getattr(node.value, "elts", []) if isinstance(e, ast.Constant)}
    return set()


def alias_problems(sources: dict[str, tuple[bool, str]]) -> tuple[list[str], dict[str, str]]:
    """(problems in the package itself, {"pkg.name": defining module} for each name a package's face
    gathers from its own submodules)."""
    problems, faces = [], {}
    for name, (is_pkg, src) in sorted(sources.items()):
        tree = ast.parse(src)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Subscript) and "sys.modules" in ast.unparse(t.value)
                                                     for t in node.targets)):
                problems.append(f"{name}: assigns into sys.modules (a module posing under another name)")
        body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        imports = imported_names(tree, name, is_pkg)
        if body and all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in body) and imports and not is_pkg:
            problems.append(f"{name}: only imports ({', '.join(sorted(imports))}); import them from where they live")
        lines = src.splitlines()
        noqa = {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom)
                if any("noqa: F401" in line for line in lines[n.lineno - 1:n.end_lineno]) for a in n.names}
        handed_on = {n for n in imports if n in all_of(tree) or n in noqa} - defined_names(tree)
        modules_here = {n for n, m in imports.items() if f"{m}.{n}" in sources}   # `from explorer.runs import schema`
        for node in tree.body:   # NAME = imported_name / NAME = module.NAME: a second name for one thing
            value = getattr(node, "value", None)
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and (
                    (isinstance(value, ast.Name) and value.id in imports and value.id not in modules_here)
                    or (isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name)
                        and value.value.id in modules_here)):
                problems.append(f"{name}:{node.lineno}: {ast.unparse(node).split(' =')[0]} is another name for "
                                f"{ast.unparse(value)}; use that")
        for n in sorted(handed_on):
            src_mod = imports[n]
            if is_pkg and src_mod.startswith(name + "."):
                faces[f"{name}.{n}"] = src_mod
            else:
                problems.append(f"{name}: hands on {n} from {src_mod}; import it from {src_mod} instead")
        if is_pkg and "__getattr__" in defined_names(tree):   # a face that imports its names on first use
            for n in sorted(all_of(tree) - defined_names(tree) - set(imports)):
                homes = [m for m, (_, s) in sorted(sources.items())
                         if m.startswith(name + ".") and n in defined_names(ast.parse(s))]
                if homes:
                    faces[f"{name}.{n}"] = homes[0]
                else:
                    problems.append(f"{name}: lists {n} in __all__, and no module of the package defines it")
    return problems, faces


def caller_problems(where: str, tree: ast.AST, defs: dict[str, set[str]], faces: dict[str, str],
                    inside: str = "") -> list[str]:
    """Each `from explorer.X import n` in `tree` (any depth) imports n from where it is defined
    (`defs`: {module: the names it defines}; `inside`: the module `tree` is, if in explorer/)."""
    by_home = {(home, full.rsplit(".", 1)[1]): full.rsplit(".", 1)[0] for full, home in faces.items()}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("explorer") and a.name not in defs:
                    out.append(f"{where}:{node.lineno}: import {a.name}: no such module")
        if not (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("explorer") and not node.level):
            continue
        mod = node.module
        if mod not in defs:
            out.append(f"{where}:{node.lineno}: from {mod}: no such module")
            continue
        for a in node.names:
            n = a.name
            if f"{mod}.{n}" in defs or n == "*":
                continue  # a submodule
            if n in defs[mod]:
                face = by_home.get((mod, n))
                if face and not (inside == face or inside.startswith(face + ".")):
                    out.append(f"{where}:{node.lineno}: {n} from {mod}; outside {face} it is imported from {face}")
            elif f"{mod}.{n}" not in faces:
                homes = sorted(m for m, d in defs.items() if n in d)
                out.append(f"{where}:{node.lineno}: {n} is not defined in {mod}; import it from "
                           f"{' or '.join(homes) or 'where it is defined'}")
    return out


def code_blocks(md: str) -> list[tuple[int, str]]:
    """(line, code) of each import line in a markdown file's fenced code blocks."""
    out, fence = [], False
    for i, line in enumerate(md.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fence = not fence
        elif fence and re.match(r"\s*(from explorer[\w.]* import|import explorer)", line) and "(" not in line:
            out.append((i, line.strip()))
    return out


def test_no_alias_inside_explorer():
    problems, _ = alias_problems(package_sources())
    assert not problems, "\n".join(problems)


def test_every_import_names_the_module_that_defines_it():
    sources = package_sources()
    _, faces = alias_problems(sources)
    defs = {m: defined_names(ast.parse(s)) for m, (_, s) in sources.items()}
    files = [*(ROOT / "explorer").rglob("*.py"), *(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py"),
             *(ROOT / "notebooks").glob("*.py")]
    bad = []
    for f in sorted(files):
        rel = f.relative_to(ROOT)
        inside = module_name(f, ROOT) if rel.parts[0] == "explorer" else ""
        bad += caller_problems(str(rel), ast.parse(f.read_text(encoding="utf-8")), defs, faces, inside)
    for md in sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]):
        for line, code in code_blocks(md.read_text(encoding="utf-8")):
            bad += caller_problems(f"{md.relative_to(ROOT)}:{line}", ast.parse(code), defs, faces)
    assert not bad, "\n".join(bad)


def test_the_checks_catch_each_kind_of_alias():
    fake = {
        "explorer": (True, ""),
        "explorer.train": (True, ""),
        "explorer.train.recipe": (False, "def run():\n    pass\n"),
        "explorer.train.loop": (False, '"""Moved."""\nfrom explorer.train.recipe import run  # noqa: F401\n'),
        "explorer.record": (True, ""),
        "explorer.record.writer": (False, "import sys\nfrom explorer.train import recipe\nsys.modules[__name__] = recipe\n"),
        "explorer.methods": (True, ""),
        "explorer.methods.protocol": (False, "class Decision:\n    pass\n"),
        "explorer.methods.base": (False, "from explorer.methods.protocol import Decision\n__all__ = ['Decision', 'register']\n"
                                         "def register():\n    pass\n"),
        "explorer.viz": (True, "from explorer.viz.figures import data_map\n__all__ = ['data_map']\n"),
        "explorer.viz.figures": (False, "def data_map():\n    pass\n"),
        "explorer.integrations": (True, "__all__ = ['Trainer', 'Gone']\ndef __getattr__(name):\n    pass\n"),
        "explorer.integrations.hf": (False, "class Trainer:\n    pass\n"),
        "explorer.runs": (True, ""),
        "explorer.runs.schema": (False, "STEP_CHECKPOINTS = 'checkpoints'\n"),
        "explorer.train.other": (False, "from explorer.runs import schema\nfrom explorer.train.recipe import run\n"
                                        "STEP_CHECKPOINTS = schema.STEP_CHECKPOINTS\ngo = run\n"
                                        "N = len(schema.STEP_CHECKPOINTS)\n"),
    }
    problems, faces = alias_problems(fake)
    text = "\n".join(problems)
    assert "explorer.train.loop: only imports (run)" in text
    assert "explorer.train.loop: hands on run from explorer.train.recipe" in text
    assert "explorer.record.writer: assigns into sys.modules" in text
    assert "explorer.methods.base: hands on Decision from explorer.methods.protocol" in text
    assert "explorer.train.other:3: STEP_CHECKPOINTS is another name for schema.STEP_CHECKPOINTS" in text
    assert "explorer.train.other:4: go is another name for run" in text
    assert "explorer.integrations: lists Gone in __all__, and no module of the package defines it" in text
    assert "register" not in text and len(problems) == 7       # a name defined where it is listed is fine
    assert faces == {"explorer.viz.data_map": "explorer.viz.figures",     # a package's face is no alias,
                     "explorer.integrations.Trainer": "explorer.integrations.hf"}   # also a lazy one

    defs = {m: defined_names(ast.parse(s)) for m, (_, s) in fake.items()}

    def callers(code, inside=""):
        return "\n".join(caller_problems("x.py", ast.parse(code), defs, faces, inside))

    assert callers("from explorer.train.recipe import run\nfrom explorer.viz import data_map\n"
                   "from explorer.integrations import Trainer\n") == ""
    assert "outside explorer.integrations it is imported from explorer.integrations" in callers(
        "from explorer.integrations.hf import Trainer")
    assert "run is not defined in explorer.train.loop; import it from explorer.train.recipe" in callers(
        "def f():\n    from explorer.train.loop import run\n")                     # lazy imports count
    assert "Decision is not defined in explorer.methods.base" in callers("from explorer.methods.base import Decision")
    assert "outside explorer.viz it is imported from explorer.viz" in callers("from explorer.viz.figures import data_map")
    assert callers("from explorer.viz.figures import data_map", inside="explorer.viz.other") == ""
    assert "no such module" in callers("from explorer.train.gone import run")
    assert "no such module" in callers("import explorer.train.gone")
    assert code_blocks("text\n```python\nfrom explorer.train.loop import run\nx = 1\n```\nfrom explorer.a import b\n") == [
        (3, "from explorer.train.loop import run")]
