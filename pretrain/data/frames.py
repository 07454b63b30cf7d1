"""Shuffled single frames from sources, for training the tokenizer.

Each DataLoader worker walks its share of the files (reshuffled every epoch), decodes clips and
keeps a shuffle buffer of `buffer` frames, so consecutive frames of a video rarely share a batch.
A file that fails to decode is logged and skipped.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from pretrain.data.sources import SourceConfig, build_source

log = logging.getLogger(__name__)


class ShuffledFrames(IterableDataset):
    """Endless stream of (size, size, 3) uint8 frames drawn from `sources`."""

    def __init__(self, sources: list[SourceConfig], buffer: int = 2048, seed: int = 0) -> None:
        if not sources:
            raise ValueError("no frame sources configured")
        self.sources, self.buffer, self.seed = sources, buffer, seed
        self.files = sorted((i, f) for i, s in enumerate(sources) for f in build_source(s).files())
        if not self.files:
            raise ValueError(f"sources contain no files: {[s.path for s in sources]}")

    def __iter__(self) -> Iterator[np.ndarray]:
        info = get_worker_info()
        wid, nw = (0, 1) if info is None else (info.id, info.num_workers)
        rng = random.Random(self.seed * 1000 + wid)
        built = [build_source(s) for s in self.sources]
        mine = self.files[wid::nw] or self.files
        buf: list[np.ndarray] = []
        while True:
            order = list(mine)
            rng.shuffle(order)
            yielded = False
            for src_i, file in order:
                try:
                    for clip in built[src_i].clips(file):
                        for frame in clip.frames:
                            if len(buf) < self.buffer:
                                buf.append(frame)
                                continue
                            j = rng.randrange(len(buf))
                            yield buf[j]
                            yielded = True
                            buf[j] = frame
                except Exception as e:  # undecodable file: skip, keep training
                    log.warning("skipping %s: %s: %s", file, type(e).__name__, e)
            if not yielded:  # fewer frames than the buffer: serve the buffer itself
                if not buf:
                    raise RuntimeError("no decodable frames in any source")
                rng.shuffle(buf)
                yield from list(buf)


def frame_batches(dataset: ShuffledFrames, batch_size: int, workers: int) -> Iterator[torch.Tensor]:
    """-> endless (batch_size, size, size, 3) uint8 tensors."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=_stack)
    yield from loader


def _stack(frames: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(frames))
