"""The blind test behind `twinbot eval RUN --blind`: can a person tell the real replies from the twin's?

The questions come from the reply table of RUN/eval/eval.json (held-out contexts, the person's real reply,
the adapter's reply to the same context). Two modes:

- `pair`: a context and both replies, in random order: which one is the real NAME? The share of correct
  picks is the score; 50% = can't tell them apart (a coin would score that).
- `single`: a context and one reply, the real one or the twin's: real or twin? The share of right answers.

Each session draws its questions from its own seed (`random.Random(seed)`): the order of the contexts and,
per question, which reply is shown where (pair) or which one is shown (single), balanced so that always
picking the same slot or answer scores 50%. The same seed and eval.json give the same session.

Answers are recorded in RUN/eval/blind.json, one entry per session, rewritten atomically (user-only) after
each answer: row indices, what was shown where, the choices and the counts; never message text (that is in
eval.json already).
"""

from __future__ import annotations

import json
import math
import random
import re
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from twinbot.data.prepared import REPORT_FILE as DATA_REPORT_FILE
from twinbot.data.samples import DEFAULT_SYSTEM_PROMPT
from twinbot.errors import TwinbotError
from twinbot.fileio import write_json
from twinbot.runs import ADAPTER_DIR, BLIND_FILE, EVAL_DIR, EVAL_FILE, read_json, run_persona

BlindMode = Literal["pair", "single"]
BLIND_MODES: tuple[BlindMode, ...] = ("pair", "single")
Kind = Literal["real", "twin"]
CONFIDENCE = 0.95
_Z_95 = 1.959963984540054  # the standard normal quantile for a two-sided 95% interval
FALLBACK_NAME = "person"


class BlindRequestError(Exception):
    """An answer the session cannot take (wrong question, already over, bad choice); `status` is the HTTP
    status the server answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_mode(mode: str) -> BlindMode:
    if mode == "pair" or mode == "single":
        return mode
    raise TwinbotError(f"--blind takes {' or '.join(BLIND_MODES)}, not {mode!r}")


# ---- what is asked ----


@dataclass(frozen=True)
class BlindItem:
    """One usable row of eval.json: a context with the real reply and the twin's."""

    row: int  # index in eval.json `rows`
    context: str
    real: str
    twin: str

    def text(self, kind: Kind) -> str:
        return self.real if kind == "real" else self.twin


@dataclass(frozen=True)
class Question:
    row: int
    shown: tuple[Kind, ...]  # what each slot shows, in page order: two slots (pair) or one (single)


