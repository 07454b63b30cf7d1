"""Test-wide settings: headless MuJoCo rendering, no accidental GPU use, one OpenMP thread."""

import os
import signal

# MuJoCo reads MUJOCO_GL at import; EGL on Mesa (llvmpipe) works on CI machines without a display.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# One OpenMP thread per process (subprocesses inherit it): on a loaded 2-core machine torch's spinning
# intra-op threads tripled a tokenizer-training test (179 s vs 59 s at load average 9).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# pytest-xdist's workers start with SIGINT ignored, and every child inherits that: the Ctrl-C tests need the
# default handler (KeyboardInterrupt) in the test process and in the processes it starts.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# The suite runs on every core (pytest-xdist, `-n auto --dist loadgroup` in pyproject.toml). Each test file is one
# unit of work, so module- and session-scoped fixtures are built once; every file that starts franky-sim shares
# one unit: the simulator binds fixed libfranka ports per loopback address, and `free_loopback_host` checks a port
# before the simulator binds it, a race two workers could lose.
FRANKY_SIM_DIRS = ("hardware_deploy", "hardware_robot", "parity")
FRANKY_SIM_FILES = ("test_policies_jobs.py",)


def pytest_collection_modifyitems(config, items):
    import pytest

    for item in items:
        path = item.path
        group = "franky_sim" if path.parent.name in FRANKY_SIM_DIRS or path.name in FRANKY_SIM_FILES else str(path)
        item.add_marker(pytest.mark.xdist_group(group))
