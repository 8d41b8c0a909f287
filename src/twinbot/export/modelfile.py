"""The Ollama Modelfile beside an exported GGUF file: ChatML template, stop tokens, the persona's system
prompt and the sampling defaults of `twinbot chat`."""

from __future__ import annotations

import json

from twinbot.errors import TwinbotError

OLLAMA_MODEL_FILE = "model.gguf"
OLLAMA_MODELFILE = "Modelfile"

# ChatML in Ollama's Go template syntax (the format the embedded model and twinbot's training use).
OLLAMA_CHATML_TEMPLATE = (
    "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n{{ .Response }}<|im_end|>\n"
)


def modelfile_text(
    chat_template: str | None, system_prompt: str | None, gguf_name: str = OLLAMA_MODEL_FILE
) -> str:
    """An Ollama Modelfile for a ChatML model: template, stop tokens, persona prompt, sampling defaults."""
    if not chat_template or "<|im_start|>" not in chat_template:
        raise TwinbotError(
            "the Ollama export writes a ChatML template, but this model's chat template is not ChatML; "
            "use `--to gguf` and write the Modelfile TEMPLATE by hand"
        )
    lines = [
        f"FROM ./{gguf_name}",
        f"TEMPLATE {_quoted(OLLAMA_CHATML_TEMPLATE)}",
        'PARAMETER stop "<|im_end|>"',
        'PARAMETER stop "<|im_start|>"',
        "PARAMETER temperature 0.7",
        "PARAMETER top_p 0.9",
        "PARAMETER repeat_penalty 1.1",
    ]
    if system_prompt:
        lines.append(f"SYSTEM {_quoted(system_prompt)}")
    return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    """A Modelfile string value: triple-quoted unless it would end the quote."""
    if '"""' in text:
        return json.dumps(text, ensure_ascii=False)
    return f'"""{text}"""'
