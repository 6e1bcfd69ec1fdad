"""bench.page_cost runs the server's page pipeline stage by stage in process: it must keep
working as the pipeline changes, and its stages must add up to the whole page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import page_cost
from tests.conftest import png, render_page

pytestmark = pytest.mark.integration

LINES = ["Stage by stage", "every page costs"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-page evaluation set in the manifest's format, rendered here."""
    folder = tmp_path_factory.mktemp("eval")
    (folder / "pages").mkdir()
    (folder / "pages" / "rendered.png").write_bytes(png(render_page(LINES)))
    item = {"id": "rendered", "kind": "page", "lang": "en", "image": "pages/rendered.png"}
    (folder / "manifest.jsonl").write_text(json.dumps(item) + "\n", encoding="utf-8")
    return folder


def test_every_stage_is_timed_and_the_lines_are_found(data_dir: Path) -> None:
    recognizer, page_models = page_cost.load_pipeline("", None)
    page = (data_dir / "pages" / "rendered.png").read_bytes()
    seconds, lines = page_cost.measure_pass([page, page], recognizer, page_models)
    assert lines == 2 * len(LINES)
    assert list(seconds) == list(page_cost.STAGES)
    for stage in ("decode", "detection: resize and model", "line classifier", "recognition"):
        assert seconds[stage] > 0, stage
    assert all(s >= 0 for s in seconds.values()), seconds
    # The timing wrappers are gone after the pass: a second pass does not time through them.
    assert "detect" not in vars(page_models.detector)
    assert "upside_down" not in vars(page_models.line_orientation)


def test_the_report_and_the_command(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert page_cost.main(["--data", str(data_dir), "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    assert "1 pages, 2 lines" in out
    rows = [line for line in out.splitlines() if line.startswith("| ")][1:]  # no header
    assert [r.split(" | ")[0].removeprefix("| ") for r in rows] == [
        *page_cost.STAGES,
        "**all**",
    ]
    shares = [float(r.split(" | ")[3].rstrip("% |")) for r in rows[:-1]]
    assert sum(shares) == pytest.approx(100, abs=0.5)


def test_a_missing_evaluation_set_is_a_clear_exit(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no evaluation set"):
        page_cost.main(["--data", str(tmp_path)])
