"""The documentation's figures match the JSON their commands wrote (benchmarks/results/*.json).

The stage-2 results (docs/results.md), the Performance figures (docs/performance.md) and the blocks on other
pages (docs/judging.md, docs/paper-trading.md) live in generated blocks (benchmarks/readme_results.py);
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
PAGES = rr.read_pages()


def _page_of(name: str) -> str:
    """The page that holds block ``name``."""
    return next(page for page, text in PAGES.items() if any(m.group("name") == name for m in rr.BLOCK_RE.finditer(text)))


def _body(name: str) -> str:
    """Block ``name``'s body, its indentation (inside a list item) stripped."""
    return rr.block_body(next(m for m in rr.BLOCK_RE.finditer(PAGES[_page_of(name)]) if m.group("name") == name))


def _edited(page: str, old: str, new: str) -> dict[str, str]:
    """The pages with the first ``old`` of ``page`` replaced by ``new``."""
    assert old in PAGES[page], (page, old)
    return {**PAGES, page: PAGES[page].replace(old, new, 1)}


def _present_blocks() -> list[str]:
    """Blocks whose JSON files are all committed (the others are reported by the first test)."""
    return [name for name, block in rr.BLOCKS.items() if not rr.load_records(block)[1]]


def test_every_readme_result_matches_its_json():
    problems = rr.check(PAGES)
    assert not problems, "README.md, docs/*.md and benchmarks/results/*.json disagree:\n" + "\n".join(problems)


def test_the_results_pages_are_the_ones_the_blocks_moved_to():
    """The stage-2 table and the Performance figures moved from README.md to docs/; nothing was left behind."""
    assert _page_of("stage2") == "docs/results.md"
    assert {_page_of(n) for n in ("verdict_speed", "backtest_speed", "train_speed", "lora_speed")} == {"docs/performance.md"}
    assert _page_of("guard_power") == "docs/judging.md" and _page_of("monitor_rule") == "docs/paper-trading.md"
    assert not list(rr.BLOCK_RE.finditer(PAGES["README.md"])), "a result block in README.md: it belongs in docs/"


def test_a_block_missing_from_every_page_is_named():
    page = _page_of("compare_scaling")
    text = PAGES[page]
    m = next(m for m in rr.BLOCK_RE.finditer(text) if m.group("name") == "compare_scaling")
    problems = rr.check({**PAGES, page: text[:m.start()] + text[m.end():]})
    assert any(p.startswith("no page (README.md, docs/*.md) has the block <!-- results:compare_scaling") for p in problems)


