"""The configuration reference, rendered from config.toml's own comments (an MkDocs hook).

``mkdocs.yml`` lists this file under ``hooks:``; at build time :func:`on_page_markdown` replaces the
marker ``<!-- config-reference -->`` in ``docs/configuration.md`` with :func:`render_config_reference`
of the repository's ``config.toml``: every table, every key with its default value (read by ``tomllib``)
and the comment lines beside and under it, and the comment blocks above a table or a group of keys. The
page therefore says what the file says, and a key added to config.toml shows up on the next build.
``tests/test_docs.py`` checks that every key ``tomllib`` reads appears on the rendered page with a
description. Standard library only (the test imports it without MkDocs).
"""

from __future__ import annotations

import html
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config.toml"
MARKER = "<!-- config-reference -->"
PAGE = "configuration.md"

_TABLE = re.compile(r"^\[(?P<name>[\w.]+)\]\s*(?:#.*)?$")
_KEY = re.compile(r"^(?P<key>[A-Za-z_][\w-]*)\s*=\s*(?P<rest>.*)$")
_COMMENTED_KEY = re.compile(r"^#\s*(?P<key>[A-Za-z_][\w-]*)\s*=\s*(?P<rest>.*)$")


@dataclass(frozen=True)
class Key:
    """One key of a table: its name, its default as written in config.toml (None: commented out, i.e. unset
    by default, ``example`` then holds the value shown), and its comment text."""

    name: str
    default: str | None
    example: str | None
    doc: str


@dataclass
class Table:
    """A ``[table]`` of config.toml: its comment block above the header, then keys and comment blocks
    (a ``str`` item) in file order."""

    name: str
    intro: str = ""
    items: list[Key | str] = field(default_factory=list)


def _split_value(rest: str) -> tuple[str, str] | None:
    """``(value text, comment)`` of the text after ``key =``; the value ends at the first ``#`` before which
    the text parses as a TOML value (a ``#`` inside a string is not a comment). None if it never parses."""
    cuts = [m.start() for m in re.finditer("#", rest)] + [len(rest)]
    for cut in cuts:
        value = rest[:cut].strip()
        try:
            tomllib.loads(f"v = {value}")
        except tomllib.TOMLDecodeError:
            continue
        comment = rest[cut + 1:].strip() if cut < len(rest) else ""
        return value, comment
    return None


def parse_config(text: str) -> tuple[str, list[Table]]:
    """config.toml's text -> (the file's header comment, its tables in order).

    A comment line right after a key, indented (a continuation), extends that key's doc; a comment block
    separated from the next table header by nothing but comments is the table's intro; a comment block
    inside a table, followed by keys, is a group note (a ``str`` item)."""
    header: list[str] = []
    tables: list[Table] = []
    pending: list[str] = []  # comment lines not yet attached
    last: Key | None = None
    for raw in text.split("\n"):
        line = raw.strip()
        if not line:
            if pending:
                (tables[-1].items.append(" ".join(pending)) if tables else header.extend(pending))
                pending = []
            last = None
            continue
        if m := _TABLE.match(line):
            tables.append(Table(m.group("name"), intro=" ".join(pending)))
            pending, last = [], None
            continue
        if line.startswith("#"):
            body = line[1:].strip()
            if last is not None and raw.startswith((" ", "\t")):  # continuation of the key above
                last_doc = f"{last.doc} {body}".strip()
                tables[-1].items[-1] = last = Key(last.name, last.default, last.example, last_doc)
                continue
            if tables and (m := _COMMENTED_KEY.match(line)) and (split := _split_value(m.group("rest"))):
                if pending:
                    tables[-1].items.append(" ".join(pending))
                    pending = []
                last = Key(m.group("key"), None, split[0], split[1])
                tables[-1].items.append(last)
                continue
            pending.append(body)
            last = None
            continue
        if (m := _KEY.match(line)) and tables:
            split = _split_value(m.group("rest"))
            if split is None:
                raise ValueError(f"config.toml: cannot read the value of {m.group('key')!r} in {line!r} "
                                 f"(multi-line values are not supported by the docs generator)")
            if pending:
                tables[-1].items.append(" ".join(pending))
                pending = []
            last = Key(m.group("key"), split[0], None, split[1])
            tables[-1].items.append(last)
            continue
        raise ValueError(f"config.toml: a line the docs generator cannot read: {line!r}")
    if pending:
        (tables[-1].items.append(" ".join(pending)) if tables else header.extend(pending))
    return " ".join(header), tables


def _cell(text: str) -> str:
    """Comment text safe in a Markdown table cell: HTML escaped (``<cache_dir>`` stays visible), pipes escaped."""
    return html.escape(text, quote=False).replace("|", "\\|")


def _code(text: str) -> str:
    """A TOML value inside a code span of a table cell: only pipes escaped."""
    return text.replace("|", "\\|")


def _prose(text: str) -> str:
    return html.escape(text, quote=False)


def flat_keys(data: dict[str, Any], prefix: str = "") -> list[str]:
    """Every leaf key of a ``tomllib`` dict as a dotted name (``predictor.params.momentum.lookback``)."""
    keys: list[str] = []
    for k, v in data.items():
        name = f"{prefix}{k}"
        keys += flat_keys(v, name + ".") if isinstance(v, dict) else [name]
    return keys


def undocumented_keys(text: str) -> list[str]:
    """Dotted names of config.toml keys (set or commented out) with no comment beside or under them."""
    return [f"{table.name}.{item.name}" for table in parse_config(text)[1] for item in table.items
            if isinstance(item, Key) and not item.doc]


def render_config_reference(text: str) -> str:
    """Markdown for config.toml's text: one section per table (its intro comment, a table of key, default and
    meaning; group notes between the rows as paragraphs). Raises ValueError on a line it cannot read, or when a
    key ``tomllib`` reads is missing from the rendering."""
    header, tables = parse_config(text)
    out = []
    if header:
        out += [f"*From the header of `config.toml`:* {_prose(header)}", ""]
    for table in tables:
        anchor = table.name.replace(".", "-")
        out += [f"## `[{table.name}]` {{ #{anchor} }}", ""]
        if table.intro:
            out += [_prose(table.intro), ""]
        in_rows = False
        for item in table.items:
            if isinstance(item, str):
                if in_rows:
                    out.append("")
                out += [_prose(item), ""]
                in_rows = False
                continue
            if not in_rows:
                out += ["| key (`--set`) | default | meaning |", "|---|---|---|"]
                in_rows = True
            default = (f"`{_code(item.default)}`" if item.default is not None
                       else f"unset (e.g. `{_code(item.example or '')}`)")
            out.append(f"| `{table.name}.{item.name}` | {default} | {_cell(item.doc)} |")
        if in_rows:
            out.append("")
    rendered = "\n".join(out)
    missing = [k for k in flat_keys(tomllib.loads(text)) if f"`{k}`" not in rendered]
    if missing:
        raise ValueError(f"config.toml keys missing from the configuration reference: {', '.join(missing)}")
    return rendered


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs hook: fill the marker of docs/configuration.md from config.toml."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"docs/{PAGE} has no {MARKER} marker for the generated configuration reference")
    return markdown.replace(MARKER, render_config_reference(CONFIG.read_text(encoding="utf-8")))
