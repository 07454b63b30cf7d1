"""Collect cube_pick demonstrations (or sim videos) into a zarr episode store. See --help."""

import hydra
from omegaconf import DictConfig

from toto_robot.cli import user_errors
from toto_robot.config import as_dataclass


@hydra.main(config_path="conf", config_name="collect_demos", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    from envs.collect import CollectConfig, collect_demos

    summary = collect_demos(as_dataclass(CollectConfig, cfg))
    print(
        f"stored {summary['n_episodes']} episodes in {summary['out']} ({summary['n_new']} new); "
        f"attempts {summary['attempts']}, success rate {summary['success_rate']:.1%}, "
        f"{summary['env_steps']} steps in {summary['wall_s']:.1f} s = {summary['frames_per_s']:.0f} frames/s"
        + (" (interrupted; the store is valid, rerun to resume)" if summary["interrupted"] else "")
    )


if __name__ == "__main__":
    main()
