"""models/dropout.py: the 16-bit mask from a quarter of the hashing, checked by hand and by
its statistics; the same mask under any sharding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from aos4rec_jax.models.dropout import (Dropout, keep_mask, keep_probability, threshold,
                                        uniform16)


def test_threshold_and_keep_probability_by_hand():
    assert threshold(0.1) == 6554 and keep_probability(0.1) == 1 - 6554 / 65536
    assert threshold(0.0) == 0 and keep_probability(0.0) == 1.0
    assert threshold(0.5) == 32768 and keep_probability(0.5) == 0.5
    assert threshold(1.0) == 65536


def test_uniform16_is_the_halves_of_one_hash_per_four_elements():
    threefry2x32_p = getattr(pytest.importorskip('jax.extend.random'), 'threefry2x32_p', None)
    if threefry2x32_p is None:
        pytest.skip('this jax has no jax.extend.random.threefry2x32_p (dropout uses its fallback)')
    key = jax.random.PRNGKey(7)
    shape = (3, 6)                       # 6 elements a row: 2 words a row, the last half used
    u = np.asarray(uniform16(key, shape))
    counter = np.arange(3 * 2, dtype=np.uint32).reshape(3, 2)
    w0, w1 = threefry2x32_p.bind(key[0], key[1], jnp.zeros_like(counter), jnp.asarray(counter))
    w0, w1 = np.asarray(w0), np.asarray(w1)
    for r in range(3):
        for i in range(6):
            word, part = divmod(i, 4)
            expected = [w0[r, word] >> 16, w0[r, word] & 0xFFFF,
                        w1[r, word] >> 16, w1[r, word] & 0xFFFF][part]
            assert u[r, i] == expected, (r, i)
    assert u.max() < 65536


def test_typed_and_raw_keys_give_the_same_mask_and_other_keys_another():
    raw = jax.random.PRNGKey(3)
    typed = jax.random.key(3)
    a = keep_mask(raw, (64, 50), 0.1)
    assert bool(jnp.all(a == keep_mask(typed, (64, 50), 0.1)))
    assert bool(jnp.all(a == keep_mask(raw, (64, 50), 0.1)))            # a pure function
    assert not bool(jnp.all(a == keep_mask(jax.random.fold_in(raw, 1), (64, 50), 0.1)))


def test_statistics_keep_rate_mean_and_independence():
    x = jnp.ones((400, 1000), jnp.float32)
    y = Dropout(0.1).apply({}, x, deterministic=False, rngs={'dropout': jax.random.PRNGKey(0)})
    kept = np.asarray(y > 0)
    n, keep = kept.size, keep_probability(0.1)
    sd = np.sqrt(keep * (1 - keep) / n)
    assert abs(kept.mean() - keep) < 5 * sd
    # unbiased: the kept values are scaled by 1 / keep exactly
    np.testing.assert_allclose(np.asarray(y)[kept], 1.0 / keep, rtol=1e-6)
    assert abs(float(jnp.mean(y)) - 1.0) < 5 * sd / keep
    # the four elements of one hash are independent: neighbours agree as often as chance says
    both = (kept[:, :-1] & kept[:, 1:]).mean()
    assert abs(both - keep ** 2) < 5 * np.sqrt(keep ** 2 * (1 - keep ** 2) / kept[:, 1:].size)
    u = np.asarray(uniform16(jax.random.PRNGKey(1), (256, 1024))).astype(np.float64) / 65536
    assert abs(np.corrcoef(u[:, 0::4].ravel(), u[:, 1::4].ravel())[0, 1]) < 0.02
    assert abs(np.corrcoef(u[:, 1::4].ravel(), u[:, 2::4].ravel())[0, 1]) < 0.02
    hist = np.histogram(u, bins=16, range=(0, 1))[0]
    assert hist.min() > 0.95 * u.size / 16 and hist.max() < 1.05 * u.size / 16


def test_deterministic_rate_zero_and_rate_one():
    x = jnp.arange(24, dtype=jnp.float32).reshape(2, 3, 4)
    rngs = {'dropout': jax.random.PRNGKey(0)}
    assert bool(jnp.all(Dropout(0.3).apply({}, x, deterministic=True) == x))
    assert bool(jnp.all(Dropout(0.0).apply({}, x, deterministic=False, rngs=rngs) == x))
    assert bool(jnp.all(Dropout(1.0).apply({}, x, deterministic=False, rngs=rngs) == 0))
    y = Dropout(0.5).apply({}, x.astype(jnp.bfloat16), deterministic=False, rngs=rngs)
    assert y.dtype == jnp.bfloat16
    assert set(np.unique(np.asarray(y, np.float32) / np.maximum(np.asarray(x), 1))) <= {0.0, 2.0}


def test_same_mask_when_the_batch_is_sharded():
    n = len(jax.devices())
    if n < 2:
        pytest.skip('needs fake CPU devices (conftest sets jax_num_cpu_devices)')
    mesh = Mesh(np.array(jax.devices()), ('data',))
    x = jnp.ones((4 * n, 10, 6), jnp.float32)
    key = jax.random.PRNGKey(11)

    def f(x, key):
        return Dropout(0.25).apply({}, x, deterministic=False, rngs={'dropout': key})

    one = jax.jit(f)(x, key)
    sharded = jax.jit(f, in_shardings=(NamedSharding(mesh, P('data')), None),
                      out_shardings=NamedSharding(mesh, P('data')))(x, key)
    assert bool(jnp.all(one == sharded))


def test_a_key_of_another_implementation_uses_the_fallback():
    key = jax.random.key(5, impl='rbg')
    u = np.asarray(uniform16(key, (300, 101)))
    assert u.shape == (300, 101) and u.max() < 65536
    kept = np.asarray(keep_mask(key, (300, 101), 0.1))
    keep = keep_probability(0.1)
    assert abs(kept.mean() - keep) < 5 * np.sqrt(keep * (1 - keep) / kept.size)
    both = (kept[:, :-1] & kept[:, 1:]).mean()            # the two halves of one draw
    assert abs(both - keep ** 2) < 5 * np.sqrt(keep ** 2 * (1 - keep ** 2) / kept[:, 1:].size)
