"""errors.one_line: library exceptions become one short line inside a TwinbotError message."""

from __future__ import annotations

from twinbot.errors import one_line


def test_one_line_keeps_the_first_line_without_its_period() -> None:
    assert one_line(RuntimeError("weights missing.\nTraceback details\nmore")) == "weights missing"


def test_one_line_names_the_type_when_the_message_is_empty() -> None:
    assert one_line(OSError()) == "OSError"


def test_one_line_cuts_long_messages() -> None:
    cut = one_line(ValueError("x" * 500), limit=50)
    assert len(cut) == 50 and cut.endswith("...")
