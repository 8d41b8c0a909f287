"""Conversations -> samples: roles, naming, context windows, style-only."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import datetime, timedelta

from twinbot.data.records import Conversation, Sample, Turn
from twinbot.data.samples import SampleOptions, chat_turns, conversation_samples, count_samples

T0 = datetime(2024, 3, 1, 12, 0)


def conv(*turns: tuple[str, list[str]], style_only: bool = False) -> Conversation:
    """Turns as (author, texts); the author "me" is the persona."""
    built = [
        Turn(
            author_id=f"id-{author}",
            author=author.title(),
            is_me=author == "me",
            texts=texts,
            start=T0 + timedelta(minutes=i),
            end=T0 + timedelta(minutes=i),
        )
        for i, (author, texts) in enumerate(turns)
    ]
    return Conversation(id="conv-1", platform="test", chat_id="c", turns=built, style_only=style_only)


OPTIONS = SampleOptions(persona="Sam")


def samples(conversation: Conversation, options: SampleOptions = OPTIONS) -> list[Sample]:
    result = list(conversation_samples(conversation, options))
    assert len(result) == count_samples(conversation)
    return result


def roles(sample: Sample) -> list[str]:
    return [t.role for t in sample.messages]


def assert_alternating(sample: Sample) -> None:
    body = roles(sample)[1:]
    assert roles(sample)[0] == "system"
    assert body[0] == "user" and body[-1] == "assistant"
    assert all(a != b for a, b in itertools.pairwise(body)), body


def test_one_sample_per_me_turn_with_something_before_it() -> None:
    c = conv(
        ("me", ["morning"]),  # nothing before it: no sample
        ("alex", ["hey"]),
        ("me", ["hi", "how are you"]),
        ("alex", ["good", "you?"]),
        ("me", ["great"]),
    )
    result = samples(c)
    assert len(result) == 2
    first, second = result
    assert first.messages[0].content == "You are Sam, chatting with friends. Reply the way Sam does."
    assert [t.content for t in first.messages[1:]] == ["hey", "hi\nhow are you"]
    assert [t.content for t in second.messages[1:]] == ["hey", "hi\nhow are you", "good\nyou?", "great"]
    for s in result:
        assert_alternating(s)
        assert s.conversation_id == "conv-1"
        assert not s.style_only


def test_context_never_opens_with_an_assistant_turn() -> None:
    c = conv(("me", ["yo"]), ("alex", ["hey"]), ("me", ["what's up"]))
    (only,) = samples(c)
    assert roles(only) == ["system", "user", "assistant"]


def test_two_people_get_name_prefixes_and_are_merged_into_one_user_turn() -> None:
    c = conv(
        ("alex", ["anyone up?"]),
        ("jo", ["me", "kind of"]),
        ("me", ["same"]),
    )
    (only,) = samples(c)
    assert roles(only) == ["system", "user", "assistant"]
    assert only.messages[1].content == "Alex: anyone up?\nJo: me\nJo: kind of"
    assert only.messages[2].content == "same"


def test_one_other_person_gets_no_prefix() -> None:
    c = conv(("alex", ["a"]), ("alex", ["b"]), ("me", ["c"]))
    assert chat_turns(c)[0].content == "a\nb"


def test_roles_alternate_in_a_long_group_chat() -> None:
    people = ["alex", "jo", "me", "me", "kim", "alex", "me", "jo", "me", "kim", "kim", "me"]
    c = conv(*[(p, [f"{p} says {i}"]) for i, p in enumerate(people)])
    result = samples(c)
    assert len(result) == 4
    for s in result:
        assert_alternating(s)


def test_context_turns_limit_drops_the_oldest() -> None:
    turns = []
    for i in range(10):
        turns += [("alex", [f"q{i}"]), ("me", [f"a{i}"])]
    result = samples(conv(*turns), SampleOptions(persona="Sam", context_turns=3))
    assert [t.content for t in result[-1].messages[1:]] == ["q8", "a8", "q9", "a9"]
    assert max(len(s.messages) for s in result) <= 1 + 3 + 1
    # Two context turns would open on an assistant turn (a8), so the sample starts at q9.
    result = samples(conv(*turns), SampleOptions(persona="Sam", context_turns=2))
    assert [t.content for t in result[-1].messages[1:]] == ["q9", "a9"]


def test_char_budget_drops_the_oldest_and_truncates_an_oversized_nearest_turn() -> None:
    c = conv(("alex", ["x" * 50]), ("me", ["ok"]), ("alex", ["y" * 30]), ("me", ["sure"]))
    last = samples(c, SampleOptions(persona="Sam", context_chars=40))[-1]
    assert [t.content for t in last.messages[1:]] == ["y" * 30, "sure"]
    big = conv(("alex", ["z" * 500 + "END"]), ("me", ["ok"]))
    (only,) = samples(big, SampleOptions(persona="Sam", context_chars=100))
    assert len(only.messages[1].content) == 100
    assert only.messages[1].content.endswith("END")


class WordCounter:
    """A stand-in tokenizer: one token per whitespace-separated word."""

    def count(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) for t in texts]

    def keep_last(self, text: str, tokens: int) -> str:
        return " ".join(text.split()[-tokens:])


def test_token_budget_is_used_when_a_counter_is_given() -> None:
    c = conv(("alex", ["one two three four"]), ("me", ["a"]), ("alex", ["five six"]), ("me", ["b"]))
    options = SampleOptions(persona="Sam", context_tokens=3, context_chars=10_000)
    first, last = conversation_samples(c, options, WordCounter())
    assert [t.content for t in last.messages[1:]] == ["five six", "b"]
    assert first.messages[1].content == "two three four"


def test_a_chat_where_me_never_speaks_yields_nothing() -> None:
    c = conv(("alex", ["hi"]), ("jo", ["hello"]), ("alex", ["bye"]))
    assert samples(c) == []
    assert samples(conv(("me", ["talking to myself"]))) == []
    assert samples(conv()) == []


def test_style_only_samples_are_system_plus_assistant() -> None:
    c = conv(("me", ["first", "second"]), ("me", ["later"]), style_only=True)
    result = samples(c)
    assert [roles(s) for s in result] == [["system", "assistant"], ["system", "assistant"]]
    assert [s.messages[-1].content for s in result] == ["first\nsecond", "later"]
    assert all(s.style_only for s in result)
    assert result[0].to_json()["style_only"] is True


def test_to_json_is_the_openai_messages_shape() -> None:
    (only,) = samples(conv(("alex", ["hi"]), ("me", ["hey"])))
    data = only.to_json()
    assert data["messages"] == [
        {"role": "system", "content": OPTIONS.system_text()},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hey"},
    ]
    assert Sample.from_json(data).messages == only.messages


def test_custom_system_prompt_and_persona() -> None:
    options = SampleOptions(persona="Robin {x}", system_prompt="Be {persona}.")
    (only,) = samples(conv(("alex", ["hi"]), ("me", ["hey"])), options)
    assert only.messages[0].content == "Be Robin {x}."
