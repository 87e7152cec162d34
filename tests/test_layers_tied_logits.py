"""layers.tied_logits / scores_against: the plain product's values and gradients, with a backward
pass that does not transpose the [N, V] score gradient (the CPU's costly copy)."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aos4rec_jax.models import layers

V, ROWS, D = 37, 40, 8


def plain(x, table):
    w = table[:V].astype(x.dtype)
    return jnp.einsum('...d,vd->...v', x, w, preferred_element_type=jnp.float32)


def loss(fn, x, table, target):
    logp = jax.nn.log_softmax(fn(x, table, V) if fn is layers.tied_logits else fn(x, table), -1)
    return -jnp.sum(jnp.take_along_axis(logp, target[..., None], axis=-1))


def data(dtype=jnp.float32):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(3), 3)
    x = jax.random.normal(k1, (4, 5, D)).astype(dtype)
    table = jax.random.normal(k2, (ROWS, D), jnp.float32)
    target = jax.random.randint(k3, (4, 5), 0, V)
    return x, table, target


def test_values_and_gradients_equal_the_plain_product():
    x, table, target = data()
    np.testing.assert_allclose(layers.tied_logits(x, table, V), plain(x, table), rtol=1e-6, atol=1e-6)
    ours = jax.jit(jax.grad(lambda x, t: loss(layers.tied_logits, x, t, target), argnums=(0, 1)))(x, table)
    ref = jax.jit(jax.grad(lambda x, t: loss(plain, x, t, target), argnums=(0, 1)))(x, table)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # the rows past V (padding of the table) get exactly zero gradient
    assert np.all(np.asarray(ours[1][V:]) == 0.0)


def test_bfloat16_inputs_keep_their_dtypes():
    x, table, target = data(jnp.bfloat16)
    gx, gt = jax.grad(lambda x, t: loss(layers.tied_logits, x, t, target), argnums=(0, 1))(x, table)
    assert gx.dtype == jnp.bfloat16 and gt.dtype == jnp.float32
    rx, rt = jax.grad(lambda x, t: loss(plain, x, t, target), argnums=(0, 1))(x, table)
    np.testing.assert_allclose(np.asarray(gt), np.asarray(rt), rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(np.asarray(gx, np.float32), np.asarray(rx, np.float32),
                               rtol=2e-2, atol=2e-2)


def test_second_order_gradient():
    """The backward pass is itself differentiable (a penalty on a gradient's norm)."""
    x, table, target = data()

    def grad_norm(fn, t):
        g = jax.grad(lambda x: loss(fn, x, t, target))(x)
        return jnp.sum(g ** 2)

    ours = jax.grad(lambda t: grad_norm(layers.tied_logits, t))(table)
    ref = jax.grad(lambda t: grad_norm(plain, t))(table)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='a CPU layout check')
def test_no_transposed_score_gradient_in_the_cpu_program():
    """At the sizes where it mattered (1,280 rows x 3,323 items), the compiled gradient holds no
    [V, N] array: the plain product's backward makes one (a transposed copy of g)."""
    n_items, rows = 3323, 1280
    x = jnp.ones((128, 10, 64), jnp.float32)
    table = jnp.ones((3328, 64), jnp.float32)
    target = jnp.zeros((128, 10), jnp.int32)

    def program(fn):
        def f(x, t):
            logits = fn(x, t)
            logp = jax.nn.log_softmax(logits, -1)
            return -jnp.sum(jnp.take_along_axis(logp, target[..., None], axis=-1))
        return jax.jit(jax.grad(f, argnums=(0, 1))).lower(x, table).compile().as_text()

    transposed = re.compile(rf'f32\[{n_items},{rows}\]|f32\[{n_items},128,10\]')
    ours = program(lambda x, t: layers.tied_logits(x, t, n_items))
    ref = program(lambda x, t: jnp.einsum('...d,vd->...v', x, t[:n_items],
                                          preferred_element_type=jnp.float32))
    assert not transposed.search(ours)
    # the check can fail: the plain product's program has the transposed array
    assert transposed.search(ref)
