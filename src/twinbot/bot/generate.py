"""Loading a trained persona for chat and generating its replies (used by chat, discord, serve, eval).

`load_for_inference` accepts what the other stages produce: a RUN folder (`twinbot train`), an adapter
folder, a merged model folder or a `.gguf` file (`twinbot export`), or a base model spec for comparisons.

Generation is a plain token loop with a KV cache (no threads): each step's logits go through the
repetition penalty, temperature and top-p, then greedy (temperature 0) or seeded sampling. The loop stops
at any special token (end of turn, start of a new turn), and the decoded text is watched for the start of
someone else's turn ("<|im_start|>" spelled out, a "user:" line, a "Name:" line of another speaker), so the
persona never writes the other side of the conversation. Text that could still turn into such a marker is
held back while streaming, so streamed pieces always concatenate to the final reply.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from twinbot.data.records import ChatTurn
from twinbot.errors import TwinbotError, one_line
from twinbot.models.devices import pick_dtype
from twinbot.runs import (
    GGUF_SYSTEM_PROMPT_KEY,
    PERSONA_FILE,
    adapter_persona,
    find_adapter,
    read_persona_info,
    usable_base_model,
)

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ModelKind = Literal["run", "adapter", "merged", "gguf", "base"]


# Role names that, at the start of a line, mean the model began writing another turn.
ROLE_NAMES = ("user", "User", "USER", "assistant", "Assistant", "system", "System", "Human", "human")
# Turn markers of common chat templates, in case a model spells one out with ordinary tokens.
TURN_MARKERS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<start_of_turn>",
    "<end_of_turn>",
    "</s>",
)
_SPEAKER_LINE = re.compile(r"^([^\n:]{1,40}): \S")


@dataclass(frozen=True)
class GenerationSettings:
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 128
    repetition_penalty: float = 1.1
    seed: int | None = None  # fixed seed -> reproducible sampling; temperature 0 -> greedy
    # Names of the other people in the conversation: a line starting "Name:" ends the reply. Names that
    # appear as "Name: ..." lines in the user turns are found automatically.
    other_speakers: tuple[str, ...] = ()


@dataclass
class LoadedModel:
    model: PreTrainedModel | PeftModel
    tokenizer: PreTrainedTokenizerBase
    kind: ModelKind
    source: str  # what was loaded
    system_prompt: str | None  # the persona's system prompt used in training, when known
    context_window: int  # max tokens (prompt + reply)
    name: str  # a display name for /v1/models etc.
    base_model: str | None = None  # the base model under an adapter, when there is one
    device: str = "cpu"
    dtype: str = "float32"
    stop_token_ids: frozenset[int] = field(default_factory=frozenset)

    def describe(self) -> str:
        """One line: what is loaded, on what, in which precision (never any message text)."""
        what = f"{self.kind} {self.source}"
        if self.base_model is not None and self.kind in ("run", "adapter"):
            what += f" (adapter on {self.base_model})"
        persona = "persona system prompt" if self.system_prompt else "no system prompt"
        return f"{what}; {self.dtype} on {self.device}; context {self.context_window} tokens; {persona}"


# --- loading -------------------------------------------------------------------------------------------


def pick_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        target = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise TwinbotError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from exc
    if target.type == "cuda" and (
        not torch.cuda.is_available() or (target.index or 0) >= torch.cuda.device_count()
    ):
        raise TwinbotError(f"device {device} is not available; use --device auto or cpu")
    if target.type == "mps" and not torch.backends.mps.is_available():
        raise TwinbotError("device mps is not available; use --device auto or cpu")
    return target


def _context_window(model: Any, tokenizer: Any) -> int:
    config = getattr(model, "config", None)
    positions = getattr(config, "max_position_embeddings", None)
    limits = [int(positions)] if isinstance(positions, int) and positions > 0 else []
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < 10_000_000:
        limits.append(tokenizer_limit)
    return min(limits) if limits else 2048


def stop_token_ids(tokenizer: Any, model: Any = None) -> frozenset[int]:
    """Every token that ends a reply: eos ids and every special token (turn markers, padding, ...)."""
    ids: set[int] = set()

    def add(value: Any) -> None:
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple | set):
            ids.update(v for v in value if isinstance(v, int))

    add(tokenizer.eos_token_id)
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        add(generation_config.eos_token_id)
    add(list(getattr(tokenizer, "all_special_ids", []) or []))
    unk = tokenizer.unk_token_id
    for marker in TURN_MARKERS:
        token_id = tokenizer.convert_tokens_to_ids(marker)
        if isinstance(token_id, int) and token_id != unk and token_id >= 0:
            ids.add(token_id)
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    for token_id, token in added.items():
        if getattr(token, "special", False):
            ids.add(int(token_id))
    return frozenset(ids)


def _finish(
    model: Any,
    tokenizer: Any,
    kind: ModelKind,
    source: str,
    name: str,
    system_prompt: str | None,
    base_model: str | None,
    device: torch.device,
    dtype: torch.dtype,
) -> LoadedModel:
    model.eval()
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        kind=kind,
        source=source,
        system_prompt=system_prompt,
        context_window=_context_window(model, tokenizer),
        name=name,
        base_model=base_model,
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
        stop_token_ids=stop_token_ids(tokenizer, model),
    )


def _tokenizer_from_folder(folder: Path, fallback_spec: str | None) -> Any:
    from transformers import AutoTokenizer

    from twinbot.models.loading import finish_tokenizer, load_tokenizer

    if (folder / "tokenizer_config.json").is_file() or (folder / "tokenizer.json").is_file():
        try:
            return finish_tokenizer(AutoTokenizer.from_pretrained(str(folder)))
        except Exception:
            pass  # fall back to the base model's tokenizer
    return load_tokenizer(fallback_spec)


def _with_adapter(base_model: Any, adapter_dir: Path) -> Any:
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(base_model, str(adapter_dir), is_trainable=False)
    except Exception as exc:
        raise TwinbotError(
            f"cannot load the adapter: {one_line(exc)}; was it trained on this base model?",
            adapter_dir,
        ) from exc


def _load_adapter(
    adapter_dir: Path,
    run_dir: Path | None,
    device: torch.device,
    dtype: torch.dtype,
) -> LoadedModel:
    from twinbot.models.loading import load_model

    info = adapter_persona(adapter_dir, run_dir)
    if info.base_model is None:
        raise TwinbotError(
            "cannot tell which base model this adapter belongs to (no summary.json, no "
            "base_model_name_or_path in adapter_config.json); pass the RUN folder made by `twinbot train`",
            adapter_dir,
        )
    base_spec = usable_base_model(run_dir, info.base_model) if run_dir is not None else info.base_model
    tokenizer = _tokenizer_from_folder(adapter_dir, base_spec)
    base = load_model(base_spec, dtype=dtype, device=device)
    model = _with_adapter(base, adapter_dir)
    kind: ModelKind = "run" if run_dir is not None else "adapter"
    where = run_dir if run_dir is not None else adapter_dir
    return _finish(
        model, tokenizer, kind, str(where), where.resolve().name, info.system_prompt, info.base_model,
        device, dtype,
    )  # fmt: skip


def _gguf_persona(gguf_path: Path) -> str | None:
    from twinbot.models.loading import gguf_string_field

    sidecar = read_persona_info(gguf_path.with_name(gguf_path.name + "." + PERSONA_FILE))
    if sidecar is not None and sidecar.system_prompt is not None:
        return sidecar.system_prompt
    beside = read_persona_info(gguf_path.parent / PERSONA_FILE)
    if beside is not None and beside.system_prompt is not None:
        return beside.system_prompt
    return gguf_string_field(gguf_path, GGUF_SYSTEM_PROMPT_KEY) or None


def load_for_inference(
    spec: str | Path | None, device: str = "auto", dtype: torch.dtype | None = None
) -> LoadedModel:
    """Load a RUN folder, adapter folder, merged folder, .gguf file or base model spec for generation.

    Bad spec -> TwinbotError (one line).
    """
    from twinbot.models.loading import EMBEDDED_MODEL, load_model, load_tokenizer

    target = pick_device(device)
    weights_dtype = dtype or pick_dtype(target)
    if spec is None or str(spec) == EMBEDDED_MODEL:
        tokenizer = load_tokenizer(None)
        model = load_model(None, dtype=weights_dtype, device=target)
        return _finish(
            model, tokenizer, "base", EMBEDDED_MODEL, EMBEDDED_MODEL, None, None, target, weights_dtype
        )
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        adapter = find_adapter(path)
        if adapter is not None:
            return _load_adapter(*adapter, target, weights_dtype)
        if (path / "config.json").is_file():
            info = read_persona_info(path / PERSONA_FILE)
            tokenizer = load_tokenizer(str(path))
            model = load_model(str(path), dtype=weights_dtype, device=target)
            return _finish(
                model, tokenizer, "merged", str(path), path.resolve().name,
                info.system_prompt if info else None, info.base_model if info else None, target, weights_dtype,
            )  # fmt: skip
        if (path / "checkpoints").is_dir() or (path / "run.json").is_file():
            raise TwinbotError(
                "this run has no adapter yet (training unfinished?); finish it with `twinbot train --resume`",
                path,
            )
        raise TwinbotError(
            "not a model folder: expected a RUN folder (`twinbot train`), an adapter folder or an exported "
            "merged model (config.json)",
            path,
        )
    if text.lower().endswith(".gguf"):
        if not path.is_file():
            raise TwinbotError("model file not found; check the path", path)
        tokenizer = load_tokenizer(str(path))
        model = load_model(str(path), dtype=weights_dtype, device=target)
        return _finish(
            model, tokenizer, "gguf", str(path), path.stem, _gguf_persona(path), None, target, weights_dtype
        )
    if path.exists():
        raise TwinbotError("not a model: pass a RUN folder, a model folder or a .gguf file", path)
    if text.startswith((".", "/", "\\", "~")) or re.match(r"^[A-Za-z]:[\\/]", text) or text.count("/") > 1:
        raise TwinbotError("no such file or folder; check the path", path)
    tokenizer = load_tokenizer(text)
    model = load_model(text, dtype=weights_dtype, device=target)
    return _finish(model, tokenizer, "base", text, text, None, None, target, weights_dtype)


# --- prompts -------------------------------------------------------------------------------------------


def _encode_chat(tokenizer: Any, turns: Sequence[ChatTurn]) -> list[int]:
    from jinja2 import TemplateError

    from twinbot.finetune.rows import template_messages

    try:
        messages = template_messages(turns, tokenizer)
        rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except TemplateError as exc:
        raise TwinbotError(
            f"the model's chat template rejects this conversation ({exc.message or type(exc).__name__})"
        ) from exc
    return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])


def build_prompt_ids(lm: LoadedModel, messages: Sequence[ChatTurn], max_new_tokens: int) -> list[int]:
    """The chat template with the generation prompt, trimmed to `context_window - max_new_tokens` tokens.

    The oldest non-system turns go first (a leading assistant turn goes too: templates expect the user
    first); when the newest turn alone is still too long, its beginning is cut.
    """
    budget = lm.context_window - max(0, max_new_tokens)
    if budget <= 0:
        raise TwinbotError(
            f"max new tokens ({max_new_tokens}) leaves no room for the prompt in the "
            f"{lm.context_window}-token context window; lower it"
        )
    head = list(messages[:1]) if messages and messages[0].role == "system" else []
    rest = list(messages[len(head) :])

    def kept(dropped: int) -> list[ChatTurn]:
        turns = rest[dropped:]
        while len(turns) > 1 and turns[0].role == "assistant":
            turns = turns[1:]
        return [*head, *turns]

    ids = _encode_chat(lm.tokenizer, kept(0))
    if len(ids) <= budget or len(rest) <= 1:
        best_dropped = 0
    else:
        low, high = 1, len(rest) - 1
        best_dropped = high
        ids_high = _encode_chat(lm.tokenizer, kept(high))
        if len(ids_high) <= budget:
            while low < high:  # the fewest dropped turns that fit
                middle = (low + high) // 2
                if len(_encode_chat(lm.tokenizer, kept(middle))) <= budget:
                    high = middle
                else:
                    low = middle + 1
            best_dropped = high
        ids = _encode_chat(lm.tokenizer, kept(best_dropped))
    if len(ids) <= budget:
        return ids
    # the newest turn alone does not fit: keep its end
    turns = kept(best_dropped)
    last = turns[-1]
    low, high = 0, len(last.content)  # characters cut from the front
    while low < high:
        middle = (low + high) // 2
        trial = [*turns[:-1], ChatTurn(role=last.role, content=last.content[middle:])]
        if len(_encode_chat(lm.tokenizer, trial)) <= budget:
            high = middle
        else:
            low = middle + 1
    trial = [*turns[:-1], ChatTurn(role=last.role, content=last.content[low:])]
    ids = _encode_chat(lm.tokenizer, trial)
    if len(ids) > budget:
        raise TwinbotError(
            f"the system prompt alone is longer than the {budget} tokens available; shorten it "
            "or lower max new tokens"
        )
    return ids


def speakers_in(messages: Sequence[ChatTurn]) -> list[str]:
    """Names of other people: user turns whose every line reads "Name: text" (prepare's group-chat form)."""
    names: list[str] = []
    for turn in messages:
        if turn.role != "user":
            continue
        lines = [line for line in turn.content.split("\n") if line.strip()]
        matches = [_SPEAKER_LINE.match(line) for line in lines]
        if lines and all(matches):
            for match in matches:
                name = match.group(1).strip() if match else ""
                if name and name not in names:
                    names.append(name)
    return names


def _line_markers(names: Sequence[str]) -> list[str]:
    markers: list[str] = []
    for name in [*ROLE_NAMES, *names]:
        for variant in (name, name.lower(), name.capitalize()):
            marker = f"\n{variant}:"
            if variant and marker not in markers:
                markers.append(marker)
    return markers


class ReplyText:
    """Decoded reply text so far -> the part that is safe to show, and whether another turn started."""

    def __init__(self, names: Sequence[str]) -> None:
        self.line_markers = _line_markers(names)
        self.anywhere_markers = list(TURN_MARKERS)

    def cut(self, raw: str) -> tuple[str, bool]:
        """(text to keep, whether a marker of another turn was found)."""
        text = raw.lstrip()
        framed = "\n" + text  # a reply that opens with "user:" is another turn too
        cut_at: int | None = None
        for marker in self.line_markers:
            index = framed.find(marker)
            if index >= 0 and (cut_at is None or index - 1 < cut_at):
                cut_at = max(index - 1, 0)
        for marker in self.anywhere_markers:
            index = text.find(marker)
            if index >= 0 and (cut_at is None or index < cut_at):
                cut_at = index
        if cut_at is not None:
            return text[:cut_at].rstrip(), True
        return text, False

    def safe(self, text: str) -> str:
        """`text` without a tail that could still become a marker, an incomplete character or whitespace."""
        framed = "\n" + text
        hold = 0
        for marker in [*self.line_markers, *self.anywhere_markers]:
            for size in range(min(len(marker) - 1, len(framed)), 0, -1):
                if framed.endswith(marker[:size]):
                    hold = max(hold, size)
                    break
        kept = text[: max(0, len(text) - hold)]
        return kept.rstrip("\ufffd").rstrip()


# --- generation ----------------------------------------------------------------------------------------


def _logits_processors(settings: GenerationSettings) -> Any:
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopPLogitsWarper,
    )

    processors = LogitsProcessorList()
    if settings.repetition_penalty and settings.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(penalty=settings.repetition_penalty))
    if settings.temperature > 0:
        if settings.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(settings.temperature))
        if 0 < settings.top_p < 1.0:
            processors.append(TopPLogitsWarper(settings.top_p))
    return processors


