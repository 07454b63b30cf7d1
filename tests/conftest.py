"""Test-wide settings: headless MuJoCo rendering, no accidental GPU use, one OpenMP thread."""

import os

# MuJoCo reads MUJOCO_GL at import; EGL on Mesa (llvmpipe) works on CI machines without a display.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# One OpenMP thread per process (subprocesses inherit it): on a loaded 2-core machine torch's spinning
# intra-op threads tripled a tokenizer-training test (179 s vs 59 s at load average 9).
os.environ.setdefault("OMP_NUM_THREADS", "1")
