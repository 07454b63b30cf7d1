"""Evaluate a policy checkpoint (or the scripted expert) on held-out sim seeds. See --help."""

import hydra
from omegaconf import DictConfig

from toto_robot.config import as_dataclass


@hydra.main(config_path="conf", config_name="eval_policy", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from policies.eval_job import EvalPolicyConfig, run

    m = run(as_dataclass(EvalPolicyConfig, cfg))
    lo, hi = m["success_ci95"]
    print(f"{cfg.checkpoint}: success {m['success_rate']:.1%} ({m['successes']}/{m['n_episodes']}, 95% CI "
          f"{lo:.0%}-{hi:.0%}), mean episode length {m['mean_episode_length']:.1f}; {cfg.out_dir}/metrics.json")


if __name__ == "__main__":
    main()
