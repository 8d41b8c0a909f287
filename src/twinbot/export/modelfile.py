"""The Ollama Modelfile beside an exported GGUF file: the chat template (ChatML written out, any other left to
Ollama), stop tokens, the persona's system prompt and the sampling defaults of `twinbot chat`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from twinbot.bot import sampling_defaults
from twinbot.errors import TwinbotError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

OLLAMA_MODEL_FILE = "model.gguf"
OLLAMA_MODELFILE = "Modelfile"

# ChatML in Ollama's Go template syntax (the format the embedded model and twinbot's training use).
OLLAMA_CHATML_TEMPLATE = (
    "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n{{ .Response }}<|im_end|>\n"
)
CHATML_STOPS = ("<|im_end|>", "<|im_start|>")

# Without TEMPLATE, `ollama create` reads the GGUF's tokenizer.chat_template and takes the template of its
# library (template/index.json) nearest to it, if fewer than 100 edits away (ollama/ollama server/model.go
# detectChatTemplate, template/template.go Named; it says "using autodetected template NAME"); else the
# template is "{{ .Prompt }}". ChatML stays written out: Qwen 2.5's and Qwen 3's tool-calling ChatML
# templates are thousands of characters longer than the library's ChatML ones, so they would not be matched.
AUTODETECT_NOTE = (
    "# No TEMPLATE: `ollama create` takes the template of its library that matches model.gguf's chat\n"
    "# template (it prints 'using autodetected template NAME'). If it does not, add a TEMPLATE here."
)


def ollama_modelfile(tokenizer: PreTrainedTokenizerBase, system_prompt: str | None) -> str:
    """The Modelfile for the GGUF written from `tokenizer`: its chat template decides TEMPLATE and stops."""
    from twinbot.models.tokenizers import end_of_turn_token

    chat_template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
    end_of_turn = end_of_turn_token(tokenizer) if chat_template else None
    return modelfile_text(chat_template, end_of_turn, system_prompt)


def modelfile_text(
    chat_template: str | None,
    end_of_turn: str | None,
    system_prompt: str | None,
    gguf_name: str = OLLAMA_MODEL_FILE,
) -> str:
    """An Ollama Modelfile: ChatML's template written out, any other chat template left to Ollama's detection
    from the GGUF; stop at the end of the persona's turn; persona prompt; twinbot's sampling defaults."""
    if not chat_template:
        raise TwinbotError(
            "this model has no chat template, so Ollama would not know how to format a conversation; "
            "export a run whose base model is a chat model (or use `--to gguf` and write the Modelfile TEMPLATE by hand)"
        )
    lines = [f"FROM ./{gguf_name}"]
    if "<|im_start|>" in chat_template:
        lines.append(f"TEMPLATE {_quoted(OLLAMA_CHATML_TEMPLATE)}")
        stops: tuple[str, ...] = CHATML_STOPS
    else:
        lines.append(AUTODETECT_NOTE)
        stops = (end_of_turn,) if end_of_turn else ()
    lines += [f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}" for stop in stops]
    lines += [
        f"PARAMETER temperature {sampling_defaults.TEMPERATURE}",
        f"PARAMETER top_p {sampling_defaults.TOP_P}",
        f"PARAMETER repeat_penalty {sampling_defaults.REPETITION_PENALTY}",
    ]
    if system_prompt:
        lines.append(f"SYSTEM {_quoted(system_prompt)}")
    return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    """A Modelfile string value: triple-quoted unless it would end the quote."""
    if '"""' in text:
        return json.dumps(text, ensure_ascii=False)
    return f'"""{text}"""'
