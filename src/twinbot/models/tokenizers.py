"""What every tokenizer twinbot uses is guaranteed to have: a chat template, an end-of-turn eos, a pad token;
and how conversations are rendered with that template, the same way for training and for chat.

Models without a chat template get ChatML, the template of the embedded default model. Everything
family-specific is read off the template by rendering it: its end-of-turn token (the first special token
after an assistant reply: `<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`, `<|end|>`, `</s>`), and whether it
has a system role (see `render_chat`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twinbot.errors import TwinbotError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

CHATML_END_OF_TURN = "<|im_end|>"
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# An invisible marker that no tokenizer merges with its neighbours: where a probe reply sits in a rendering.
REPLY_MARKER = "\u2063twinbot-reply\u2063"
_PROBE_USER = {"role": "user", "content": "Hi"}


def finish_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Guarantee a chat template (ChatML when the model has none), the template's end-of-turn token as eos
    (`end_of_turn_token`), and a pad token."""
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    end_of_turn = end_of_turn_token(tokenizer)
    if end_of_turn is not None:
        tokenizer.eos_token = end_of_turn
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    return tokenizer


def end_of_turn_token(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """The token the chat template closes an assistant reply with: the first special or added token after
    the reply; None when it closes it with text only (or cannot render a user/assistant exchange)."""
    from jinja2 import TemplateError

    probe = [_PROBE_USER, {"role": "assistant", "content": REPLY_MARKER}]
    try:
        rendered = _apply(tokenizer, probe, add_generation_prompt=False)
    except TemplateError:
        return None
    if REPLY_MARKER not in rendered:
        return None
    after_reply = rendered.split(REPLY_MARKER, 1)[1]
    special = added_token_ids(tokenizer) - {tokenizer.unk_token_id}
    for token_id in tokenizer(after_reply, add_special_tokens=False)["input_ids"]:
        if token_id in special:
            return str(tokenizer.convert_ids_to_tokens(token_id))
    return None


def added_token_ids(tokenizer: Any) -> set[int]:
    """The named special tokens (bos, eos, pad, ...) and every token added to the vocabulary (turn markers;
    some tokenizers do not mark theirs special)."""
    ids = {int(i) for i in getattr(tokenizer, "all_special_ids", []) or [] if isinstance(i, int)}
    ids.update(int(token_id) for token_id in (getattr(tokenizer, "added_tokens_decoder", {}) or {}))
    return ids


def _apply(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    # enable_thinking=False: Qwen 3's templates then open the reply with an empty <think> block, so the
    # persona answers without reasoning first; other templates ignore it.
    return str(
        tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, enable_thinking=False
        )
    )


def _system_folded(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The system prompt ahead of the first user turn (as Gemma 3's template does), or as a user turn of its
    own when an assistant turn or nothing follows it."""
    system, rest = messages[0]["content"], messages[1:]
    if rest and rest[0]["role"] == "user":
        return [{"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}, *rest[1:]]
    return [{"role": "user", "content": system}, *rest]


def render_chat(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """`messages` (role/content dicts) rendered by the chat template. Where the template has no place for a
    leading system prompt -- it raises (Gemma 2, or Mistral before an assistant turn) or leaves its text out
    (Mistral puts it into the last user turn only) -- the prompt goes ahead of the first user turn instead.
    A template that rejects the conversation anyway -> TwinbotError."""
    from jinja2 import TemplateError

    has_system = bool(messages) and messages[0]["role"] == "system"
    try:
        rendered = _apply(tokenizer, messages, add_generation_prompt)
        if not has_system or messages[0]["content"].strip() in rendered:
            return rendered
    except TemplateError as exc:
        if not has_system:
            raise _rejected(exc) from exc
    try:
        return _apply(tokenizer, _system_folded(messages), add_generation_prompt)
    except TemplateError as exc:
        raise _rejected(exc) from exc


def _rejected(exc: Any) -> TwinbotError:
    return TwinbotError(
        f"the model's chat template rejects a conversation ({exc.message or type(exc).__name__}); "
        "use a chat model whose template accepts system/user/assistant turns"
    )


def reply_text(tokenizer: Any, content: str) -> str:
    """How the chat template writes an assistant reply after its generation prompt: the text from the end of
    the generation prompt to the end of the turn (e.g. " hi</s>" for Mistral, "hi<end_of_turn>\\n" for
    Gemma; Qwen 3's empty think block is part of its generation prompt)."""
    prompt = render_chat(tokenizer, [_PROBE_USER], add_generation_prompt=True)
    full = render_chat(tokenizer, [_PROBE_USER, {"role": "assistant", "content": content}])
    if not full.startswith(prompt):
        raise TwinbotError(
            "the model's chat template renders a conversation differently from its generation prompt; "
            "use a chat model with a standard chat template"
        )
    return full[len(prompt) :]
