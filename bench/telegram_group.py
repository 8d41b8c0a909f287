"""A benchmark input of another shape than examples/: a Telegram Desktop JSON export (result.json) of
one big multilingual group chat — eight speakers writing German, Spanish, Japanese, Polish and English,
short bursts and long paragraphs mixed, over about two years — so training and preparing are also
measured on data unlike the bundled sample (English, two chats, short lines).

    python bench/telegram_group.py --out /tmp/tg --messages 6000
    twinbot prepare /tmp/tg/result.json --me Mira --out /tmp/tg-data

Deterministic for a given --seed. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

SPEAKERS = {
    "Mira": "de",
    "Lukas": "de",
    "Sofía": "es",
    "Mateo": "es",
    "Haruto": "ja",
    "Yui": "ja",
    "Kasia": "pl",
    "Ben": "en",
}
PHRASES = {
    "de": [
        "ich bin gleich da",
        "hat jemand Lust heute Abend zu kochen?",
        "das war echt der beste Film seit Jahren, ich kann gar nicht aufhören daran zu denken",
        "na klar",
        "wer hat meinen Schlüssel gesehen??",
        "ehrlich gesagt finde ich, wir sollten die Reise auf September verschieben, dann ist es "
        "nicht mehr so heiß und die Züge sind leerer",
        "haha ja genau",
        "morgen geht bei mir nicht, Donnerstag?",
    ],
    "es": [
        "jajaja no puede ser",
        "¿quién viene el sábado?",
        "yo llevo la tortilla y algo de beber",
        "vale",
        "oye, ¿alguien sabe si el museo abre los lunes? quería ir con mi hermana antes de que se vaya",
        "qué envidia me dais",
        "llego tarde, perdón!!",
    ],
    "ja": [
        "了解です！",
        "今日はちょっと遅れます🙏",
        "それめっちゃいいね",
        "週末どこか行きませんか？天気が良さそうなので、海の近くまでドライブしたいです",
        "ありがとう〜",
        "写真送るね",
    ],
    "pl": [
        "no jasne",
        "kto idzie jutro na rower?",
        "dzięki, jesteś super",
        "wczoraj byłam w tej nowej kawiarni przy rynku i szczerze polecam sernik, chociaż kawa była "
        "taka sobie",
        "hahaha",
    ],
    "en": [
        "lol",
        "count me in",
        "wait what happened",
        "ok so the plan is: meet at 7 at the station, grab food, then decide, nobody overthinks it",
        "sounds good",
    ],
}


def make_export(messages: int, seed: int) -> dict:
    rng = random.Random(seed)
    names = list(SPEAKERS)
    ids = {name: f"user{1000 + index}" for index, name in enumerate(names)}
    when = datetime(2023, 3, 1, 9, 0, tzinfo=UTC)
    rows = []
    speaker = rng.choice(names)
    for message_id in range(1, messages + 1):
        # Bursts: the same person often writes two or three lines in a row; new sessions after long gaps.
        if rng.random() > 0.35:
            speaker = rng.choice(names)
        gap = rng.choice([20, 45, 90, 300, 1200]) if rng.random() > 0.04 else rng.randint(6, 40) * 3600
        when += timedelta(seconds=gap)
        text = rng.choice(PHRASES[SPEAKERS[speaker]])
        rows.append(
            {
                "id": message_id,
                "type": "message",
                "date": when.strftime("%Y-%m-%dT%H:%M:%S"),
                "date_unixtime": str(int(when.timestamp())),
                "from": speaker,
                "from_id": ids[speaker],
                "text": text,
            }
        )
    return {
        "personal_information": {"user_id": 1000, "first_name": "Mira", "last_name": ""},
        "chats": {
            "about": "This page lists all chats from this export.",
            "list": [{"name": "Küchenkabinett 🍳", "type": "private_group", "id": 42, "messages": rows}],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for result.json")
    parser.add_argument("--messages", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "result.json"
    path.write_text(json.dumps(make_export(args.messages, args.seed), ensure_ascii=False), encoding="utf-8")
    print(f"{path}: {args.messages} messages, {len(SPEAKERS)} speakers")


if __name__ == "__main__":
    main()