def read_eval_rows(run_dir: Path) -> tuple[list[BlindItem], str | None]:
    """The usable rows of RUN/eval/eval.json and its data folder; a TwinbotError telling to run
    `twinbot eval RUN` first when there is none. Rows with an empty reply, or where the twin's reply is the
    real one word for word (nothing to tell apart), are left out."""
    path = run_dir / EVAL_DIR / EVAL_FILE
    if not path.is_file():
        raise TwinbotError(f"no eval results to test with; run `twinbot eval {run_dir}` first", path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TwinbotError(
            f"unreadable eval.json ({type(exc).__name__}); run `twinbot eval {run_dir}` again", path
        ) from None
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise TwinbotError(f"eval.json has no reply table; run `twinbot eval {run_dir}` again", path)
    items = []
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            continue
        context, real, twin = row.get("context"), row.get("real"), row.get("adapter")
        if not (isinstance(context, str) and isinstance(real, str) and isinstance(twin, str)):
            continue
        if real.strip() and twin.strip() and real.split() != twin.split():
            items.append(BlindItem(index, context, real, twin))
    if not items:
        raise TwinbotError(
            f"eval.json has no pair of different real and twin replies to test with; run `twinbot eval "
            f"{run_dir} --samples 32`",
            path,
        )
    data_dir = data.get("data_dir")
    return items, data_dir if isinstance(data_dir, str) and data_dir else None


def plan_questions(rows: list[int], mode: BlindMode, seed: int) -> list[Question]:
    """Every row once, in an order drawn from `seed`; what each slot shows is balanced: half of the
    questions one way, half the other (the odd one out drawn too)."""
    rng = random.Random(seed)
    order = list(rows)
    rng.shuffle(order)
    real_first = _balanced(rng, len(order))
    if mode == "pair":
        return [
            Question(row, ("real", "twin") if first else ("twin", "real"))
            for row, first in zip(order, real_first, strict=True)
        ]
    return [
        Question(row, ("real",) if real else ("twin",)) for row, real in zip(order, real_first, strict=True)
    ]


def _balanced(rng: random.Random, count: int) -> list[bool]:
    flags = [True] * (count // 2) + [False] * (count // 2)
    if count % 2:
        flags.append(rng.random() < 0.5)
    rng.shuffle(flags)
    return flags


# ---- the score ----


@dataclass(frozen=True)
class Score:
    """The share of correct answers with its Wilson score interval, and the two-sided exact binomial
    p-value against guessing (50%)."""

    answered: int
    correct: int
    share: float | None  # None before the first answer
    low: float | None
    high: float | None
    p_value: float | None
    verdict: str  # one sentence: better than guessing, can't tell them apart, or worse than guessing
    confidence: float = CONFIDENCE


def wilson_interval(correct: int, answered: int, z: float = _Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial share (it stays inside [0, 1] and works for 0 or n of n)."""
    if answered <= 0:
        raise ValueError("no answers")
    share = correct / answered
    z2 = z * z
    denominator = 1 + z2 / answered
    center = (share + z2 / (2 * answered)) / denominator
    half = z * math.sqrt(share * (1 - share) / answered + z2 / (4 * answered * answered)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


def binomial_p_value(correct: int, answered: int) -> float:
    """Two-sided exact binomial test against p = 1/2: the chance that guessing lands at least as far from
    half right."""
    tail = min(correct, answered - correct)
    one_side = sum(math.comb(answered, k) for k in range(tail + 1)) / 2**answered
    return min(1.0, 2 * one_side)


def score(correct: int, answered: int) -> Score:
    if answered == 0:
        return Score(0, 0, None, None, None, None, "no answers yet")
    low, high = wilson_interval(correct, answered)
    if low > 0.5:
        verdict = "Better than guessing: the whole interval is above 50%."
    elif high < 0.5:
        verdict = "Worse than guessing: the twin passed for the real one (the whole interval is below 50%)."
    else:
        verdict = "Can't tell them apart: the interval includes 50%, what guessing scores."
    return Score(
        answered, correct, correct / answered, low, high, binomial_p_value(correct, answered), verdict
    )


# ---- one session ----


@dataclass(frozen=True)
class BlindAnswer:
    row: int
    shown: tuple[Kind, ...]
    choice: int | Kind  # pair: the slot picked as the real reply (0 or 1); single: "real" or "twin"
    correct: bool


@dataclass(frozen=True)
class SessionRecord:
    """One session's entry in blind.json: indices, choices and counts only."""

    id: str
    started: str  # UTC, ISO 8601
    updated: str
    mode: BlindMode
    seed: int  # replays the session: the same questions in the same order, shown the same way
    questions: int
    finished: bool
    answers: list[BlindAnswer]
    score: Score


@dataclass
class BlindSession:
    """One player's run through the questions, in memory while the server runs."""

    id: str
    mode: BlindMode
    seed: int
    questions: list[Question]
    started: str = field(default_factory=lambda: _now())
    answers: list[BlindAnswer] = field(default_factory=list)
    ended_early: bool = False

    @property
    def finished(self) -> bool:
        return self.ended_early or len(self.answers) == len(self.questions)

    def current(self) -> int | None:
        """The index of the question to answer, None when the session is over."""
        return None if self.finished else len(self.answers)

    def answer(self, index: int, choice: object) -> BlindAnswer:
        if self.finished:
            raise BlindRequestError(409, "this session is over; start a new one")
        if index != len(self.answers):
            raise BlindRequestError(
                409, f"question {index} is not the one to answer (that is {len(self.answers)})"
            )
        question = self.questions[index]
        picked: int | Kind
        if self.mode == "pair":
            if type(choice) is not int or choice not in (0, 1):  # not True/False, not 1.0
                raise BlindRequestError(400, "choice: give the slot of the reply you think is real, 0 or 1")
            picked, correct = choice, question.shown[choice] == "real"
        else:
            if choice not in ("real", "twin"):
                raise BlindRequestError(400, 'choice: give "real" or "twin"')
            picked = "real" if choice == "real" else "twin"
            correct = question.shown[0] == picked
        answer = BlindAnswer(question.row, question.shown, picked, correct)
        self.answers.append(answer)
        return answer

    def question(self, index: int, items: dict[int, BlindItem]) -> dict[str, Any]:
        """What the page shows for question `index`: the context and the reply texts, nothing telling
        which is which."""
        question = self.questions[index]
        item = items[question.row]
        return {
            "index": index,
            "total": len(self.questions),
            "context": item.context,
            "replies": [item.text(kind) for kind in question.shown],
        }

    def solution(self, index: int) -> int | Kind:
        """The right choice for question `index`, told after it is answered."""
        shown = self.questions[index].shown
        return shown.index("real") if self.mode == "pair" else shown[0]

    def finish(self) -> None:
        self.ended_early = self.ended_early or not self.finished

    def score(self) -> Score:
        return score(sum(answer.correct for answer in self.answers), len(self.answers))

    def record(self) -> SessionRecord:
        return SessionRecord(
            id=self.id,
            started=self.started,
            updated=_now(),
            mode=self.mode,
            seed=self.seed,
            questions=len(self.questions),
            finished=self.finished,
            answers=list(self.answers),
            score=self.score(),
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# ---- blind.json ----

BLIND_FORMAT = 1


class BlindLog:
    """RUN/eval/blind.json: `{"twinbot_blind": 1, "sessions": [...]}`, one entry per session, appended at
    its first answer and replaced as it goes on. Each write reads the file again, so two servers on one
    run keep each other's sessions (a write at the same instant can still lose the other's last answer)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.read()  # an unreadable file is an error before serving, not after the first answer

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TwinbotError(
                f"unreadable blind test record ({type(exc).__name__}); move it away to start a new one",
                self.path,
            ) from None
        if not (isinstance(data, dict) and isinstance(data.get("sessions"), list)):
            raise TwinbotError("not a twinbot blind test record; move it away to start a new one", self.path)
        return [entry for entry in data["sessions"] if isinstance(entry, dict)]

    def save(self, session: BlindSession) -> None:
        with self._lock:
            sessions, record = self.read(), asdict(session.record())
            ids = [entry.get("id") for entry in sessions]
            if session.id in ids:
                sessions[ids.index(session.id)] = record
            else:
                sessions.append(record)
            write_json(self.path, {"twinbot_blind": BLIND_FORMAT, "sessions": sessions})


def blind_log_path(run_dir: Path) -> Path:
    return run_dir / EVAL_DIR / BLIND_FILE


# ---- the persona's name ----

_PROMPT_BEFORE, _PROMPT_AFTER, *_ = DEFAULT_SYSTEM_PROMPT.split("{persona}")
_PROMPT_NAME = re.compile(re.escape(_PROMPT_BEFORE) + r"(.+?)" + re.escape(_PROMPT_AFTER))


def persona_name(run_dir: Path, data_dir: str | None) -> str:
    """The persona's name for "which one is the real NAME?": from the run's system prompt ("You are NAME,
    chatting with friends..."; runs.run_persona), else the data report of `twinbot prepare`, else "person"."""
    prompt = run_persona(run_dir, run_dir / ADAPTER_DIR).system_prompt
    match = _PROMPT_NAME.match(prompt or "")
    if match and match.group(1).strip():
        return match.group(1).strip()
    if data_dir:
        folder = Path(data_dir).expanduser()
        for candidate in (folder, run_dir.parent / folder) if not folder.is_absolute() else (folder,):
            name = (read_json(candidate / DATA_REPORT_FILE) or {}).get("persona")
            if isinstance(name, str) and name.strip():
                return name.strip()
    return FALLBACK_NAME
