"""softmax_xent.nll: the value and gradient of -log_softmax(logits)[target], banned entries,
and one backward sweep instead of autodiff's several."""
import jax
import jax.numpy as jnp
import numpy as np

from aos4rec_jax import softmax_xent


def reference(logits, targets):
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def case(seed=0, shape=(3, 4, 11)):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    logits = 3.0 * jax.random.normal(k1, shape)
    targets = jax.random.randint(k2, shape[:-1], 0, shape[-1])
    weights = jax.random.uniform(k3, shape[:-1])
    return logits, targets, weights


def test_by_hand():
    """logits [0, log 3] -> softmax [1/4, 3/4]: nll of item 1 = log(4/3), of item 0 = log 4;
    d nll(item 1) / d logits = softmax - onehot = [1/4, -1/4]."""
    logits = jnp.array([[0.0, np.log(3.0)], [0.0, np.log(3.0)]], jnp.float32)
    targets = jnp.array([1, 0])
    np.testing.assert_allclose(softmax_xent.nll(logits, targets), [np.log(4 / 3), np.log(4.0)],
                               rtol=1e-6)
    g = jax.grad(lambda x: softmax_xent.nll(x, targets)[0])(logits)
    np.testing.assert_allclose(g, [[0.25, -0.25], [0.0, 0.0]], atol=1e-7)


def test_values_and_gradients_equal_autodiff_of_log_softmax():
    logits, targets, w = case()
    np.testing.assert_allclose(softmax_xent.nll(logits, targets), reference(logits, targets),
                               rtol=1e-6, atol=1e-6)
    ours = jax.jit(jax.grad(lambda x: jnp.sum(w * softmax_xent.nll(x, targets))))(logits)
    ref = jax.jit(jax.grad(lambda x: jnp.sum(w * reference(x, targets))))(logits)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)


def test_banned_entries_and_a_row_with_none_allowed():
    logits, targets, w = case(1, (2, 6))
    allowed = jnp.array([[True, True, False, True, False, True]] * 2)
    allowed = allowed.at[1].set(False)                   # nothing allowed: uniform, as log_softmax
    targets = jnp.array([3, 2])
    for fill in (-1e30, -jnp.inf):
        masked = jnp.where(allowed, logits, fill)
        if fill == -jnp.inf:
            masked = masked[:1]
            t = targets[:1]
        else:
            t = targets
        np.testing.assert_allclose(softmax_xent.nll(masked, t), reference(masked, t), rtol=1e-6)
        g = jax.grad(lambda x: jnp.sum(softmax_xent.nll(x, t)))(masked)
        r = jax.grad(lambda x: jnp.sum(reference(x, t)))(masked)
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-7)
        assert np.all(np.asarray(g)[0][~np.asarray(allowed[0])] == 0.0)   # banned: no gradient


def test_zero_weight_rows_get_zero_gradient_and_dtypes():
    logits, targets, _ = case(2)
    w = jnp.zeros(targets.shape).at[0].set(1.0)
    g = jax.grad(lambda x: jnp.sum(w * softmax_xent.nll(x, targets)))(logits)
    assert np.all(np.asarray(g)[1:] == 0.0)
    assert softmax_xent.nll(logits.astype(jnp.bfloat16), targets).dtype == jnp.float32
    gb = jax.grad(lambda x: jnp.sum(softmax_xent.nll(x, targets)))(logits.astype(jnp.bfloat16))
    assert gb.dtype == jnp.bfloat16


def test_one_backward_sweep_in_the_program():
    """The gradient program makes no scatter (autodiff's transpose of the gather makes one)."""
    logits, targets, w = case(3, (16, 8, 500))

    def text(fn):
        return jax.jit(jax.grad(lambda x: jnp.sum(w[..., :1] * fn(x, targets)))).lower(
            logits).compile().as_text()

    assert 'scatter' not in text(softmax_xent.nll)
    assert 'scatter' in text(reference)          # the check can fail
