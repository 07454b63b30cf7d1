"""Training loop on CPU: loss falls on moving shapes, kill-and-resume equals an uninterrupted run
(weights, RNG, metrics file), vocabulary and run-folder checks, schedule and MFU accounting."""

import dataclasses
import json
import math

import numpy as np

import pytest
import torch
import torch.distributed.checkpoint as dcp

from pretrain.data.token_shards import TokenDataset, TokenShardError
from pretrain.loader import PackingConfig
from pretrain.synthetic import VOCAB, write_synthetic_shards
from pretrain.train.checkpoint import latest
from pretrain.train.loop import TrainConfig, train
from pretrain.train.metrics import flops_per_token
from pretrain.train.parallelize import ParallelConfig
from pretrain.train.schedule import WarmupCosine
from toto_robot.models.transformer import Transformer, config_for

MODEL = config_for("tiny", vocab_size=VOCAB, max_seq_len=512)
DATA = PackingConfig(frames_per_seq=2, stride=1, batch_size=4, prefetch=0)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matmuls on a shared 2-core box run several times faster without intra-op threads."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> TokenDataset:
    root = tmp_path_factory.mktemp("shapes")
    write_synthetic_shards(str(root), n_videos=12, n_frames=12, seed=0)
    return TokenDataset(str(root))


def test_loss_falls_on_moving_shapes(videos, tmp_path):
    cfg = TrainConfig(steps=30, lr=3e-3, warmup_steps=3, log_every=10, ckpt_every=0, peak_tflops=1.0)
    history = train(MODEL, cfg, DATA, ParallelConfig(), videos, tmp_path)
    losses = [h["loss"] for h in history]
    assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
    assert losses[0] > 0.9 * math.log(VOCAB)  # starts near uniform over the codes
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0]
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 3
    assert latest(tmp_path / "checkpoints").name == "step_00000030"


def final_weights(run_dir) -> dict[str, torch.Tensor]:
    model = Transformer(MODEL)
    state = {"model": model.state_dict()}
    dcp.load(state, checkpoint_id=str(latest(run_dir / "checkpoints")))
    return state["model"]


def test_kill_and_resume_equals_uninterrupted_run(videos, tmp_path):
    cfg = TrainConfig(steps=8, lr=3e-3, warmup_steps=2, log_every=1, ckpt_every=3, peak_tflops=1.0)
    full = train(MODEL, cfg, DATA, ParallelConfig(), videos, tmp_path / "full")
    # Killed after step 5: the newest checkpoint is step 3, steps 4-5 are lost and redone.
    killed = train(MODEL, cfg, DATA, ParallelConfig(), videos, tmp_path / "resumed", stop_after=5)
    assert [h["step"] for h in killed] == [1, 2, 3, 4, 5]
    assert latest(tmp_path / "resumed" / "checkpoints").name == "step_00000003"
    resumed = train(MODEL, cfg, DATA, ParallelConfig(), videos, tmp_path / "resumed")
    assert [h["step"] for h in resumed] == [4, 5, 6, 7, 8]
    for a, b in zip(full[3:], resumed):
        assert a == b  # loss, grad norm and lr bit-identical
    wa, wb = final_weights(tmp_path / "full"), final_weights(tmp_path / "resumed")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # A crash inside a save leaves only a temp dir, never a half-written step_* directory.
    assert not list((tmp_path / "resumed" / "checkpoints").glob(".tmp_*"))


def test_resume_restores_the_rng_and_metrics_of_an_uninterrupted_run(videos, tmp_path):
    # peak_tflops=0 measures the CPU's matmul rate at start, which draws random numbers.
    cfg = TrainConfig(steps=6, lr=3e-3, warmup_steps=2, log_every=1, ckpt_every=3, peak_tflops=0.0)
    train(MODEL, cfg, DATA, ParallelConfig(), videos, tmp_path / "full")
    train(MODEL, cfg, DATA, ParallelConfig(), videos, tmp_path / "resumed", stop_after=5)
    train(MODEL, cfg, DATA, ParallelConfig(), videos, tmp_path / "resumed")
    rng = [torch.load(tmp_path / run / "checkpoints" / "step_00000006" / "rng_rank00000.pt", weights_only=False)
           for run in ("full", "resumed")]
    assert torch.equal(rng[0]["torch"], rng[1]["torch"]) and rng[0]["python"] == rng[1]["python"]
    assert all(np.array_equal(a, b) for a, b in zip(rng[0]["numpy"], rng[1]["numpy"]))
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # steps 4-5 were replayed after the kill, logged once


