"""benchmarks/docs_section.py: a benchmark rewrites its own section of a docs page and
nothing else, even when its end marker was lost (a hand edit) or another marker is quoted
in the text."""

from __future__ import annotations

from pathlib import Path

from benchmarks.docs_section import replace_section

START, END = "<!-- a:start -->", "<!-- a:end -->"


def _section(body: str) -> str:
    return f"## A\n{START}\n{body}\n{END}\n"


def test_a_section_whose_end_marker_was_lost_never_takes_the_sections_after_it(
    tmp_path: Path,
) -> None:
    """The first run appended a new section; the second replaced everything from the old
    start marker to the new end marker: the other benchmarks' sections and the hand-written
    text between them were deleted."""
    page = tmp_path / "results.md"
    page.write_text(
        f"# Results\n\n## A\n{START}\nold A\n\n## B\n<!-- b:start -->\nB\n<!-- b:end -->\n"
        "\n## C\nhand-written C\n"
    )
    replace_section(page, START, END, _section("new A 1"), "Results")
    replace_section(page, START, END, _section("new A 2"), "Results")
    text = page.read_text()
    assert "<!-- b:start -->\nB\n<!-- b:end -->" in text and "hand-written C" in text
    assert "new A 2" in text and "new A 1" not in text


def test_an_end_marker_quoted_before_the_section_is_not_its_end(tmp_path: Path) -> None:
    page = tmp_path / "results.md"
    page.write_text(
        f"# Results\n\n## Notes\nthe table ends at `{END}`.\n\n{_section('old')}\n## Z\nz\n"
    )
    replace_section(page, START, END, _section("new"), "Results")
    text = page.read_text()
    assert text.count(START) == 1 and "new" in text and "old" not in text
    assert f"the table ends at `{END}`." in text and "## Z\nz" in text


def test_a_section_is_replaced_in_place_and_a_missing_one_appended(tmp_path: Path) -> None:
    page = tmp_path / "results.md"
    replace_section(page, START, END, _section("one"), "Results")
    assert page.read_text() == f"# Results\n\n{_section('one')}"
    page.write_text(page.read_text() + "\n## Z\nz\n")
    replace_section(page, START, END, _section("two"), "Results")
    assert page.read_text() == f"# Results\n\n{_section('two')}\n## Z\nz\n"
