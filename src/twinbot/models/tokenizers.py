"""What every tokenizer twinbot uses is guaranteed to have: a chat template, an end-of-turn eos, a pad token.

Models without a chat template get ChatML, the template of the embedded default model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

CHATML_END_OF_TURN = "<|im_end|>"
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def finish_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Guarantee a chat template (ChatML when the model has none), `<|im_end|>` as eos, and a pad token."""
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    end_of_turn_id = tokenizer.convert_tokens_to_ids(CHATML_END_OF_TURN)
    is_single_token = isinstance(end_of_turn_id, int) and end_of_turn_id != tokenizer.unk_token_id
    if CHATML_END_OF_TURN in tokenizer.chat_template and is_single_token:
        tokenizer.eos_token = CHATML_END_OF_TURN
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    return tokenizer
