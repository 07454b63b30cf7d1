"""Rebuild the shipped default Toto encoder end to end (see `--help`)."""

import argparse

from pretrain.pipeline import STAGES, on_cpu, run, select


def main() -> None:
    p = argparse.ArgumentParser(
        description="Corpus -> tokenizer -> tokens -> transformer pre-training -> export -> probes: the exact "
        "commands that built toto_robot/assets/default_encoder.safetensors (each stage resumes when rerun). The "
        "transformer stage needs one GPU (~6 min on an H200); the rest runs on a CPU (~1.5 h on 2 cores, mostly the "
        "tokenizer and the sim corpus). Stages: " + ", ".join(s.name for s in STAGES) + ".",
        epilog="After a rebuild, set toto_robot.encoder.DEFAULT_ENCODER_HASH to the printed encoder_hash.",
    )
    p.add_argument("--dry-run", action="store_true", help="print each command and check that its config composes")
    p.add_argument("--from", dest="first", help="first stage to run (by name)")
    p.add_argument("--to", dest="last", help="last stage to run (by name)")
    p.add_argument("--cpu", action="store_true",
                   help="pre-train on the CPU (preset=default_encoder_cpu: ~20 min, ~3,600x fewer tokens, a weaker encoder)")
    args = p.parse_args()
    stages = select(args.first, args.last)
    run(on_cpu(stages) if args.cpu else stages, dry_run=args.dry_run)


if __name__ == "__main__":
    main()
