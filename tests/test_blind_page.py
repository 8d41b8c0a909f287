"""The blind test page of `twinbot eval RUN --blind`, clicked through in headless Chromium over the DevTools
protocol (tests/test_web_chat.py's client): start, answer, read the feedback and the final score.

Needs Debian's `chromium` (`make chromium`); skipped with a reason where it is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_blind import NAME, ROWS, blind_records, write_eval_run
from test_web_chat import CHROMIUM, DevTools, browser_page
from twinbot.bot.local_http import ServerThread
from twinbot.quality.blind_server import create_blind_app, load_blind_test
from twinbot.quality.results import ReplyRow

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (`make chromium` installs it)"
)

INJECTED = '<img src=x onerror="window.pwned=1">look 👀'
PAGE_ROWS = [
    *ROWS[:3],
    ReplyRow(context=INJECTED, real="<script>window.pwned=2</script>nah", base="", adapter="haha 😂 no way"),
]
SHOWN = "document.getElementById('{}').getClientRects().length > 0"  # laid out, not display: none
READY = "!!document.getElementById('start') && !document.getElementById('start').disabled"


def text(page: DevTools, element_id: str) -> str:
    return page.evaluate(f"document.getElementById({json.dumps(element_id)}).textContent")


def visible(element_id: str) -> str:
    return f"!document.getElementById({json.dumps(element_id)}).hidden"


def test_click_through_a_pair_session_and_read_the_score(tmp_path: Path) -> None:
    run = write_eval_run(tmp_path / "run", rows=PAGE_ROWS)
    app = create_blind_app(load_blind_test(run, "pair"))
    with (
        ServerThread(app) as server,
        browser_page(server.base_url + "/?seed=7", tmp_path / "profile", READY) as page,
    ):
        assert f"by {NAME}'s twin" in text(page, "rules") and "4 questions" in text(page, "rules")
        page.click("start")
        page.wait_for(visible("play"))
        feedback = []
        for index in range(len(PAGE_ROWS)):
            page.wait_for(f"document.getElementById('progress').textContent === 'Question {index + 1} of 4'")
            context = text(page, "context")
            row = next(row for row in PAGE_ROWS if row.context == context)  # shown as text, not as HTML
            replies = [text(page, "reply-0"), text(page, "reply-1")]
            assert sorted(replies) == sorted([row.real, row.adapter])
            assert text(page, "ask") == f"Which one is the real {NAME}?"
            assert not page.evaluate(SHOWN.format("single-choices"))
            real = replies.index(row.real)
            page.click(f"reply-{1 - real if index == 0 else real}")  # wrong once, then right
            page.wait_for(visible("next"))
            feedback.append(text(page, "feedback"))
            assert page.evaluate(f"document.getElementById('reply-{real}').classList.contains('real')")
            assert text(page, f"reply-{real}").endswith(f"the real {NAME}")
            page.click("next")
        page.wait_for(visible("result"))
        score, verdict = text(page, "score"), text(page, "verdict")
        assert page.evaluate("document.querySelectorAll('img, #context *').length") == 0
        assert page.evaluate("window.pwned === undefined")
        font = page.evaluate("getComputedStyle(document.body).fontFamily")
    assert feedback == ["Wrong.", "Right!", "Right!", "Right!"]
    assert score == f"You picked the real {NAME} 3 of 4 times: 75% (95% confidence interval 30%–95%)."
    assert verdict.startswith("Can't tell them apart") and "50%" in verdict
    assert "Noto Color Emoji" in font and "Segoe UI Emoji" in font
    [record] = blind_records(run)
    assert (
        record["seed"] == 7
        and record["finished"]
        and [a["correct"] for a in record["answers"]]
        == [
            False,
            True,
            True,
            True,
        ]
    )


def test_single_mode_real_or_twin_and_finishing_early(tmp_path: Path) -> None:
    run = write_eval_run(tmp_path / "run", rows=PAGE_ROWS)
    app = create_blind_app(load_blind_test(run, "single"))
    with (
        ServerThread(app) as server,
        browser_page(server.base_url + "/", tmp_path / "profile", READY) as page,
    ):
        page.click("start")
        page.wait_for(visible("play"))
        assert text(page, "ask") == "Real or twin?" and text(page, "choose-real") == f"The real {NAME}"
        assert page.evaluate(SHOWN.format("single-choices"))
        row = next(row for row in PAGE_ROWS if row.context == text(page, "context"))
        shown = text(page, "reply-0")
        page.click("choose-real" if shown == row.real else "choose-twin")  # right
        page.wait_for(visible("next"))
        assert text(page, "feedback") == "Right!"
        page.click("finish-now")
        page.wait_for(visible("result"))
        score = text(page, "score")
    assert (
        score
        == f"You told the real {NAME} from the twin 1 of 1 times: 100% (95% confidence interval 21%–100%)."
    )
    [record] = blind_records(run)
    assert record["mode"] == "single" and record["finished"] and len(record["answers"]) == 1
