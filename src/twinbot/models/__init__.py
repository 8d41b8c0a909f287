"""Base models: find one (hub id, local folder or the embedded GGUF), load its tokenizer and weights,
and pick the device and precision to run it with."""
