"""The trimmed last layer (feed-forward half on supervised rows only) gives the loss and LoRA gradients the
whole layer gives, for packed padding-free micro-batches and for padded rows; calls that do not ask for it
(generation) run the whole layer; models it does not know are left alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from test_attention import assert_same_lora_gradients
from test_fused_lora import lora_model, loss_and_gradients
from twinbot.finetune import batches, lora
from twinbot.kernels import last_layer
from twinbot.kernels.attention import PACKED_SDPA
from twinbot.models import devices


@pytest.mark.parametrize(
    ("attention", "layout"), [(PACKED_SDPA, "shared_prefix"), (PACKED_SDPA, "flat"), ("sdpa", "rows")]
)
def test_trimmed_last_layer_gives_the_same_loss_and_lora_gradients(
    tiny_model_dir: Path, attention: str, layout: batches.BatchLayout
) -> None:
    model = lora_model(tiny_model_dir, attention=attention)
    whole_loss, whole = loss_and_gradients(model, layout=layout)
    assert last_layer.trim_last_layer(model)
    trimmed_loss, trimmed = loss_and_gradients(model, layout=layout)
    assert trimmed_loss == pytest.approx(whole_loss, rel=1e-6)
    assert_same_lora_gradients(trimmed, whole)


def test_calls_that_do_not_ask_run_the_whole_layer(tiny_model_dir: Path) -> None:
    model = lora_model(tiny_model_dir).eval()
    input_ids = torch.tensor([[1, 5, 9, 14, 3, 7]])
    with torch.no_grad():
        before = model(input_ids=input_ids).logits
        generated = model.generate(input_ids, max_new_tokens=4, do_sample=False, use_cache=True)
        assert last_layer.trim_last_layer(model)
        torch.testing.assert_close(model(input_ids=input_ids).logits, before, rtol=0, atol=0)
        assert torch.equal(
            model.generate(input_ids, max_new_tokens=4, do_sample=False, use_cache=True), generated
        )


def test_the_trim_is_seen_through_torch_compile_and_training_uses_it(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from support.training import make_config

    supervised = torch.tensor([[False, True, True, False, True]])
    model = lora_model(tiny_model_dir)
    assert last_layer.forward_kwargs(model, supervised) == {"logits_to_keep": supervised}
    last_layer.trim_last_layer(model)
    for wrapped in (model, torch.compile(model)):  # compiles nothing until called
        kwargs = last_layer.forward_kwargs(wrapped, supervised)
        assert kwargs["logits_to_keep"] == 0 and kwargs[last_layer.ROWS_KWARG].tolist() == [1, 2, 4]
    config = make_config(tiny_model_dir, tmp_path / "run")
    loaded, _ = lora.load_training_model(config, torch.device("cpu"), devices.pick_precision(False, "cpu"))
    assert last_layer.ROWS_KWARG in last_layer.forward_kwargs(loaded, supervised)


def test_a_model_with_another_layer_design_is_left_alone() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50, n_positions=32))
    assert not last_layer.trim_last_layer(model)
    supervised = torch.tensor([[False, True]])
    assert last_layer.forward_kwargs(model, supervised) == {"logits_to_keep": supervised}
