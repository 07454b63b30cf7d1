"""Training on robomimic: each algorithm overfits, every algorithm/encoder pair composes, runs resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policies.config import AlgoConfig, BCConfig, EncoderConfig, ObsConfig, RNNConfig, TrainConfig, TransformerConfig
from policies.dataset import WindowBatches, load_demos
from policies.train import RunDirError, prepare, toto_cores, train
from toto_robot.spec import SpecError

ORACLE = EncoderConfig(kind="oracle", privileged=["cube_pos", "cube_quat"])
ALGOS = {
    "bc": AlgoConfig(name="bc", hidden_dims=[128, 128], lr=3e-3),
    "bc_rnn": AlgoConfig(name="bc_rnn", hidden_dims=[], lr=3e-3, rnn=RNNConfig(horizon=4, hidden_dim=64, num_layers=1)),
    "bc_transformer": AlgoConfig(name="bc_transformer", hidden_dims=[], lr=1e-3,
                                 transformer=TransformerConfig(context_length=3, embed_dim=64, num_layers=2, num_heads=2, dropout=0.0)),
    "bc_chunk": AlgoConfig(name="bc", hidden_dims=[128, 128], lr=3e-3, chunk=3),
}


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_each_algorithm_overfits_a_tiny_dataset(algo, store_factory, tmp_path):
    store = store_factory(n_episodes=2, steps=8)
    cfg = BCConfig(ALGOS[algo], ORACLE, ObsConfig(cameras=[]))
    torch.manual_seed(0)
    result = train(cfg, TrainConfig(epochs=300, batch_size=16, checkpoint_every=1000), store, [0, 1], tmp_path / algo,
                   device="cpu", progress=False)
    loss = result.curves.loss
    assert loss[-1] < 0.02 * loss[0] and loss[-1] < 5e-3, f"{algo}: loss {loss[0]:.4f} -> {loss[-1]:.5f}"


@pytest.mark.parametrize("pooling", ["attention", "grid"])
def test_toto_core_output_shape_and_no_gradient_reaches_the_encoder(pooling, store_factory, tiny_artifact):
    store = store_factory(n_episodes=2, steps=6)
    cfg = BCConfig(AlgoConfig(hidden_dims=[16]), EncoderConfig(artifact=str(tiny_artifact), pool_heads=2, feature_dim=12,
                                                               pooling=pooling, cache=False), ObsConfig(cameras=["agentview_image"]))
    policy, data = prepare(cfg, store, [0, 1], "cpu", progress=False)
    core = toto_cores(policy)["agentview_image"]
    frames = torch.from_numpy(data.cameras["agentview_image"][:3])
    feats = core.token_features(frames)
    width = 24 if pooling == "attention" else 12  # attention: pooled + separate keypoints; grid: one head
    assert feats.shape == (3, 256, 32) and core(feats).shape == (3, width) and core.output_shape() == [width]
    trunk = list(core.encoder.parameters())
    before = [p.detach().clone() for p in trunk]
    import robomimic.utils.train_utils as TrainUtils

    policy.algo.set_train()
    assert not core.encoder.transformer.training  # the trunk stays in eval mode
    batches = WindowBatches(data, policy.normalizers, 4, featurize={"agentview_image": core.token_features}, shift=2)
    TrainUtils.run_epoch(policy.algo, batches, 1)
    assert all(p.grad is None and not p.requires_grad for p in trunk)
    assert all(torch.equal(a, b) for a, b in zip(before, trunk))
    assert any(p.grad is not None for p in core.pool.parameters())  # the pooling head does learn


@pytest.mark.parametrize("algo", ["bc", "bc_rnn", "bc_transformer"])
@pytest.mark.parametrize("encoder", ["toto", "toto_random", "resnet18", "none", "oracle"])
def test_every_algorithm_encoder_pair_trains_and_acts(algo, encoder, store_factory, tmp_path, tiny_artifact):
    store = store_factory(n_episodes=2, steps=5, size=128 if encoder.startswith("toto") else 48)  # the encoder reads 128 px
    enc = EncoderConfig(kind=encoder, artifact=str(tiny_artifact), pool_heads=2, feature_dim=8, shift=2 if encoder == "resnet18" else 0,
                        privileged=["cube_pos", "cube_quat"] if encoder == "oracle" else [])
    a = {**ALGOS, "bc": AlgoConfig(hidden_dims=[16])}[algo]
    cfg = BCConfig(a, enc, ObsConfig(cameras=["agentview_image"], history=2 if encoder == "toto" else 1))
    result = train(cfg, TrainConfig(epochs=1, batch_size=4, checkpoint_every=5), store, [0, 1], tmp_path / "r",
                   device="cpu", progress=False)
    from toto_robot.policy import load_policy

    policy = load_policy(result.checkpoint, device="cpu")
    ep = store.get_episode(1)
    policy.reset()
    for t in range(3):
        act = policy.select_action({k: ep[k][t] for k in policy.shape_meta.obs})
        assert act.shape == (7,) and act.dtype == np.float32 and np.all(np.isfinite(act))
        lo, hi = policy.normalizers.action_min, policy.normalizers.action_max
        assert np.all(act >= lo - 1e-6) and np.all(act <= hi + 1e-6)  # clipped to the training range


def test_windows_pad_at_episode_edges(store_factory):
    store = store_factory(n_episodes=2, steps=4)
    data = load_demos(store, [0, 1], ["eef_pos"], [])
    from policies.normalize import Normalizers

    norm = Normalizers.fit(data.low_dim, data.actions)
    b = WindowBatches(data, norm, 8, before=2, after=3).batch(np.array([0, 3, 4]))
    rows = b["actions"].numpy()
    acts = norm.normalize_action(data.actions)
    np.testing.assert_array_equal(rows[0], acts[[0, 0, 0, 1, 2, 3]])  # start padded with the first step
    np.testing.assert_array_equal(rows[1], acts[[1, 2, 3, 3, 3, 3]])  # end padded with the last step
    np.testing.assert_array_equal(rows[2], acts[[4, 4, 4, 5, 6, 7]])  # never crosses into the other episode


def test_a_killed_run_resumes_to_the_same_result_and_another_config_is_refused(store_factory, tmp_path):
    store = store_factory(n_episodes=2, steps=6)
    cfg = BCConfig(AlgoConfig(hidden_dims=[32]), ORACLE, ObsConfig(cameras=[]))
    tc = TrainConfig(epochs=6, batch_size=4, eval_every=3)
    full = train(cfg, tc, store, [0, 1], tmp_path / "full", rollout=lambda ck: 0.5, device="cpu", progress=False)

    def killed_at_first_rollout(ck):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tc, store, [0, 1], tmp_path / "run", rollout=killed_at_first_rollout, device="cpu", progress=False)
    resumed = train(cfg, tc, store, [0, 1], tmp_path / "run", rollout=lambda ck: 0.5, device="cpu", progress=False)
    assert resumed.resumed_from == 2 and resumed.curves.epoch == list(range(1, 7))
    assert resumed.curves.loss == full.curves.loss  # bit-identical to the uninterrupted run
    assert resumed.best_epoch == full.best_epoch == 6 and resumed.curves.eval_epoch == [3, 6]
    longer = train(cfg, TrainConfig(epochs=8, batch_size=4, eval_every=3), store, [0, 1], tmp_path / "run",
                   rollout=lambda ck: 0.5, device="cpu", progress=False)
    assert longer.resumed_from == 6 and len(longer.curves.loss) == 8  # more epochs: trains on
    with pytest.raises(RunDirError, match=r"train.batch_size: 4 -> 2"):
        train(cfg, TrainConfig(epochs=6, batch_size=2, eval_every=3), store, [0, 1], tmp_path / "run", device="cpu", progress=False)


def test_bad_training_data_is_refused_clearly(store_factory, tmp_path, tiny_artifact):
    from toto_robot.episode_store import EpisodeStore
    from toto_robot.spec import franka_shape_meta

    empty = EpisodeStore.create(tmp_path / "empty.zarr", franka_shape_meta(["agentview_image"], 128))
    cfg = BCConfig(AlgoConfig(hidden_dims=[16]), EncoderConfig(kind="none"), ObsConfig(cameras=[]))
    with pytest.raises(SpecError, match="holds no episodes"):
        train(cfg, TrainConfig(epochs=1), empty, [0], tmp_path / "a", device="cpu", progress=False)
    no_extras = EpisodeStore.create(tmp_path / "plain.zarr", franka_shape_meta(["agentview_image"], 128))
    with pytest.raises(SpecError, match=r"lacks \['cube_pos', 'cube_quat'\]"):
        train(BCConfig(encoder=ORACLE, obs=ObsConfig(cameras=[])), TrainConfig(epochs=1), no_extras, [0], tmp_path / "b",
              device="cpu", progress=False)
    small = store_factory("small.zarr", size=64, n_episodes=1, steps=3)  # 64 px frames, the encoder reads 128
    toto = BCConfig(encoder=EncoderConfig(artifact=str(tiny_artifact)), obs=ObsConfig(cameras=["agentview_image"]))
    with pytest.raises(ValueError, match="encoder reads 128x128 frames, the observation 'agentview_image' is 64x64"):
        train(toto, TrainConfig(epochs=1), small, [0], tmp_path / "c", device="cpu", progress=False)


def test_rollouts_running_beside_training_pick_the_same_checkpoint(store_factory, tmp_path):
    """rollout may return a function that waits: training goes on meanwhile, and the choice is the same."""
    from toto_robot.checkpoint import read_checkpoint

    store = store_factory(n_episodes=2, steps=6)
    cfg = BCConfig(AlgoConfig(hidden_dims=[32]), ORACLE, ObsConfig(cameras=[]))
    tc = TrainConfig(epochs=6, batch_size=4, eval_every=2)
    scores = {2: 0.5, 4: 0.7, 6: 0.6}
    events = []

    def epoch_of(ck):
        return read_checkpoint(ck, load_tensors=False).training["epoch"]

    def trained(run):  # epochs saved so far in the run's state
        return torch.load(run / "train_state.pt", weights_only=True)["curves"]["epoch"][-1]

    def beside(ck):
        e = epoch_of(ck)
        events.append(("submit", e, trained(tmp_path / "beside")))
        return lambda: (events.append(("wait", e, trained(tmp_path / "beside"))), scores[e])[1]

    now = train(cfg, tc, store, [0, 1], tmp_path / "now", rollout=lambda ck: scores[epoch_of(ck)], device="cpu", progress=False)
    later = train(cfg, tc, store, [0, 1], tmp_path / "beside", rollout=beside, device="cpu", progress=False)
    assert now.curves.success == later.curves.success == [0.5, 0.7, 0.6] and now.best_epoch == later.best_epoch == 4
    assert now.curves.loss == later.curves.loss and epoch_of(later.checkpoint) == 4
    # epoch 2's rollouts ran while epochs 2-3 trained; the last epoch's are waited for at once
    assert events == [("submit", 2, 1), ("wait", 2, 3), ("submit", 4, 3), ("wait", 4, 5), ("submit", 6, 5), ("wait", 6, 5)]
    assert not list((tmp_path / "beside").glob(".candidate*"))


@pytest.mark.parametrize("kind", ["toto", "toto_random"])
def test_a_policy_starts_the_same_whether_or_not_the_encoder_was_loaded_before(kind, store_factory, tiny_artifact):
    """Loading the frozen encoder must not draw from torch's RNG: train_policy.py caches the main
    policy's features (loading it) before training, a plain train() loads it while building the policy.
    toto: the packaged default encoder (its loading did draw); toto_random: re-initialised from a seed."""
    from policies.encoders import _ENCODERS

    store = store_factory(n_episodes=2, steps=6)
    artifact = None if kind == "toto" else str(tiny_artifact)
    cfg = BCConfig(AlgoConfig(hidden_dims=[16]), EncoderConfig(kind=kind, artifact=artifact, pool_heads=2,
                                                               feature_dim=8, cache=False), ObsConfig(cameras=["agentview_image"]))

    def first_weights() -> list[torch.Tensor]:
        torch.manual_seed(0)
        policy, _ = prepare(cfg, store, [0, 1], "cpu", progress=False)
        return [p.detach().clone() for p in policy.algo.nets.parameters() if p.requires_grad]

    _ENCODERS.clear()
    fresh = first_weights()  # the encoder is loaded while the policy is built
    again = first_weights()  # already loaded
    assert len(fresh) == len(again) and all(torch.equal(a, b) for a, b in zip(fresh, again))
