"""The default encoder, end to end: the exact commands that built `toto_robot/assets/default_encoder.safetensors`.

Each stage is one of the project's own entry points with a committed preset (conf/preset/,
conf/build_corpus.yaml); each resumes when rerun, so rerunning the pipeline continues where it
stopped. The model card lists these same commands (a test keeps them equal).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Stage:
    name: str
    argv: tuple[str, ...]  # script and its overrides, run from the repository root

    @property
    def command(self) -> str:
        return "python " + " ".join(self.argv)


STAGES = (
    Stage("corpus", ("build_corpus.py", "sim.n_episodes=300")),
    # 2,400 more scenes, 12 steps each (training seeds after the first corpus's): the transformer must see many cubes.
    Stage("corpus short", ("build_corpus.py", "out=data/corpus_short", "sim.n_episodes=2400", "sim.env.episode_len=12",
                           "sim.seed_offset=1000", "sim.video_episodes=0")),
    # 1,600 short held-out scenes (8 steps each): the probes need many cube placements, not long episodes.
    Stage("probe data", ("collect_demos.py", "motion=mixed", "keep_failures=true", "seed_split=eval", "n_episodes=1600",
                         "env.episode_len=8", "out=data/probe/probe_scenes.zarr")),
    Stage("tokenizer", ("train_tokenizer.py", "preset=default_tokenizer")),
    Stage("tokens", ("tokenize_data.py", "preset=default_tokens")),
    Stage("transformer", ("pretrain.py", "preset=default_encoder")),  # one GPU; --cpu: preset=default_encoder_cpu
    # Probes sweep the checkpoints at full depth; the exported layer (preset default_export) is chosen from them.
    Stage("probe agentview", ("probe.py", "preset=default_probe_agentview")),
    Stage("probe agentview+wrist", ("probe.py", "preset=default_probe_agentview_wrist")),
    Stage("export", ("export_encoder.py", "preset=default_export")),
)
# Probe tables and plots committed with the artifact (run dir of the probe presets -> docs/results/).
PUBLISHED = {"outputs/probe/default_encoder_agentview": "docs/results/default_encoder_probe_agentview",
             "outputs/probe/default_encoder_agentview_wrist": "docs/results/default_encoder_probe_agentview_wrist"}


CPU_PRESET = "preset=default_encoder_cpu"  # the same transformer trained on a CPU (~3,600x fewer tokens)


def on_cpu(stages: list[Stage]) -> list[Stage]:
    """The stages with the GPU pre-training preset swapped for its CPU twin."""
    return [Stage(s.name, tuple(CPU_PRESET if a == "preset=default_encoder" else a for a in s.argv)) for s in stages]


def select(first: str | None, last: str | None) -> list[Stage]:
    names = [s.name for s in STAGES]
    for n in (first, last):
        if n is not None and n not in names:
            raise ValueError(f"unknown stage {n!r}; stages: {names}")
    lo = names.index(first) if first else 0
    hi = names.index(last) + 1 if last else len(names)
    return list(STAGES[lo:hi])


def check(stage: Stage) -> None:
    """Compose the stage's hydra config without running it (`--cfg job`): unknown keys or presets fail."""
    run = subprocess.run([sys.executable, *stage.argv, "--cfg", "job"], cwd=ROOT, capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(f"stage {stage.name!r} does not parse: {stage.command}\n{run.stderr.strip()[-2000:]}")


def run(stages: list[Stage], dry_run: bool = False) -> None:
    for stage in stages:
        print(f"== {stage.name}: {stage.command}", flush=True)
        if dry_run:
            check(stage)
            continue
        subprocess.run([sys.executable, *stage.argv], cwd=ROOT, check=True)
    if not dry_run and any(s.argv[0] == "probe.py" for s in stages):
        publish_probe_results()


def publish_probe_results() -> None:
    """Copy each probe run's results.csv/.md and plot into docs/results/ for the commit."""
    for run_dir, dest in PUBLISHED.items():
        src, out = ROOT / run_dir, ROOT / dest
        out.mkdir(parents=True, exist_ok=True)
        for name in ("results.csv", "results.md", "score_vs_layer.png"):
            if (src / name).is_file():
                shutil.copyfile(src / name, out / name)
