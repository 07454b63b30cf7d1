"""dVAE tokenizer training: losses, annealing schedules, metrics and the training loop."""
