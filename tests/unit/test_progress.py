"""Progress is shown on a terminal with text logs only, and counts what it tracks; tmux shows
the real thing in tests/integration/test_terminal.py."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from ingester.cli.progress import Display, RowRate, shown
from ingester.settings import Settings


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("tty", "log_format", "expected"), [
    (True, "text", True), (False, "text", False), (True, "json", False)])
def test_shown_only_on_a_terminal_with_text_logs(
    tty: bool, log_format: str, expected: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "stdout", Terminal() if tty else io.StringIO())
    assert shown(Settings(home=tmp_path, log_format=log_format)) is expected  # type: ignore[arg-type]


def test_a_hidden_display_passes_items_through_and_echoes(capsys: pytest.CaptureFixture[str]) -> None:
    with Display(False) as display:
        assert list(display.track([1, 2, 3], "counting")) == [1, 2, 3]
        display.status("x")(1, "detail")
        display.echo("a line")
        display.echo("an error", err=True)
    out = capsys.readouterr()
    assert (out.out, out.err) == ("a line\n", "an error\n")


def test_row_rate_over_a_sliding_window() -> None:
    now = [0.0]
    rate = RowRate(window_s=5.0, clock=lambda: now[0])
    assert rate.add(0) == 0.0
    for second in range(1, 11):
        now[0] = float(second)
        last = rate.add(100 * second)
    assert last == 100.0
    now[0] = 20.0  # nothing for 10 s: the window holds only the last two readings
    assert rate.add(1000) == 0.0