def test_every_benchmark_script_writes_json_that_a_readme_block_renders():
    scripts = {p.name for p in (ROOT / "benchmarks").glob("*.py")} - {"results_io.py", "readme_results.py"}
    commands = " ".join(c for b in rr.BLOCKS.values() for c in b.commands)
    for script in sorted(scripts):
        text = (ROOT / "benchmarks" / script).read_text()
        assert "write_result(" in text, f"benchmarks/{script} does not write its figures (benchmarks/results_io.write_result)"
        assert f"benchmarks/{script}" in commands, (f"benchmarks/{script}'s figures are rendered by no block in README.md or docs/: "
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
        problems = rr.check(_edited(_page_of(name), old, new))
        mine = [p for p in problems if p.startswith(f"results:{name} ")]
        assert len(mine) == 1, (name, problems)
        assert f"column '{column}'" in mine[0] and row in mine[0] and "page '" in mine[0] and "JSON '" in mine[0]
        assert mine[0].endswith(f"(in {_page_of(name)})")
        assert "re-run: " + rr.BLOCKS[name].commands[0] in mine[0]


def test_an_edited_prose_figure_is_caught():
    for name in _present_blocks():
        body = _body(name)
        line = next(x for x in body.split("\n")[1:] if x and not x.startswith("|") and re.search(r"\d", x))
        edited = re.sub(r"\d", lambda m: str((int(m.group(0)) + 1) % 10), line, count=1)
        problems = rr.check(_edited(_page_of(name), line, edited))
        assert any(p.startswith(f"results:{name} line ") and repr(edited) in p for p in problems), (name, problems)


@pytest.mark.parametrize("figure", ["The whole loop took 3.2 s on 2 cores.", "| naive | 2.84 s |",
                                    "That is 70× the backtrader rate.", "not distinguishable (p = 0.17)"])
def test_a_figure_outside_the_generated_blocks_has_no_source(figure):
    for page in ("docs/performance.md", "docs/results.md"):
        text = PAGES[page]
        at = text.index("\n") + 1  # after the page's title
        problems = rr.check({**PAGES, page: text[:at] + figure + "\n" + text[at:]})
        assert any("no JSON source" in p and p.startswith(f"{page} line 2") for p in problems), problems
        hand = f"<!-- measured-by-hand: 2026-12-07, a one-off timing no script repeats -->\n{figure}\n<!-- /measured-by-hand -->\n"
        assert rr.check({**PAGES, page: text[:at] + hand + text[at:]}) == rr.check(PAGES)


def test_a_test_time_in_the_readme_needs_a_measured_by_hand_block():
    text = PAGES["README.md"]
    at = text.index("\n## Install, run, test\n") + len("\n## Install, run, test\n")
    problems = rr.check({**PAGES, "README.md": text[:at] + "The fast subset takes 41 s.\n" + text[at:]})
    assert any(p.startswith("README.md line ") and "section '## Install, run, test'" in p and "'41 s'" in p
               for p in problems), problems


def test_a_missing_json_file_names_the_command_that_writes_it(tmp_path):
    problems = rr.check(PAGES, results_dir=tmp_path)
    for name, block in rr.BLOCKS.items():
        assert any(p.startswith(f"results:{name}: ") and "does not exist" in p and block.commands[-1] in p
                   for p in problems), (name, problems)


def test_commentary_written_against_another_run_is_caught():
    page = "docs/results.md"
    marks = list(rr.COMMENTARY_RE.finditer(PAGES[page]))
    assert marks, "the stage-2 commentary carries no <!-- commentary:stage2 DATE --> mark"
    mark = marks[0]
    head = mark.group(0).split("\n")[0]
    stale = _edited(page, head, f"<!-- commentary:{mark.group('name')} 1999-01-01 -->")
    assert any(p.startswith(f"commentary:{mark.group('name')} ({page}) ") and "1999-01-01" in p for p in rr.check(stale))
    path = rr.RESULTS_DIR / f"{mark.group('name')}.json"
    if path.is_file():  # the mark set to the JSON's date: no complaint about the commentary
        date = json.loads(path.read_text())["date"]
        fresh = _edited(page, head, f"<!-- commentary:{mark.group('name')} {date} -->")
        assert not [p for p in rr.check(fresh) if p.startswith("commentary:")]


def test_the_readme_rounding():
    assert [rr.p_value(p) for p in (0.75, 0.1, 0.017, 0.007, 7.4e-4, 6e-21, None)] == \
        ["0.75", "0.10", "0.017", "0.007", "7e-4", "6e-21", "n/a"]
    assert [rr.pct(x) for x in (0.75, -0.356, -0.00001, None)] == ["75.0 %", "-35.6 %", "0.0 %", "n/a"]
    assert [rr.stat(x) for x in (24.14, -0.552, None)] == ["24.1", "-0.55", "n/a"]


def test_write_only_rerenders_the_named_blocks():
    """``--write --only NAME`` leaves every other block as it is (a benchmark still writing its JSON)."""
    text = PAGES[_page_of("lora_speed")]
    line = next(x for x in _body("lora_speed").split("\n")[1:] if re.search(r"\d", x))
    edited = text.replace(line, re.sub(r"\d", lambda m: str((int(m.group(0)) + 1) % 10), line, count=1), 1)
    assert edited != text
    assert rr.write(edited, only=["backtest_speed"])[0] == edited
    assert rr.write(edited, only=["lora_speed"])[0] == text


def test_write_command_rerenders_a_page_in_docs(tmp_path):
    """``python benchmarks/readme_results.py --write`` puts the figures into the docs page that holds the block."""
    page = _page_of("lora_speed")
    line = next(x for x in _body("lora_speed").split("\n")[1:] if re.search(r"\d", x))
    for name, text in PAGES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / page).write_text(PAGES[page].replace(line, line.replace(line[0], "#", 1) + " stale", 1))
    assert rr.main(["--root", str(tmp_path)]) == 1
    assert rr.main(["--root", str(tmp_path), "--write", "--only", "lora_speed"]) == 0
    assert (tmp_path / page).read_text() == PAGES[page]
