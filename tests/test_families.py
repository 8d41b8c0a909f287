"""Every base model family with its real chat template (tests/fixtures/chat_templates): what is supervised,
where the system prompt goes, where generation stops, which attention a model gets, and `twinbot train`,
`--resume`, `chat` and `eval` on tiny random-weight models of the families."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from jinja2 import TemplateError
from typer.testing import CliRunner

from support.families import FAMILIES, family_tokenizer, make_family_model
from support.training import FIXTURE_DATA
from twinbot.bot.generate import GenerationSettings, build_prompt_ids, stream_reply
from twinbot.bot.loading import stop_token_ids
from twinbot.cli import app
from twinbot.data.prepared import TRAIN_FILE, load_samples
from twinbot.data.records import ChatTurn, Sample
from twinbot.errors import TwinbotError
from twinbot.finetune.rows import IGNORE_INDEX, collate, pack_rows, tokenize_sample, tokenize_samples
from twinbot.models.loading import load_model, load_tokenizer
from twinbot.models.tokenizers import finish_tokenizer

END_OF_TURN = {
    "llama": "<|im_end|>",
    "llama3": "<|eot_id|>",
    "qwen2": "<|im_end|>",
    "qwen3": "<|im_end|>",
    "mistral": "</s>",
    "gemma2": "<end_of_turn>",
    "gemma3": "<end_of_turn>",
    "phi3": "<|end|>",
}
# Where the system prompt lands in the prompt of CONVERSATION (each exactly once).
SYSTEM_PLACEMENT = {
    "llama": "<|im_start|>system\nYou are Sam.<|im_end|>\n<|im_start|>user\nhey",
    "llama3": "Today Date: 26 Jul 2024\n\nYou are Sam.<|eot_id|><|start_header_id|>user",
    "qwen2": "<|im_start|>system\nYou are Sam.<|im_end|>\n<|im_start|>user\nhey",
    "qwen3": "<|im_start|>system\nYou are Sam.<|im_end|>\n<|im_start|>user\nhey",
    "mistral": "[INST] You are Sam.\n\nup?[/INST]",  # Mistral's own place: the last user turn
    "gemma2": "<start_of_turn>user\nYou are Sam.\n\nhey<end_of_turn>",  # no system role: the first user turn
    "gemma3": "<start_of_turn>user\nYou are Sam.\n\nhey<end_of_turn>",
    "phi3": "<|system|>\nYou are Sam.<|end|>\n<|user|>\nhey",
}
REPLY = "not much 🙂"
CONVERSATION = Sample(
    messages=[
        ChatTurn("system", "You are Sam."),
        ChatTurn("user", "hey"),
        ChatTurn("assistant", "good"),
        ChatTurn("user", "up?"),
        ChatTurn("assistant", REPLY),
    ],
    conversation_id="c1",
)
STYLE_ONLY = Sample(
    messages=[ChatTurn("system", "You are Sam."), ChatTurn("assistant", REPLY)], conversation_id="c2"
)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def tokenizer(family: str) -> Any:
    return finish_tokenizer(family_tokenizer(family))


def prompt_model(tokenizer: Any) -> Any:
    """What prompts and reply ends need of a loaded model (generate.PromptModel)."""
    return SimpleNamespace(
        tokenizer=tokenizer, context_window=2048, stop_token_ids=stop_token_ids(tokenizer), system_prompt=None
    )


def split(tokenized: Any) -> tuple[list[int], list[int]]:
    """(the prompt's ids, the supervised ids)."""
    supervised = [t for t in tokenized.target_ids if t != IGNORE_INDEX]
    return tokenized.input_ids[: len(tokenized.input_ids) - len(supervised)], supervised


# --- templates --------------------------------------------------------------------------------------------


def test_the_end_of_turn_token_is_read_off_the_template(family: str, tokenizer: Any) -> None:
    assert tokenizer.eos_token == END_OF_TURN[family]
    assert tokenizer.eos_token_id in stop_token_ids(tokenizer)


@pytest.mark.parametrize("sample", [CONVERSATION, STYLE_ONLY], ids=["context", "style-only"])
def test_exactly_the_reply_and_its_end_of_turn_are_supervised(
    family: str, tokenizer: Any, sample: Sample
) -> None:
    tokenized = tokenize_sample(sample, tokenizer, max_tokens=512)
    assert tokenized is not None
    prompt, supervised = split(tokenized)
    # Mistral's template writes the reply after a space ("[/INST] not much"); the others right after the header
    reply = (" " if family == "mistral" else "") + REPLY
    expected = tokenizer(reply, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert supervised == expected
    assert tokenizer.decode(supervised) == reply + END_OF_TURN[family]
    assert tokenized.input_ids[-1] == tokenizer.eos_token_id  # nothing the template adds after it
    assert supervised == tokenized.input_ids[len(prompt) :]
    # the prompt is exactly what chat sends the model for the same conversation
    chat_prompt = build_prompt_ids(prompt_model(tokenizer), sample.messages[:-1], max_new_tokens=16)
    assert prompt == chat_prompt
    assert tokenizer.decode(prompt).count("You are Sam.") == 1


def test_the_system_prompt_goes_where_the_family_expects_it(family: str, tokenizer: Any) -> None:
    tokenized = tokenize_sample(CONVERSATION, tokenizer, max_tokens=512)
    assert tokenized is not None
    prompt = tokenizer.decode(split(tokenized)[0])
    assert SYSTEM_PLACEMENT[family] in prompt
    if family == "gemma2":  # the fixture is the real template: it has no system role
        with pytest.raises(TemplateError, match="System role not supported"):
            tokenizer.apply_chat_template(
                [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]
            )


def test_generation_stops_at_the_end_of_turn_token(
    family: str, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forward pass that makes "ok", " then" and then the family's end-of-turn token the likeliest: the reply
    is the two words, and the model is not asked for another token after the end of turn."""
    from twinbot.bot import generate

    script = [*tokenizer("ok then", add_special_tokens=False)["input_ids"], tokenizer.eos_token_id, 5, 6]
    calls = []

    def forward(new_ids: list[int]) -> torch.Tensor:
        logits = torch.zeros(1, len(tokenizer))
        logits[0, script[len(calls)]] = 10.0
        calls.append(new_ids)
        return logits

    settings = GenerationSettings(temperature=0, max_new_tokens=10, repetition_penalty=1.0)
    turns = [ChatTurn("system", "You are Sam."), ChatTurn("user", "hey")]
    monkeypatch.setattr(generate, "torch_forward", lambda model: forward)  # the model's forward pass
    lm = SimpleNamespace(**vars(prompt_model(tokenizer)), model=None)
    reply = "".join(stream_reply(lm, turns, settings))
    assert reply == "ok then"
    assert len(calls) == len(script) - 2


def test_a_template_that_rejects_the_conversation_anyway_is_a_user_error(tokenizer: Any) -> None:
    import copy

    strict = copy.deepcopy(tokenizer)
    strict.chat_template = "{{ raise_exception('roles must alternate') }}"
    with pytest.raises(TwinbotError, match="roles must alternate"):
        tokenize_sample(CONVERSATION, strict, 512)


# --- models -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def family_dir(family: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_family_model(family, tmp_path_factory.mktemp(family) / "model", small_vocabulary=True)


def test_attention_is_what_the_model_supports(
    family: str, family_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """packed_sdpa where it computes what the model does; else sdpa, else eager (said once)."""
    expected = {"gemma2": "eager", "gemma3": "sdpa"}.get(family, "packed_sdpa")
    for _ in range(2):
        model = load_model(str(family_dir), attn_implementation="packed_sdpa")
        assert model.config._attn_implementation == expected
    said = capsys.readouterr().err
    if family == "gemma2":
        assert said.count("attention: eager (Gemma2ForCausalLM does not support sdpa)") == 1
    elif family == "gemma3":
        assert said.count("attention: sdpa (packed_sdpa has no sliding window as Gemma3ForCausalLM has)") == 1
    else:
        assert "attention:" not in said


def test_packed_rows_stay_apart_with_the_fallback_attention(family: str, family_dir: Path) -> None:
    """Packed rows with transformers' own attention: each sample's logits equal the sample's run alone
    (Gemma 2 eager with soft-capping, Gemma 3 sdpa with a 16-token sliding window over longer samples)."""
    if family not in ("gemma2", "gemma3"):
        pytest.skip("packed_sdpa's exactness: tests/test_attention.py")
    tokenizer = load_tokenizer(str(family_dir))
    model = load_model(str(family_dir), attn_implementation="packed_sdpa").eval()
    samples = load_samples(FIXTURE_DATA / TRAIN_FILE)[:4]
    rows = pack_rows(tokenize_samples(samples, tokenizer, 128), 256)
    batch = collate(rows[:1], tokenizer.pad_token_id)
    with torch.no_grad():
        packed = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits[0]
        starts = [i for i, p in enumerate(rows[0].position_ids) if p == 0]
        assert len(starts) >= 2
        for start, end in zip(starts, [*starts[1:], len(rows[0].input_ids)], strict=True):
            alone = model(input_ids=batch.input_ids[:, start:end], use_cache=False).logits[0]
            torch.testing.assert_close(packed[start:end], alone, atol=1e-5, rtol=1e-5)


def test_a_model_that_is_not_a_decoder_only_lm_is_refused_before_any_work(tmp_path: Path) -> None:
    from transformers import BertConfig

    BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path
    )
    with pytest.raises(TwinbotError, match="bert model, not a decoder-only chat model") as error:
        load_tokenizer(str(tmp_path))
    assert "gemma2, gemma3, phi3" in str(error.value) and "\n" not in str(error.value)


# --- train, resume, chat, eval ---------------------------------------------------------------------------

# Short and fast: the preset's own settings but tiny rows, one process, no compiling, a checkpoint a step.
QUICK = {
    "TORCH_COMPILE": "off",
    "PROCESSES": "1",
    "BATCH_SIZE": "2",
    "ROW_TOKENS": "128",
    "MAX_SEQ_LEN": "128",
    "DEVICE": "cpu",
    "SAVE_EVERY": "1",
    "EVAL_EVERY": "100",
    "EVAL_MAX_SAMPLES": "2",
    "LORA_R": "4",
}


def train(model_dir: Path, run: Path, preset: str, steps: int, *more: str) -> Any:
    settings = [part for key, value in QUICK.items() for part in ("--set", f"{key}={value}")]
    args = ["train", "--data", str(FIXTURE_DATA), "--out", str(run), "--preset", preset, "--model"]
    result = CliRunner().invoke(app, [*args, str(model_dir), "--max-steps", str(steps), *settings, *more])
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("trained", ["gemma2", "mistral"])
def test_train_resume_chat_and_eval(trained: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from twinbot.bot.chat import REPLY_PREFIX
    from twinbot.models import loading

    monkeypatch.setattr(loading, "_said", set())  # said once per process: maybe already, by another test
    from twinbot.quality.evaluate import EvalOptions, run_eval

    model_dir, run = make_family_model(trained, tmp_path / "model", small_vocabulary=True), tmp_path / "run"
    first = train(model_dir, run, "fast", 1)
    if trained == "gemma2":
        assert "attention: eager (Gemma2ForCausalLM does not support sdpa)" in first.output
    train(model_dir, run, "fast", 2, "--resume")
    assert json.loads((run / "summary.json").read_text(encoding="utf-8"))["steps"] == 2

    chat = CliRunner().invoke(
        app,
        ["chat", str(run), "--device", "cpu", "--backend", "torch", "--max-new-tokens", "4", "--seed", "1"],
        input="hey\n/quit\n",
    )
    assert chat.exit_code == 0, chat.output
    assert REPLY_PREFIX in chat.output and END_OF_TURN[trained] not in chat.output

    if trained != "gemma2":  # eval's batched decoding differs only for sliding-window caches (Gemma's)
        return
    options = EvalOptions(
        run_dir=run, samples=2, max_new_tokens=4, loss_samples=2, detector_resamples=5, device="cpu"
    )
    result = run_eval(options, quiet=True)
    assert len(result.rows) == 2
    saved = json.loads((run / "eval" / "eval.json").read_text(encoding="utf-8"))
    assert saved["base"]["eval_loss"] != saved["adapter"]["eval_loss"]


@pytest.mark.parametrize("trained", ["gemma3", "phi3", "qwen3"])
def test_a_seed_preset_trains(trained: str, tmp_path: Path) -> None:
    """baseline: one sample a row, gradient checkpointing, no 16-bit."""
    model_dir = make_family_model(trained, tmp_path / "model", small_vocabulary=True)
    train(model_dir, tmp_path / "run", "baseline", 1, "--set", "GRADIENT_ACCUMULATION_STEPS=2")
    assert (tmp_path / "run" / "adapter").is_dir()
