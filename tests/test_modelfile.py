"""The Ollama Modelfile of every base model family: ChatML's template written out, any other family's left to
Ollama's detection from the GGUF's chat template; stops at the family's end of turn; twinbot's sampling
defaults; and one whole `--to ollama` export of a non-ChatML family."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.families import FAMILIES, family_tokenizer, make_family_model
from test_export import SYSTEM_PROMPT, make_run
from twinbot.bot import sampling_defaults
from twinbot.errors import TwinbotError
from twinbot.export import exporter as ex
from twinbot.export import modelfile, verify
from twinbot.models.gguf_import import gguf_string_field

CHATML_FAMILIES = {"llama", "qwen2", "qwen3"}  # plain llama: SmolLM2's own ChatML template
END_OF_TURN = {"llama3": "<|eot_id|>", "mistral": "</s>", "gemma2": "<end_of_turn>"}
END_OF_TURN |= {"gemma3": "<end_of_turn>", "phi3": "<|end|>"}


def test_every_family_is_covered() -> None:
    assert CHATML_FAMILIES | set(END_OF_TURN) == set(FAMILIES)


@pytest.mark.parametrize("name", sorted(END_OF_TURN))
def test_other_families_leave_the_template_to_ollama_and_stop_at_their_end_of_turn(name: str) -> None:
    text = modelfile.ollama_modelfile(family_tokenizer(name, small_vocabulary=True), SYSTEM_PROMPT)
    lines = text.splitlines()
    assert lines[0] == "FROM ./model.gguf"
    assert not any(line.startswith("TEMPLATE") for line in lines)
    assert "autodetected template" in text  # the note saying what `ollama create` prints when it matched
    assert [line for line in lines if line.startswith("PARAMETER stop")] == [
        f'PARAMETER stop "{END_OF_TURN[name]}"'
    ]
    assert lines[-1] == f'SYSTEM """{SYSTEM_PROMPT}"""'


@pytest.mark.parametrize("name", sorted(CHATML_FAMILIES))
def test_chatml_families_get_the_chatml_template(name: str) -> None:
    text = modelfile.ollama_modelfile(family_tokenizer(name, small_vocabulary=True), SYSTEM_PROMPT)
    assert f'TEMPLATE """{modelfile.OLLAMA_CHATML_TEMPLATE}"""' in text
    stops = [line for line in text.splitlines() if line.startswith("PARAMETER stop")]
    assert stops == ['PARAMETER stop "<|im_end|>"', 'PARAMETER stop "<|im_start|>"']
    assert "autodetected" not in text


def test_sampling_parameters_are_twinbots_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sampling_defaults, "TEMPERATURE", 0.55)
    monkeypatch.setattr(sampling_defaults, "TOP_P", 0.85)
    monkeypatch.setattr(sampling_defaults, "REPETITION_PENALTY", 1.25)
    lines = modelfile.modelfile_text("[INST] {{ messages }} [/INST]", "</s>", None).splitlines()
    assert "PARAMETER temperature 0.55" in lines
    assert "PARAMETER top_p 0.85" in lines
    assert "PARAMETER repeat_penalty 1.25" in lines


def test_quoting_and_no_system_prompt() -> None:
    text = modelfile.modelfile_text("<|im_start|>{{ x }}", None, 'say """hi"""')
    assert 'SYSTEM "say \\"\\"\\"hi\\"\\"\\""' in text
    assert "SYSTEM" not in modelfile.modelfile_text("<|im_start|>", None, None)
    assert "PARAMETER stop" not in modelfile.modelfile_text(
        "{{ messages }}", None, None
    )  # text-only turn end


def test_a_model_without_a_chat_template_is_refused_in_one_line() -> None:
    tokenizer = family_tokenizer("llama", small_vocabulary=True)
    tokenizer.chat_template = None
    with pytest.raises(TwinbotError, match="no chat template") as info:
        modelfile.ollama_modelfile(tokenizer, SYSTEM_PROMPT)
    assert "\n" not in str(info.value)


def test_ollama_export_of_llama3_leaves_the_template_to_the_gguf(tmp_path: Path) -> None:
    base = make_family_model("llama3", tmp_path / "base", small_vocabulary=True)
    run = make_run(base, tmp_path)
    out = tmp_path / "ollama"
    result = ex.export(run, "ollama", out)  # f16, the default
    assert result.verification.passed and result.verification.verifier == verify.gguf_verifier()
    assert result.verification.tokenization_mismatches == 0
    template = (Path(__file__).parent / "fixtures" / "chat_templates" / "llama3.jinja").read_text(
        encoding="utf-8"
    )
    assert gguf_string_field(out / "model.gguf", "tokenizer.chat_template") == template
    text = (out / "Modelfile").read_text(encoding="utf-8")
    assert text == modelfile.modelfile_text(template, "<|eot_id|>", SYSTEM_PROMPT)
