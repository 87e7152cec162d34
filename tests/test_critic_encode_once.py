"""aos4rec.critic_encode_once: a critic update that encodes the history once for its real, fake and
gradient-penalty passes computes the same function as one that encodes it in every pass: the same
losses, the same gradient, so the same updated critic (to float32 rounding: XLA sums the encoder's
gradient contributions in another order), for the Transformer and the GRU critic; with the
critic's dropout on, the option does nothing (each pass keeps its own dropout mask)."""
import jax
import numpy as np
import pytest

from aos4rec_jax import critic as critic_lib
from tests.test_guard_ssrgan import INFO, init_state, make_config, make_steps, walks
from tests.test_seq2seq_training import key_bias_mask


def _update(model_name, once, dropout=0.0, seed=0):
    c = make_config(d_learning_rate=1e-3, gp_weight=1.0, td_weight=1.0, critic_encode_once=once,
                    critic_dropout=dropout)
    c.model = model_name
    critic = critic_lib.build_critic(c, INFO)
    cp = critic_lib.init_critic(critic, INFO, jax.random.PRNGKey(5))
    model, steps = make_steps(c, critic)
    state = init_state(model, steps, cp, seed=seed)
    data = walks(range(20))
    update = jax.jit(lambda s, d, k: steps.critic_update(s, d, k))
    new, m = update(state, data, jax.random.PRNGKey(11))
    return jax.device_get(new['critic']), jax.device_get(m), jax.device_get(cp), update, state, data


@pytest.mark.parametrize('model_name', ['transformer', 'gru'])
def test_one_encoding_computes_the_same_update(model_name):
    p0, m0, start, update0, state, data = _update(model_name, False)
    p1, m1, _, update1, _, _ = _update(model_name, True)
    for k in ('critic_loss', 'td_loss', 'gp', 'd_real', 'd_fake', 'critic_grad_norm'):
        assert float(m1[k]) == pytest.approx(float(m0[k]), rel=1e-5, abs=1e-7), k
    assert float(m0['gp']) > 0 and float(m0['td_loss']) > 0      # precondition: every term is on
    moved = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        lambda a, b: float(np.max(np.abs(a - b))), p0, start))
    assert max(moved) > 1e-4                                     # precondition: the update moved it
    # Adam's first step moves each parameter by lr * g / (|g| + 1e-8): a gradient that differed in
    # sign or size beyond rounding would differ by up to 2e-3 here; rounding moves an element
    # whose |g| is near Adam's epsilon by ~1e-6 (seen: 1.05e-6 on the GRU). The attention key
    # biases are left out: their true gradient is 0, so what they get is rounding noise, which
    # Adam's first step turns into a move of up to lr either way (test_seq2seq_training.py)
    flat = lambda p: np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(p)])
    noise = key_bias_mask(p0)
    gap = np.abs(flat(p0) - flat(p1))
    assert gap[~noise].max() < 1e-5, gap[~noise].max()
    assert gap[noise].max(initial=0.0) <= 2.01e-3
    # the encoder really is shared: the program has one encoder pass fewer (fewer HLO ops)
    n0 = update0.lower(state, data, jax.random.PRNGKey(11)).as_text().count('\n')
    n1 = update1.lower(state, data, jax.random.PRNGKey(11)).as_text().count('\n')
    assert n1 < n0


def test_with_dropout_each_pass_keeps_its_own_encoding():
    p0, m0, *_ = _update('transformer', False, dropout=0.2)
    p1, m1, *_ = _update('transformer', True, dropout=0.2)
    assert float(m0['critic_loss']) == float(m1['critic_loss'])
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(p0),
                                                    jax.tree_util.tree_leaves(p1)))
