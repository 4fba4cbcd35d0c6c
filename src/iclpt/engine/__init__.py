"""The soft-prompt engine: prompts, rendering, training, checkpoints, greedy decoding."""
