"""OpenAI's `stop` parameter: up to 4 strings; the reply ends before the first one the model produces.

Generated pieces can split a stop string (`"\\nUs"` then `"er:"`), so text that could be the beginning of
a stop string is held back until the following pieces show whether it is one.
"""

from __future__ import annotations

from collections.abc import Sequence

from twinbot.bot.openai_api import ApiError

MAX_STOP_STRINGS = 4  # OpenAI's limit
MAX_STOP_CHARS = 64


def stop_strings_from(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    """The request's stop strings, checked: ApiError(400) for too many, empty or too long ones."""
    if stop is None:
        return ()
    stops = (stop,) if isinstance(stop, str) else tuple(stop)
    if len(stops) > MAX_STOP_STRINGS:
        raise ApiError(400, f"stop: at most {MAX_STOP_STRINGS} stop strings", param="stop")
    if any(not text for text in stops):
        raise ApiError(400, "stop: a stop string must not be empty", param="stop")
    if any(len(text) > MAX_STOP_CHARS for text in stops):
        raise ApiError(400, f"stop: a stop string may have at most {MAX_STOP_CHARS} characters", param="stop")
    return stops


class StopMatcher:
    """Cuts a stream of text pieces at the first stop string.

    feed(piece) returns the text that is now safe to send; once a stop string has appeared, `matched` is
    True and nothing after it is returned. flush() returns what was held back when the text ends.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self.matched = False
        self._held = ""

    def feed(self, piece: str) -> str:
        if self.matched:
            return ""
        text = self._held + piece
        starts = [start for start in (text.find(stop) for stop in self.stops) if start >= 0]
        if starts:
            self.matched = True
            self._held = ""
            return text[: min(starts)]
        keep = self._longest_stop_beginning_at_end(text)
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held

    def _longest_stop_beginning_at_end(self, text: str) -> int:
        """The length of the longest end of `text` that some stop string begins with (0: none)."""
        longest = 0
        for stop in self.stops:
            for length in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:length]):
                    longest = length
                    break
        return longest
