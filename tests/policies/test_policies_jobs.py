"""The jobs as a user runs them: train_policy (collect -> train -> evaluate, resumable), eval_policy,
the deploy runner on franky-sim with a trained checkpoint, and the sample-efficiency study."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from toto_robot.checkpoint import read_checkpoint
from toto_robot.config import CONF_DIR, as_dataclass

ROOT = CONF_DIR.parent
ENV = {"render_mode": "fast", "cameras": ["agentview"], "render_size": 128, "episode_len": 60}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # the module's job fixture collects, trains and evaluates


JOB_ARGS = [
    "env.render_mode=fast", "env.cameras=[agentview]", "env.render_size=128", "env.episode_len=60",
    "policy.hidden_dims=[32]", "encoder.pool_heads=2", "encoder.feature_dim=8", "encoder.keypoints=4",
    "obs.cameras=[agentview_image]", "train.epochs=2", "train.batch_size=16", "train.eval_every=1",
    "train.eval_episodes=1", "demos.n_episodes=2", "demos.workers=1", "eval.n_episodes=2", "eval.workers=1",
    "eval.videos=1", "baselines=[none]", "run_name=tiny", "progress=false",
]


def _train_policy(root: Path, artifact: Path) -> subprocess.CompletedProcess:
    args = [*JOB_ARGS, f"encoder.artifact={artifact}", f"demos.out={root / 'demos.zarr'}", f"out_dir={root / 'run'}"]
    return subprocess.run([sys.executable, "train_policy.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=800)


@pytest.fixture(scope="module")
def job(tmp_path_factory, tiny_artifact):
    """train_policy.py as a user runs it: 2 demos collected, the tiny encoder, the `none` baseline, the expert."""
    root = tmp_path_factory.mktemp("job")
    out = _train_policy(root, tiny_artifact)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return root, out, json.loads((root / "run" / "metrics.json").read_text())


def test_train_policy_collects_trains_evaluates_and_reports(job, tiny_artifact):
    root, proc, metrics = job
    out = root / "run"
    assert "| main | toto | 2 |" in proc.stdout and "run directory" in proc.stdout  # the summary table
    assert "Job wall time" in proc.stdout and "main " in proc.stdout.split("Job wall time")[1]  # where the time went
    assert set(metrics["stages_s"]) == {"collect", "verify", "features", "main", "none", "scripted expert"}
    names = [r["name"] for r in metrics["rows"]]
    assert names == ["main", "none", "scripted expert"]
    # the baseline and the expert ran in a second process, after the main policy's features were cached
    assert metrics["rows"][1]["beside_main"] and metrics["rows"][2]["beside_main"] and "none " in proc.stdout.split("Job wall time")[1]
    assert "feature cache hit" in proc.stdout + proc.stderr  # training read what the features stage wrote
    main = metrics["rows"][0]
    ev = main["eval"]
    assert ev["n_episodes"] == 2 and 0 <= ev["success_ci95"][0] <= ev["success_rate"] <= ev["success_ci95"][1] <= 1
    assert [e["seed"] for e in main["per_seed"]] == [1_000_000, 1_000_001]
    assert main["latency"]["p50_ms"] > 0 and main["train"]["train_s"] > 0 and main["train"]["curves"]["eval_epoch"] == [1, 2]
    assert metrics["demos"]["collected_now"]["n_episodes"] == 2
    assert metrics["rows"][2]["eval"]["success_rate"] == 1.0  # the expert, on the same seeds
    for f in ("policy.safetensors", "metrics.json", "report.md", "curves.png", "baselines/none/policy.safetensors"):
        assert (out / f).stat().st_size > 0, f
    assert list((out / "videos").glob("*.mp4"))
    assert "| main | toto |" in (out / "report.md").read_text()

    again = _train_policy(root, tiny_artifact)  # the same command resumes: nothing collected, retrained or re-evaluated
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads((out / "metrics.json").read_text())
    assert second["rows"][0]["train"]["resumed_from_epoch"] == 2 and second["rows"][0]["per_seed"] == main["per_seed"]
    assert second["demos"]["collected_now"] is None


def test_eval_policy_cli_is_deterministic_given_seeds(job, tmp_path):
    root, _, metrics = job
    ckpt = root / "run" / "policy.safetensors"
    out = subprocess.run([sys.executable, "eval_policy.py", f"checkpoint={ckpt}", "n_episodes=2", "workers=2", "videos=0",
                          f"out_dir={tmp_path / 'e'}", "progress=false"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "success" in out.stdout and "95% CI" in out.stdout
    per_seed = json.loads((tmp_path / "e" / "metrics.json").read_text())["per_seed"]
    strip = lambda eps: [{k: e[k] for k in ("seed", "success", "steps", "return")} for e in eps]  # noqa: E731
    assert strip(per_seed) == strip(metrics["rows"][0]["per_seed"])  # 2 workers here, 1 in the job: same episodes


def test_a_trained_checkpoint_runs_through_the_deploy_runner_on_franky_sim(job, tmp_path):
    """deploy_policy.py's job in this process (the script itself runs in tests/hardware_deploy/)."""
    from hardware.deploy_app import deploy
    from toto_robot.episode_store import EpisodeStore

    root, _, _ = job
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        dcfg = compose("deploy_policy", [
            f"checkpoint={root / 'run' / 'policy.safetensors'}", "sim=true", "robot=franky_sim", "camera=franky_sim",
            "~camera.wrist_image", "runner.max_steps=8", f"record.store={tmp_path / 'rollouts.zarr'}", "record.label=none",
            f"record.log_dir={tmp_path / 'logs'}"])
    (result,) = deploy(dcfg)
    assert result.stop_reason == "max_steps", result.message
    ep = EpisodeStore.open(tmp_path / "rollouts.zarr").get_episode(0)
    assert 0 < len(ep["action"]) <= 8 and ep["agentview_image"].shape[1:] == (128, 128, 3)  # a tick may overrun under load
    assert np.all(np.isfinite(ep["policy_action"])) and np.any(ep["policy_action"] != 0)
    # the rollout started where the checkpoint's demos did (start=demos), not at the robot's home pose
    training = read_checkpoint(root / "run" / "policy.safetensors", load_tensors=False).training
    assert len(training["start_joints"]) == 7
    assert np.abs(ep["eef_pos"][0] - training["env_config"]["start_pos"]).max() < 0.02, ep["eef_pos"][0]


