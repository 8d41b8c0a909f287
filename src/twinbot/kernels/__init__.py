"""Fast, exact building blocks for training: packed attention, fused LoRA, the chunked loss and the
last layer computed only where a target needs it. Each has a slow reference it is tested against."""