def _check_settings(settings: GenerationSettings) -> None:
    if settings.max_new_tokens < 1:
        raise TwinbotError("max new tokens must be at least 1")
    if settings.temperature < 0:
        raise TwinbotError("temperature must be 0 (greedy) or more")
    if not 0 < settings.top_p <= 1:
        raise TwinbotError("top-p must be in (0, 1]")
    if settings.repetition_penalty <= 0:
        raise TwinbotError("repetition penalty must be more than 0 (1 = off)")


def _model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def _forward_parameters(model: Any) -> frozenset[str]:
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return frozenset(inspect.signature(inner.forward).parameters)
    except (TypeError, ValueError, AttributeError):
        return frozenset()


def _token_stream(
    lm: LoadedModel, prompt_ids: list[int], settings: GenerationSettings, stop: threading.Event | None
) -> Iterator[int]:
    """Generated token ids, one at a time, until a stop token, max_new_tokens or `stop`."""
    model = lm.model
    device = _model_device(model)
    processors = _logits_processors(settings)
    greedy = settings.temperature == 0
    generator: torch.Generator | None = None
    if settings.seed is not None and not greedy:
        generator = torch.Generator(device="cpu")
        generator.manual_seed(settings.seed)
    all_ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    next_input = all_ids
    cache_kwargs: dict[str, Any] = {}
    extra = {"logits_to_keep": 1} if "logits_to_keep" in _forward_parameters(model) else {}
    with torch.inference_mode():
        for _ in range(settings.max_new_tokens):
            if stop is not None and stop.is_set():
                return
            output = model(input_ids=next_input, use_cache=True, **cache_kwargs, **extra)
            # transformers 5.24 renamed `past_key_values` to `cache`; earlier 5.x use the old name
            if getattr(output, "cache", None) is not None:
                cache_kwargs = {"cache": output.cache}
            else:
                cache_kwargs = {"past_key_values": output.past_key_values}
            scores = output.logits[:, -1, :].float()
            scores = processors(all_ids, scores)
            if greedy:
                token = int(torch.argmax(scores, dim=-1)[0])
            else:
                # exponential-race sampling: argmax(p / E) with E ~ Exp(1) draws from p, faster than multinomial
                probs = torch.softmax(scores[0], dim=-1).cpu()
                noise = torch.empty_like(probs).exponential_(1.0, generator=generator)
                token = int(torch.argmax(probs / noise))
            if token in lm.stop_token_ids:
                return
            yield token
            next_input = torch.tensor([[token]], dtype=torch.long, device=device)
            all_ids = torch.cat([all_ids, next_input], dim=1)


