"""Preflight: `python doctor.py [robot_host=172.16.0.2] [require_cameras=2]`; exit 1 on any FAIL."""

import logging
import sys

import hydra
from omegaconf import DictConfig

from hardware.doctor import DoctorConfig, run_checks
from toto_robot.cli import user_errors
from toto_robot.config import as_dataclass


@hydra.main(config_path="conf", config_name="doctor", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    logging.getLogger("franky_sim").setLevel(logging.WARNING)
    checks = run_checks(as_dataclass(DoctorConfig, cfg))
    failed = [c for c in checks if c.status == "FAIL"]
    print(f"{len(checks) - len(failed)}/{len(checks)} items without failure")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
