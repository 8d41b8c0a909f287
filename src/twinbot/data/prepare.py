"""`twinbot prepare`: export files -> filtered, scrubbed messages -> conversations -> samples -> the data
folder (`prepared`: train.jsonl / eval.jsonl, report.json and lengths.png).

`run_prepare` is the recipe. Its steps, in the order of this file: `prepare_messages` (any iterable of
`Message` -> conversations, in two passes: per-message filters and scrubbing while reading, then per chat
in time order the duplicate/burst filters and the session split), `split_conversations` (train / eval by
whole conversation) and `write_outputs` (samples, report and plot). Nothing is written to the output
folder until everything succeeded (it is built in a temp folder and renamed into place).
"""

from __future__ import annotations

import json
import random
import sys
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring as encode_json_string  # what json.dumps(ensure_ascii=False) uses
from pathlib import Path
from typing import Any

from twinbot.data.chat_order import sort_chat, time_key
from twinbot.data.conversations import SessionOptions, chat_conversations
from twinbot.data.filters import (
    DEFAULT_BOT_NAMES,
    DROP_REASONS,
    FilterOptions,
    MessageFilter,
    sequence_drop_reasons,
)
from twinbot.data.prepared import EVAL_FILE, LENGTHS_PLOT, REPORT_FILE, TRAIN_FILE
from twinbot.data.records import MESSAGE_KINDS, Conversation, Message, Sample
from twinbot.data.samples import HFTokenCounter, SampleOptions, conversation_samples, count_samples
from twinbot.data.scrub import PII_TYPES, Redactions, Scrubber
from twinbot.data.sources import DateOrder, DateOrderNote, ParseOptions, parse_path
from twinbot.data.sources.common import gc_paused
from twinbot.errors import TwinbotError
from twinbot.fileio import atomic_dir, check_output_dir, keyed_digest, write_json

TOP_AUTHORS_SHOWN = 10
_TOKEN_COUNT_BATCH = 512  # samples tokenized together for the length statistics


