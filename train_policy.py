"""The main job: demos -> BC on the frozen Toto encoder -> held-out sim evaluation. See --help."""

import hydra
from omegaconf import DictConfig

from toto_robot.cli import user_errors
from toto_robot.config import as_dataclass


@hydra.main(config_path="conf", config_name="train_policy", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    from policies.pipeline import TrainPolicyConfig, run

    metrics = run(as_dataclass(TrainPolicyConfig, cfg))
    print(f"\n{metrics['table']}\n\nrun directory: {cfg.out_dir} (policy.safetensors, metrics.json, report.md, curves.png, videos/)")


if __name__ == "__main__":
    main()