def stream_reply(
    lm: LoadedModel,
    messages: Sequence[ChatTurn],
    settings: GenerationSettings,
    stop: threading.Event | None = None,
) -> Iterator[str]:
    """Text pieces of the reply as they are generated; together they are exactly `generate_reply`'s text.

    Ends at an end-of-turn/special token, when the model starts another turn (a turn marker, a "user:" or
    another speaker's "Name:" line), at max_new_tokens, or when `stop` is set from another thread.
    """
    _check_settings(settings)
    prompt_ids = build_prompt_ids(lm, messages, settings.max_new_tokens)
    text = ReplyText([*speakers_in(messages), *settings.other_speakers])
    generated: list[int] = []
    shown = ""
    for token in _token_stream(lm, prompt_ids, settings, stop):
        generated.append(token)
        raw = lm.tokenizer.decode(generated, skip_special_tokens=True)
        kept, ended = text.cut(raw)
        if ended:
            if kept.startswith(shown) and len(kept) > len(shown):
                yield kept[len(shown) :]
            return
        safe = text.safe(kept)
        if safe.startswith(shown) and len(safe) > len(shown):
            yield safe[len(shown) :]
            shown = safe
    if generated:
        raw = lm.tokenizer.decode(generated, skip_special_tokens=True)
        final = text.cut(raw)[0].rstrip()
        if final.startswith(shown) and len(final) > len(shown):
            yield final[len(shown) :]


def generate_reply(lm: LoadedModel, messages: Sequence[ChatTurn], settings: GenerationSettings) -> str:
    """The whole reply (what `stream_reply` yields, joined)."""
    return "".join(stream_reply(lm, messages, settings))


def with_system_prompt(
    lm: LoadedModel, history: Sequence[ChatTurn], system: str | None = None
) -> list[ChatTurn]:
    """`history` behind the system prompt: `system` when given, else the persona's, else none."""
    prompt = system if system is not None else lm.system_prompt
    turns = [turn for turn in history if turn.role != "system"]
    return [ChatTurn(role="system", content=prompt), *turns] if prompt else turns
