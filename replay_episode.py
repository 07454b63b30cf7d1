"""Replay a stored episode online (through the runner) or offline (obs -> policy vs recorded actions)."""

import logging

import hydra
from omegaconf import DictConfig

from hardware.deploy_app import replay_episode
from toto_robot.cli import user_errors


@hydra.main(config_path="conf", config_name="replay_episode", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    logging.getLogger("franky_sim").setLevel(logging.WARNING)
    replay_episode(cfg)


if __name__ == "__main__":
    main()
