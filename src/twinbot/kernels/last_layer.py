"""The last decoder layer's feed-forward half only where a loss is computed.

Training takes logits only at supervised positions (the persona's reply: 12% of the tokens on the bundled
sample). Every layer's output at every position feeds the next layer's keys and values, except the last
layer's: there, a position's output goes to its own logits and nowhere else. So the last layer's attention
still runs on every position (the supervised ones attend to all that precede them), and its feed-forward
half (the norm and the MLP: three quarters of a Llama layer's matmul work) only on the supervised rows.

`trim_last_layer(model)` switches the last decoder layer of a Llama-family model (a pre-norm layer of
`input_layernorm`, `self_attn`, `post_attention_layernorm`, `mlp`, in transformers' order) to that.
`forward_kwargs(model, supervised)` gives the keyword arguments of a forward pass: the trimmed layer then
returns only the supervised rows, [1, supervised, hidden] in row-major order, which is what the logits
come out as; any other call runs the layer as transformers wrote it (generation, chat, export).
"""

from __future__ import annotations

import types
from typing import Any

import torch

ROWS_KWARG = "twinbot_supervised_rows"  # the flattened positions whose logits are kept
_TRIMMED = "_twinbot_trimmed_last_layer"
_ORIGINAL_FORWARD = "_twinbot_layer_forward"
# Decoder layers whose forward is exactly: x + attn(norm(x)), then y + mlp(norm(y)).
PRE_NORM_LAYERS = frozenset(
    {"LlamaDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer", "Qwen3DecoderLayer"}
)


def _forward(self: Any, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    rows = kwargs.pop(ROWS_KWARG, None)
    if rows is None or args:
        return getattr(self, _ORIGINAL_FORWARD)(hidden_states, *args, **kwargs)
    attention, _ = self.self_attn(hidden_states=self.input_layernorm(hidden_states), **kwargs)
    hidden_states = (hidden_states + attention).reshape(-1, hidden_states.shape[-1]).index_select(0, rows)
    hidden_states = hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))
    return hidden_states.unsqueeze(0)


def trim_last_layer(model: torch.nn.Module) -> bool:
    """Switch the last decoder layer of `model` (a causal LM, or a peft model of one) to computing its
    feed-forward half on supervised rows only, when it is a known pre-norm layer; returns whether it is."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    count = getattr(getattr(base, "config", None), "num_hidden_layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or not count or len(layers) < count:
        return False
    last = layers[count - 1]
    if type(last).__name__ not in PRE_NORM_LAYERS:
        return False
    if not hasattr(last, _ORIGINAL_FORWARD):
        setattr(last, _ORIGINAL_FORWARD, last.forward)
        last.forward = types.MethodType(_forward, last)
    setattr(model, _TRIMMED, True)
    return True


def forward_kwargs(model: Any, supervised: torch.Tensor) -> dict[str, Any]:
    """What to pass a forward pass whose logits are wanted at the `supervised` positions (a bool mask
    shaped like input_ids) only: logits [1, supervised, vocab] either way, in row-major order."""
    from accelerate.utils import extract_model_from_parallel

    if getattr(extract_model_from_parallel(model, keep_torch_compile=False), _TRIMMED, False):
        return {"logits_to_keep": 0, ROWS_KWARG: supervised.reshape(-1).nonzero().squeeze(1)}
    return {"logits_to_keep": supervised}
