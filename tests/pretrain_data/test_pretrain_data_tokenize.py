"""Sources -> tokens: image folders, PyAV videos, episode stores; corrupt files skipped; resume;
rank split (one rank through the hydra entry script, as torchrun would run it)."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from pretrain.data.frames import ShuffledFrames
from pretrain.data.sources import SourceConfig, SourceError, build_source
from pretrain.data.token_shards import TokenDataset, TokenShardWriter
from pretrain.data.tokenize import TokenizeConfig, tokenize
from pretrain.tokenizer.checkpoint import save_checkpoint
from toto_robot.episode_store import EpisodeStore
from toto_robot.models.dvae import DVAE, DVAEConfig
from toto_robot.preprocess import prepare_image
from toto_robot.spec import ArraySpec, ShapeMeta

ROOT = Path(__file__).resolve().parents[2]
BAD = {"bad.jpg", "garbage.mp4", "truncated.mp4"}


def _write_video(path: Path, n: int, h: int = 120, w: int = 160, fps: int = 10) -> None:
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            frame = np.full((h, w, 3), 40, np.uint8)
            frame[:, (8 * i) % w : (8 * i) % w + 20] = rng.integers(0, 255, 3)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    (root / "images" / "a").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(root / "images" / "a" / "x.png")
    Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(root / "images" / "y.JPG")
    (root / "images" / "bad.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (root / "images" / "notes.txt").write_text("ignored")
    (root / "videos").mkdir()
    _write_video(root / "videos" / "ok.mp4", 12)
    data = (root / "videos" / "ok.mp4").read_bytes()
    (root / "videos" / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (root / "videos" / "garbage.mp4").write_bytes(rng.integers(0, 255, 5000, dtype=np.uint8).tobytes())
    meta = ShapeMeta(obs={"agentview_image": ArraySpec((128, 128, 3), "uint8", "rgb"),
                          "wrist_image": ArraySpec((128, 128, 3), "uint8", "rgb"),
                          "joint_pos": ArraySpec((7,), "float32")})
    store = EpisodeStore.create(root / "episodes" / "sim.zarr", meta, attrs={"control_hz": 10.0})
    for t in (4, 3):
        store.add_episode({"agentview_image": rng.integers(0, 255, (t, 128, 128, 3), dtype=np.uint8),
                           "wrist_image": rng.integers(0, 255, (t, 128, 128, 3), dtype=np.uint8),
                           "joint_pos": np.zeros((t, 7), np.float32), "action": np.zeros((t, 7), np.float32)})
    torch.manual_seed(0)
    model = DVAE(DVAEConfig.named("tiny")).eval()
    save_checkpoint(root / "tok.pt", model, None, step=0)
    sources = [SourceConfig("images", str(root / "images")), SourceConfig("videos", str(root / "videos")),
               SourceConfig("episodes", str(root / "episodes"))]
    return root, sources, model


def test_sources_yield_prepared_frames(media):
    root, sources, _ = media
    imgs = build_source(sources[0])
    assert [Path(f).name for f in imgs.files()] == ["x.png", "bad.jpg", "y.JPG"]
    (clip,) = imgs.clips(str(root / "images" / "a" / "x.png"))
    (frame,) = list(clip.frames)
    src = np.asarray(Image.open(root / "images" / "a" / "x.png"))
    np.testing.assert_array_equal(frame, prepare_image(src, 128))
    with pytest.raises(SourceError, match="bad.jpg"):
        list(imgs.clips(str(root / "images" / "bad.jpg")))
    vid = build_source(SourceConfig("videos", str(root / "videos"), fps=5))
    (clip,) = vid.clips(str(root / "videos" / "ok.mp4"))
    frames = list(clip.frames)
    assert clip.fps == 5.0 and len(frames) == 6 and frames[0].shape == (128, 128, 3)
    with pytest.raises(SourceError, match="garbage.mp4"):
        list(next(vid.clips(str(root / "videos" / "garbage.mp4"))).frames)
    # A stream cut mid-file (no index needed in mkv) keeps the frames that decode.
    _write_video(root / "cut.mkv", 30)
    data = (root / "cut.mkv").read_bytes()
    (root / "cut.mkv").write_bytes(data[: len(data) // 2])
    (clip,) = build_source(SourceConfig("videos", str(root / "cut.mkv"))).clips(str(root / "cut.mkv"))
    assert 0 < len(list(clip.frames)) < 30
    (root / "cut.mkv").unlink()
    eps = build_source(sources[2])
    clips = list(eps.clips(eps.files()[0]))
    assert [c.clip_id for c in clips] == ["ep00000/agentview_image", "ep00000/wrist_image",
                                          "ep00001/agentview_image", "ep00001/wrist_image"]
    assert [len(list(c.frames)) for c in clips] == [4, 4, 3, 3] and clips[0].fps == 10.0
    with pytest.raises(KeyError, match="unknown frame source 'audio'"):
        build_source(SourceConfig("audio", str(root)))


def test_shuffled_frames_skip_bad_files(media, caplog):
    _, sources, _ = media
    with caplog.at_level(logging.WARNING):
        it = iter(ShuffledFrames(sources, buffer=8, seed=0))
        frames = [next(it) for _ in range(40)]
    assert all(f.shape == (128, 128, 3) and f.dtype == np.uint8 for f in frames)
    assert "bad.jpg" in caplog.text and "garbage.mp4" in caplog.text


@pytest.mark.parametrize("workers", [0, 2])
def test_tokenize_all_sources_skips_corrupt_and_resumes(media, tmp_path, caplog, workers):
    root, sources, model = media
    cfg = TokenizeConfig(out=str(tmp_path / "tok"), batch_size=5, workers=workers, frames_per_shard=8, device="cpu")
    with caplog.at_level(logging.WARNING):
        stats = tokenize(sources, model, cfg)
    assert {Path(f).name for f in stats["skipped"]} == BAD
    assert stats["files"] == 7 and stats["clips"] == 2 + 1 + 4
    ds = TokenDataset(cfg.out)
    by_id = {(Path(c.source).name, c.clip_id): i for i, c in enumerate(ds.clips)}
    assert len(by_id) == len(ds.clips) == 7
    assert ds.n_frames == 2 + 12 + 2 * (4 + 3)
    img = ds.clips[by_id[("x.png", "0")]]
    assert (img.kind, img.n_frames, img.fps) == ("image", 1, None)
    vid = ds.clips[by_id[("ok.mp4", "0")]]
    assert (vid.kind, vid.n_frames, vid.fps) == ("video", 12, 10.0)
    # Tokens are the dVAE codes of the prepared frames (batching may flip a rare near-tie argmax).
    ep = EpisodeStore.open(root / "episodes" / "sim.zarr").get_episode(1)["wrist_image"]
    want = model.encode(torch.from_numpy(ep)).reshape(3, 256).numpy()
    got = ds.read_frames(by_id[("sim.zarr", "ep00001/wrist_image")])
    assert (got == want).mean() > 0.99

    # Resume after a crash that lost the last shard's commit: only its files are redone.
    shards = sorted(p for p in os.listdir(cfg.out) if p.startswith("shard") and p.endswith(".json"))
    os.remove(Path(cfg.out) / shards[-1])
    again = tokenize(sources, model, cfg)
    assert 0 < again["files"] < stats["files"]
    ds2 = TokenDataset(cfg.out)
    assert sorted((c.source, c.clip_id, c.n_frames) for c in ds2.clips) == sorted(
        (c.source, c.clip_id, c.n_frames) for c in ds.clips)
    assert tokenize(sources, model, cfg)["files"] == 0  # everything done


def test_rank_split_through_entry_script(media, tmp_path):
    root, sources, model = media
    out = tmp_path / "tok"
    cfg = TokenizeConfig(out=str(out), batch_size=16, workers=0, device="cpu")
    s0 = tokenize(sources, model, cfg, rank=0, world=2)
    src_arg = "[" + ",".join(f"{{kind: {s.kind}, path: '{s.path}'}}" for s in sources) + "]"
    env = {**os.environ, "RANK": "1", "WORLD_SIZE": "2"}
    r = subprocess.run([sys.executable, "tokenize_data.py", f"tokenizer_checkpoint={root / 'tok.pt'}",
                        f"tokenize.out={out}", "tokenize.workers=0", "tokenize.device=cpu", f"sources={src_arg}",
                        f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    vocab = model.cfg.vocab_size
    done0, done1 = (TokenShardWriter(str(out), rank=r, vocab_size=vocab).done for r in (0, 1))
    assert done0 and done1 and not done0 & done1 and len(done0 | done1) == 7  # every file, by one rank
    assert s0["files"] == len(done0)
    ds = TokenDataset(str(out))
    assert sorted(Path(c.source).name for c in ds.clips if c.kind == "image") == ["x.png", "y.JPG"]
    assert len({c.source for c in ds.clips}) == 4  # every decodable file, once


def test_train_tokenizer_on_file_sources(media, tmp_path):
    from pretrain.tokenizer.objective import AnnealConfig
    from pretrain.tokenizer.train import DataConfig, TrainConfig, train_tokenizer

    _, sources, _ = media
    cfg = TrainConfig(steps=2, batch_size=4, eval_every=2, ckpt_every=2, eval_images=8, grid_images=4, device="cpu")
    ev = train_tokenizer(DVAEConfig.named("tiny"), cfg, AnnealConfig(), DataConfig(sources=sources, workers=0,
                         shuffle_buffer=8), tmp_path)
    assert ev["psnr"] > 0 and (tmp_path / "checkpoints" / "last.pt").is_file()


def test_sources_are_checked_before_anything_is_written(media, tmp_path):
    _, sources, model = media
    out = tmp_path / "tok"
    cfg = TokenizeConfig(out=str(out), batch_size=16, workers=0, device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = [*sources, SourceConfig("images", str(empty)), SourceConfig("videos", str(tmp_path / "missing"))]
    with pytest.raises(SourceError, match=f"images source {empty} matches no files.*{tmp_path / 'missing'} does not exist"):
        tokenize(bad, model, cfg)
    assert not out.exists()  # no output folder for a job that cannot run


def test_shards_record_the_tokenizer_vocabulary(media, tmp_path):
    _, sources, model = media
    out = tmp_path / "tok"
    tokenize(sources[:1], model, TokenizeConfig(out=str(out), batch_size=16, workers=0, device="cpu"))
    assert TokenDataset(str(out)).vocab_size == model.cfg.vocab_size == 512
    with pytest.raises(ValueError, match="holds tokens of a 512-code tokenizer; this one has 8192 codes"):
        TokenShardWriter(str(out), rank=1, vocab_size=8192)
