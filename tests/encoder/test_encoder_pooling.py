"""Pooling heads: shapes, masks, order invariance, config errors."""

import pytest
import torch

from toto_robot.models.pooling import AttentionPool, AvgPool, KeypointPool, PoolingConfig, build_pooling


@pytest.mark.parametrize("kind", ["attention", "avg"])
def test_pooling_shapes_and_out_dim(kind):
    x = torch.randn(3, 10, 32)
    assert build_pooling(PoolingConfig(kind, n_heads=4), 32)(x).shape == (3, 32)
    head = build_pooling({"kind": kind, "n_heads": 4, "out_dim": 7}, 32)
    assert head(x).shape == (3, 7) and head.out_dim == 7


def test_attention_pool_with_several_queries_concatenates_them():
    pool = AttentionPool(16, n_heads=2, n_queries=3)
    assert pool(torch.randn(2, 5, 16)).shape == (2, 48) and pool.out_dim == 48


@pytest.mark.parametrize("pool", [AttentionPool(16, n_heads=4), AvgPool(16)])
def test_masked_tokens_do_not_change_the_output(pool):
    x = torch.randn(2, 8, 16)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[:, 5:] = False
    y = x.clone()
    y[:, 5:] = 1e3 * torch.randn(2, 3, 16)
    torch.testing.assert_close(pool(x, mask), pool(y, mask))
    assert not torch.allclose(pool(x), pool(y))


@pytest.mark.parametrize("pool", [AttentionPool(16, n_heads=4), AvgPool(16)])
def test_pools_ignore_token_order(pool):
    x = torch.randn(2, 8, 16)
    torch.testing.assert_close(pool(x), pool(x[:, torch.randperm(8)]), atol=1e-5, rtol=1e-5)


def _fit(pool: torch.nn.Module, batch, n_out: int, steps: int) -> float:
    """Train `pool` + a linear readout on fresh batches (x, y) = batch(); returns a held-out MSE."""
    torch.manual_seed(0)
    out = torch.nn.Linear(pool.out_dim, n_out)
    opt = torch.optim.Adam([*pool.parameters(), *out.parameters()], lr=1e-2)
    for _ in range(steps):
        x, y = batch()
        loss = torch.nn.functional.mse_loss(out(pool(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = batch()
    with torch.no_grad():
        return float(torch.nn.functional.mse_loss(out(pool(x)), y))


def _fit_marked_token(pool: torch.nn.Module) -> float:
    """Target = feature 1 of the token whose feature 0 is marked; returns the held-out MSE."""

    def batch():
        x = torch.randn(64, 6, 16)
        idx = torch.randint(0, 6, (64,))
        x[torch.arange(64), idx, 0] = 5.0
        return x, x[torch.arange(64), idx, 1:2]

    return _fit(pool, batch, 1, 120)


def test_attention_pool_learns_to_pick_a_token_where_average_pooling_cannot():
    # Predicting the mean scores ~1.0; averaging dilutes the marked token among six.
    assert _fit_marked_token(AttentionPool(16, n_heads=2)) < 0.3
    assert _fit_marked_token(AvgPool(16)) > 0.6


def test_keypoint_pool_shapes_and_config_round_trip():
    pool = build_pooling(PoolingConfig("keypoints", n_heads=4, n_keypoints=5, grid=4, n_frames=2), 16)
    assert pool(torch.randn(3, 2 * 16, 16)).shape == (3, 16 + 2 * 5 * 2) and pool.out_dim == 36
    assert build_pooling(pool.config, 16).config == pool.config
    points = pool.keypoints(torch.randn(3, 32, 16))
    assert points.shape == (3, 2, 5, 2) and points.abs().max() <= 1
    with pytest.raises(ValueError, match="expected 2 frame\\(s\\) of 16 tokens = 32 tokens, got 16"):
        pool(torch.randn(3, 16, 16))


def _fit_marked_position(pool: torch.nn.Module, grid: int = 6) -> float:
    """Target = (x, y) grid position of the one marked token; returns the held-out MSE (chance ~0.35)."""
    coords = torch.stack(torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij"), -1).flip(-1).reshape(-1, 2)
    coords = (coords.float() + 0.5) / grid * 2 - 1

    def batch():
        x = torch.randn(64, grid * grid, 16)
        idx = torch.randint(0, grid * grid, (64,))
        x[torch.arange(64), idx, 0] = 5.0
        return x, coords[idx]

    return _fit(pool, batch, 2, 150)


def test_keypoints_read_where_a_token_is_which_pooling_alone_cannot():
    # Attention pooling is order-invariant: without position in the features it cannot tell where.
    assert _fit_marked_position(KeypointPool(16, n_keypoints=4, grid=6, n_heads=2)) < 0.05
    assert _fit_marked_position(AttentionPool(16, n_heads=2)) > 0.25


def test_grid_pool_shapes_and_config_round_trip():
    pool = build_pooling(PoolingConfig("grid", n_keypoints=5, grid=4, n_frames=2, width=8), 16)
    assert pool(torch.randn(3, 2 * 16, 16)).shape == (3, 2 * (2 * 5 + 8)) and pool.out_dim == 36
    assert build_pooling(pool.config, 16).config == pool.config
    with pytest.raises(ValueError, match="expected 2 frame\\(s\\) of 16 tokens = 32 tokens, got 16"):
        pool(torch.randn(3, 16, 16))
    with pytest.raises(ValueError, match="GridPool reads whole frames: a token mask"):
        pool(torch.randn(3, 32, 16), torch.ones(3, 32, dtype=torch.bool))


def test_bad_configs_and_inputs_name_the_problem():
    with pytest.raises(ValueError, match="unknown pooling kind 'max'"):
        build_pooling({"kind": "max"}, 16)
    with pytest.raises(ValueError, match="not divisible by n_heads 3"):
        AttentionPool(16, n_heads=3)
    with pytest.raises(ValueError, match=r"\(B, T, 16\)"):
        AvgPool(16)(torch.randn(2, 8, 15))


def test_attention_pool_equals_per_token_projected_attention():
    """The folded forward is the textbook computation (project every token to keys and values)."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    pool = AttentionPool(32, n_heads=4, n_queries=2, out_dim=8)
    with torch.no_grad():
        pool.norm.weight.uniform_(0.5, 1.5)
        pool.norm.bias.uniform_(-0.5, 0.5)
    x, mask = torch.randn(3, 20, 32), torch.rand(3, 20) > 0.3
    b, t, d, h = 3, 20, 32, 4
    k, v = pool.kv_proj(pool.norm(x)).view(b, t, 2, h, d // h).permute(2, 0, 3, 1, 4)
    q = pool.q_proj(pool.query).view(1, 2, h, d // h).transpose(1, 2).expand(b, -1, -1, -1)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.view(b, 1, 1, t))
    ref = pool.proj(pool.out_norm(pool.out_proj(ref.transpose(1, 2).reshape(b, 2, d)).reshape(b, 2 * d)))
    torch.testing.assert_close(pool(x, mask), ref, atol=1e-5, rtol=1e-5)
