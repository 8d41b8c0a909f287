"""A GGUF model in llama.cpp (llama-cpp-python's C API): the one place twinbot loads one, for the llama.cpp
backend's decoding and for `export`'s check of a written GGUF.

On CPUs with AMX (Intel Sapphire Rapids and later, common in cloud VMs) llama.cpp repacks quantized weights
for its AMX matmul, and that path crashes the process (SIGSEGV in the first batch of more than a few tokens:
llama.cpp issue #20824, still open). Measured on a 2-core Xeon VM with AMX_INT8 and llama-cpp-python 0.3.36:
q8_0 and Q4_1 GGUFs segfault with the repack and run without it. So where ggml reports AMX_INT8, the
model is loaded without llama.cpp's extra weight buffers (AMX and the CPU repack); elsewhere with them.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import sys
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from twinbot.errors import TwinbotError, one_line

INSTALL_HINT = "pip install 'twinbot[llamacpp]' (`make setup` does), or use --backend torch"

Result = TypeVar("Result")


def import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise TwinbotError(f"llama-cpp-python is not installed ({one_line(exc)}); {INSTALL_HINT}") from exc
    except OSError as exc:  # the package is there but its compiled library does not load
        raise TwinbotError(f"llama-cpp-python does not load ({one_line(exc)}); {INSTALL_HINT}") from exc
    return llama_cpp


@functools.cache
def amx_repack_avoided() -> bool:
    """Whether this machine's llama.cpp has AMX, whose weight repack crashes (module docstring)."""
    return "AMX_INT8 = 1" in import_llama_cpp().llama_print_system_info().decode(errors="replace")


def torch_work_apart(work: Callable[[], Result]) -> Result:
    """`work()` run in a thread of its own that ends with it, before llama.cpp decodes in this process.

    torch's OpenMP threads belong to the thread that started them and end only with it; while they exist
    beside llama.cpp's (one OpenMP runtime: llama.cpp loads torch's libgomp), there are more OpenMP threads
    than cores and libgomp stops spinning at barriers, so llama.cpp's threads sleep and wake at every op.
    Measured on a 2-core Xeon: one stream of the embedded q8_0 decoded at 32.6 tokens/s after 2 s of torch
    matmuls on the main thread, 73.7 after the same matmuls in a thread that had ended, 74.2 with none."""
    outcome: list[Result] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    # a daemon: Ctrl-C in the caller ends the process without waiting for the work (its output is atomic)
    worker = threading.Thread(target=run, name="twinbot-torch-work", daemon=True)
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return outcome[0]


# ggml_log_level in ggml.h: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (continues the previous line).
# llama-cpp-python 0.3.36's own log callback still maps the older numbering (no DEBUG), so with
# `verbose=False` it prints llama.cpp's warnings (a k-quant export: one line per tensor) and drops its errors.
GGML_LOG_ERROR, GGML_LOG_CONT = 4, 5


class _ErrorsOnly:
    """A llama.cpp log callback that writes errors (and their continuations) to stderr, nothing else."""

    def __init__(self) -> None:
        self.printing = False

    def __call__(self, level: int, text: bytes, user_data: Any) -> None:
        self.printing = level == GGML_LOG_ERROR or (level == GGML_LOG_CONT and self.printing)
        if self.printing:
            sys.stderr.write(text.decode("utf-8", errors="replace"))
            sys.stderr.flush()


@functools.cache
def _log_callback(llama_cpp: Any) -> Any:
    return llama_cpp.llama_log_callback(_ErrorsOnly())  # cached: llama.cpp keeps the pointer


def quiet_llama_cpp(llama_cpp: Any) -> None:
    """llama.cpp logs errors only, and its backend is initialized."""
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # what verbose=False sets; kept for Llama()
    llama_cpp.llama_log_set(_log_callback(llama_cpp), ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()


def _free(llama_cpp: Any, model: Any, ctx: Any, batch: Any) -> None:
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)


