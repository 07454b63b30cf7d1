"""The default encoder shipped with the package: loads offline (no network, no GPU, no `pretrain`),
has the documented config and hash, gives features of the documented shape; its model card's
reproduce commands are the pipeline's and they parse."""

import os
import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pretrain.pipeline import STAGES, on_cpu
from toto_robot.encoder import DEFAULT_ENCODER, DEFAULT_ENCODER_HASH, EncoderArtifactError, load_encoder

ROOT = Path(__file__).resolve().parents[2]
CARD = DEFAULT_ENCODER.parent / "MODEL_CARD.md"
# The documented configuration (MODEL_CARD.md "Architecture").
DOCUMENTED = {"vocab_size": 1024, "dim": 128, "layer": 2, "source_layers": 4, "n_heads": 4, "pool": "attention"}

OFFLINE_LOAD = r"""
import socket, sys
sys.modules["pretrain"] = None  # importing the training package would fail
def no_network(*a, **k):
    raise OSError("network access during load_encoder()")
socket.socket.connect = socket.socket.connect_ex = no_network
socket.create_connection = socket.getaddrinfo = no_network
import numpy as np, torch
import toto_robot
enc = toto_robot.load_encoder()
frames = np.random.default_rng(0).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
feats, pooled = enc(frames), enc.encode_pooled(frames)
print(enc.encoder_hash, list(feats.shape), list(pooled.shape), enc.device, bool(torch.isfinite(feats).all()))
"""


def test_default_encoder_loads_offline_without_training_code_or_gpu():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, "-c", OFFLINE_LOAD], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    digest, feats, pooled, device, finite = run.stdout.replace(", ", ",").split()
    assert digest == DEFAULT_ENCODER_HASH
    d = DOCUMENTED["dim"]
    assert feats == f"[2,256,{d}]" and pooled == f"[2,{d}]"
    assert device == "cpu" and finite == "True"


def test_default_encoder_has_the_documented_config_hash_size_and_mode():
    enc = load_encoder()
    cfg = enc.config
    assert enc.encoder_hash == DEFAULT_ENCODER_HASH and len(DEFAULT_ENCODER_HASH) == 64
    assert cfg["tokenizer"]["vocab_size"] == cfg["transformer"]["vocab_size"] == DOCUMENTED["vocab_size"]
    assert (enc.feature_dim, enc.layer, cfg["transformer"]["n_heads"]) == (DOCUMENTED["dim"], DOCUMENTED["layer"], DOCUMENTED["n_heads"])
    assert cfg["provenance"]["source_layers"] == DOCUMENTED["source_layers"]
    assert cfg["pooling"]["kind"] == DOCUMENTED["pool"] and enc.pool_dim == DOCUMENTED["dim"]
    assert (enc.image_size, enc.n_tokens_per_frame, enc.feature_shape(2)) == (128, 256, (512, DOCUMENTED["dim"]))
    info = DEFAULT_ENCODER.stat()
    assert info.st_size < 50 * 2**20 and stat.S_IMODE(info.st_mode) & 0o444 == 0o444  # readable by every user (any umask)
    card = CARD.read_text()
    assert DEFAULT_ENCODER_HASH in card and f"{info.st_size / 2**20:.1f} MB" in card


def test_a_replaced_default_encoder_is_refused(artifact, monkeypatch):
    import toto_robot.encoder as encoder_module

    monkeypatch.setattr(encoder_module, "DEFAULT_ENCODER", artifact)
    with pytest.raises(EncoderArtifactError, match="the shipped default encoder was replaced"):
        load_encoder()


def test_the_wheel_carries_the_artifact_and_its_card():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["toto_robot"]
    assert {"assets/default_encoder.safetensors", "assets/MODEL_CARD.md"} <= set(data)


def reproduce_commands() -> list[str]:
    block = CARD.read_text().split("## Reproduce", 1)[1].split("```", 2)[1]
    return [line.strip() for line in block.splitlines() if line.strip().startswith("python ")]


def test_model_card_commands_are_the_pipelines():
    assert reproduce_commands() == [s.command for s in STAGES]


def test_every_reproduce_command_exists_and_parses():
    """Each stage's script names its hydra config, and the config composes with the stage's overrides (what
    `build_default_encoder.py --dry-run` checks with `--cfg job`, without starting a Python per stage)."""
    from hydra import compose, initialize_config_dir

    for stage in dict.fromkeys([*STAGES, *on_cpu(list(STAGES))]):  # --cpu swaps the pre-training preset
        script, *overrides = stage.argv
        source = (ROOT / script).read_text()
        config_name = re.search(r'@hydra\.main\(config_path="conf", config_name="(\w+)"', source)
        assert config_name, f"{script}: no @hydra.main on conf/"
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            compose(config_name.group(1), overrides)


def test_dry_run_cli_checks_a_stage_by_running_its_script():
    """The dry run as a user runs it, on the first stage (build_corpus.py: the one script no other test starts)."""
    run = subprocess.run([sys.executable, "build_default_encoder.py", "--dry-run", "--to", STAGES[0].name], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert re.findall(r"^== (.+?): ", run.stdout, re.M) == [STAGES[0].name]
    helptext = subprocess.run([sys.executable, "build_default_encoder.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert helptext.returncode == 0 and "--dry-run" in helptext.stdout
