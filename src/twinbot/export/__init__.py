"""Stage 4, export: a RUN's adapter as merged weights, GGUF or an Ollama model."""
