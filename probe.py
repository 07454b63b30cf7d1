"""Probe frozen Toto features layer by layer with attention- and average-pool heads (see --help)."""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from pretrain.probe.run import ProbeConfig, run_probe
from toto_robot.cli import user_errors
from toto_robot.config import as_dataclass


@hydra.main(config_path="conf", config_name="probe", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    summary = run_probe(as_dataclass(ProbeConfig, cfg), Path(HydraConfig.get().runtime.output_dir))
    print(Path(summary["markdown"]).read_text())
    print(f"best: {summary['best']}; plot {summary['plot']}")


if __name__ == "__main__":
    main()
