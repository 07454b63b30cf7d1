"""Probing: layer choice, the probe trainer's metrics, and end-to-end sweeps on an image folder
(classification) and on a real zarr episode store (cube-position regression)."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from pretrain.export import load_pool_head
from pretrain.probe.datasets import ProbeData, ProbeDatasetConfig, load_probe_data, yaw_mod_90
from pretrain.probe.run import ProbeConfig, run_probe
from pretrain.probe.sweep import ProbeTrainConfig, probe_layers, train_probe
from toto_robot.config import as_dataclass
from toto_robot.episode_store import EpisodeStore
from toto_robot.models.pooling import PoolingConfig
from toto_robot.rotations import quat_mul
from toto_robot.spec import ArraySpec, ShapeMeta


def test_probe_layers():
    assert probe_layers(12, 4) == [4, 8, 12]
    assert probe_layers(5, 2) == [2, 4, 5]  # the last layer always
    assert probe_layers(12, 4, [6, 1, 6]) == [1, 6]
    with pytest.raises(ValueError, match=r"outside 1..12"):
        probe_layers(12, 1, [13])


def test_regression_probe_scores_informative_features_above_shuffled_ones():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(240, 4, 16)).astype(np.float16)
    y = (0.05 * feats[:, :, :3].astype(np.float32).mean(1) + [0.5, 0.0, 0.02]).astype(np.float32)  # metres
    cfg = ProbeTrainConfig(epochs=40, batch_size=32, lr=1e-2, weight_decay=0.0)

    def score(targets: np.ndarray) -> dict:
        data = ProbeData("regression", np.zeros(0), targets[:180], np.zeros(0), targets[180:])
        return train_probe(data, feats[:180], feats[180:], PoolingConfig("avg"), cfg, torch.device("cpu"))[1]

    good, shuffled = score(y), score(y[rng.permutation(len(y))])
    assert good["metric"] == "r2" and good["score"] > 0.75 and shuffled["score"] < 0.3
    assert good["rmse"] < 0.5 * shuffled["rmse"]  # rmse is in the target's units (m)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for name, colour in (("red", (220, 40, 40)), ("blue", (40, 40, 220))):
        (root / name / "sub").mkdir(parents=True)
        for i in range(10):
            img = np.clip(np.array(colour) + rng.normal(0, 40, (72, 96, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / name / "sub" / f"{i}.png")  # non-square: centre-cropped
    return root


def test_image_folder_sweep_writes_table_plot_and_heads(artifact, image_folder, tmp_path):
    cfg = as_dataclass(ProbeConfig, {
        "encoder": {"artifact": str(artifact), "device": "cpu"},
        "dataset": {"kind": "image_folder", "paths": [str(image_folder)]},
        "layers": {"step": 1},
        "train": {"epochs": 15, "batch_size": 8, "n_heads": 4, "extract_batch_size": 8},
    })
    summary = run_probe(cfg, tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [(int(r["layer"]), r["pool"]) for r in rows] == [(1, "attention"), (1, "avg"), (2, "attention"), (2, "avg")]
    assert all(r["metric"] == "top1" for r in rows)
    assert summary["best"]["attention"]["top1"] >= 0.9  # red vs blue is separable at some layer
    assert "| layer | attention top1 | avg top1 |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "score_vs_layer.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "summary.json").read_text())["encoder_hash"] == summary["encoder_hash"]
    pooling, _, meta = load_pool_head(tmp_path / "best_attention_head.safetensors", 64)
    assert pooling.kind == "attention" and meta["layer"] == summary["best"]["attention"]["layer"]
    assert not (tmp_path / "features").exists()  # feature caches are removed


def _cube_store(path, n_episodes=6, steps=8):
    """Episodes whose agentview image shows a bright square where the cube is."""
    meta = ShapeMeta(obs={"agentview_image": ArraySpec((128, 128, 3), "uint8", "rgb"), "eef_pos": ArraySpec((3,), "float32")})
    store = EpisodeStore.create(path, meta, extras={"cube_pos": ArraySpec((3,), "float32")})
    rng = np.random.default_rng(0)
    for _ in range(n_episodes):
        pos = np.concatenate([rng.uniform([-0.1, -0.2], [0.1, 0.2], (steps, 2)), np.full((steps, 1), 0.025)], 1)
        images = np.full((steps, 128, 128, 3), 60, np.uint8)
        for t, (x, y, _) in enumerate(pos):
            r, c = int(64 + 250 * x), int(64 + 125 * y)
            images[t, r - 8 : r + 8, c - 8 : c + 8] = 255
        store.add_episode({"agentview_image": images, "eef_pos": np.zeros((steps, 3), np.float32),
                           "cube_pos": pos.astype(np.float32), "action": np.zeros((steps, 7), np.float32)})
    return path


def test_episode_store_sweep_regresses_cube_position(artifact, tmp_path):
    store = _cube_store(tmp_path / "demos.zarr")
    cfg = as_dataclass(ProbeConfig, {
        "encoder": {"artifact": str(artifact), "device": "cpu"},
        "dataset": {"kind": "episodes", "paths": [str(store)], "frame_stride": 2, "val_fraction": 0.34},
        "layers": {"layers": [2]},
        "train": {"epochs": 5, "batch_size": 8, "n_heads": 4, "pools": ["attention", "avg"]},
    })
    summary = run_probe(cfg, tmp_path / "out")
    assert summary["task"] == "regression" and summary["layers"] == [2]
    for row in summary["rows"]:
        assert row["metric"] == "r2" and np.isfinite(row["score"]) and 0 < row["rmse"] < 1.0


def test_two_camera_pose_probe_against_random_weights(artifact, tmp_path):
    meta = ShapeMeta(obs={"agentview_image": ArraySpec((128, 128, 3), "uint8", "rgb"),
                          "wrist_image": ArraySpec((128, 128, 3), "uint8", "rgb"), "eef_pos": ArraySpec((3,), "float32")})
    path = tmp_path / "pose.zarr"
    store = EpisodeStore.create(path, meta, extras={"cube_pos": ArraySpec((3,), "float32"),
                                                                      "cube_quat": ArraySpec((4,), "float32")})
    rng = np.random.default_rng(0)
    for _ in range(5):
        yaw = rng.uniform(-np.pi / 4, np.pi / 4, 6)
        quat = np.stack([np.cos(yaw / 2), 0 * yaw, 0 * yaw, np.sin(yaw / 2)], 1).astype(np.float32)
        store.add_episode({"agentview_image": rng.integers(0, 255, (6, 128, 128, 3), dtype=np.uint8),
                           "wrist_image": rng.integers(0, 255, (6, 128, 128, 3), dtype=np.uint8),
                           "eef_pos": np.zeros((6, 3), np.float32), "action": np.zeros((6, 7), np.float32),
                           "cube_pos": rng.uniform(-0.1, 0.1, (6, 3)).astype(np.float32), "cube_quat": quat})
    cfg = as_dataclass(ProbeConfig, {
        "encoder": {"artifact": str(artifact), "device": "cpu"},
        "dataset": {"kind": "episodes", "paths": [str(path)], "image_keys": ["agentview_image", "wrist_image"],
                    "yaw_key": "cube_quat", "frame_stride": 1, "val_fraction": 0.4},
        "layers": {"layers": [1, 2]}, "compare_random_init": True,
        "train": {"epochs": 2, "batch_size": 8, "n_heads": 4, "pools": ["avg"]},
    })
    summary = run_probe(cfg, tmp_path / "out")
    rows = summary["rows"]
    assert [(r["encoder"], r["layer"]) for r in rows] == [("pretrained", 1), ("pretrained", 2), ("random_init", 1), ("random_init", 2)]
    for r in rows:  # random images: errors are large but finite, in mm and degrees (<= 45 modulo 90)
        assert 0 < r["pos_err_mm"] < 1000 and 0 <= r["yaw_err_deg"] <= 45
    table = (tmp_path / "out" / "results.md").read_text()
    assert "agentview+wrist" in table and "random_init avg position / yaw error" in table and " mm / " in table
    assert summary["best"]["avg"]["layer"] in (1, 2) and "pos_err_mm" in summary["best"]["avg"]


def test_yaw_modulo_90_is_read_off_a_horizontal_cube_axis():
    def quat(axis, angle):
        axis = np.asarray(axis, float) / np.linalg.norm(axis)
        return np.r_[np.cos(angle / 2), np.sin(angle / 2) * axis]

    yaws = np.radians([0, 10, 40, 50, 100, -30])
    got = yaw_mod_90(np.stack([quat([0, 0, 1], y) for y in yaws]))
    assert np.allclose(np.degrees(got), [0, 10, 40, -40, 10, -30])
    tipped = quat_mul(quat([0, 0, 1], np.radians(20)), quat([1, 0, 0], np.pi / 2))  # on its side, then yawed
    assert np.allclose(np.degrees(yaw_mod_90(tipped[None])), [20])
    assert np.allclose(yaw_mod_90(-tipped[None]), yaw_mod_90(tipped[None]))  # q and -q: the same rotation


def test_episode_split_is_by_episode_and_bad_keys_are_named(tmp_path):
    store = _cube_store(tmp_path / "demos.zarr", n_episodes=5, steps=4)
    data = load_probe_data(ProbeDatasetConfig(kind="episodes", paths=[str(store)], frame_stride=1, val_fraction=0.4), 128)
    assert (len(data.train_x), len(data.val_x)) == (12, 8) and data.train_y.shape == (12, 3)
    train_rows = {tuple(r) for r in data.train_y.round(6)}
    assert not train_rows & {tuple(r) for r in data.val_y.round(6)}
    with pytest.raises(KeyError, match="no key 'cube_position'.*cube_pos"):
        load_probe_data(ProbeDatasetConfig(kind="episodes", paths=[str(store)], target_key="cube_position"), 128)
    with pytest.raises(ValueError, match="unknown probe dataset kind 'video'"):
        load_probe_data(ProbeDatasetConfig(kind="video", paths=[str(store)]), 128)


def test_probe_script_runs_and_explains_itself(artifact, image_folder, tmp_path):
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "probe.py"
    run = subprocess.run(
        [sys.executable, str(script), f"encoder.artifact={artifact}", "encoder.device=cpu", f"dataset.paths=[{image_folder}]",
         "layers.layers=[2]", "train.pools=[avg]", "train.epochs=2", "train.batch_size=8", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=180,
    )
    assert run.returncode == 0, run.stderr
    assert "| layer | avg top1 |" in run.stdout and (tmp_path / "score_vs_layer.png").is_file()
    helptext = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=180)
    assert helptext.returncode == 0 and "== probe ==" in helptext.stdout
    assert re.search(r"^encoder: checkpoints, .*toto", helptext.stdout, re.M)  # the group is shared with train_policy
