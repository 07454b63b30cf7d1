"""Toto pre-training entry point: hydra config -> pretrain.train.loop.train. See `--help`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import hydra
from omegaconf import DictConfig

from pretrain.loader import PackingConfig
from pretrain.train.parallelize import ParallelConfig
from toto_robot.cli import user_errors
from toto_robot.config import as_dataclass
from toto_robot.models.transformer import TransformerConfig


@dataclass
class DataConfig(PackingConfig):
    root: str = ""
    synthetic: bool = False
    synthetic_videos: int = 64
    synthetic_frames: int = 32
    synthetic_images: int = 256


def token_source(data: DataConfig, out_dir: Path, rank: int):
    """The token dataset: real shards at data.root, or synthetic ones written once into out_dir."""
    import torch.distributed as dist

    from pretrain.data.token_shards import TokenDataset

    if data.synthetic:
        from pretrain.synthetic import write_synthetic_shards

        root = out_dir / "synthetic_tokens"
        if rank == 0 and not root.is_dir():
            write_synthetic_shards(str(root), data.synthetic_videos, data.synthetic_frames, data.synthetic_images,
                                   seed=data.seed)
        if dist.is_initialized():
            dist.barrier()
        return TokenDataset(str(root))
    if not data.root:
        raise ValueError("set data.root=<token shard folder or URL> (or data.synthetic=true for a smoke run)")
    return TokenDataset(data.root)


@hydra.main(config_path="conf", config_name="pretrain", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    from pretrain.train.loop import TrainConfig, init_distributed, train

    model = as_dataclass(TransformerConfig, cfg.model)
    train_cfg = as_dataclass(TrainConfig, cfg.train)
    parallel = as_dataclass(ParallelConfig, cfg.parallel)
    data = as_dataclass(DataConfig, cfg.data)
    rank, _, _ = init_distributed(train_cfg.device)
    out_dir = Path(cfg.out_dir)
    source = token_source(data, out_dir, rank)
    packing = PackingConfig(**{k: getattr(data, k) for k in PackingConfig.__dataclass_fields__})
    history = train(model, train_cfg, packing, parallel, source, out_dir)
    if rank == 0 and history:
        logging.getLogger("pretrain").info("done: step %d loss %.4f", history[-1]["step"], history[-1]["loss"])


if __name__ == "__main__":
    main()
