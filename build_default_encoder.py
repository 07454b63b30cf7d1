"""Rebuild the shipped default Toto encoder on a CPU, end to end (see `--help`)."""

import argparse

from pretrain.pipeline import STAGES, run, select


def main() -> None:
    p = argparse.ArgumentParser(
        description="Corpus -> tokenizer -> tokens -> transformer pre-training -> export -> probes: the exact "
        "commands that built toto_robot/assets/default_encoder.safetensors (about an hour on 2 idle CPU cores; "
        "each stage resumes when rerun). Stages: " + ", ".join(s.name for s in STAGES) + ".",
        epilog="After a rebuild, set toto_robot.encoder.DEFAULT_ENCODER_HASH to the printed encoder_hash.",
    )
    p.add_argument("--dry-run", action="store_true", help="print each command and check that its config composes")
    p.add_argument("--from", dest="first", help="first stage to run (by name)")
    p.add_argument("--to", dest="last", help="last stage to run (by name)")
    args = p.parse_args()
    run(select(args.first, args.last), dry_run=args.dry_run)


if __name__ == "__main__":
    main()
