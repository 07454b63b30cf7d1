"""Build the default encoder's pre-training corpus offline (see `python build_corpus.py --help`)."""

from dataclasses import dataclass, field

import hydra
from omegaconf import DictConfig

from envs.collect import CollectConfig, collect_demos
from pretrain.data.corpus import NaturalMediaConfig, build_natural_media
from toto_robot.cli import user_errors
from toto_robot.config import as_dataclass


@dataclass
class CorpusConfig:
    """conf/build_corpus.yaml: sim video (collect_demos options) and packaged natural media."""

    out: str = "data/corpus"
    sim: CollectConfig = field(default_factory=CollectConfig)
    natural: NaturalMediaConfig = field(default_factory=NaturalMediaConfig)


@hydra.main(config_path="conf", config_name="build_corpus", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    c = as_dataclass(CorpusConfig, cfg)
    natural = build_natural_media(c.natural, f"{c.out}/natural")
    print(f"natural media: {natural['crops']} crops of {natural['photos']} photos, {natural['clips']} clips")
    sim = collect_demos(c.sim)
    print(f"sim video: {sim['n_episodes']} episodes in {sim['out']} ({sim['n_new']} new, {sim['env_steps']} steps, "
          f"{sim['wall_s']:.0f} s)" + (" (interrupted; rerun to resume)" if sim["interrupted"] else ""))


if __name__ == "__main__":
    main()
