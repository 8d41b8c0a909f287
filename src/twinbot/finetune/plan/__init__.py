"""`twinbot plan`: how long training takes, measured on this machine with the user's own data.

Wall time is (tokens through the model) x (seconds per token). Gradient accumulation only decides how many
micro-batches make one optimizer step: every token still goes through one forward and one backward pass per
epoch, so it changes the number of steps and not the work. What changes the seconds per token is precision,
packing, gradient checkpointing, micro-batch size and kernels, and those are what calibration measures.

For each preset: count the exact tokens after templating and masking (the same rows `train` builds), run a
short real training run on micro-batches spread over the lengths (after a warm-up) to measure seconds per
token and peak memory, time evaluation and one checkpoint save, and extrapolate to the whole run. Without
calibration, an analytic estimate divides the run's FLOPs by this machine's measured matmul speed (rough).
docs/plan.md explains the arithmetic.

Modules, in the order a plan is made:
  planner         `run_plan` (the command), `make_plan` (every preset) and `plan_preset` (one preset)
  workload        the data tokenized once; steps, tokens, evaluations and checkpoints counted as `train` does
  calibration     the short real training run of one preset
  machine         small measurements of this machine: matmul speed, disk writes, logging cost, peak memory
  flops           the model's matmul shape and the FLOPs of a micro-batch
  estimate        whole-run seconds: calibrated or analytic, split between processes; `train`'s plan line
  gpus            `--target-gpu`: published peaks and the estimate scaled to one
  schedule        `--start`, finish times, clock and duration formats
  recommendation  DATA/compare.json read back, and which preset to train
  render          the plan as text
  records         the records a plan is made of (`--json`), and the compare.json schema
"""
