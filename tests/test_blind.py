"""`twinbot eval RUN --blind`: the blind test's questions, score, records and HTTP API (FastAPI TestClient),
on eval.json files written here (no model, no eval run)."""

from __future__ import annotations

import json
import stat
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from twinbot.errors import TwinbotError
from twinbot.quality import blind_server
from twinbot.quality.blind import (
    BlindLog,
    BlindSession,
    binomial_p_value,
    persona_name,
    plan_questions,
    read_eval_rows,
    score,
    wilson_interval,
)
from twinbot.quality.blind_server import BlindTest, create_blind_app, load_blind_test
from twinbot.quality.results import ReplyRow
from twinbot.runs import (
    ADAPTER_DIR,
    BLIND_FILE,
    EVAL_DIR,
    EVAL_FILE,
    PERSONA_FILE,
    PersonaInfo,
    write_persona_info,
)

NAME = "Sam"
ROWS = [
    ReplyRow(context="dinner tonight?", real="yes!! 8?", base="I am an AI.", adapter="sure, what time"),
    ReplyRow(
        context="did you see the match", real="no 😭 spoilers pls", base="Yes.", adapter="yeah crazy ending"
    ),
    ReplyRow(context="<b>bold</b> & stuff", real="lol <i>what</i>", base="?", adapter="haha ok 🎉"),
    ReplyRow(context="call me later", real="ok", base="Sure.", adapter="will do"),
    ReplyRow(context="where are you", real="on my way", base="Home.", adapter="5 min"),
    ReplyRow(context="party?", real="maybe\nif I finish work", base="No.", adapter="im in"),
]
# Every text long enough not to turn up in the page or a JSON record by chance (not "ok" or "?").
TEXTS = {text for row in ROWS for text in (row.context, row.real, row.base, row.adapter) if len(text) >= 8}


def write_eval_run(
    run_dir: Path, rows: list[ReplyRow] = ROWS, system_prompt: str | None = None, data_dir: str = "data"
) -> Path:
    """A RUN folder with just what the blind test reads: eval/eval.json (rows and data folder) and, when a
    system prompt is given, the persona file beside the adapter."""
    prompt = system_prompt or f"You are {NAME}, chatting with friends. Reply the way {NAME} does."
    (run_dir / EVAL_DIR).mkdir(parents=True)
    payload = {"run_dir": str(run_dir), "data_dir": data_dir, "rows": [asdict(row) for row in rows]}
    (run_dir / EVAL_DIR / EVAL_FILE).write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
    write_persona_info(run_dir / ADAPTER_DIR / PERSONA_FILE, PersonaInfo(prompt, "base-model"))
    return run_dir


def client_for(run_dir: Path, mode: str = "pair", access_key: str | None = None, **kwargs: Any) -> TestClient:
    test = load_blind_test(run_dir, mode, access_key)  # type: ignore[arg-type]
    return TestClient(create_blind_app(test, **kwargs), base_url="http://127.0.0.1")


def real_slot(question: dict[str, Any]) -> int:
    """Which slot of a pair question shows the real reply, found from the fixture (the page cannot know)."""
    row = next(row for row in ROWS if row.context == question["context"])
    return question["replies"].index(row.real)


def blind_records(run_dir: Path) -> list[dict[str, Any]]:
    data = json.loads((run_dir / EVAL_DIR / BLIND_FILE).read_text(encoding="utf-8"))
    assert data["twinbot_blind"] == 1
    return data["sessions"]


# ---- the score ----


@pytest.mark.parametrize(
    ("correct", "answered", "low", "high"),
    [  # published Wilson 95% intervals
        (7, 10, 0.3968, 0.8922),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (50, 100, 0.4038, 0.5962),
        (3, 4, 0.3006, 0.9544),
    ],
)
def test_wilson_interval_matches_known_values(correct: int, answered: int, low: float, high: float) -> None:
    got_low, got_high = wilson_interval(correct, answered)
    assert got_low == pytest.approx(low, abs=5e-5) and got_high == pytest.approx(high, abs=5e-5)


