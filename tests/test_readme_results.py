"""README figures match the JSON their commands wrote (benchmarks/results/*.json).

The README's stage-2 results and Performance figures live in generated blocks (benchmarks/readme_results.py);
these tests check them against the committed JSON, so an edit that changes a result without re-running
fails, and check that the check catches an edited figure, a figure with no source, a missing JSON file and
commentary written against an older run. Standard library only (no heavy imports): well under a second.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks import readme_results as rr

ROOT = Path(__file__).resolve().parents[1]
README_TEXT = (ROOT / "README.md").read_text()


def _body(name: str) -> str:
    """Block ``name``'s body in README.md, its indentation (inside a list item) stripped."""
    return rr.block_body(next(m for m in rr.BLOCK_RE.finditer(README_TEXT) if m.group("name") == name))


def _present_blocks() -> list[str]:
    """Blocks whose JSON files are all committed (the others are reported by the first test)."""
    return [name for name, block in rr.BLOCKS.items() if not rr.load_records(block)[1]]


def test_every_readme_result_matches_its_json():
    problems = rr.check(README_TEXT)
    assert not problems, "README.md and benchmarks/results/*.json disagree:\n" + "\n".join(problems)


def test_every_benchmark_script_writes_json_that_a_readme_block_renders():
    scripts = {p.name for p in (ROOT / "benchmarks").glob("*.py")} - {"results_io.py", "readme_results.py"}
    commands = " ".join(c for b in rr.BLOCKS.values() for c in b.commands)
    for script in sorted(scripts):
        text = (ROOT / "benchmarks" / script).read_text()
        assert "write_result(" in text, f"benchmarks/{script} does not write its figures (benchmarks/results_io.write_result)"
        assert f"benchmarks/{script}" in commands, (f"benchmarks/{script}'s figures are rendered by no README block: "
                                                    f"add a Block to BLOCKS in benchmarks/readme_results.py")


def _first_table_cell(body: str) -> tuple[str, str, str, str]:
    """(row line, new row line, row key, column header) with the first digit of a data cell changed."""
    lines = body.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("|") and i >= 2 and lines[i - 1].startswith("|---"):
            cells = rr._cells(line)
            header = rr._cells(lines[i - 2])
            for j, cell in enumerate(cells):
                if j >= 1 and re.search(r"\d", cell):
                    new = re.sub(r"\d", lambda m: str((int(m.group(0)) + 1) % 10), cell, count=1)
                    return line, line.replace(f"| {cell} |", f"| {new} |", 1), cells[0], header[j]
    raise AssertionError("no table with a numeric cell")


def test_an_edited_table_figure_names_table_row_column_and_both_values():
    tabled = [n for n in _present_blocks() if "\n|---" in rr.render_block(n)]
    if not tabled:
        pytest.skip("no result JSON committed yet (the first test fails and names the commands)")
    for name in tabled:
        body = _body(name)
        old, new, row, column = _first_table_cell(body)
        problems = rr.check(README_TEXT.replace(old, new, 1))
        mine = [p for p in problems if p.startswith(f"results:{name} ")]
        assert len(mine) == 1, (name, problems)
        assert f"column '{column}'" in mine[0] and row in mine[0] and "README '" in mine[0] and "JSON '" in mine[0]
        assert "re-run: " + rr.BLOCKS[name].commands[0] in mine[0]


def test_an_edited_prose_figure_is_caught():
    for name in _present_blocks():
        body = _body(name)
        line = next(x for x in body.split("\n")[1:] if x and not x.startswith("|") and re.search(r"\d", x))
        edited = re.sub(r"\d", lambda m: str((int(m.group(0)) + 1) % 10), line, count=1)
        problems = rr.check(README_TEXT.replace(line, edited, 1))
        assert any(p.startswith(f"results:{name} line ") and repr(edited) in p for p in problems), (name, problems)


@pytest.mark.parametrize("figure", ["The whole loop took 3.2 s on 2 cores.", "| naive | 2.84 s |",
                                    "That is 70× the backtrader rate.", "not distinguishable (p = 0.17)"])
def test_a_figure_outside_the_generated_blocks_has_no_source(figure):
    at = README_TEXT.index("\n## Performance\n") + len("\n## Performance\n")
    problems = rr.check(README_TEXT[:at] + figure + "\n" + README_TEXT[at:])
    assert any("no JSON source" in p and "section '## Performance'" in p for p in problems), problems
    hand = f"<!-- measured-by-hand: 2026-12-07, a one-off timing no script repeats -->\n{figure}\n<!-- /measured-by-hand -->\n"
    assert rr.check(README_TEXT[:at] + hand + README_TEXT[at:]) == rr.check(README_TEXT)


def test_a_missing_json_file_names_the_command_that_writes_it(tmp_path):
    problems = rr.check(README_TEXT, results_dir=tmp_path)
    for name, block in rr.BLOCKS.items():
        assert any(p.startswith(f"results:{name}: ") and "does not exist" in p and block.commands[-1] in p
                   for p in problems), (name, problems)


def test_commentary_written_against_another_run_is_caught():
    marks = list(rr.COMMENTARY_RE.finditer(README_TEXT))
    assert marks, "the stage-2 commentary carries no <!-- commentary:stage2 DATE --> mark"
    mark = marks[0]
    stale = README_TEXT.replace(mark.group(0).split("\n")[0], f"<!-- commentary:{mark.group('name')} 1999-01-01 -->", 1)
    assert any(p.startswith(f"commentary:{mark.group('name')} ") and "1999-01-01" in p for p in rr.check(stale))
    path = rr.RESULTS_DIR / f"{mark.group('name')}.json"
    if path.is_file():  # the mark set to the JSON's date: no complaint about the commentary
        date = json.loads(path.read_text())["date"]
        fresh = README_TEXT.replace(mark.group(0).split("\n")[0], f"<!-- commentary:{mark.group('name')} {date} -->", 1)
        assert not [p for p in rr.check(fresh) if p.startswith("commentary:")]


def test_the_readme_rounding():
    assert [rr.p_value(p) for p in (0.75, 0.1, 0.017, 0.007, 7.4e-4, 6e-21, None)] == \
        ["0.75", "0.10", "0.017", "0.007", "7e-4", "6e-21", "n/a"]
    assert [rr.pct(x) for x in (0.75, -0.356, -0.00001, None)] == ["75.0 %", "-35.6 %", "0.0 %", "n/a"]
    assert [rr.stat(x) for x in (24.14, -0.552, None)] == ["24.1", "-0.55", "n/a"]


def test_write_only_rerenders_the_named_blocks():
    """``--write --only NAME`` leaves every other block as it is (a benchmark still writing its JSON)."""
    line = next(x for x in _body("lora_speed").split("\n")[1:] if re.search(r"\d", x))
    edited = README_TEXT.replace(line, re.sub(r"\d", lambda m: str((int(m.group(0)) + 1) % 10), line, count=1), 1)
    assert edited != README_TEXT
    assert rr.write(edited, only=["backtest_speed"])[0] == edited
    assert rr.write(edited, only=["lora_speed"])[0] == README_TEXT
