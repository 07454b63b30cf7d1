"""pretrain.py end to end: `--help`, and a 2-process gloo DDP run under torchrun matching one
process with the same global batch."""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

from pretrain.train.checkpoint import latest
from toto_robot.models.transformer import Transformer, config_for

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
COMMON = ["model=tiny", "model.vocab_size=64", "model.max_seq_len=512", "data.synthetic=true",
          "data.synthetic_videos=8", "data.synthetic_frames=10", "data.synthetic_images=0",
          "data.frames_per_seq=2", "data.stride=2", "data.prefetch=0", "train.steps=6", "train.lr=3e-3",
          "train.warmup_steps=2", "train.log_every=1", "train.ckpt_every=0", "train.peak_tflops=1",
          "train.device=cpu"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def run(launcher: list[str], overrides: list[str], out: Path) -> list[dict]:
    """Run pretrain.py under `launcher`; `overrides` come after COMMON, so they win."""
    proc = subprocess.run([*launcher, "pretrain.py", *COMMON, *overrides, f"out_dir={out}", f"hydra.run.dir={out}"], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def run_beside(*jobs: tuple[list[str], list[str], Path]) -> list[list[dict]]:
    """`run` each (launcher, overrides, out) at the same time: independent runs, so start-ups overlap."""
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(run, *job) for job in jobs]
        return [f.result() for f in futures]


def weights(out: Path) -> dict[str, torch.Tensor]:
    state = {"model": Transformer(config_for("tiny", vocab_size=64, max_seq_len=512)).state_dict()}
    dcp.load(state, checkpoint_id=str(latest(out / "checkpoints")))
    return state["model"]


def test_help_explains_the_job():
    out = subprocess.run([sys.executable, "pretrain.py", "--help"], cwd=ROOT, env=ENV, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "== pretrain ==" in out.stdout and "parallel.strategy" in out.stdout and "model:" in out.stdout


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path):
    single, ddp = run_beside(([sys.executable], ["data.batch_size=4"], tmp_path / "single"),
                             (TORCHRUN, ["parallel.strategy=ddp", "data.batch_size=2"], tmp_path / "ddp"))
    assert [r["step"] for r in ddp] == [r["step"] for r in single] == list(range(1, 7))
    for a, b in zip(single, ddp):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
    assert single[-1]["loss"] < single[0]["loss"]
    wa, wb = weights(tmp_path / "single"), weights(tmp_path / "ddp")
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_fsdp_sharded_checkpoint_resume_continues_the_run(tmp_path):
    fsdp = ["parallel.strategy=fsdp", "data.batch_size=2", "train.ckpt_every=3"]
    full = run(TORCHRUN, fsdp, tmp_path / "full")
    assert sorted(p.name for p in (tmp_path / "full" / "checkpoints" / "step_00000006").glob("*.distcp")) == [
        "__0_0.distcp", "__1_0.distcp"]  # one shard file per rank
    # A run killed after its step-3 checkpoint: same directory without the later checkpoint and log.
    crashed = tmp_path / "crashed"
    (crashed / "checkpoints").mkdir(parents=True)
    subprocess.run(["cp", "-r", str(tmp_path / "full" / "checkpoints" / "step_00000003"), str(crashed / "checkpoints")],
                   check=True)
    resumed = run(TORCHRUN, fsdp, crashed)
    assert [r["step"] for r in resumed] == [4, 5, 6]
    for a, b in zip(full[3:], resumed):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6)
    wa, wb = weights(tmp_path / "full"), weights(crashed)  # sharded checkpoints load into one process
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_uninterrupted_result(tmp_path):
    """SIGKILL at an arbitrary moment (possibly inside a checkpoint save), then rerun the same command."""
    import signal
    import time

    overrides = ["data.batch_size=4", "train.steps=40", "train.ckpt_every=5"]
    with ThreadPoolExecutor(1) as beside:  # the uninterrupted reference run goes on while the other is killed
        full_run = beside.submit(run, [sys.executable], overrides, tmp_path / "full")
        out = tmp_path / "killed"
        cmd = [sys.executable, "pretrain.py", *COMMON, *overrides, f"out_dir={out}", f"hydra.run.dir={out}"]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            log = out / "metrics.jsonl"
            if log.is_file() and log.read_text().count("\n") >= 7:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        resumed = run([sys.executable], overrides, out)
        full = full_run.result()
    last = {r["step"]: r for r in resumed}  # steps redone after the checkpoint are logged twice
    assert sorted(last) == list(range(1, 41))
    for r in full:
        assert last[r["step"]]["loss"] == r["loss"]
    wa, wb = weights(tmp_path / "full"), weights(out)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
