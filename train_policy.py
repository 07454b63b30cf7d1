"""The main job: demos (collected if missing) -> policy -> sim evaluation -> report. See --help."""

import hydra
from omegaconf import DictConfig

from toto_robot.cli import user_errors
from toto_robot.config import as_dataclass


@hydra.main(config_path="conf", config_name="train_policy", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    from policies.pipeline import TrainPolicyConfig, run

    report = run(as_dataclass(TrainPolicyConfig, cfg))
    ev = report["eval"]
    print(
        f"policy {report['policy']['name']}: success {ev['success_rate']:.1%} over {ev['n_episodes']} "
        f"held-out episodes ({ev['frames_per_s']:.0f} control steps/s); demos {report['demos']['n_episodes']} "
        f"episodes in {report['demos']['path']}; report in {cfg.out_dir}"
    )


if __name__ == "__main__":
    main()
