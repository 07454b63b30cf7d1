"""Tokenize images, videos and episode stores into uint16 token shards (see `python tokenize_data.py --help`)."""

import logging
import os

import hydra
from omegaconf import DictConfig

from pretrain.data.tokenize import TokenizeDataConfig, tokenize
from pretrain.tokenizer.checkpoint import load_dvae
from toto_robot.cli import user_errors
from toto_robot.config import as_dataclass

log = logging.getLogger("tokenize_data")


@hydra.main(config_path="conf", config_name="tokenize_data", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    c = as_dataclass(TokenizeDataConfig, cfg)
    if not c.sources:
        raise SystemExit("tokenize_data: no sources configured (sources=[{kind: images, path: ...}])")
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    stats = tokenize(c.sources, load_dvae(c.tokenizer_checkpoint), c.tokenize, rank=rank, world=world)
    log.info("rank %d/%d: %d files (%d skipped), %d clips, %d frames -> %s", rank, world, stats["files"],
             len(stats["skipped"]), stats["clips"], stats["frames"], c.tokenize.out)
    for f in stats["skipped"]:
        log.warning("skipped (undecodable): %s", f)


if __name__ == "__main__":
    main()
