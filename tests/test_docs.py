"""The README is a front page and the documentation site cannot drift from the code it describes.

README.md stays short and its links resolve; its test command is the one CI runs; the configuration
reference (docs/configuration.md, rendered at build time by docs/hooks/config_reference.py) holds every
key of config.toml with its default and its comment. `mkdocs build --strict` (CI, .ci/run) checks the
site's links and anchors. Standard library only: well under a second.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CONFIG_TEXT = (ROOT / "config.toml").read_text(encoding="utf-8")


def _hook():
    """docs/hooks/config_reference.py, loaded by path as MkDocs loads it."""
    name = "config_reference_hook"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / "hooks" / "config_reference.py")
        assert spec and spec.loader, "docs/hooks/config_reference.py is missing"
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_the_readme_is_a_front_page_of_at_most_150_lines():
    n = README.count("\n")
    assert n <= 150, f"README.md has {n} lines; move the detail into a page under docs/"
    for heading in ("## Install, run, test", "## What a run prints", "## The stages", "## Documentation"):
        assert f"\n{heading}\n" in README, f"README.md lost its section {heading!r}"


def _relative_links(text: str) -> list[str]:
    """Markdown link targets that are not URLs or in-page anchors, without their #anchor."""
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    return [link.split("#")[0] for link in links if not re.match(r"[a-z]+:", link) and not link.startswith("#")]


def test_every_relative_link_of_the_readme_resolves_to_a_file():
    links = _relative_links(README)
    assert any(link.startswith("docs/") for link in links), "README.md links into no page of docs/"
    missing = [link for link in links if not (ROOT / link).is_file()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_every_docs_page_the_readme_links_is_in_the_site_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = {link.removeprefix("docs/") for link in _relative_links(README) if link.startswith("docs/")
             and link.endswith(".md")}  # pages; an image under docs/img/ is not one
    assert pages and all(re.search(rf":\s*{re.escape(p)}\s*$", nav, re.M) for p in pages), pages


def _pytest_commands(text: str, python: str) -> list[str]:
    return [" ".join(line.split("#")[0].split()).replace(python, "python", 1)
            for line in text.splitlines() if line.strip().startswith(f"{python} -m pytest")]


def test_the_readme_test_commands_are_the_ones_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    readme = _pytest_commands(README, "python")
    ci_commands = _pytest_commands(ci, "python3")
    assert ci_commands, ".ci/run runs no pytest command"
    assert ci_commands[0] == "python -m pytest -q" == readme[0], (ci_commands, readme)
    assert set(ci_commands) <= set(readme), f"CI runs {ci_commands}, the README shows {readme}"
    assert "mkdocs build --strict" in ci and ci.index("mkdocs build --strict") < ci.index("-m pytest"), \
        ".ci/run must build the docs (strict: a broken link fails) before the tests"
    assert re.search(r'"\.\[test,docs[,\]]', ci), ".ci/run must install the docs extra (mkdocs, mkdocs-material)"


def test_the_configuration_reference_holds_every_key_of_config_toml_with_its_default_and_comment():
    hook = _hook()
    page = hook.render_config_reference(CONFIG_TEXT)
    keys = hook.flat_keys(tomllib.loads(CONFIG_TEXT))
    assert len(keys) > 60  # every table's keys, not only the first table's
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([\w.]+)` \|.*$", page, re.M)}
    for key in keys:
        assert key in rows, f"config.toml key {key} is missing from the configuration reference"
        _, default, meaning = (c.strip() for c in rows[key].strip("|").split(" | ", 2))
        table, name = key.rsplit(".", 1)
        value = tomllib.loads(CONFIG_TEXT)
        for part in table.split("."):
            value = value[part]
        shown = tomllib.loads(f"v = {default.strip('`').replace(chr(92) + '|', '|')}")["v"]
        assert shown == value[name], (key, default, value[name])
        assert len(meaning) > 10, f"config.toml key {key} has no comment to document it: {rows[key]!r}"
    assert hook.undocumented_keys(CONFIG_TEXT) == []
    for table in re.findall(r"^\[([\w.]+)\]", CONFIG_TEXT, re.M):  # every table gets its own section and anchor
        assert f"## `[{table}]` {{ #{table.replace('.', '-')} }}" in page


def test_a_key_added_without_a_comment_is_reported_and_one_the_page_misses_fails_the_build():
    hook = _hook()
    text = CONFIG_TEXT.replace("[broker]\n", "[broker]\nleverage = 1.0\n", 1)
    assert hook.undocumented_keys(text) == ["broker.leverage"]
    assert "| `broker.leverage` | `1.0` |" in hook.render_config_reference(text)
    with pytest.raises(ValueError, match="cannot read the value of .multi."):
        hook.render_config_reference(CONFIG_TEXT + "\n[paper.extra]\nmulti = [\n  1,\n]\n")


def test_comments_become_the_meaning_and_html_stays_visible():
    hook = _hook()
    page = hook.render_config_reference(CONFIG_TEXT)
    cache_dir = next(line for line in page.splitlines() if line.startswith("| `data.cache_dir` |"))
    assert "&lt;cache_dir&gt;/&lt;exchange&gt;" in cache_dir  # not swallowed as an HTML tag
    name = next(line for line in page.splitlines() if line.startswith("| `predictor.name` |"))
    assert "naive \\| drift" in name  # a pipe in a comment does not split the table's cells
    assert "| `strategy.llm_signal.threshold` | unset (e.g. `0.003`) |" in page  # a commented-out key
    assert "Plausibility guard: a result beyond these bounds" in page  # a comment block inside a table
    page_md = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert hook.MARKER in page_md and "docs/hooks/config_reference.py" in (ROOT / "mkdocs.yml").read_text()
