"""collect_demos: the same command stores the same episodes in seed order; workers die with their parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from envs.collect import SEED_KEY, CollectConfig, collect_demos
from toto_robot.config import as_dataclass
from toto_robot.episode_store import EpisodeStore, EpisodeStoreError

ROOT = Path(__file__).resolve().parents[2]


def _cfg(out: Path, n: int, workers: int) -> CollectConfig:
    return as_dataclass(CollectConfig, {"n_episodes": n, "out": str(out), "workers": workers, "progress": False,
                                        "env": {"render_size": 32, "render_mode": "fast"}})


def _seeds(store: EpisodeStore) -> list[int]:
    return [int(store.get_episode(i, [SEED_KEY])[SEED_KEY][0, 0]) for i in range(store.n_episodes)]


def test_same_command_same_store_in_seed_order(tmp_path):
    # Expert episodes end at success, so their lengths (and the workers' finishing order) vary.
    a = collect_demos(_cfg(tmp_path / "a.zarr", 6, workers=3))
    collect_demos(_cfg(tmp_path / "b.zarr", 6, workers=2))
    sa, sb = EpisodeStore.open(tmp_path / "a.zarr"), EpisodeStore.open(tmp_path / "b.zarr")
    assert _seeds(sa) == _seeds(sb) == sorted(_seeds(sa))
    assert a["attempts"] - a["failures"] == 6 and _seeds(sa)[-1] == a["attempts"] - 1  # the first 6 successes
    for i in range(6):
        ea, eb = sa.get_episode(i), sb.get_episode(i)
        for k in ea:
            np.testing.assert_array_equal(ea[k], eb[k], err_msg=f"episode {i} {k}")


def _children(pid: int) -> set[int]:
    kids = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            kids |= {int(x) for x in f.read().split()}
    return kids


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def test_workers_exit_when_the_collector_is_killed(tmp_path):
    out = tmp_path / "demos.zarr"
    proc = subprocess.Popen([sys.executable, "collect_demos.py", f"out={out}", "n_episodes=200", "workers=2",
                             "progress=false", "env.render_size=32", "env.render_mode=fast",
                             f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    n = 0
    while n < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            n = EpisodeStore.open(out).n_episodes
        except EpisodeStoreError:
            pass
    assert n >= 1, "collection did not start"
    kids = _children(proc.pid)  # 2 workers and multiprocessing's resource tracker
    assert len(kids) >= 2
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    deadline = time.time() + 15
    while time.time() < deadline and any(_running(k) for k in kids):
        time.sleep(0.2)
    assert not [k for k in kids if _running(k)], "processes outlived the killed collector"
    store = EpisodeStore.open(out)
    assert store.n_steps == store.episode_ends[-1]
