"""Behaviour cloning on the frozen Toto encoder, built on robomimic 0.3.0's algorithms.

- `config`: typed configs (`policy/`, `encoder/` hydra groups, `obs`, `train`);
- `encoders`: the Toto encoder as a robomimic core, random-shift augmentation;
- `algos`: robomimic configs and algorithms (BC, BC-RNN, BC-Transformer, chunked BC);
- `dataset`, `feature_cache`, `normalize`: training batches from zarr episode stores;
- `bc_policy`: the trained policy behind `toto_robot.policy.Policy`, as one checkpoint;
- `train`, `evaluation`, `latency`, `report`, `pipeline`, `study`: the jobs of the root scripts.
"""

import contextlib
import io

# torch's compiler stack loads triton, which bundles its own LLVM. Loaded after Mesa's llvmpipe (MuJoCo
# rendering through EGL/OSMesa) is in the process, it segfaults; loaded first, both work. robomimic
# imports it through torchvision, so load it here, before any env renders.
import torch._dynamo  # noqa: F401

with contextlib.redirect_stdout(io.StringIO()):  # robomimic nags on import about an optional private settings file
    import robomimic.macros  # noqa: F401
