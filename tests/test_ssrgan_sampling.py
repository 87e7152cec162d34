"""How SSRGAN's training steps draw: Eq. 8's successors in the decoding pass that draws y^
(``decoding.sample``'s ``num_successors``, ``aos4rec.successors_from_decode``), and the lists
y^ themselves by Gumbel-max or inverse CDF (``aos4rec.list_sampler``).

At step t the decoder holds P_G(. | x, y^_1:t-1) over the allowed items (history and y^_1:t-1
banned, at the sampling temperature): the distribution Eq. 8's c successors of the prefix
y^_1:t-1 are drawn from. Drawing them there saves the teacher-forced pass of G over y^ that the
critic update otherwise runs only to get those distributions again. Checked here:
* the successors of every step follow that step's allowed softmax at the temperature, given the
  row's own drawn prefix (a hand step function whose logits depend on the step and the previous
  item, so a successor drawn from the wrong step or after the wrong prefix is seen);
* the c draws are independent (with replacement) and y^_t itself may be among them;
* they obey bans and candidates, and a row with nothing allowed gets 0;
* wired into the critic update: with a policy so peaked that every draw is its argmax, the update
  from the decoding pass (lists by inverse CDF) equals the update from the teacher-forced pass
  (lists by Gumbel-max): same lists, same successors, same losses and critic, for the GRU and
  the Transformer generator;
* ``list_sampler`` hands decoding.sample the method it names.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aos4rec_jax import critic as critic_lib
from aos4rec_jax import decoding as dec
from aos4rec_jax import sampling
from tests.test_guard_ssrgan import INFO, init_state, make_config, make_steps, walks

V, LEN, BOS = 7, 4, 6          # items 1..5, BOS 6 (never allowed: banned below)
rs = np.random.RandomState(0)
TABLE = (rs.randn(LEN, V, V) * 1.2).astype(np.float32)   # logits[t, prev item] over V


def step(state, prev, t):
    """Logits that depend on the step and the previous item (BOS at t = 0)."""
    return jnp.asarray(TABLE)[t, prev], state


def expected(seqs, banned, temperature):
    """p[r, t, v]: the allowed softmax of step t of row r given its own prefix seqs[r, :t]."""
    n = seqs.shape[0]
    p = np.zeros((n, LEN, V))
    for r in range(n):
        for t in range(LEN):
            prev = BOS if t == 0 else seqs[r, t - 1]
            allowed = np.ones(V, bool)
            allowed[0] = False
            allowed[banned[r]] = False
            allowed[seqs[r, :t]] = False
            w = np.where(allowed, np.exp(TABLE[t, prev].astype(np.float64) / temperature), 0.0)
            p[r, t] = w / w.sum()
    return p


@pytest.mark.parametrize('list_method', dec.SAMPLE_METHODS)
@pytest.mark.parametrize('method', sampling.SAMPLERS)
@pytest.mark.parametrize('temperature', [0.6, 1.0])
def test_successors_follow_each_steps_allowed_softmax(list_method, method, temperature):
    n, c = 3000, 2
    banned = np.zeros((n, V), bool)
    banned[:, BOS] = True
    banned[::2, 3] = True                                  # half the users also ban item 3
    fn = jax.jit(lambda k1, k2: dec.sample(
        step, jnp.zeros((n, 1)), k1, batch_size=n, vocab_size=V, length=LEN, bos_id=BOS,
        temperature=temperature, method=list_method, banned=banned, num_successors=c,
        successor_rng=k2, successor_method=method))
    out = fn(jax.random.PRNGKey(1), jax.random.PRNGKey(2))
    seqs = np.asarray(out.sequences[:, 0])
    succ = np.asarray(out.successors[:, 0])                # [n, T, c]
    assert succ.shape == (n, LEN, c) and (succ > 0).all()
    p = expected(seqs, banned, temperature)
    # never a banned item, never an earlier item of the row's own list
    assert not banned[np.arange(n)[:, None, None], succ].any()
    for t in range(1, LEN):
        assert not (succ[:, t, :, None] == seqs[:, None, :t]).any()
    # y^_t itself is allowed among its alternatives, and is drawn
    assert (succ == seqs[:, :, None]).any()
    # frequencies: sum over rows of P(v) against the count of v, per step and item (5 s.e.)
    for t in range(LEN):
        for k in range(c):
            count = np.bincount(succ[:, t, k], minlength=V)
            mean = p[:, t].sum(axis=0)
            sd = np.sqrt((p[:, t] * (1 - p[:, t])).sum(axis=0))
            np.testing.assert_array_less(np.abs(count - mean), 5 * sd + 1e-9,
                                         err_msg=f'step {t}, draw {k}')
    # the check can see a successor drawn after the wrong prefix: the next step's distribution
    # differs from this one's by far more than the bound
    shifted = p[:, 1:].sum(axis=0) - p[:, :-1].sum(axis=0)
    assert np.abs(shifted).max() > 20 * np.sqrt(n * 0.25)


@pytest.mark.parametrize('list_method', dec.SAMPLE_METHODS)
@pytest.mark.parametrize('method', sampling.SAMPLERS)
def test_drawing_successors_leaves_the_lists_draws_unchanged(list_method, method):
    """The lists drawn with successors are the lists drawn without them (same key): the
    successors have their own keys, and where the list's draw and theirs share one search
    (both inverse CDF) it is the same draw."""
    n = 64
    banned = np.zeros((n, V), bool)
    banned[:, BOS] = True
    kw = dict(batch_size=n, vocab_size=V, length=LEN, bos_id=BOS, temperature=0.8,
              method=list_method, banned=banned)
    plain = dec.sample(step, jnp.zeros((n, 1)), jax.random.PRNGKey(4), **kw)
    both = dec.sample(step, jnp.zeros((n, 1)), jax.random.PRNGKey(4), num_successors=3,
                      successor_rng=jax.random.PRNGKey(9), successor_method=method, **kw)
    np.testing.assert_array_equal(plain.sequences, both.sequences)
    np.testing.assert_array_equal(plain.log_probs, both.log_probs)


@pytest.mark.parametrize('method', sampling.SAMPLERS)
def test_the_c_draws_are_independent(method):
    """Two items, P = (0.9, 0.1) at every step, c = 2: both draws are item 1 with probability
    0.81 (with replacement, independent), not 0 (without replacement)."""
    logits = jnp.log(jnp.array([1e-9, 0.9, 0.1, 1e-9], jnp.float32))
    n = 4000

    def flat(state, prev, t):
        return jnp.broadcast_to(logits, (prev.shape[0], 4)), state

    out = jax.jit(lambda k: dec.sample(
        flat, jnp.zeros((n, 1)), jax.random.PRNGKey(0), batch_size=n, vocab_size=4, length=1,
        bos_id=3, num_successors=2, successor_rng=k, successor_method=method,
        banned=jnp.zeros((n, 4), bool).at[:, 3].set(True)))(jax.random.PRNGKey(7))
    s = np.asarray(out.successors[:, 0, 0])                 # [n, 2]
    both = np.mean((s == 1).all(axis=-1))
    assert abs(both - 0.81) < 5 * np.sqrt(0.81 * 0.19 / n), both
    assert abs(np.mean(s == 1) - 0.9) < 5 * np.sqrt(0.09 / (2 * n))


def test_candidates_nothing_allowed_and_arguments():
    """With candidates the successors are candidate item ids; a row whose every item is banned
    gets 0; without num_successors there are none; num_successors needs a key."""
    n = 4
    cands = jnp.array([[2, 4, 5]] * n, jnp.int32)
    out = dec.sample(step, jnp.zeros((n, 1)), jax.random.PRNGKey(0), batch_size=n, vocab_size=V,
                     length=3, bos_id=BOS, candidates=cands, num_successors=3,
                     successor_rng=jax.random.PRNGKey(1))
    s = np.asarray(out.successors)
    assert s.shape == (n, 1, 3, 3) and set(np.unique(s)) <= {2, 4, 5}
    banned = jnp.ones((n, V), bool)
    none = dec.sample(step, jnp.zeros((n, 1)), jax.random.PRNGKey(0), batch_size=n, vocab_size=V,
                      length=2, bos_id=BOS, banned=banned, num_successors=2,
                      successor_rng=jax.random.PRNGKey(1))
    assert (np.asarray(none.successors) == 0).all()
    plain = dec.sample(step, jnp.zeros((n, 1)), jax.random.PRNGKey(0), batch_size=n,
                       vocab_size=V, length=2, bos_id=BOS)
    assert plain.successors is None
    with pytest.raises(ValueError, match='successor_rng'):
        dec.sample(step, jnp.zeros((n, 1)), jax.random.PRNGKey(0), batch_size=n, vocab_size=V,
                   length=2, bos_id=BOS, num_successors=2)
    with pytest.raises(ValueError, match='successor_method'):
        dec.sample(step, jnp.zeros((n, 1)), jax.random.PRNGKey(0), batch_size=n, vocab_size=V,
                   length=2, bos_id=BOS, num_successors=2, successor_rng=jax.random.PRNGKey(1),
                   successor_method='nope')


def _peaked(params, model_name):
    """The generator with its item table (tied to the output layer) scaled up: with the
    temperature at 1e-4 every step's distribution is (to float32) one-hot at its argmax, so
    every draw is determined."""
    return dict(params, item_embed=jax.tree_util.tree_map(lambda x: x * 30.0,
                                                          params['item_embed']))


@pytest.mark.parametrize('model_name', ['gru', 'transformer'])
def test_critic_update_from_the_decoding_pass_equals_the_teacher_forced_one(model_name):
    data = walks(range(20))
    results = {}
    for flag in (False, True):
        c = make_config(d_learning_rate=1e-3, gp_weight=1.0, td_weight=1.0,
                        successors_from_decode=flag, temperature=1e-4,
                        list_sampler='inverse_cdf' if flag else 'gumbel')
        c.model = model_name
        critic = critic_lib.build_critic(c, INFO)
        cp = critic_lib.init_critic(critic, INFO, jax.random.PRNGKey(5))
        model, steps = make_steps(c, critic)
        state = init_state(model, steps, cp)
        state['params'] = _peaked(state['params'], model_name)
        if flag:
            # precondition: the policy is so peaked that the draws do not depend on the keys
            b, banned = steps.batch(data, jax.random.PRNGKey(3))
            gen = jax.jit(steps.generate)
            f1, s1 = gen(state['params'], b.history, banned, jax.random.PRNGKey(1),
                         jax.random.PRNGKey(2))
            f2, s2 = gen(state['params'], b.history, banned, jax.random.PRNGKey(4),
                         jax.random.PRNGKey(5))
            np.testing.assert_array_equal(f1, f2)
            np.testing.assert_array_equal(s1, s2)
            # the argmax of step t with y^_1:t-1 banned is y^_t: every successor repeats it
            np.testing.assert_array_equal(s1, np.repeat(np.asarray(f1)[..., None], 3, axis=-1))
        update = jax.jit(steps.critic_update)
        results[flag] = [jax.device_get(update(state, data, jax.random.PRNGKey(k)))
                         for k in (11, 12)]
    for k in range(2):
        (s0, m0), (s1, m1) = results[False][k], results[True][k]
        assert float(m0['td_loss']) > 0 and float(m0['gp']) > 0      # every term is on
        for name in ('critic_loss', 'td_loss', 'gp', 'd_real', 'd_fake', 'critic_grad_norm'):
            assert float(m1[name]) == pytest.approx(float(m0[name]), rel=1e-5, abs=1e-6), name
        for a, b in zip(jax.tree_util.tree_leaves(s0['critic']),
                        jax.tree_util.tree_leaves(s1['critic'])):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('list_sampler,method', [('gumbel', 'gumbel'), ('inverse_cdf', 'categorical')])
def test_list_sampler_picks_how_the_lists_are_drawn(list_sampler, method):
    """aos4rec.list_sampler: the critic's and the generator's lists are exactly
    decoding.sample's draws by that method (Gumbel-max, or one uniform in the inverse CDF) at the
    policy's temperature, with the whole-history ban; the two methods draw other lists."""
    c = make_config(list_sampler=list_sampler, temperature=0.7)
    model, steps = make_steps(c, None)
    params = init_state(model, steps, {})['params']
    b, banned = steps.batch(walks(range(20)), jax.random.PRNGKey(3))
    key = jax.random.PRNGKey(8)
    got = np.asarray(steps.generate(params, b.history, banned, key))
    state = model.apply({'params': params}, b.history, INFO.target_len,
                        method=model.init_decode_state)
    from aos4rec_jax import seq2seq

    def draw(m):
        return np.asarray(dec.sample(seq2seq.make_step_fn(model, params), state, key,
                                     batch_size=b.history.shape[0], vocab_size=INFO.vocab_size,
                                     length=INFO.target_len, bos_id=INFO.bos_id, temperature=0.7,
                                     method=m, banned=banned).sequences[:, 0])
    np.testing.assert_array_equal(got, draw(method))
    other = 'gumbel' if method == 'categorical' else 'categorical'
    assert (got != draw(other)).any()
