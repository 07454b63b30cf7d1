"""bench/pretrain_throughput.py CPU smoke mode, with hydra/zarr/mujoco made unimportable (the GPU
box that runs it has only torch, numpy, einops and safetensors)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ANCHOR = ROOT.parent / "shared" / "anchors" / "reference_transformer_mfu.py"
BLOCKED = ("hydra", "omegaconf", "zarr", "numcodecs", "mujoco", "tqdm", "fsspec", "pretrain.data")


@pytest.mark.skipif(not ANCHOR.is_file(), reason=f"reference anchor not present at {ANCHOR}")
def test_bench_quick_cpu_runs_reference_and_ours_without_heavy_deps():
    code = (
        "import runpy, sys\n"
        f"for m in {BLOCKED!r}: sys.modules[m] = None\n"
        f"sys.argv = ['pretrain_throughput.py', '--device', 'cpu', '--quick', '--reference', {str(ANCHOR)!r}]\n"
        "runpy.run_path('bench/pretrain_throughput.py', run_name='__main__')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    ref = next(r for r in rows if r.get("impl") == "reference")
    ours = next(r for r in rows if r.get("impl") == "ours")
    assert ref["tok_per_s"] > 0 and ours["tok_per_s"] > 0 and "error" not in ours
    assert ours["ratio_vs_reference"] == pytest.approx(ours["tok_per_s"] / ref["tok_per_s"], rel=1e-2)
    assert "ratio" in out.stdout.splitlines()[-2]  # summary table header
