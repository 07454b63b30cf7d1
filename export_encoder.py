"""Export a frozen Toto encoder artifact from tokenizer + transformer checkpoints (see --help)."""

import hydra
from omegaconf import DictConfig

from pretrain.export import ExportConfig, export_from_checkpoints
from toto_robot.cli import user_errors
from toto_robot.config import as_dataclass


@hydra.main(config_path="conf", config_name="export_encoder", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    c = as_dataclass(ExportConfig, cfg)
    encoder = export_from_checkpoints(c.tokenizer_checkpoint, c.transformer_checkpoint, c.out, c.layer, c.pooling)
    print(f"wrote {c.out}: layer {encoder.layer}, features {encoder.feature_shape()} per frame, "
          f"pooled {encoder.pool_dim}, encoder_hash {encoder.encoder_hash}")


if __name__ == "__main__":
    main()
