"""Stage 4, export: a RUN's adapter as merged weights, GGUF or an Ollama model (`exporter`), written by
`gguf` (writer, families, tokenizer) and `modelfile`, and checked against the adapter model by `verify` before it is published."""
