"""Train the dVAE tokenizer (see `python train_tokenizer.py --help`)."""

import logging

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from pretrain.tokenizer.objective import AnnealConfig
from pretrain.tokenizer.train import DataConfig, TrainConfig, train_tokenizer
from toto_robot.cli import user_errors
from toto_robot.config import as_dataclass
from toto_robot.models.dvae import DVAEConfig

log = logging.getLogger("train_tokenizer")


@hydra.main(config_path="conf", config_name="train_tokenizer", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    metrics = train_tokenizer(
        as_dataclass(DVAEConfig, cfg.tokenizer),
        as_dataclass(TrainConfig, cfg.train),
        as_dataclass(AnnealConfig, cfg.anneal),
        as_dataclass(DataConfig, cfg.data),
        HydraConfig.get().runtime.output_dir,
        run_config=OmegaConf.to_container(cfg, resolve=True),
    )
    log.info("final eval: %s", metrics)


if __name__ == "__main__":
    main()
