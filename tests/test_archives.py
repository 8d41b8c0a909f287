"""Archives from untrusted exports: a zip bomb ends in a one-line error naming the member instead of
exhausting the memory, sniffing reads only a member's beginning, and a zip inside the zip is never unpacked."""

from __future__ import annotations

import json
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from twinbot.data.sources import ParseOptions, messenger, slack
from twinbot.data.sources.common import ExportTree
from twinbot.errors import TwinbotError

SLACK_EXPORT = Path(__file__).parent / "fixtures" / "slack" / "export"
MB = 1 << 20


def slack_zip(archive: Path, extra: dict[str, bytes] | None = None) -> Path:
    """The fixture Slack workspace as a zip, plus `extra` members (deflated)."""
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(SLACK_EXPORT.rglob("*")):
            if file.is_file():
                zf.write(file, file.relative_to(SLACK_EXPORT).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return archive


def bomb_day_file(megabytes: int) -> bytes:
    """A Slack day file of `megabytes` MB that deflates to a few KB: valid JSON, mostly spaces."""
    return b"[" + b" " * (megabytes * MB) + b"]"


def test_a_member_over_the_cap_is_a_one_line_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = slack_zip(tmp_path / "ws.zip", {"general/2030-01-01.json": bomb_day_file(24)})
    assert archive.stat().st_size < MB  # kilobytes on disk
    monkeypatch.setenv("TWINBOT_ZIP_MEMBER_MB", "16")
    tracemalloc.start()
    try:
        with pytest.raises(TwinbotError, match="unpacks to more than 16 MB") as info:
            list(slack.parse(archive, ParseOptions()))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MB  # refused from the declared size, before reading
    message = info.value.render()
    assert "general/2030-01-01.json" in message and "TWINBOT_ZIP_MEMBER_MB" in message and "\n" not in message

    monkeypatch.setenv("TWINBOT_ZIP_MEMBER_MB", "64")
    assert list(slack.parse(archive, ParseOptions()))  # within a raised cap it parses


def test_the_whole_archive_has_a_cap_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    days = {f"general/2030-01-0{day}.json": bomb_day_file(6) for day in range(1, 5)}
    archive = slack_zip(tmp_path / "ws.zip", days)
    monkeypatch.setenv("TWINBOT_ZIP_TOTAL_MB", "16")
    with pytest.raises(TwinbotError, match="the archive unpacks to more than 16 MB"):
        list(slack.parse(archive, ParseOptions()))


def test_a_bad_cap_setting_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = slack_zip(tmp_path / "ws.zip")
    monkeypatch.setenv("TWINBOT_ZIP_MEMBER_MB", "lots")
    with pytest.raises(TwinbotError, match="TWINBOT_ZIP_MEMBER_MB='lots' is not a whole number"):
        list(slack.parse(archive, ParseOptions()))


def test_a_size_header_that_lies_cannot_get_past_the_cap(tmp_path: Path) -> None:
    """A member whose local data inflates past its declared size is cut at the declared size by zipfile,
    which then reports the damage: never more than declared is read."""
    archive = tmp_path / "lying.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.json", b"[" + b" " * (4 * MB) + b"]")
    data = bytearray(archive.read_bytes())
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = (100).to_bytes(4, "little")  # central directory: 100 bytes
    archive.write_bytes(bytes(data))
    with ExportTree(archive) as tree, pytest.raises(TwinbotError, match="damaged"):
        tree.read_bytes("big.json")


def test_sniffing_reads_the_beginning_of_a_member_only(tmp_path: Path) -> None:
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("messages/inbox/ann_1/message_1.json", json.dumps({"participants": [], "messages": []}))
        zf.writestr("your_activity/messages/e2ee_cutover/huge.json", b"{" + b" " * (64 * MB) + b"}")
    tracemalloc.start()
    try:
        with ExportTree(archive) as tree:
            head = tree.read_head("your_activity/messages/e2ee_cutover/huge.json")
            threads = messenger._threads(tree)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert head.startswith(b"{") and len(head) == 8192
    assert [thread.key for thread in threads] == ["messages/inbox/ann_1"]
    assert peak < 16 * MB  # the 64 MB candidate was sniffed, not read


def test_a_zip_inside_the_zip_is_a_member_not_an_archive(tmp_path: Path) -> None:
    inner = tmp_path / "inner.zip"
    slack_zip(inner, {"general/2030-01-01.json": bomb_day_file(32)})
    archive = slack_zip(tmp_path / "ws.zip", {"backup/inner.zip": inner.read_bytes()})
    from_zip = list(slack.parse(archive, ParseOptions()))
    assert [m.to_json() for m in from_zip] == [m.to_json() for m in slack.parse(SLACK_EXPORT, ParseOptions())]


def test_a_whatsapp_zip_is_streamed_within_the_member_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from twinbot.data.sources import whatsapp

    archive = tmp_path / "WhatsApp Chat with Bo.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("WhatsApp Chat with Bo.txt", b"1/2/24, 10:00 - Bo: hi\n" + b" " * (24 * MB))
    monkeypatch.setenv("TWINBOT_ZIP_MEMBER_MB", "16")
    with pytest.raises(TwinbotError, match="unpacks to more than 16 MB") as info:
        list(whatsapp.parse(archive, ParseOptions()))
    assert "WhatsApp Chat with Bo.txt" in info.value.render()
    monkeypatch.setenv("TWINBOT_ZIP_MEMBER_MB", "64")
    assert [message.text for message in whatsapp.parse(archive, ParseOptions())] == ["hi"]
