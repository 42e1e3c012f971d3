"""The documentation: mkdocs builds docs/ with --strict (a broken link or anchor, or a page that the nav
of mkdocs.yml leaves out, fails it), and every relative link of README.md reaches a file of the
repository (an anchor into docs/, a heading of the built page); every `explorer run` command of README
and docs/ names keys the config knows; README's config is the fixture its walk-through test runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

from conftest import in_ci

pytestmark = pytest.mark.docs

REPO = Path(__file__).resolve().parents[1]
#: a markdown link or image: [text](target) / ![alt](target); the target up to a space or ")"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)[^)]*\)")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    try:
        import mkdocs  # noqa: F401
    except ImportError:
        if in_ci():
            pytest.fail("mkdocs is not installed in CI: the docs extra (pip install -e '.[docs]') is missing")
        pytest.skip("mkdocs is not installed: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(REPO / "mkdocs.yml"), "--site-dir", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def test_the_docs_site_builds_with_strict_links(site):
    assert (site / "index.html").exists()


def readme_links() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)      # code blocks hold commands, not links
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+://|mailto:", t)]


def page_html(site: Path, doc: str) -> Path:
    """The built page of docs/<doc>.md (mkdocs' directory URLs: x.md -> x/index.html, index.md -> index.html)."""
    stem = doc[:-len(".md")]
    return site / (stem[:-len("index")] if stem.endswith("index") else stem + "/") / "index.html"


def test_every_relative_link_of_the_readme_reaches_a_file(site):
    links = readme_links()
    assert any(t.startswith("docs/") for t in links)         # the pattern finds README's links at all
    problems = []
    for target in links:
        path, _, anchor = unquote(target).partition("#")
        if not path:
            problems.append(f"{target}: an anchor into README itself; link the docs page instead")
            continue
        if not (REPO / path).exists():
            problems.append(f"{target}: no file {path}")
            continue
        if anchor:
            if not (path.startswith("docs/") and path.endswith(".md")):
                problems.append(f"{target}: an anchor into a file that is not a docs page")
                continue
            html = page_html(site, path[len("docs/"):]).read_text(encoding="utf-8")
            if f'id="{anchor}"' not in html:
                problems.append(f"{target}: docs page {path} has no heading #{anchor}")
    assert not problems, "\n".join(problems)


def test_the_readme_stays_a_guide():
    """Issue 32: README at most 250 lines; everything else lives in docs/."""
    n = len((REPO / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= 250, f"README.md has {n} lines; move detail into a docs/ page"


def test_every_explorer_run_command_in_the_docs_names_keys_the_config_knows():
    """A command line in README or docs/ with a key the config does not have (a flat key of an earlier
    version, a typo) fails here instead of for the reader. Values are replaced by a placeholder where
    the docs write one (FILE, /path/to/checkpoint, <...>)."""
    import shlex

    from explorer.config import ConfigError, load_config

    problems, n = [], 0
    for page in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        text = page.read_text(encoding="utf-8").replace("\\\n", " ")
        for m in re.finditer(r"explorer run ([^\n`|]*)", text):
            args = m.group(1).split("#")[0].strip()
            try:
                toks = shlex.split(args)
            except ValueError:
                toks = args.split()
            config = toks[0] if toks and toks[0].endswith((".yaml", ".yml")) else None
            overrides = [re.sub(r"=(FILE|[A-Z]+|/path/to/.*|/models/.*|<.*>|.*[\[…].*)$", "=1", t)
                         for t in toks if "=" in t and not t.startswith("-")]
            n += 1
            try:
                load_config(str(REPO / config) if config and (REPO / config).exists() else None, overrides)
            except ConfigError as e:
                if "unknown key" in str(e):
                    problems.append(f"{page.relative_to(REPO)}: explorer run {args}\n  {e}")
    assert n > 20                      # the pattern finds the docs' commands at all
    assert not problems, "\n".join(problems)


def test_the_readme_config_is_the_fixture_the_walk_through_test_runs():
    """README shows tests/fixtures/own_data/own.yaml, which tests/test_own_data.py runs: the same settings."""
    import yaml

    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    fixture = yaml.safe_load((REPO / "tests/fixtures/own_data/own.yaml").read_text(encoding="utf-8"))
    assert [b for b in blocks if yaml.safe_load(b) == fixture], "README's own.yaml differs from the fixture"