def test_exact_binomial_p_value_and_verdicts() -> None:
    assert binomial_p_value(7, 10) == pytest.approx(352 / 1024)  # 2 * P(X >= 7) = 2 * 176/1024
    assert binomial_p_value(10, 10) == binomial_p_value(0, 10) == pytest.approx(2 / 1024)
    assert binomial_p_value(5, 10) == 1.0
    assert score(9, 10).verdict.startswith("Better than guessing")
    assert score(1, 10).verdict.startswith("Worse than guessing")
    assert score(6, 10).verdict.startswith("Can't tell them apart") and "50%" in score(6, 10).verdict
    empty = score(0, 0)
    assert empty.share is None and empty.low is None and empty.answered == 0


# ---- the questions ----


def test_questions_are_reproducible_by_seed_and_balanced() -> None:
    rows = list(range(10))
    pair = plan_questions(rows, "pair", seed=3)
    assert pair == plan_questions(rows, "pair", seed=3)
    assert pair != plan_questions(rows, "pair", seed=4)
    assert sorted(q.row for q in pair) == rows  # every row once
    assert sorted(q.shown for q in pair) == [("real", "twin")] * 5 + [("twin", "real")] * 5
    single = plan_questions(rows, "single", seed=3)
    assert sorted(q.shown for q in single) == [("real",)] * 5 + [("twin",)] * 5
    odd = plan_questions(list(range(7)), "single", seed=1)
    assert sorted(q.row for q in odd) == list(range(7)) and len({q.shown for q in odd}) == 2


def test_rows_without_two_different_replies_are_left_out(tmp_path: Path) -> None:
    rows = [
        *ROWS[:2],
        ReplyRow(
            context="x", real="same words", base="", adapter="same  words"
        ),  # memorised: nothing to tell
        ReplyRow(context="y", real="hi", base="", adapter="  "),  # the twin said nothing
    ]
    items, data_dir = read_eval_rows(write_eval_run(tmp_path / "run", rows))
    assert [item.row for item in items] == [0, 1] and data_dir == "data"


def test_the_name_comes_from_the_system_prompt_then_the_data_report(tmp_path: Path) -> None:
    assert persona_name(write_eval_run(tmp_path / "a"), "data") == NAME
    custom = write_eval_run(tmp_path / "b", system_prompt="Talk like my friend.")
    assert persona_name(custom, "data") == "person"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "report.json").write_text(json.dumps({"persona": "Alex"}), encoding="utf-8")
    assert persona_name(custom, "data") == "Alex"  # relative to the RUN's parent folder