class LlamaContext:
    """A GGUF model loaded in llama.cpp with one context of `n_ctx` KV cells shared by up to `n_seq_max`
    sequences (llama.cpp's unified KV cache), and a token batch of at most `n_batch` tokens to decode.
    `exact` keeps the KV cache in f32 (the default is f16) and attention unfused (llama.cpp's flash attention
    rounds to f16 on the CPU), so only the weights' precision differs from a float32 reference."""

    def __init__(
        self,
        path: Path,
        n_ctx: int,
        n_seq_max: int,
        threads: int,
        device: str,
        n_batch: int,
        exact: bool = False,
    ) -> None:
        llama_cpp = import_llama_cpp()
        quiet_llama_cpp(llama_cpp)
        self.api = llama_cpp
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0 if device == "cpu" else -1  # a CPU-only build ignores it
        model_params.use_extra_bufts = not amx_repack_avoided()
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), model_params)
        if not self.model:
            raise TwinbotError("llama.cpp cannot load this GGUF (see above); re-export it", path)
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.eos = llama_cpp.llama_vocab_eos(self.vocab)
        trained = llama_cpp.llama_model_n_ctx_train(self.model)
        self.n_ctx = min(n_ctx, trained) if trained > 0 else n_ctx  # the model's own limit may be lower
        self.n_batch = min(n_batch, self.n_ctx)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.n_ctx
        params.n_batch = params.n_ubatch = self.n_batch
        params.n_seq_max = n_seq_max
        params.kv_unified = True  # every sequence may use any cell: one long prompt, or many short ones
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        if exact:
            params.type_k = params.type_v = llama_cpp.GGML_TYPE_F32
            params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        if not self.ctx:
            llama_cpp.llama_model_free(self.model)
            raise TwinbotError(f"llama.cpp cannot make a {self.n_ctx}-token context for this GGUF", path)
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._logits_row = ctypes.c_float * self.n_vocab
        self.queued = 0  # tokens in `batch`
        # freed when the owner is dropped; not at exit, where a daemon decode thread may still use it
        weakref.finalize(self, _free, llama_cpp, self.model, self.ctx, self.batch).atexit = False

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """llama.cpp's own tokens for `text` (no BOS added; `special`: special-token text is one token)."""
        data = text.encode("utf-8")
        room = len(data) + 8
        tokens = (self.api.llama_token * room)()
        count = self.api.llama_tokenize(self.vocab, data, len(data), tokens, room, False, special)
        if count < 0:  # more tokens than bytes cannot happen for BPE/SPM, but llama.cpp says how many
            room = -count
            tokens = (self.api.llama_token * room)()
            count = self.api.llama_tokenize(self.vocab, data, len(data), tokens, room, False, special)
        return list(tokens[:count])

    def add(self, token: int, position: int, sequence: int, logits: bool) -> int:
        """Queue a token for the next decode; its index in the batch (where its logits will be)."""
        index, batch = self.queued, self.batch
        batch.token[index] = token
        batch.pos[index] = position
        batch.n_seq_id[index] = 1
        batch.seq_id[index][0] = sequence
        batch.logits[index] = logits
        self.queued += 1
        return index

    def decode(self) -> None:
        """Run the queued tokens through the model, into their sequences' KV cache."""
        self.batch.n_tokens, self.queued = self.queued, 0
        status = self.api.llama_decode(self.ctx, self.batch)
        if status != 0:
            raise TwinbotError(f"llama.cpp could not decode a batch (status {status}); try again")

    def logits(self, index: int) -> torch.Tensor:
        """The logits (1 x vocab, float32) of the token at `index` of the last decode: a view of llama.cpp's
        buffer, valid until the next decode."""
        pointer = self.api.llama_get_logits_ith(self.ctx, index)
        row = self._logits_row.from_address(ctypes.addressof(pointer.contents))
        return torch.frombuffer(row, dtype=torch.float32)[None]

    def forget(self, sequence: int) -> None:
        self.api.llama_memory_seq_rm(self.memory, sequence, -1, -1)

    def share(self, source: int, target: int, positions: int) -> None:
        """Give `target` the cache of `source`'s first `positions` tokens (llama.cpp shares the cells)."""
        self.api.llama_memory_seq_cp(self.memory, source, target, 0, positions)

    def clear(self) -> None:
        self.queued = 0
        self.api.llama_memory_clear(self.memory, True)
