"""Episode store under kill -9: what a plain zarr reader sees, at random moments and inside the commit.

The guarantee (toto_robot/episode_store.py docstring): after a crash, `len(data/<key>) ==
episode_ends[-1]` for a plain zarr reader and committed rows are unchanged, whatever the moment;
EpisodeStore opens whatever a crash left, read-only, and cleans it up when opened for appending.
"""

import multiprocessing as mp
import os
import signal

import numpy as np
import pytest
import zarr

from toto_robot.episode_store import EpisodeStore
from toto_robot.spec import ArraySpec, ShapeMeta

SM = ShapeMeta(
    obs={
        "agentview_image": ArraySpec((32, 32, 3), "uint8", "rgb"),
        "eef_pos": ArraySpec((3,), "float32"),
    }
)
EXTRAS = {"seed": ArraySpec((1,), "int64", "meta")}
KEYS = [*SM.data_spec(), *EXTRAS]
# fork: a writer starts in milliseconds (zarr resets its event loop in a forked child); Linux CI.
CTX = mp.get_context("fork")


def make_episode(i: int) -> dict[str, np.ndarray]:
    """Episode i of the store, the same every time it is made (3-14 steps)."""
    rng = np.random.default_rng(i)
    n = 3 + i % 12
    return {
        "agentview_image": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
        "eef_pos": rng.normal(size=(n, 3)).astype(np.float32),
        "action": rng.uniform(-1, 1, (n, 7)).astype(np.float32),
        "seed": np.full((n, 1), i, dtype=np.int64),
    }


def _append_forever(path: str, ready) -> None:
    store = EpisodeStore.open(path, mode="a")
    ready.send(True)
    while True:
        store.add_episode(make_episode(store.n_episodes))


def _append_and_die_in_commit(path: str, moment: str) -> None:
    """Append one episode; SIGKILL this process at `moment` of the commit."""
    import pathlib
    import shutil

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    real_write, real_replace, written = pathlib.Path.write_text, os.replace, []

    def write_text(self, *args, **kwargs):  # the new generation's .zarray files
        if moment == "staging" and self.name == ".zarray" and written:
            die()
        written.append(self)
        return real_write(self, *args, **kwargs)

    def replace(src, dst):
        if moment == "before_swap" and os.path.basename(dst) == "current":
            die()
        real_replace(src, dst)

    pathlib.Path.write_text, os.replace = write_text, replace
    if moment == "after_swap":
        shutil.rmtree = die  # the old generation's removal, right after the swap
    store = EpisodeStore.open(path, mode="a")
    store.add_episode(make_episode(store.n_episodes))


def plain_zarr_state(path) -> tuple[np.ndarray, dict[str, int]]:
    """episode_ends and data lengths as zarr alone sees them (no toto_robot code)."""
    group = zarr.open_group(str(path), mode="r")
    return group["meta/episode_ends"][:], {k: group[f"data/{k}"].shape[0] for k in KEYS}


def check_committed_rows(path, episodes) -> None:
    group = zarr.open_group(str(path), mode="r")
    ends = group["meta/episode_ends"][:]
    for i in episodes:
        start = int(ends[i - 1]) if i else 0
        want = make_episode(i)
        for k in KEYS:
            np.testing.assert_array_equal(group[f"data/{k}"][start : int(ends[i])], want[k], err_msg=f"episode {i} {k}")


def rows_past_shape(path) -> int:
    """Image chunk files beyond the recorded length: rows of an append the kill interrupted."""
    folder = path / "data" / "agentview_image"
    n = zarr.open_array(str(folder), mode="r").shape[0]
    return sum(1 for name in os.listdir(folder) if name[0].isdigit() and int(name.split(".")[0]) >= n
               and not name.endswith(".partial"))


@pytest.mark.slow
def test_kill_9_at_random_moments_plain_zarr_sees_whole_episodes(tmp_path):
    path = tmp_path / "s.zarr"
    EpisodeStore.create(path, SM, extras=EXTRAS)
    rng = np.random.default_rng(0)
    checked, interrupted = 0, 0
    for _ in range(20):
        ready, ready_child = CTX.Pipe(duplex=False)
        proc = CTX.Process(target=_append_forever, args=(str(path), ready_child))
        proc.start()
        assert ready.poll(60), "writer did not start"
        proc.join(rng.uniform(0.0, 0.3))  # a random moment of appending
        proc.kill()
        proc.join(30)
        assert proc.exitcode == -signal.SIGKILL

        ends, lengths = plain_zarr_state(path)
        n = int(ends[-1]) if len(ends) else 0
        assert set(lengths.values()) == {n}, f"data lengths {lengths} != episode_ends[-1] {n}"
        check_committed_rows(path, range(max(0, checked - 1), len(ends)))  # new ones + the one sharing a chunk
        interrupted += rows_past_shape(path) > 0
        checked = len(ends)
        reader = EpisodeStore.open(path)  # read-only open copes with whatever the kill left
        assert reader.n_episodes == len(ends) and reader.n_steps == n
    print(f"\n20 kills: {checked} episodes committed, {interrupted} kills left rows of an unfinished append")
    assert checked >= 5 and interrupted >= 5  # appends made progress, and kills landed inside them
    report = EpisodeStore.open(path).verify()
    assert report["episodes"] == checked
    check_committed_rows(path, range(checked))


@pytest.mark.parametrize("moment", ["staging", "before_swap", "after_swap"])
def test_kill_inside_the_commit(tmp_path, moment):
    """Forced into the commit step: the episode is all there (after the swap) or not at all."""
    path = tmp_path / "s.zarr"
    store = EpisodeStore.create(path, SM, extras=EXTRAS)
    for i in range(3):
        store.add_episode(make_episode(i))
    proc = CTX.Process(target=_append_and_die_in_commit, args=(str(path), moment))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL

    ends, lengths = plain_zarr_state(path)
    episodes = 4 if moment == "after_swap" else 3
    assert len(ends) == episodes and set(lengths.values()) == {int(ends[-1])}
    check_committed_rows(path, range(episodes))
    reader = EpisodeStore.open(path)
    assert reader.n_episodes == episodes
    reader.verify()

    writer = EpisodeStore.open(path, mode="a")  # drops the leftovers: unused generations, temp files
    assert sorted(os.listdir(path / ".commits")) == sorted(["current", os.readlink(path / ".commits" / "current")])
    assert not [f for f in (path / "data" / "agentview_image").iterdir() if f.name.endswith(".partial")]
    writer.add_episode(make_episode(episodes))
    check_committed_rows(path, range(episodes + 1))
