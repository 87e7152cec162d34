"""The decode caches' key-major layout (layers.key_major / key_major_attention) and the decode
steps' logits against the whole item table (ItemTable._step_logits, TiedItemScores.step_scores):
the same values as the plain layout and the sliced table, which the teacher-forcing tests of
test_models.py and test_gpt.py then compare with whole decodes."""
import jax
import jax.numpy as jnp
import numpy as np

from aos4rec_jax import models
from aos4rec_jax.models import layers
from aos4rec_jax.models.gpt import GPT, GPTConfig

N, B, L, T = 30, 3, 7, 4


def test_key_major_attention_equals_dot_product_attention():
    kq, kk, kv, km = jax.random.split(jax.random.PRNGKey(0), 4)
    q = jax.random.normal(kq, (B, 5, 2, 8))
    k = jax.random.normal(kk, (B, 11, 2, 8))
    v = jax.random.normal(kv, (B, 11, 2, 8))
    mask = jax.random.bernoulli(km, 0.7, (B, 1, 1, 11)).at[:, :, :, 0].set(True)
    assert layers.key_major(k).shape == (B, 2, 8, 11)
    np.testing.assert_allclose(
        layers.key_major_attention(q, layers.key_major(k), layers.key_major(v), mask),
        layers.dot_product_attention(q, k, v, mask), rtol=1e-5, atol=1e-6)


def _history():
    rng = np.random.default_rng(0)
    hist = rng.integers(1, N + 1, (B, L)).astype(np.int32)
    hist[1, :3] = 0
    return jnp.asarray(hist)


def _assert_step_logits_equal_logits(model, params):
    """A decode step's logits (`_step_logits`: whole table, then V columns) = `_logits`."""
    h = jax.random.normal(jax.random.PRNGKey(1), (B, 16))
    full = model.apply({'params': params}, h, method=model._step_logits)
    sliced = model.apply({'params': params}, h, method=model._logits)
    assert full.shape == sliced.shape == (B, N + 1)
    np.testing.assert_allclose(full, sliced, rtol=1e-6, atol=1e-6)


def test_transformer_decode_state_is_key_major():
    model = models.build('transformer', dict(num_items=N, embed_dim=16, num_heads=2, num_layers=2,
                                             mlp_dim=24, max_history_len=L, max_target_len=T))
    hist = _history()
    dec = jnp.full((B, T), N + 1, jnp.int32)
    params = model.init(jax.random.PRNGKey(0), hist, dec)['params']
    state = model.apply({'params': params}, hist, T, method=model.init_decode_state)
    for cross, cache in zip(state['user'].value['cross'], state['layers']):
        assert cross['k'].shape == cross['v'].shape == (B, 2, 8, L)
        assert cache['self_k'].shape == cache['self_v'].shape == (B, 2, 8, T)
    # the step's logits (whole table, then V columns) equal the sliced table's
    _assert_step_logits_equal_logits(model, params)


def test_untied_step_logits_equal_logits():
    model = models.build('gru', dict(num_items=N, embed_dim=16, hidden_dim=12, tie_output=False))
    hist = _history()
    dec = jnp.full((B, T), N + 1, jnp.int32)
    params = dict(model.init(jax.random.PRNGKey(0), hist, dec)['params'])
    # a non-zero bias, so that its slice is checked too
    params['output_proj'] = dict(params['output_proj'],
                                 bias=jax.random.normal(jax.random.PRNGKey(3),
                                                        params['output_proj']['bias'].shape))
    _assert_step_logits_equal_logits(model, params)


def test_gpt_step_scores_equal_score_all():
    net = GPT(GPTConfig(num_items=N, max_len=L + T - 1, embed_dim=16, num_layers=1, num_heads=2,
                        mlp_dim=24))
    hist = _history()
    params = net.init({'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)},
                      hist, None, False, method=net.encode)['params']
    h = jax.random.normal(jax.random.PRNGKey(2), (B, 16))
    a = net.apply({'params': params}, h, method=net.step_scores)
    b = net.apply({'params': params}, h, method=net.score_all)
    assert a.shape == b.shape == (B, N + 1)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
