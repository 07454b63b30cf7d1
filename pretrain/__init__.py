"""Toto pre-training: token data, the dVAE tokenizer, transformer training, encoder export and probes.

A regular package (not a namespace one) so that the root script `pretrain.py` does not shadow it.
"""
