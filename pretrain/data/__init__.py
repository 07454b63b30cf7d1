"""Pre-training data: frame sources, the token shard format, and the tokenize pipeline."""
