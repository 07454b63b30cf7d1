"""Sample-efficiency study: success vs number of demos per encoder, over seeds. See --help."""

import hydra
from omegaconf import DictConfig

from toto_robot.config import as_dataclass


@hydra.main(config_path="conf", config_name="study_sample_efficiency", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from policies.study import StudyConfig, run

    result = run(as_dataclass(StudyConfig, cfg))
    print(f"{len(result['rows'])} cells in {result['csv']}; plot {result['plot']}")


if __name__ == "__main__":
    main()