def test_deploy_refuses_a_checkpoint_whose_cameras_the_session_lacks(job, tmp_path):
    from hardware.deploy_app import deploy
    from toto_robot.checkpoint import PolicyCompatibilityError

    root, _, _ = job
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        dcfg = compose("deploy_policy", [
            f"checkpoint={root / 'run' / 'policy.safetensors'}", "sim=true", "robot=franky_sim", "camera=synthetic",
            "~camera.agentview_image", "record.store=", f"record.log_dir={tmp_path}",
        ])
    with pytest.raises(PolicyCompatibilityError, match=r"camera set: .*\['agentview_image'\].*\['wrist_image'\]"):
        deploy(dcfg)


def test_study_runs_cells_in_parallel_writes_csv_and_plot_and_resumes(job, tmp_path):
    from policies.study import StudyConfig, read_results
    from policies.study import run as run_study

    root, _, _ = job
    scfg = as_dataclass(StudyConfig, {
        "demos": [1, 2], "encoders": ["none"], "seeds": [0], "store": str(root / "demos.zarr"), "env": ENV,
        "policy": {"hidden_dims": [16]}, "obs": {"cameras": ["agentview_image"]},
        "train": {"epochs": 1, "batch_size": 16}, "eval_episodes": 2, "eval_workers": 1, "parallel": 2,
        "out_dir": str(tmp_path / "study"), "progress": False,
    })
    result = run_study(scfg)
    rows = read_results(Path(result["csv"]))
    assert sorted(int(r["n_demos"]) for r in rows) == [1, 2] and all(int(r["n_episodes"]) == 2 for r in rows)
    assert Path(result["plot"]).stat().st_size > 1000
    again = run_study(scfg)
    assert len(again["rows"]) == 2  # finished cells are skipped, not repeated
