"""`twinbot chat RUN`: talk to the trained persona in the terminal.

Replies stream as they are generated; a reply made of several messages (one per line, as in training)
shows one message per line. History is kept for the whole session and trimmed to the model's context
window at each turn (oldest turns first). Commands: /reset, /system TEXT, /quit.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from twinbot.bot.backends import Backend
from twinbot.bot.generate import GenerationSettings, with_system_prompt
from twinbot.console import quiet_transformers
from twinbot.data.records import ChatTurn

HELP = (
    "commands: /reset (forget the conversation), /system TEXT (new system prompt; /system alone restores "
    "the persona's), /quit (or Ctrl-D)"
)
REPLY_PREFIX = "twin> "
USER_PROMPT = "you> "


@dataclass
class ChatSession:
    """The conversation state of one REPL; `say` streams one reply into `out`."""

    backend: Backend
    settings: GenerationSettings
    system_override: str | None = None
    history: list[ChatTurn] = field(default_factory=list)

    def messages(self) -> list[ChatTurn]:
        return with_system_prompt(self.backend, self.history, self.system_override)

    def add_user(self, text: str) -> None:
        # after an empty reply the user's next line continues their turn, as consecutive messages do
        if self.history and self.history[-1].role == "user":
            last = self.history[-1]
            self.history[-1] = ChatTurn(role="user", content=f"{last.content}\n{text}")
        else:
            self.history.append(ChatTurn(role="user", content=text))

    def say(self, text: str, out: TextIO) -> str:
        """Stream the persona's reply to `text` into `out`, one line per message; returns the reply.

        Ctrl-C during generation stops the reply; the part already shown stays in the history.
        """
        self.add_user(text)
        reply = ""
        out.write(REPLY_PREFIX)
        out.flush()
        try:
            for piece in self.backend.stream(self.messages(), self.settings):
                reply += piece
                out.write(for_terminal(piece).replace("\n", "\n" + REPLY_PREFIX))
                out.flush()
        except KeyboardInterrupt:
            out.write(" [stopped]")
        out.write("\n")
        out.flush()
        if reply.strip():
            self.history.append(ChatTurn(role="assistant", content=reply))
        self.forget_turns_out_of_reach()
        return reply

    def forget_turns_out_of_reach(self) -> None:
        """Drop the oldest turns once the newer turns' text alone fills the context window. Prompts keep
        the newest turns that fit, so no prompt could hold those again. This keeps a long session's
        memory, and the time to build each prompt, bounded."""
        total = 0
        for index in range(len(self.history) - 1, 0, -1):
            total += self.backend.count_tokens(self.history[index].content)
            if total >= self.backend.context_window:
                del self.history[:index]
                return

    def reset(self) -> None:
        self.history.clear()


# Model output can hold any character it saw in training; these would drive the terminal rather than show:
# C0 controls but tab and newline (ESC starts colour, cursor and title sequences; CR overwrites the line),
# DEL, C1 controls (U+009B is a one-character CSI) and the bidirectional overrides that reorder text.
_TERMINAL_CONTROLS = dict.fromkeys(
    [
        *range(0x00, 0x09),
        *range(0x0B, 0x20),
        0x7F,
        *range(0x80, 0xA0),
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
    ]
)


def for_terminal(text: str) -> str:
    """`text` without the characters a terminal would act on instead of showing."""
    return text.translate(_TERMINAL_CONTROLS)


def run_repl(
    session: ChatSession,
    stdin: TextIO,
    out: TextIO,
    interactive: bool,
    note: Callable[[str], None],
) -> None:
    """Read lines until /quit, end of input or Ctrl-C at the prompt."""
    use_input = interactive and stdin is sys.stdin and out is sys.stdout
    if use_input:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing and history for input(), where available)
    while True:
        try:
            if use_input:
                line = input(USER_PROMPT) + "\n"
            else:
                if interactive:
                    out.write(USER_PROMPT)
                    out.flush()
                line = stdin.readline()
        except EOFError:
            line = ""
        except KeyboardInterrupt:
            out.write("\n")
            return
        if not line:  # end of input (Ctrl-D, or the end of a pipe)
            if interactive:
                out.write("\n")
            return
        text = line.rstrip("\r\n")
        if not text.strip():
            continue
        command, _, argument = text.strip().partition(" ")
        if command in ("/quit", "/exit"):
            return
        if command == "/reset":
            session.reset()
            note("conversation reset")
        elif command == "/system":
            session.system_override = argument.strip() or None
            session.reset()
            note(
                "system prompt set; conversation reset"
                if argument.strip()
                else "persona system prompt restored; conversation reset"
            )
        elif command in ("/help", "/?"):
            note(HELP)
        elif command.startswith("/") and " " not in command and len(command) > 1 and command[1:].isalpha():
            note(f"unknown command {command}; {HELP}")
        else:
            session.say(text, out)


def run_chat(
    spec: str | None,
    settings: GenerationSettings,
    device: str = "auto",
    system: str | None = None,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    backend: str = "auto",
    gguf_type: str | None = None,
) -> None:
    from twinbot.bot.backends import load_backend

    stdin = stdin or sys.stdin
    out = out or sys.stdout
    err = err or sys.stderr

    def note(message: str) -> None:
        err.write(f"[{message}]\n")
        err.flush()

    quiet_transformers()
    model = load_backend(backend, spec, device=device, gguf_type=gguf_type)
    session = ChatSession(backend=model, settings=settings, system_override=system)
    note(f"loaded {model.describe()}")
    interactive = _is_tty(stdin)
    if interactive:
        note(HELP)
    run_repl(session, stdin, out, interactive, note)


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