def test_a_time_budget_fixes_the_step_count_and_the_schedule_ends_there(videos, tmp_path):
    cfg = TrainConfig(steps=100_000, max_minutes=0.05, lr=3e-3, warmup_steps=2, log_every=5, ckpt_every=0, peak_tflops=1.0)
    history = train(MODEL, cfg, DATA, ParallelConfig(), videos, tmp_path)
    planned = history[-1]["step"]
    assert 15 <= planned < 100_000  # calibrated after two log points >= 10 steps apart, then fitted to 3 s
    state = torch.load(latest(tmp_path / "checkpoints") / "train_state.pt", weights_only=False)
    assert state["planned_steps"] == planned and state["step"] == planned
    assert state["scheduler"]["lr_lambdas"][0]["total_steps"] == planned  # the cosine schedule ends at the planned step
    assert train(MODEL, cfg, DATA, ParallelConfig(), videos, tmp_path) == []  # a rerun keeps the count: done
    longer = dataclasses.replace(cfg, max_minutes=0.0, steps=planned + 3)  # without a budget, train.steps rules
    assert [h["step"] for h in train(MODEL, longer, DATA, ParallelConfig(), videos, tmp_path)] == [planned + i for i in (1, 2, 3)]
    with pytest.raises(ValueError, match="max_minutes"):
        TrainConfig(max_minutes=-1)


def test_vocabulary_and_run_folder_mismatches_are_named(videos, tmp_path):
    cfg = TrainConfig(steps=2, warmup_steps=1, log_every=1, ckpt_every=0, peak_tflops=1.0)
    small = dataclasses.replace(MODEL, vocab_size=VOCAB // 2)
    with pytest.raises(ValueError, match=f"come from a {VOCAB}-code tokenizer: set model.vocab_size={VOCAB}"):
        train(small, cfg, DATA, ParallelConfig(), videos, tmp_path)
    train(MODEL, cfg, DATA, ParallelConfig(), videos, tmp_path)
    wider = dataclasses.replace(MODEL, dim=32, n_heads=2)
    with pytest.raises(ValueError, match=r"checkpoint of another model .*'dim': \(64, 32\).*run_name"):
        train(wider, dataclasses.replace(cfg, steps=4), DATA, ParallelConfig(), videos, tmp_path)
    with pytest.raises(TokenShardError, match=f"no token shards found at {tmp_path}"):
        TokenDataset(str(tmp_path))


def test_warmup_cosine_schedule():
    s = WarmupCosine(warmup_steps=10, total_steps=110, min_ratio=0.1)
    assert s(0) == pytest.approx(0.1) and s(9) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.55) and s(110) == pytest.approx(0.1) and s(500) == pytest.approx(0.1)
    assert all(s(i) >= s(i + 1) for i in range(10, 120))
    with pytest.raises(ValueError, match="bad schedule"):
        WarmupCosine(10, 0)


def test_flops_per_token_follows_reference_convention():
    with torch.device("meta"):
        model = Transformer(config_for("base"))
    n = model.num_params(embedding=False)
    assert n == model.num_params() - 8192 * 768  # the head counts, the embedding does not
    assert flops_per_token(n, 12, 768, 4096) == 6 * n + 6 * 12 * 768 * 4096


def test_bad_config_values_fail_early():
    with pytest.raises(ValueError, match="parallel.strategy"):
        ParallelConfig(strategy="zero3")
    with pytest.raises(ValueError, match="train.precision"):
        TrainConfig(precision="fp16")


def test_cuda_requested_without_a_gpu_says_so():
    from pretrain.train.loop import init_distributed

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible")
    with pytest.raises(ValueError, match="train.device=cuda, but torch sees no CUDA GPU"):
        init_distributed("cuda")
