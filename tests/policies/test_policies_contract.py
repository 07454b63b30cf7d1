"""The policy contract: one registry, self-describing checkpoint, load_policy with compatibility checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from policies.config import AlgoConfig, BCConfig, EncoderConfig, ObsConfig, TrainConfig
from policies.train import train
from toto_robot.action import ATTR_KEY, ActionConvention, ActionConventionError
from toto_robot.checkpoint import METADATA_KEY, CheckpointError, PolicyCompatibilityError, read_checkpoint
from toto_robot.policy import POLICIES, Policy, load_policy
from toto_robot.spec import franka_shape_meta

CONVENTION = ActionConvention()
ROOT = Path(__file__).resolve().parents[2]


def _trained(store, tmp_path, artifact, **enc):
    store._group.attrs[ATTR_KEY] = CONVENTION.to_dict()  # as collect_demos records it
    cfg = BCConfig(AlgoConfig(hidden_dims=[32]), EncoderConfig(artifact=str(artifact), pool_heads=2, feature_dim=8, **enc),
                   ObsConfig(cameras=["agentview_image"]))
    result = train(cfg, TrainConfig(epochs=2, batch_size=8, checkpoint_every=10), store, [0, 1], tmp_path / "run",
                   device="cpu", progress=False)
    return result.checkpoint


def test_checkpoint_round_trip_same_actions_and_self_description(store_factory, tmp_path, tiny_artifact):
    store = store_factory()
    ckpt_path = _trained(store, tmp_path, tiny_artifact)
    ckpt = read_checkpoint(ckpt_path)
    assert ckpt.policy_class == "robomimic" and ckpt.action_convention == CONVENTION.to_dict()
    assert set(ckpt.shape_meta.obs) == {"agentview_image", "eef_pos", "eef_quat", "gripper_width"}
    assert ckpt.encoder["hash"] and ckpt.encoder["layer"] == 2 and ckpt.image_preprocessing["images"]
    assert set(ckpt.normalizers) == {"obs", "action"} and ckpt.code_version["toto_robot"]
    # the frozen trunk is referenced by hash, not copied into the checkpoint
    assert not any(".tokenizer." in k or ".transformer." in k for k in ckpt.tensors)

    a, b = load_policy(ckpt_path, device="cpu"), load_policy(ckpt_path, device="cpu")
    assert isinstance(a, Policy) and a.done is False
    ep = store.get_episode(2)
    a.reset()
    b.reset()
    for t in range(4):
        obs = {k: ep[k][t] for k in a.shape_meta.obs}
        np.testing.assert_array_equal(a.select_action(obs), b.select_action(obs))


def test_load_refuses_an_env_that_differs_naming_each_difference(store_factory, tmp_path, tiny_artifact):
    ckpt = _trained(store_factory(), tmp_path, tiny_artifact)
    other_size = franka_shape_meta(["agentview_image"], 96)
    with pytest.raises(PolicyCompatibilityError, match=r"image size of 'agentview_image': .* expects 128x128, .* gives 96x96"):
        load_policy(ckpt, provided=other_size, what="env X")
    with pytest.raises(PolicyCompatibilityError, match=r"camera set: .*\['agentview_image'\].*\['wrist_image'\]"):
        load_policy(ckpt, provided=franka_shape_meta(["wrist_image"], 128))
    fine = franka_shape_meta(["agentview_image", "wrist_image"], 128)  # extra cameras are fine
    assert load_policy(ckpt, provided=fine, convention=CONVENTION, device="cpu").shape_meta.rgb_keys == ["agentview_image"]
    with pytest.raises(ActionConventionError, match="max_translation: recorded 0.02, expected 0.05"):
        load_policy(ckpt, provided=fine, convention=ActionConvention(max_translation=0.05))


def test_bad_checkpoints_get_one_clear_error_each(store_factory, tmp_path, tiny_artifact):
    with pytest.raises(CheckpointError, match="no policy checkpoint at"):
        load_policy(tmp_path / "missing.safetensors")
    ckpt = _trained(store_factory(), tmp_path, tiny_artifact)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(ckpt.read_bytes()[: 4000])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_policy(cut)
    with pytest.raises(CheckpointError, match="not a toto_robot policy checkpoint.*encoder artifact"):
        load_policy(tiny_artifact)

    import safetensors.torch as st

    tensors = st.load_file(str(ckpt))
    body = json.loads(_metadata(ckpt)[METADATA_KEY])
    for change, msg in (({"version": 99}, "version 99 is not supported.*upgrade toto_robot"),
                        ({"policy_class": "nope"}, "unknown policy class 'nope'")):
        bad = tmp_path / "bad.safetensors"
        st.save_file(tensors, str(bad), metadata={**_metadata(ckpt), METADATA_KEY: json.dumps({**body, **change})})
        with pytest.raises(CheckpointError, match=msg):
            load_policy(bad)
    # another encoder artifact than the one it was trained on: refused, naming both hashes
    other = _other_artifact(tmp_path / "other_encoder.safetensors")
    with pytest.raises(CheckpointError, match="trained on encoder .*pass encoder_artifact"):
        load_policy(ckpt, encoder_artifact=str(other), device="cpu")


def test_one_registry_serves_deploy_types_and_checkpoints(tmp_path):
    from hardware.policy_loader import build_policy
    from hardware.simple_policies import TinyTorchConfig, TinyTorchPolicy

    assert {"tiny_torch", "scripted", "robomimic"} <= set(POLICIES.names())
    spec = franka_shape_meta(["agentview_image"], 32)
    path = TinyTorchPolicy(TinyTorchConfig(width=8), spec).save(tmp_path / "tiny.safetensors")
    policy = build_policy({"checkpoint": str(path), "min_latency_ms": 3.0}, spec)
    assert isinstance(policy, TinyTorchPolicy) and policy.config.min_latency_ms == 3.0
    with pytest.raises(ValueError, match="fixed by the checkpoint"):
        build_policy({"checkpoint": str(path), "width": 64}, spec)
    with pytest.raises(PolicyCompatibilityError, match="image size"):
        build_policy({"checkpoint": str(path)}, franka_shape_meta(["agentview_image"], 64))


def _metadata(path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def _other_artifact(path):
    """Same architecture as the `tiny_artifact` fixture, other weights (so another hash)."""
    import torch

    from pretrain.export import export_encoder
    from toto_robot.models.dvae import DVAE, DVAEConfig
    from toto_robot.models.transformer import Transformer, config_for

    torch.manual_seed(1)
    dvae = DVAE(DVAEConfig.named("tiny")).eval()
    transformer = Transformer(config_for("tiny", vocab_size=dvae.cfg.vocab_size, dim=32, n_heads=4, n_layers=2,
                                         max_seq_len=512)).eval()
    export_encoder(dvae, transformer, path, layer=2, pooling=None)
    return path


def test_a_checkpoint_policy_loads_without_envs_or_training_scripts():
    """What the robot computer imports to run a BC checkpoint: no simulator, no pre-training code."""
    code = ("import sys, toto_robot.policy as p; p.POLICIES.get('robomimic'); import hardware.policy_loader; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('envs', 'pretrain', 'mujoco')); "
            "assert not bad, bad")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def test_a_demo_store_of_another_env_is_refused_before_training(store_factory):
    from policies.pipeline import check_store
    from toto_robot.spec import SpecError

    store = store_factory(size=64)
    with pytest.raises(SpecError, match=r"image size of 'agentview_image': demo store .* expects 64x64, the env .* gives 128x128"
                                        r"(.|\n)*demos.out=PATH"):
        check_store(store, franka_shape_meta(["agentview_image", "wrist_image"], 128), None)
    store._group.attrs[ATTR_KEY] = ActionConvention(max_translation=0.05).to_dict()
    with pytest.raises(ActionConventionError, match=r"demo store .* \(max_translation: recorded 0.05, expected 0.02\)"):
        check_store(store, franka_shape_meta(["agentview_image"], 64), CONVENTION)