def test_missing_or_broken_eval_json_is_one_line_telling_to_run_eval(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(TwinbotError) as missing:
        load_blind_test(run, "pair")
    message = str(missing.value)
    assert "\n" not in message and f"run `twinbot eval {run}` first" in message
    assert message.startswith(str(run / EVAL_DIR / EVAL_FILE))
    (run / EVAL_DIR).mkdir()
    (run / EVAL_DIR / EVAL_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(TwinbotError, match=r"unreadable eval\.json"):
        load_blind_test(run, "pair")
    result = CliRunner().invoke(_cli_app(), ["eval", str(tmp_path / "nowhere"), "--blind"])
    assert isinstance(result.exception, TwinbotError) and "first" in str(result.exception)


def test_an_unreadable_blind_json_is_refused_before_serving(tmp_path: Path) -> None:
    run = write_eval_run(tmp_path / "run")
    (run / EVAL_DIR / BLIND_FILE).write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(TwinbotError, match="not a twinbot blind test record"):
        load_blind_test(run, "pair")


# ---- the API ----


def test_a_pair_session_never_tells_which_reply_is_real_before_the_answer(tmp_path: Path) -> None:
    run = write_eval_run(tmp_path / "run")
    with client_for(run) as client:
        page = client.get("/")
        info = client.get("/api/info").json()
        started = client.post("/api/sessions", json={"seed": 11}).json()
        question = started["question"]
        shown_before = json.dumps(started)
        answered = client.post(
            f"/api/sessions/{started['session']}/answers", json={"question": 0, "choice": real_slot(question)}
        ).json()
    assert info == {"name": NAME, "mode": "pair", "total": len(ROWS)}
    assert set(started) == {"session", "seed", "mode", "name", "total", "question"}
    assert set(question) == {"index", "total", "context", "replies"}
    assert started["seed"] == 11 and started["name"] == NAME and started["total"] == len(ROWS)
    row = next(row for row in ROWS if row.context == question["context"])
    assert sorted(question["replies"]) == sorted([row.real, row.adapter])
    for secret in ('"real"', '"twin"', "adapter", "solution", "correct", "shown", '"row"'):
        assert secret not in shown_before
    assert not any(text in page.text for text in TEXTS)  # the page itself holds no message
    assert answered["correct"] is True and answered["solution"] == real_slot(question)
    assert answered["score"]["correct"] == 1 and answered["next"]["index"] == 1
    assert set(answered["next"]) == {"index", "total", "context", "replies"}


def test_the_same_seed_gives_the_same_session_and_no_seed_a_random_one(tmp_path: Path) -> None:
    run = write_eval_run(tmp_path / "run")

    def play(client: TestClient, seed: int | None) -> tuple[int, list[tuple[str, list[str]]]]:
        started = client.post("/api/sessions", json={} if seed is None else {"seed": seed}).json()
        shown, question = [], started["question"]
        while question is not None:
            shown.append((question["context"], question["replies"]))
            question = client.post(
                f"/api/sessions/{started['session']}/answers",
                json={"question": question["index"], "choice": 0},
            ).json()["next"]
        return started["seed"], shown

    with client_for(run) as client:
        _, first = play(client, 5)
        _, again = play(client, 5)
        _, other = play(client, 6)
        random_seed, unseeded = play(client, None)
        _, replayed = play(client, random_seed)
    assert first == again and first != other
    assert unseeded == replayed  # a session without a seed records the one it drew, which replays it
    assert sorted(context for context, _ in first) == sorted(row.context for row in ROWS)
    # Always picking the first slot scores half: the real reply is first in half of the questions.
    assert sum(real_slot({"context": c, "replies": r}) == 0 for c, r in first) == len(ROWS) // 2


def test_answers_are_recorded_per_session_without_message_text(tmp_path: Path) -> None:
    run = write_eval_run(tmp_path / "run")
    with client_for(run) as client:
        started = client.post("/api/sessions", json={"seed": 2}).json()
        session, question = started["session"], started["question"]
        choices, rows = [], []
        while question is not None:
            # right on every question but the first
            choice = 1 - real_slot(question) if question["index"] == 0 else real_slot(question)
            rows.append(next(i for i, row in enumerate(ROWS) if row.context == question["context"]))
            choices.append(choice)
            reply = client.post(
                f"/api/sessions/{session}/answers", json={"question": question["index"], "choice": choice}
            ).json()
            question = reply["next"]
        final = reply["score"]
        second = client.post("/api/sessions", json={"seed": 3}).json()
        client.post(f"/api/sessions/{second['session']}/answers", json={"question": 0, "choice": 1})
        early = client.post(f"/api/sessions/{second['session']}/finish", json={}).json()
        unplayed = client.post("/api/sessions", json={"seed": 4}).json()
        client.post(f"/api/sessions/{unplayed['session']}/finish", json={})
    assert reply["finished"] is True and final["correct"] == len(ROWS) - 1 and final["answered"] == len(ROWS)
    assert final["low"] == pytest.approx(wilson_interval(5, 6)[0])
    path = run / EVAL_DIR / BLIND_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = path.read_text(encoding="utf-8")
    assert not any(text in raw for text in TEXTS | {NAME})
    first, other = blind_records(run)  # the session finished before its first answer left none
    assert first["mode"] == "pair" and first["seed"] == 2 and first["finished"] is True
    assert first["questions"] == len(ROWS) and first["started"].endswith("Z")
    assert [a["row"] for a in first["answers"]] == rows and [a["choice"] for a in first["answers"]] == choices
    assert [a["correct"] for a in first["answers"]] == [False] + [True] * (len(ROWS) - 1)
    assert all(
        a["shown"][c] == ("twin" if i == 0 else "real")
        for i, (a, c) in enumerate(zip(first["answers"], choices, strict=True))
    )
    assert first["score"] == final
    assert other["seed"] == 3 and other["finished"] is True and len(other["answers"]) == 1
    assert other["score"] == early["score"] and early["answered"] == 1
    assert set(first) == {
        "id",
        "started",
        "updated",
        "mode",
        "seed",
        "questions",
        "finished",
        "answers",
        "score",
    }


def test_single_mode_asks_real_or_twin_one_reply_at_a_time(tmp_path: Path) -> None:
    run = write_eval_run(tmp_path / "run")
    with client_for(run, mode="single") as client:
        started = client.post("/api/sessions", json={"seed": 9}).json()
        session, question = started["session"], started["question"]
        assert started["mode"] == "single"
        wrong_kind = client.post(f"/api/sessions/{session}/answers", json={"question": 0, "choice": 0})
        shown_kinds = []
        while question is not None:
            [text] = question["replies"]
            row = next(row for row in ROWS if row.context == question["context"])
            assert text in (row.real, row.adapter)
            kind = "real" if text == row.real else "twin"
            shown_kinds.append(kind)
            reply = client.post(
                f"/api/sessions/{session}/answers", json={"question": question["index"], "choice": "real"}
            ).json()
            assert reply["correct"] == (kind == "real") and reply["solution"] == kind
            question = reply["next"]
    assert wrong_kind.status_code == 400 and wrong_kind.json()["error"]["param"] == "choice"
    assert sorted(shown_kinds) == ["real"] * 3 + ["twin"] * 3  # always saying "real" scores half
    [record] = blind_records(run)
    assert record["mode"] == "single" and [a["choice"] for a in record["answers"]] == ["real"] * 6
    assert record["score"]["correct"] == 3 and record["score"]["share"] == 0.5


def test_out_of_turn_repeated_and_invalid_answers_are_refused(tmp_path: Path) -> None:
    run = write_eval_run(tmp_path / "run", rows=ROWS[:2])
    with client_for(run) as client:
        session = client.post("/api/sessions", json={"seed": 1}).json()["session"]
        url = f"/api/sessions/{session}/answers"
        ahead = client.post(url, json={"question": 1, "choice": 0})
        not_a_slot = [client.post(url, json={"question": 0, "choice": c}) for c in (2, True, 1.0, "real")]
        extra = client.post(url, json={"question": 0, "choice": 0, "real": 1})
        assert client.post(url, json={"question": 0, "choice": 0}).status_code == 200
        again = client.post(url, json={"question": 0, "choice": 1})
        client.post(url, json={"question": 1, "choice": 0})
        over = client.post(url, json={"question": 2, "choice": 0})
        unknown = client.post("/api/sessions/nope/answers", json={"question": 0, "choice": 0})
        bad_seed = client.post("/api/sessions", json={"seed": -1})
    assert ahead.status_code == again.status_code == over.status_code == 409
    assert [r.status_code for r in not_a_slot] == [400] * 4
    assert extra.status_code == 400 and bad_seed.status_code == 400
    assert unknown.status_code == 404 and "start a new one" in unknown.json()["error"]["message"]
    assert len(blind_records(run)[0]["answers"]) == 2


def test_host_and_content_type_protections_of_serve_apply(tmp_path: Path) -> None:
    run = write_eval_run(tmp_path / "run")
    with client_for(run, allowed_hosts=["twin.lan"]) as client:
        rebound_page = client.get("/", headers={"host": "attacker.example"})
        rebound_api = client.post("/api/sessions", json={}, headers={"host": "attacker.example:8001"})
        plain = client.post("/api/sessions", content="{}", headers={"content-type": "text/plain"})
        form = client.post("/api/sessions", data={"seed": "1"})
        allowed = client.get("/api/info", headers={"host": "twin.lan:8001"})
        page = client.get("/")
    assert rebound_page.status_code == rebound_api.status_code == 421
    assert rebound_api.json()["error"]["code"] == "host_not_allowed"
    assert plain.status_code == form.status_code == 415
    assert allowed.status_code == 200 and page.status_code == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert not (run / EVAL_DIR / BLIND_FILE).exists()


def test_off_loopback_the_api_needs_the_printed_access_key(tmp_path: Path) -> None:
    run = write_eval_run(tmp_path / "run")
    with client_for(run, access_key="k3y") as client:
        page = client.get("/")
        without = client.post("/api/sessions", json={})
        wrong = client.get("/api/info", headers={"authorization": "Bearer nope"})
        right = client.post("/api/sessions", json={}, headers={"authorization": "Bearer k3y"})
    assert page.status_code == 200 and right.status_code == 200
    assert without.status_code == wrong.status_code == 401


def test_cli_blind_serves_on_loopback_and_prints_a_key_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = write_eval_run(tmp_path / "run")
    served: list[tuple[str, int, BlindTest]] = []

    class Listener:
        def __init__(self, host: str, port: int) -> None:
            self.host, self.port = host, port

        def close(self) -> None:
            pass

    def fake_app(test: BlindTest, allowed_hosts: Any = ()) -> BlindTest:
        return test

    monkeypatch.setattr(blind_server, "listen", Listener)
    monkeypatch.setattr(blind_server, "create_blind_app", fake_app)
    monkeypatch.setattr(
        blind_server, "serve_until_stopped", lambda test, sock: served.append((sock.host, sock.port, test))
    )
    default = CliRunner().invoke(_cli_app(), ["eval", str(run), "--blind"])
    single = CliRunner().invoke(_cli_app(), ["eval", "--blind", "single", str(run), "--port", "9100"])
    shared = CliRunner().invoke(_cli_app(), ["eval", str(run), "--blind", "--host", "0.0.0.0"])
    wrong = CliRunner().invoke(_cli_app(), ["eval", str(run), "--blind=triple"])
    assert default.exit_code == single.exit_code == shared.exit_code == 0, default.output
    assert [(host, port, test.mode) for host, port, test in served] == [
        ("127.0.0.1", 8001, "pair"),
        ("127.0.0.1", 9100, "single"),
        ("0.0.0.0", 8001, "pair"),
    ]
    assert "http://127.0.0.1:8001/" in default.output and "#key=" not in default.output
    assert served[0][2].access_key is None and served[2][2].access_key
    assert f"#key={served[2][2].access_key}" in shared.output
    assert isinstance(wrong.exception, TwinbotError) and "pair or single" in str(wrong.exception)


def _cli_app() -> Any:
    from twinbot.cli import app

    return app


def test_blind_log_keeps_other_sessions(tmp_path: Path) -> None:
    path = tmp_path / "eval" / BLIND_FILE
    log = BlindLog(path)
    first = BlindSession("a", "pair", 1, plan_questions([0, 1], "pair", 1))
    second = BlindSession("b", "single", 2, plan_questions([0, 1], "single", 2))
    first.answer(0, 0)
    log.save(first)
    second.answer(0, "twin")
    BlindLog(path).save(second)  # another server on the same run
    first.answer(1, 1)
    log.save(first)
    assert [(s["id"], len(s["answers"])) for s in blind_records(tmp_path)] == [("a", 2), ("b", 1)]
