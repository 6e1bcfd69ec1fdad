"""Helpers shared by the benchmark scripts.

Several benchmarks write their report into the one ``docs/benchmarks.md``; each owns a
level-2 section of it and must replace only that section, so running one benchmark never
erases another's last report.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

REPORT_TITLE = "# Benchmarks"
REPORT_INTRO = (
    "Figures are only comparable as ratios within one run on one machine; re-run the "
    "benchmark (`bench/bench_lines.py`, `bench/bench_pages.py`) rather than comparing with "
    "numbers from elsewhere (see bench/README.md)."
)


def _section_bounds(lines: Sequence[str], heading: str) -> tuple[int, int] | None:
    """Line range [start, end) of the ``## heading`` section, ignoring fenced code blocks.

    A section runs to the next level-2 heading (``## ``; ``###`` and deeper belong to it) or
    to the end of the file.
    """
    start: int | None = None
    fenced = False
    for index, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced or not line.startswith("## "):
            continue
        if start is not None:
            return start, index
        if line[3:].strip() == heading:
            start = index
    return (start, len(lines)) if start is not None else None


def update_markdown_section(path: Path, heading: str, body: Sequence[str]) -> None:
    """Replace the ``## heading`` section of ``path`` with ``body``, or append it.

    The rest of the file (the title, other benchmarks' sections) is kept byte for byte; a
    missing file is created with the common title and introduction.
    """
    section = [f"## {heading}", "", *body]
    while section and not section[-1].strip():
        section.pop()
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
    else:
        lines = [REPORT_TITLE, "", REPORT_INTRO]
    bounds = _section_bounds(lines, heading)
    if bounds is None:
        while lines and not lines[-1].strip():
            lines.pop()
        lines += ["", *section]
    else:
        start, end = bounds
        tail = lines[end:]
        lines = [*lines[:start], *section, *([""] if tail else []), *tail]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
