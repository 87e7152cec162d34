"""aos4rec_jax/sampling.py: categorical draws by inverse CDF (IRGAN's generator, Eq. 8's
successors, CRR's actions): the right frequencies, weight-0 entries never drawn, any leading
shape, the uniforms of the documented key use."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aos4rec_jax import sampling


def test_draws_follow_the_weights_and_never_take_a_zero_weight():
    w = np.array([[0.0, 1.0, 0.0, 3.0, 6.0], [0.0, 0.0, 0.0, 0.0, 2.0]], np.float32)
    n = 20000
    out = np.asarray(jax.jit(sampling.from_weights, static_argnums=2)(jax.random.PRNGKey(0), w, n))
    assert out.shape == (2, n) and out.dtype == np.int32
    assert (out[1] == 4).all()                                  # one item of weight: always it
    p = w[0] / w[0].sum()
    freq = np.bincount(out[0], minlength=5) / n
    np.testing.assert_array_less(np.abs(freq - p), 5 * np.sqrt(p * (1 - p) / n) + 1e-9)
    assert not np.isin(out[0], [0, 2]).any()


def test_leading_dims_and_the_uniforms_used():
    """[2, 3, V] weights, 4 draws: [2, 3, 4]; draw k of row (a, b) is the item where
    uniform(key, (2, 3, 4))[a, b, k] * total falls in the cumulative weights."""
    rs = np.random.RandomState(1)
    w = rs.rand(2, 3, 7).astype(np.float32)
    w[..., 0] = 0.0
    key = jax.random.PRNGKey(5)
    out = np.asarray(sampling.from_weights(key, w, 4))
    u = np.asarray(jax.random.uniform(key, (2, 3, 4), jnp.float32))
    cdf = np.cumsum(w.astype(np.float64), -1)
    want = np.array([[[np.searchsorted(cdf[a, b], u[a, b, k] * cdf[a, b, -1], side='right')
                       for k in range(4)] for b in range(3)] for a in range(2)])
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize('temperature', [1.0, 0.5])
def test_from_logits_is_the_softmax_and_minus_inf_is_never_drawn(temperature):
    logits = np.array([[-np.inf, 0.5, -np.inf, 1.5, 0.0]], np.float32) / temperature
    n = 20000
    out = np.asarray(sampling.from_logits(jax.random.PRNGKey(2), logits, n))[0]
    e = np.exp(np.where(np.isfinite(logits[0]), logits[0], -np.inf).astype(np.float64))
    p = e / e.sum()
    freq = np.bincount(out, minlength=5) / n
    np.testing.assert_array_less(np.abs(freq - p), 5 * np.sqrt(p * (1 - p) / n) + 1e-9)
    assert not np.isin(out, [0, 2]).any()


@pytest.mark.parametrize('v', [1, 2, 7, 50, 3417])
def test_locate_is_the_first_index_whose_cumulative_weight_exceeds_the_draw(v):
    """The two-level search (blocks of about sqrt(V), then inside one block) returns what a
    search over the whole cumulative sum returns: every uniform of a grid, rows with runs of
    zero weights (whole blocks of them, leading and trailing ones), one with a single item; a
    draw at the very top of [0, 1) gives the last item of non-zero weight, never a zero one."""
    rs = np.random.RandomState(v)
    w = rs.rand(4, v).astype(np.float32) * (rs.rand(4, v) < 0.6)
    w[1, : v // 2] = 0.0                                  # leading zero blocks
    w[2, v // 3:] = 0.0                                   # trailing zero blocks
    w[3] = 0.0
    w[3, v // 2] = 2.0                                    # one item of weight
    w = w[w.sum(-1) > 0]
    u = np.concatenate([np.linspace(0, 1, 997, endpoint=False), [1 - 1e-7]]).astype(np.float32)
    u = np.broadcast_to(u, (w.shape[0], u.size))
    got = np.asarray(jax.jit(sampling.locate)(w, u))
    cdf = np.cumsum(w.astype(np.float64), -1)
    last = np.array([np.flatnonzero(r)[-1] for r in w])
    for r in range(w.shape[0]):
        want = np.minimum(np.searchsorted(cdf[r], u[r] * cdf[r, -1], side='right'), last[r])
        # float32 sums in another order than the float64 reference: a uniform within rounding
        # of a boundary may land on the neighbour; no more than 1 of the grid's draws
        assert np.sum(got[r] != want) <= 1, (r, np.flatnonzero(got[r] != want))
        assert (w[r, got[r]] > 0).all()                   # never an item of weight 0
        assert got[r, -1] == last[r]


def test_from_logits_uses_unnormalised_weights_equally():
    """Logits shifted by a constant draw the same items (the draw normalises by the total)."""
    logits = np.random.RandomState(3).randn(3, 40).astype(np.float32)
    a = np.asarray(sampling.from_logits(jax.random.PRNGKey(4), logits, 16))
    b = np.asarray(sampling.from_logits(jax.random.PRNGKey(4), logits + 30.0, 16))
    assert (a == b).mean() > 0.97
