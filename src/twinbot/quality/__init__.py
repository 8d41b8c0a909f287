"""Measure a twin: style features (`style`), held-out loss and replies (`evaluate`, recorded in `results`,
shown by `report_html`), and how each preset's adapter compares (`compare`, read back by `plan`)."""
