"""reports/ keeps statistics apart from rendering (issue 10, item 6).

The statistics modules (every ``reports/*.py``) compute numbers and return typed
results; drawing (matplotlib, quantstats), HTML and terminal tables live in
``reports/render/``. Checked on the source, so a function-local import counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STATISTICS = sorted(p for p in (ROOT / "reports").glob("*.py"))
#: What only rendering may import: drawing, HTML building, terminal tables.
RENDERING = {"matplotlib", "quantstats", "html", "rich", "PIL", "seaborn"}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", STATISTICS, ids=lambda p: p.name)
def test_statistics_modules_draw_nothing_and_build_no_html(path: Path) -> None:
    modules = imported_modules(path)
    drawing = sorted(m for m in modules if m.split(".")[0] in RENDERING)
    rendering = sorted(m for m in modules if m == "reports.render" or m.startswith("reports.render."))
    assert not drawing and not rendering, (
        f"reports/{path.name} is a statistics module but imports {drawing + rendering}; "
        "move the drawing or HTML into reports/render/"
    )


def test_the_statistics_modules_are_the_expected_ones() -> None:
    names = {p.stem for p in STATISTICS}
    assert {"metrics", "skill", "significance", "calibration", "leaderboard"} <= names
    assert not names & {"charts", "tearsheet", "forecast_page", "summary"}  # rendering lives in reports/render/


def test_one_number_formatter() -> None:
    """Only reports/render/format.py turns numbers into report text: no second formatter."""
    defined = {
        (str(p.relative_to(ROOT)), node.name)
        for p in [*(ROOT / "reports").rglob("*.py"), ROOT / "engine" / "cli.py", ROOT / "engine" / "judging" / "ledger.py"]
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef)
        and node.name in {"format_value", "_fmt", "number_or_text", "format_number", "_percent", "_ratio"}
    }
    assert {path for path, _ in defined} == {"reports/render/format.py"}, sorted(defined)
