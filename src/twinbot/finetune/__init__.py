"""Stage 2, fine-tuning: Sample -> token rows -> LoRA adapter in a RUN folder.

`config` resolves the settings (CLI, `.env`, YAML, presets), `rows` turns samples into token rows,
`recipe` is the training job read top to bottom (main -> setup -> fit), built from reusable parts:
`batches`, `steps`, `lora`, `runtime`, `checkpoint`, `metrics`, `workers`. `plan` predicts a run's
time from measured throughput before it starts.
"""
