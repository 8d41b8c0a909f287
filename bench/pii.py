"""PII scrubbing measured on a labelled chat corpus: precision and recall per type.

The corpus, `tests/fixtures/pii/chat_corpus.jsonl`, holds realistic chat lines in eleven languages, each
with the sensitive values in it labelled by type, and hard negatives that look like PII but are not (git
commit ids, digests, UUIDs, versions, prices, times, order and tracking numbers, coordinates, tech chat).
It was written separately from the detectors, by someone who had not read them.

    python bench/pii.py                      # the table
    python bench/pii.py --misses             # also every miss and false alarm (the corpus's own text)
    python bench/pii.py --json out.json

A labelled value is found when a detected span of its type covers all of its letters and digits; a
detected span is a true positive when it overlaps a labelled value of its type, else a false alarm.
"scrubbed" counts a value as safe when any placeholder covers it, whatever its type. Types the scrubber
does not claim (ADDRESS, NAME) are listed with their share scrubbed anyway. Targets (issue #20): recall
>= 0.97 and precision >= 0.98 on every claimed type.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "fixtures" / "pii" / "chat_corpus.jsonl"
CLAIMED = ("EMAIL", "PHONE", "CARD", "IBAN", "SSN", "IP", "SECRET")
TARGET_RECALL = 0.97
TARGET_PRECISION = 0.98

if importlib.util.find_spec("twinbot") is None:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT / "src"))

from twinbot.data.scrub import find_pii  # noqa: E402


@dataclass(frozen=True, slots=True)
class Label:
    type: str
    start: int
    end: int


@dataclass(slots=True)
class TypeScore:
    type: str
    labelled: int = 0
    found: int = 0  # labelled values detected with their own type
    scrubbed: int = 0  # labelled values covered by any placeholder
    detected: int = 0
    true_positives: int = 0

    @property
    def recall(self) -> float:
        return self.found / self.labelled if self.labelled else 1.0

    @property
    def precision(self) -> float:
        return self.true_positives / self.detected if self.detected else 1.0


@dataclass(slots=True)
class Evaluation:
    lines: int = 0
    negatives: int = 0
    negatives_with_alarms: int = 0
    scores: dict[str, TypeScore] = field(default_factory=dict)
    misses: list[str] = field(default_factory=list)

    def score(self, kind: str) -> TypeScore:
        return self.scores.setdefault(kind, TypeScore(kind))

    def failed_targets(self) -> list[str]:
        return [
            kind
            for kind in CLAIMED
            if kind in self.scores
            and (self.scores[kind].recall < TARGET_RECALL or self.scores[kind].precision < TARGET_PRECISION)
        ]


def labels_of(text: str, values: list[dict[str, str]]) -> list[Label]:
    """The labelled values' positions: each value's next occurrence after the previous same value."""
    labels, searched_from = [], Counter[str]()
    for item in values:
        value = item["value"]
        start = text.find(value, searched_from[value])
        if start < 0:
            raise ValueError(f"labelled value not in its line: {value!r}")
        searched_from[value] = start + 1
        labels.append(Label(item["type"], start, start + len(value)))
    return labels


def _covers(span_start: int, span_end: int, text: str, label: Label) -> bool:
    inner = [i for i in range(label.start, label.end) if text[i].isalnum()] or [label.start]
    return span_start <= inner[0] and inner[-1] < span_end


def evaluate(corpus: Path = CORPUS) -> Evaluation:
    result = Evaluation()
    for line in corpus.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        text = row["text"]
        labels = labels_of(text, row["pii"])
        spans = find_pii(text)
        result.lines += 1
        if not labels:
            result.negatives += 1
            result.negatives_with_alarms += bool(spans)
        for label in labels:
            score = result.score(label.type)
            score.labelled += 1
            if any(s.type == label.type and _covers(s.start, s.end, text, label) for s in spans):
                score.found += 1
            elif label.type in CLAIMED:
                result.misses.append(f"missed {label.type}: {text[label.start : label.end]!r} in {text!r}")
            if any(_covers(s.start, s.end, text, label) for s in spans):
                score.scrubbed += 1
        for span in spans:
            score = result.score(span.type)
            score.detected += 1
            if any(lb.type == span.type and lb.start < span.end and span.start < lb.end for lb in labels):
                score.true_positives += 1
            else:
                result.misses.append(f"false {span.type}: {text[span.start : span.end]!r} in {text!r}")
    return result


def render(result: Evaluation) -> str:
    rows = [("type", "labelled", "recall", "precision", "scrubbed", "detected", "target")]
    for kind in (*CLAIMED, *sorted(set(result.scores) - set(CLAIMED))):
        if kind not in result.scores:
            continue
        s = result.scores[kind]
        claimed = kind in CLAIMED
        verdict = (
            ("ok" if s.recall >= TARGET_RECALL and s.precision >= TARGET_PRECISION else "MISSED")
            if claimed
            else "not claimed"
        )
        rows.append(
            (
                kind,
                str(s.labelled),
                f"{s.recall:.3f}" if s.labelled else "-",
                f"{s.precision:.3f}" if s.detected else "-",
                f"{s.scrubbed / s.labelled:.3f}" if s.labelled else "-",
                str(s.detected),
                verdict,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.append(
        f"\n{result.lines} lines, {result.negatives} hard negatives "
        f"({result.negatives_with_alarms} with a false alarm); targets: recall >= {TARGET_RECALL}, "
        f"precision >= {TARGET_PRECISION} per claimed type"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--misses", action="store_true", help="print every miss and false alarm")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    result = evaluate(args.corpus)
    print(render(result))
    if args.misses:
        print("\n" + "\n".join(result.misses))
    if args.json:
        payload = {
            "benchmark": "bench/pii.py",
            "corpus": str(args.corpus),
            "lines": result.lines,
            "negatives": result.negatives,
            "negatives_with_alarms": result.negatives_with_alarms,
            "scores": [
                asdict(s) | {"recall": s.recall, "precision": s.precision} for s in result.scores.values()
            ],
            "failed_targets": result.failed_targets(),
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 1 if result.failed_targets() else 0


if __name__ == "__main__":
    sys.exit(main())
