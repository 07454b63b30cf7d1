"""bench/tokenizer_throughput.py runs standalone (no hydra/zarr/av/mujoco/PIL) in its CPU smoke mode."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The GPU box has only torch + numpy + einops + safetensors (+ dall_e, optional): make everything else unimportable.
BLOCKED = ["hydra", "omegaconf", "zarr", "numcodecs", "av", "mujoco", "PIL", "tqdm", "fsspec", "imageio", "matplotlib"]


@pytest.mark.slow
def test_bench_quick_cpu_standalone():
    code = (
        "import sys, runpy; sys.modules.update({m: None for m in %r});"
        "sys.argv = ['tokenizer_throughput.py', '--device', 'cpu', '--quick'];"
        "runpy.run_path('bench/tokenizer_throughput.py', run_name='__main__')" % BLOCKED
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("ours_frames_per_s", "recon_psnr_db", "codebook_usage", "codebook_perplexity"):
        assert result[key] > 0, key
    assert result["compile"]["ours"] == "eager (compile off)"
    if importlib.util.find_spec("dall_e") is None:  # optional: not in the test extras
        assert result["compile"]["dalle"].startswith("skipped: the dall_e package is not installed")
        assert "dalle_frames_per_s" not in result
        assert "the comparison is left out" in r.stdout
    else:
        assert result["dalle_frames_per_s"] > 0 and result["speedup_vs_dalle"] > 0
        assert result["dalle_params_m"] == pytest.approx(53.8, abs=0.1)
        assert result["compile"]["dalle"] == "eager (compile off)"
