"""Deploy a policy on a Franka (or franky-sim): `python deploy_policy.py checkpoint=... robot.host=...`.

`--dry-run` runs cameras, state, policy and safety filter but sends no motion.
"""

import logging
import sys

import hydra
from omegaconf import DictConfig

from hardware.deploy_app import deploy
from toto_robot.cli import user_errors

if "--dry-run" in sys.argv:  # hydra has no flags of its own for this: map it to an override
    sys.argv.remove("--dry-run")
    sys.argv.append("runner.dry_run=true")


@hydra.main(config_path="conf", config_name="deploy_policy", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    logging.getLogger("franky_sim").setLevel(logging.WARNING)
    results = deploy(cfg)
    if results and results[-1].stop_reason not in ("max_steps", "done"):
        sys.exit(f"stopped: {results[-1].stop_reason}: {results[-1].message}")


if __name__ == "__main__":
    main()
