"""Measure a twin: style features (`style`), held-out loss and replies (`evaluate`, with an HTML
report), and how each preset's adapter compares (`compare`, read back by `plan`)."""