@dataclass(slots=True)
class PrepareOptions:
    paths: list[Path] = field(default_factory=list)
    me: list[str] = field(default_factory=list)
    out: Path = Path("data")
    model: str | None = None
    seed: int = 0
    fmt: str | None = None
    dayfirst: bool | None = None
    date_order: DateOrder | None = None
    date_notes: list[DateOrderNote] = field(default_factory=list)  # how the parsers read dates (filled)
    scrub: bool = True
    split: str = "conversation"
    eval_fraction: float = 0.1
    session_gap_minutes: float = 30.0
    context_turns: int = 8
    min_chars: int = 1
    max_chars: int = 2000
    persona: str | None = None
    overwrite: bool = False
    context_chars: int = 2000
    context_tokens: int = 1024
    bot_names: list[str] = field(default_factory=list)  # added to filters.DEFAULT_BOT_NAMES
    redact: list[str] = field(default_factory=list)  # names, addresses: replaced by <REDACTED>
    redact_files: list[Path] = field(default_factory=list)  # more of them, one per line
    duplicate_window_s: float = 300.0
    burst_max_messages: int = 8
    burst_window_s: float = 5.0
    style_turn_gap_minutes: float = 2.0

    def validate(self) -> None:
        if self.split not in ("conversation", "time"):
            raise TwinbotError(f"--split must be 'conversation' or 'time', not {self.split!r}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise TwinbotError("--eval-fraction must be at least 0 and below 1, e.g. 0.1")
        if self.session_gap_minutes <= 0:
            raise TwinbotError("--session-gap must be a positive number of minutes, e.g. 30")
        if self.context_turns < 1:
            raise TwinbotError("--context-turns must be at least 1")
        if self.context_chars < 1 or self.context_tokens < 1:
            raise TwinbotError("the context budget must be at least 1 character / token")
        if self.min_chars < 0 or self.max_chars < max(1, self.min_chars):
            raise TwinbotError("--max-chars must be at least 1 and not below --min-chars")

    def filter_options(self) -> FilterOptions:
        return FilterOptions(
            bot_names=DEFAULT_BOT_NAMES | frozenset(self.bot_names),
            min_chars=self.min_chars,
            max_chars=self.max_chars,
            duplicate_window_s=self.duplicate_window_s,
            burst_max_messages=self.burst_max_messages,
            burst_window_s=self.burst_window_s,
        )

    def session_options(self) -> SessionOptions:
        return SessionOptions(
            gap_minutes=self.session_gap_minutes,
            style_turn_gap_minutes=self.style_turn_gap_minutes,
            dataset=str(Path(self.out).resolve()),
        )


@dataclass(frozen=True, slots=True)
class AuthorCount:
    author_id: str
    author: str  # the most used display name of this id
    messages: int

    def to_json(self) -> dict[str, Any]:
        return {"author_id": self.author_id, "author": self.author, "messages": self.messages}


@dataclass(frozen=True, slots=True)
class ReportedAuthor:
    """An author as report.json shows them: the name scrubbed as in the samples, the id as a keyed digest
    (ids can be phone numbers or account ids; the report may travel with the data)."""

    author_key: str
    author: str
    messages: int

    def to_json(self) -> dict[str, Any]:
        return {"author_key": self.author_key, "author": self.author, "messages": self.messages}


class PersonaNotFound(TwinbotError):
    """--me is missing or matches nobody; `authors` holds the most active authors to choose from."""

    def __init__(self, message: str, authors: list[AuthorCount]) -> None:
        super().__init__(message)
        self.authors = authors


@dataclass(slots=True)
class PrepareStats:
    messages_read: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    dropped_persona: dict[str, int] = field(default_factory=dict)
    dropped_by_subkind: dict[str, int] = field(default_factory=dict)  # non-text messages dropped, by subkind
    pii: dict[str, int] = field(default_factory=dict)
    persona_messages: int = 0
    authors: list[ReportedAuthor] = field(default_factory=list)


@dataclass(slots=True)
class PreparedData:
    conversations: list[Conversation]
    persona: str
    me_ids: frozenset[str]
    stats: PrepareStats


@dataclass(slots=True)
class LengthStats:
    assistant_chars: array[int] = field(default_factory=lambda: array("l"))
    sample_chars: array[int] = field(default_factory=lambda: array("l"))
    assistant_tokens: array[int] = field(default_factory=lambda: array("l"))
    sample_tokens: array[int] = field(default_factory=lambda: array("l"))


@dataclass(slots=True)
class PrepareReport:
    stats: PrepareStats
    persona: str
    sessions: int
    conversations_train: int
    conversations_eval: int
    samples_train: int
    samples_eval: int
    split: str
    seed: int
    scrubbed: bool
    char_lengths: dict[str, dict[str, int]]
    token_lengths: dict[str, int] | None = None
    tokenizer: str | None = None
    date_orders: list[DateOrderNote] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        s = self.stats
        data: dict[str, Any] = {
            "messages_read": s.messages_read,
            "by_kind": s.by_kind,
            "kept": s.kept,
            "dropped": s.dropped,
            "dropped_persona": s.dropped_persona,
            "dropped_by_subkind": s.dropped_by_subkind,
            "pii": s.pii,
            "scrubbed": self.scrubbed,
            "sessions": self.sessions,
            "conversations_train": self.conversations_train,
            "conversations_eval": self.conversations_eval,
            "samples_train": self.samples_train,
            "samples_eval": self.samples_eval,
            "split": self.split,
            "seed": self.seed,
            "persona": self.persona,
            "persona_messages": s.persona_messages,
            "authors": [a.to_json() for a in s.authors],
            "char_lengths": self.char_lengths,
            # no file or chat names: those can be people's names
            "date_order": [
                {"order": n.order, "reason": n.reason, "guessed": n.guessed} for n in self.date_orders
            ],
        }
        if self.token_lengths is not None:
            data["token_lengths"] = self.token_lengths
            data["tokenizer"] = self.tokenizer
        return data


# --- the recipe -----------------------------------------------------------------------------------


def run_prepare(options: PrepareOptions) -> PrepareReport:
    options.validate()
    out = Path(options.out)
    check_output_dir(out, options.overwrite)
    for path in options.paths:
        if not Path(path).exists():
            raise TwinbotError("no such file or folder; check the path", path)
    tokenizer = _load_tokenizer(options.model) if options.model else None
    try:
        data = prepare_messages(_read_all(options), options)
    except PersonaNotFound as exc:
        if exc.authors:
            print_authors(exc.authors)
        else:
            print("no authors found in the input", file=sys.stderr)
        raise
    report = write_outputs(data, options, tokenizer)
    print_summary(report, out)
    return report


def _load_tokenizer(spec: str) -> Any:
    try:
        from twinbot.models.loading import load_tokenizer
    except ImportError as exc:
        raise TwinbotError(
            "--model needs twinbot.models.loading, which this install lacks; run without --model"
        ) from exc
    return load_tokenizer(spec)


def _read_all(options: PrepareOptions) -> Iterator[Message]:
    parse_options = ParseOptions(
        dayfirst=options.dayfirst, date_order=options.date_order, date_notes=options.date_notes
    )
    for path in options.paths:
        yield from parse_path(Path(path), options.fmt, parse_options)


# --- messages -> conversations --------------------------------------------------------------------


def prepare_messages(messages: Iterable[Message], options: PrepareOptions) -> PreparedData:
    """Filter, scrub and group messages into conversations; TwinbotError when nothing usable is left.

    For memory, the kept `Message` objects are updated in place (scrubbed text, repeated strings such as
    author ids shared): pass messages you do not need unchanged afterwards.
    """
    options.validate()
    with gc_paused(freeze=True):
        return _prepare_messages(messages, options)


@dataclass(slots=True)
class _Tally:
    """What the two passes over the messages count, for the report."""

    read: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    authors: Counter[tuple[str, str]] = field(default_factory=Counter)  # (author id, name) -> messages
    drops: Counter[tuple[str, bool, str]] = field(default_factory=Counter)  # (reason, style-only, author id)
    drops_by_subkind: Counter[str] = field(default_factory=Counter)
    kept: int = 0
    persona_kept: int = 0

    def stats(
        self, me_ids: frozenset[str], authors: list[ReportedAuthor], pii: dict[str, int]
    ) -> PrepareStats:
        dropped = dict.fromkeys(DROP_REASONS, 0)
        dropped_persona = dict.fromkeys(DROP_REASONS, 0)
        for (reason, style_only, author_id), n in self.drops.items():
            dropped[reason] += n
            if style_only or author_id in me_ids:
                dropped_persona[reason] += n
        return PrepareStats(
            messages_read=self.read,
            by_kind={kind: self.by_kind.get(kind, 0) for kind in MESSAGE_KINDS}
            | {k: v for k, v in self.by_kind.items() if k not in MESSAGE_KINDS},
            kept=self.kept,
            dropped=dropped,
            dropped_persona=dropped_persona,
            dropped_by_subkind=dict(sorted(self.drops_by_subkind.items())),
            pii=pii,
            persona_messages=self.persona_kept,
            authors=authors,
        )


def _prepare_messages(messages: Iterable[Message], options: PrepareOptions) -> PreparedData:
    keep = MessageFilter(options.filter_options())
    sessions = options.session_options()
    redactions = Redactions.read(options.redact, options.redact_files)
    scrubber = (
        Scrubber(patterns=options.scrub, redactions=redactions) if options.scrub or redactions else None
    )
    # not counted in the report: it sees each name once, not each message
    names_scrubber = Scrubber(redactions=redactions)
    tally = _Tally()
    chats = _read_chats(messages, keep, sessions.style_only_platforms, scrubber, names_scrubber, tally)
    if tally.read == 0:
        raise TwinbotError("no messages found in the input; check the paths and --format")
    authors = _author_counts(tally.authors)
    me_ids = resolve_me(options.me, tally.authors, authors)
    persona = options.persona or _persona_name(me_ids, tally.authors)
    if options.persona is None and scrubber is not None:
        persona = names_scrubber.scrub(persona)
    conversations = _chats_to_conversations(chats, me_ids, keep.options, sessions, tally)
    pii = dict(scrubber.counts) if scrubber is not None else dict.fromkeys(PII_TYPES, 0)
    reported = [
        ReportedAuthor(keyed_digest("author-ids", a.author_id), names_scrubber.scrub(a.author), a.messages)
        for a in authors
    ]
    stats = tally.stats(me_ids, reported, pii)
    if tally.kept == 0:
        raise TwinbotError(
            f"all {tally.read} messages were filtered out "
            "(see the filter options, e.g. --min-chars/--max-chars)"
        )
    if tally.persona_kept == 0:
        raise TwinbotError(
            "none of your messages (--me) are left after filtering; check --me and the filter options"
        )
    return PreparedData(conversations=conversations, persona=persona, me_ids=me_ids, stats=stats)


# A chat while reading: its messages, and the one copy of its platform and chat id strings they share.
_Chat = tuple[list[Message], str, str]


def _read_chats(
    messages: Iterable[Message],
    keep: MessageFilter,
    style_platforms: frozenset[str],
    scrubber: Scrubber | None,
    names_scrubber: Scrubber,
    tally: _Tally,
) -> dict[tuple[str, str], _Chat]:
    """The first pass: count every message, drop those the per-message filters reject, scrub the rest and
    group them by (platform, chat id). The hot loop of large exports: everything it touches is local."""
    by_kind, authors, drops, drops_by_subkind = (
        tally.by_kind,
        tally.authors,
        tally.drops,
        tally.drops_by_subkind,
    )
    scrubbed_names: dict[str, str] = {}
    shared: dict[str, str] = {}  # one copy of each repeated author string
    share = shared.setdefault
    chats: dict[tuple[str, str], _Chat] = {}
    read = 0
    for message in messages:
        read += 1
        by_kind[message.kind] += 1
        author_id = message.author_id = share(message.author_id, message.author_id)
        author = message.author = share(message.author, message.author)
        if author_id and message.kind != "system":
            authors[(author_id, author)] += 1
        reason = keep(message)
        if reason is not None:
            drops[(reason, message.platform in style_platforms, author_id)] += 1
            if message.subkind is not None:
                drops_by_subkind[message.subkind] += 1
            continue
        if scrubber is not None:
            message.text = scrubber.scrub(message.text)
            # Display names reach the samples ("Name: text"); WhatsApp shows unsaved contacts by number.
            name = scrubbed_names.get(author)
            if name is None:
                name = scrubbed_names[author] = names_scrubber.scrub(author)
            message.author = name
        key = (message.platform, message.chat_id)
        chat = chats.get(key)
        if chat is None:
            chat = chats[key] = ([], message.platform, message.chat_id)
        else:
            message.platform = chat[1]
            message.chat_id = chat[2]
        chat[0].append(message)
    tally.read = read
    return chats


def _chats_to_conversations(
    chats: dict[tuple[str, str], _Chat],
    me_ids: frozenset[str],
    filters: FilterOptions,
    sessions: SessionOptions,
    tally: _Tally,
) -> list[Conversation]:
    """The second pass, chat by chat in time order: drop duplicates and spam bursts, then split what is
    left into conversations. Each chat is released as soon as it is done."""
    conversations: list[Conversation] = []
    drops = tally.drops
    persona_kept = 0
    for key in list(chats):
        ordered = sort_chat(chats.pop(key)[0])
        times = [time_key(m.timestamp) for m in ordered]
        style_only = key[0] in sessions.style_only_platforms
        reasons = sequence_drop_reasons(ordered, times, filters)
        kept_messages: list[Message] = []
        kept_times: list[int] = []
        for message, when, reason in zip(ordered, times, reasons, strict=True):
            if reason is not None:
                drops[(reason, style_only, message.author_id)] += 1
                if message.subkind is not None:
                    tally.drops_by_subkind[message.subkind] += 1
                continue
            kept_messages.append(message)
            kept_times.append(when)
            if style_only or message.author_id in me_ids:
                persona_kept += 1
        del ordered, times, reasons
        tally.kept += len(kept_messages)
        conversations.extend(chat_conversations(kept_messages, kept_times, me_ids, sessions))
    tally.persona_kept = persona_kept
    return conversations


def _author_counts(pairs: Counter[tuple[str, str]]) -> list[AuthorCount]:
    totals: Counter[str] = Counter()
    best_name: dict[str, tuple[int, str]] = {}
    for (author_id, name), n in pairs.items():
        totals[author_id] += n
        current = best_name.get(author_id)
        if current is None or (n, name) > current:
            best_name[author_id] = (n, name)
    ordered = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    return [AuthorCount(author_id=a, author=best_name[a][1], messages=n) for a, n in ordered]


def resolve_me(
    me: Sequence[str], pairs: Counter[tuple[str, str]], authors: list[AuthorCount]
) -> frozenset[str]:
    """Author ids whose id or any display name equals one of `me` (case-insensitive)."""
    wanted = {m.strip().casefold() for m in me if m.strip()}
    top = authors[:TOP_AUTHORS_SHOWN]
    if not wanted:
        raise PersonaNotFound(
            "--me is required: pass your author id or display name "
            "(the most active authors are listed above)",
            top,
        )
    ids = frozenset(
        author_id for author_id, name in pairs if author_id.casefold() in wanted or name.casefold() in wanted
    )
    if not ids:
        shown = ", ".join(repr(m) for m in me)
        raise PersonaNotFound(
            f"--me {shown} matches no author id or name in the input; pick one of the authors listed above",
            top,
        )
    return ids


def _persona_name(me_ids: frozenset[str], pairs: Counter[tuple[str, str]]) -> str:
    names: Counter[str] = Counter()
    for (author_id, name), n in pairs.items():
        if author_id in me_ids and name:
            names[name] += n
    if not names:
        return "me"
    return min(names.items(), key=lambda item: (-item[1], item[0]))[0]


# --- conversations -> train / eval ----------------------------------------------------------------


def split_conversations(
    conversations: Sequence[Conversation],
    strategy: str = "conversation",
    eval_fraction: float = 0.1,
    seed: int = 0,
) -> tuple[list[Conversation], list[Conversation]]:
    """(train, eval) by whole conversation, only over conversations that give samples.

    'conversation': a seeded shuffle of the conversation ids picks the eval ones (same input and seed,
    same split). 'time': the conversations that end last go to eval. With two or more usable
    conversations and eval_fraction > 0, eval gets at least one and train keeps at least one.
    """
    usable = [c for c in conversations if count_samples(c) > 0]
    n = len(usable)
    n_eval = 0 if eval_fraction <= 0 or n < 2 else min(n - 1, max(1, round(n * eval_fraction)))
    if strategy == "time":
        ordered = sorted(usable, key=lambda c: (time_key(c.turns[-1].end), c.id))
        eval_ids = {c.id for c in ordered[n - n_eval :]} if n_eval else set()
    else:
        ids = sorted(c.id for c in usable)
        random.Random(seed).shuffle(ids)
        eval_ids = set(ids[:n_eval])
    train = [c for c in usable if c.id not in eval_ids]
    evaluation = [c for c in usable if c.id in eval_ids]
    return train, evaluation


# --- the data folder ------------------------------------------------------------------------------


def write_outputs(
    data: PreparedData,
    options: PrepareOptions,
    tokenizer: Any | None = None,
) -> PrepareReport:
    """Split, write train.jsonl / eval.jsonl / report.json / lengths.png into `options.out` atomically."""
    train, evaluation = split_conversations(
        data.conversations, options.split, options.eval_fraction, options.seed
    )
    if not train and not evaluation:
        raise TwinbotError(
            "no training samples: none of your messages (--me) answer anyone in the same conversation; "
            "check --me or raise --session-gap"
        )
    sample_options = SampleOptions(
        persona=data.persona,
        context_turns=options.context_turns,
        context_chars=options.context_chars,
        context_tokens=options.context_tokens,
    )
    counter = HFTokenCounter(tokenizer) if tokenizer is not None else None
    lengths = LengthStats()
    with gc_paused(freeze=True), atomic_dir(options.out, overwrite=options.overwrite, marked=True) as tmp:
        samples_train = _write_samples(tmp / TRAIN_FILE, train, sample_options, counter, lengths)
        samples_eval = _write_samples(tmp / EVAL_FILE, evaluation, sample_options, counter, lengths)
        report = PrepareReport(
            stats=data.stats,
            persona=data.persona,
            sessions=len(data.conversations),
            conversations_train=len(train),
            conversations_eval=len(evaluation),
            samples_train=samples_train,
            samples_eval=samples_eval,
            split=options.split,
            seed=options.seed,
            scrubbed=options.scrub,
            char_lengths={
                "assistant": _percentiles(lengths.assistant_chars),
                "sample": _percentiles(lengths.sample_chars),
            },
            token_lengths=_percentiles(lengths.sample_tokens) if counter is not None else None,
            tokenizer=options.model if counter is not None else None,
            date_orders=list(options.date_notes),
        )
        write_json(tmp / REPORT_FILE, report.to_json())
        plot_lengths(tmp / LENGTHS_PLOT, lengths)
    return report


def _write_samples(
    path: Path,
    conversations: Sequence[Conversation],
    options: SampleOptions,
    counter: HFTokenCounter | None,
    lengths: LengthStats,
) -> int:
    written = 0
    pending: list[Sample] = []

    def flush() -> None:
        if counter is None or not pending:
            return
        lengths.sample_tokens.extend(counter.templated_lengths(pending))
        lengths.assistant_tokens.extend(counter.count([s.messages[-1].content for s in pending]))
        pending.clear()

    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for conversation in conversations:
            encoded: dict[int, str] = {}
            samples_alive: list[Sample] = []  # keeps the ids in `encoded` from being reused
            for sample in conversation_samples(conversation, options, counter):
                fh.write(sample_line(sample, encoded) + "\n")
                samples_alive.append(sample)
                written += 1
                lengths.assistant_chars.append(len(sample.messages[-1].content))
                lengths.sample_chars.append(sum(len(t.content) for t in sample.messages))
                if counter is not None:
                    pending.append(sample)
                    if len(pending) >= _TOKEN_COUNT_BATCH:
                        flush()
        flush()
    return written


def sample_line(sample: Sample, encoded: dict[int, str]) -> str:
    """`json.dumps(sample.to_json(), ensure_ascii=False)`, reusing the encoding of turns already seen
    (`encoded`, keyed by object id): consecutive samples of one conversation share most of their turns."""
    parts = []
    for turn in sample.messages:
        text = encoded.get(id(turn))
        if text is None:
            text = (
                f'{{"role": {encode_json_string(turn.role)}, "content": {encode_json_string(turn.content)}}}'
            )
            encoded[id(turn)] = text
        parts.append(text)
    if sample.extra:
        rest = json.dumps(
            {k: v for k, v in sample.to_json().items() if k != "messages"}, ensure_ascii=False
        ).removeprefix("{")
    else:
        style_only = "true" if sample.style_only else "false"
        rest = (
            f'"conversation_id": {encode_json_string(sample.conversation_id)}, "style_only": {style_only}}}'
        )
    return f'{{"messages": [{", ".join(parts)}], {rest}'


def _percentiles(values: Sequence[int]) -> dict[str, int]:
    if not values:
        return {"p50": 0, "p90": 0, "p99": 0, "max": 0}
    ordered = sorted(values)
    last = len(ordered) - 1

    def at(q: float) -> int:
        return int(ordered[min(last, round(q * last))])

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": int(ordered[-1])}


def plot_lengths(path: Path, lengths: LengthStats) -> None:
    """Histogram of reply and whole-sample lengths (tokens when a tokenizer was given, else characters)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tokens = len(lengths.sample_tokens) > 0
    unit = "tokens" if tokens else "characters"
    reply = lengths.assistant_tokens if tokens else lengths.assistant_chars
    whole = lengths.sample_tokens if tokens else lengths.sample_chars
    figure = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(figure)
    for index, (values, title) in enumerate(((reply, "reply (assistant)"), (whole, "whole sample")), 1):
        axes = figure.add_subplot(1, 2, index)
        axes.hist(np.asarray(values) if len(values) else np.zeros(1), bins=50, color="#4c72b0")
        axes.set_title(f"{title} length")
        axes.set_xlabel(unit)
        axes.set_ylabel("samples")
    figure.tight_layout()
    figure.savefig(path, format="png")


# --- the console ----------------------------------------------------------------------------------


def print_authors(authors: Sequence[AuthorCount]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Most active authors (pass one with --me)")
    table.add_column("name")
    table.add_column("id")
    table.add_column("messages", justify="right")
    for author in authors:
        table.add_row(author.author, author.author_id, str(author.messages))
    Console(stderr=True).print(table)


def print_summary(report: PrepareReport, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    s = report.stats
    table = Table(title=f"twinbot prepare -> {out}", show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("messages read", str(s.messages_read))
    for kind, n in s.by_kind.items():
        table.add_row(f"  {kind}", str(n))
    table.add_row("kept", str(s.kept))
    table.add_row("  of them yours", str(s.persona_messages))
    for reason, n in s.dropped.items():
        if n:
            table.add_row(f"dropped: {reason}", f"{n} (yours {s.dropped_persona.get(reason, 0)})")
    if s.dropped_by_subkind:
        table.add_row("  by subkind", ", ".join(f"{name} {n}" for name, n in s.dropped_by_subkind.items()))
    for kind, n in s.pii.items():
        if n:
            table.add_row(f"scrubbed: {kind}", str(n))
    table.add_row("conversations", str(report.sessions))
    table.add_row("samples train", f"{report.samples_train} ({report.conversations_train} conversations)")
    table.add_row("samples eval", f"{report.samples_eval} ({report.conversations_eval} conversations)")
    if report.token_lengths:
        t = report.token_lengths
        table.add_row("tokens p50/p90/p99/max", f"{t['p50']}/{t['p90']}/{t['p99']}/{t['max']}")
    for note in report.date_orders:
        table.add_row(f"date order ({note.path.name})", note.describe())
    Console().print(table)
