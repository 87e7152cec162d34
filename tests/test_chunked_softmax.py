"""config.loss_chunk: the seq2seq MLE loss over blocks of items without the [N, V] logits
(aos4rec_jax/chunked_softmax.py) equals the plain log-softmax path, in value and gradient, and
needs less memory."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aos4rec_jax import chunked_softmax
from aos4rec_jax import data as data_lib
from aos4rec_jax import seq2seq
from experiments.configs import transformer as transformer_cfg


def _dense_nll(h, w, b, t):
    logits = h @ w.T + (0.0 if b is None else b)
    return -jnp.take_along_axis(jax.nn.log_softmax(logits, -1), t[:, None], -1)[:, 0]


@pytest.mark.parametrize('chunk', [1, 7, 101, 500])
@pytest.mark.parametrize('with_bias', [False, True])
def test_value_and_gradients_equal_the_plain_log_softmax(chunk, with_bias):
    """V = 101 items: chunks that divide it (1, 101), that do not (7: a padded last block) and
    one larger than V; h, W and the bias get the plain path's gradients under a random upstream
    gradient (so a missing term of the backward pass shows)."""
    k = jax.random.split(jax.random.PRNGKey(0), 5)
    n, d, v = 37, 8, 101
    h = jax.random.normal(k[0], (n, d))
    w = jax.random.normal(k[1], (v, d))
    b = jax.random.normal(k[2], (v,)) if with_bias else None
    t = jax.random.randint(k[3], (n,), 0, v)
    g = jax.random.normal(k[4], (n,))
    got = chunked_softmax.nll(h, w, t, chunk, b)
    np.testing.assert_allclose(got, _dense_nll(h, w, b, t), rtol=1e-5, atol=1e-5)
    args = (h, w) + ((b,) if with_bias else ())
    gd = jax.grad(lambda *a: jnp.sum(_dense_nll(a[0], a[1], a[2] if with_bias else None, t) * g),
                  argnums=tuple(range(len(args))))(*args)
    gc = jax.grad(lambda *a: jnp.sum(chunked_softmax.nll(a[0], a[1], t, chunk,
                                                         a[2] if with_bias else None) * g),
                  argnums=tuple(range(len(args))))(*args)
    for x, y in zip(gc, gd):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    # jitted: the same numbers
    np.testing.assert_allclose(jax.jit(lambda h, w: chunked_softmax.nll(h, w, t, chunk, b))(h, w),
                               got, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('model_name,tie', [('transformer', True), ('gru', True), ('transformer', False)])
def test_mle_loss_with_chunks_equals_the_logits_path(model_name, tie):
    """seq2seq.mle_loss(chunk=C) of the tiny Transformer and GRU (tied or untied output layer):
    the same loss sum, token count and parameter gradients as chunk=0, padding masked."""
    c = transformer_cfg.get_config('tiny')
    c.model = model_name
    c.model_kwargs.tie_output = tie
    info = data_lib.DataInfo(num_items=53, num_users=4, k=4, target_len=4, history_len=6,
                             ban_history=False, num_candidates=5, num_windows=10, profile='default',
                             protocol='paper')
    model = seq2seq.build_model(c, info)
    params = seq2seq.init_params(model, info, jax.random.PRNGKey(0))
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    hist = jax.random.randint(k1, (5, 6), 0, 54)
    target = jax.random.randint(k2, (5, 4), 1, 54).at[0, 2:].set(0)      # one padded target
    dec = seq2seq.decoder_inputs(target, info.bos_id)

    def loss(p, chunk):
        s, n = seq2seq.mle_loss(p, model, hist, target, dec, jax.random.PRNGKey(2), train=False,
                                chunk=chunk)
        return s / n, (s, n)

    (_, (s0, n0)), g0 = jax.value_and_grad(loss, has_aux=True)(params, 0)
    (_, (s1, n1)), g1 = jax.value_and_grad(loss, has_aux=True)(params, 16)
    assert float(n0) == float(n1) == 18.0
    np.testing.assert_allclose(s1, s0, rtol=1e-5)
    flat0, flat1 = jax.tree_util.tree_leaves(g0), jax.tree_util.tree_leaves(g1)
    assert len(flat0) == len(flat1)
    for a, b in zip(flat1, flat0):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6)


def test_chunks_need_less_memory_than_the_logits():
    """XLA's own accounting of the compiled loss-and-gradient (temporary buffers): the logits path
    holds [N, V] float32 arrays (here 2048 x 20,000 = 164 MB each); blocks of 1,000 items hold
    [N, 1000] ones."""
    n, d, v = 2048, 32, 20000
    h, w = jnp.ones((n, d)), jnp.ones((v, d))
    t = jnp.zeros((n,), jnp.int32)

    def temp_bytes(f):
        m = jax.jit(jax.grad(f, argnums=(0, 1))).lower(h, w).compile().memory_analysis()
        if m is None or not hasattr(m, 'temp_size_in_bytes'):
            pytest.skip("this jax's backend reports no memory analysis of a compiled program")
        return m.temp_size_in_bytes

    dense = temp_bytes(lambda h, w: jnp.sum(_dense_nll(h, w, None, t)))
    chunked = temp_bytes(lambda h, w: jnp.sum(chunked_softmax.nll(h, w, t, 1000)))
    assert dense >= n * v * 4                    # at least one [N, V] float32 array
    print(f"temporary bytes: logits {dense:,}, blocks of 1,000 items {chunked:,}")
    assert chunked < dense / 8, (chunked, dense)
