"""Pre-training machinery: parallelism, the training step, LR schedule, metrics, checkpoints, the loop.

Modules other than `loop` import only torch, so bench/pretrain_throughput.py runs on a bare GPU box.
"""
