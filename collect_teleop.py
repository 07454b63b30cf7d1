"""Teleoperated demonstrations: `python collect_teleop.py robot.host=... episodes=50`."""

import logging

import hydra
from omegaconf import DictConfig

from hardware.deploy_app import collect_teleop
from toto_robot.cli import user_errors


@hydra.main(config_path="conf", config_name="collect_teleop", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    logging.getLogger("franky_sim").setLevel(logging.WARNING)
    kept = collect_teleop(cfg)
    print(f"kept {kept} episode(s) in {cfg.record.store}")


if __name__ == "__main__":
    main()
