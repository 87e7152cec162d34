"""aos4rec.critic_holdout: the seq2seq phase never sees a fixed draw of users; the critic and the
SSRGAN generator train on those users' windows only (data.holdout_users, data.windows_of_users,
ssrgan.Steps.part; docs/aos4rec.md, "Held-out users for the critic")."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aos4rec_jax import critic as critic_lib
from aos4rec_jax import data as data_lib
from aos4rec_jax import seq2seq
from aos4rec_jax import sharding as shard_lib
from aos4rec_jax import ssrgan
from tests.test_ssrgan import tiny_config

U, N_TRAIN = 6, 7                       # users, train items each: 6 windows a user


def test_holdout_users_fixed_count_and_nested():
    a = data_lib.holdout_users(1000, 0.2)
    assert a.dtype == bool and a.sum() == 200
    np.testing.assert_array_equal(a, data_lib.holdout_users(1000, 0.2))     # a fixed draw
    assert not (a & ~data_lib.holdout_users(1000, 0.3)).any()              # 0.3 holds 0.2's users
    assert data_lib.holdout_users(1000, 0.0).sum() == 0
    assert 0 < a[:500].sum() < 200                                          # not the first ids


def test_windows_of_users_draw_exactly_those_users_windows():
    cum = np.array([0, 3, 3, 7, 9, 14])            # 5 users; user 1 has no window
    users = np.array([False, True, True, False, True])
    sub = data_lib.windows_of_users(cum, users)
    np.testing.assert_array_equal(sub, [0, 0, 0, 4, 4, 9])
    # every index of the restricted draw lands on a window of a chosen user, each window once
    data = data_lib.DeviceData(items=jnp.arange(1, 40, dtype=jnp.int32),
                               offsets=jnp.array([0, 4, 5, 10, 13, 19]),
                               n_train=jnp.array([4, 1, 5, 3, 6]), window_cum=jnp.asarray(sub, jnp.int32))
    w = jnp.arange(int(sub[-1]))
    user = np.asarray(jnp.searchsorted(data.window_cum, w, side='right') - 1)
    pos = 1 + np.asarray(w) - sub[user]
    assert [(int(u), int(i)) for u, i in zip(user, pos)] == \
        [(2, i) for i in range(1, 5)] + [(4, i) for i in range(1, 6)]
    users_drawn, _ = data_lib.sample_windows_of_users(data, jax.random.PRNGKey(0), 256, 3, 2)
    assert set(np.asarray(users_drawn).tolist()) == {2, 4}


def _setup(holdout):
    info = data_lib.DataInfo(num_items=10 * U + N_TRAIN, num_users=U, k=2, target_len=2,
                             history_len=3, ban_history=False, num_candidates=5,
                             num_windows=U * (N_TRAIN - 1), profile='default', protocol='paper')
    # user u's train part: items 10u + 1 .. 10u + 7 (packed with no evaluation parts)
    items = np.concatenate([10 * u + 1 + np.arange(N_TRAIN) for u in range(U)]).astype(np.int32)
    cum = np.arange(U + 1) * (N_TRAIN - 1)
    data = data_lib.DeviceData(items=jnp.asarray(items), offsets=jnp.asarray(np.arange(U + 1) * N_TRAIN),
                               n_train=jnp.full((U,), N_TRAIN, jnp.int32), window_cum=jnp.asarray(cum, jnp.int32))
    held = data_lib.holdout_users(U, holdout)
    cums = {'seq2seq': data_lib.windows_of_users(cum, ~held), 'critic': data_lib.windows_of_users(cum, held)}
    c = tiny_config('gru', 'tiny,both')
    c.aos4rec.critic_holdout = holdout
    c.aos4rec.beam_size = 2
    model = seq2seq.build_model(c, info)
    critic = critic_lib.build_critic(c, info)
    bsh = shard_lib.batch_sharding(shard_lib.make_mesh(jax.devices()[:1]))
    return c, info, data, held, cums, model, critic, bsh


def test_each_phase_draws_from_its_own_users():
    """The oracle's seq2seq step draws only the users outside the holdout; the critic update and
    the generator update only the held-out users (their targets' items say whose windows they
    are); an epoch of the seq2seq phase is its own windows."""
    c, info, data, held, cums, model, critic, bsh = _setup(0.5)
    seen = []

    class Recording(ssrgan.Steps):
        def batch(self, d, key):          # the drawn targets' users, recorded as the step runs
            b, banned = super().batch(d, key)
            jax.debug.callback(lambda t: seen.append(
                sorted({int(x) // 10 for x in np.asarray(t).ravel() if x > 0})), b.target)
            return b, banned

    st = Recording(c, model, critic, info, 8, bsh, window_cums=cums)
    assert st.seq2seq_windows == int((~held).sum()) * (N_TRAIN - 1)
    params = seq2seq.init_params(model, info, jax.random.PRNGKey(0))
    cp = critic_lib.init_critic(critic, info, jax.random.PRNGKey(1))
    state = dict(step=jnp.int32(0), rng=jax.random.PRNGKey(2), params=params,
                 opt_state=st.mle_tx.init(params), critic=cp, critic_opt_state=st.d_tx.init(cp))
    outside, inside = set(np.flatnonzero(~held).tolist()), set(np.flatnonzero(held).tolist())
    jax.block_until_ready(jax.jit(st.seq2seq_step)(state, data))
    assert len(seen) == 1 and set(seen[-1]) <= outside and seen[-1]
    jax.block_until_ready(jax.jit(st.critic_update)(state, data, jax.random.PRNGKey(3)))
    assert len(seen) == 2 and set(seen[-1]) <= inside and seen[-1]
    jax.block_until_ready(jax.jit(st.generator_update)(state, data, jax.random.PRNGKey(4)))
    assert len(seen) == 3 and set(seen[-1]) <= inside and seen[-1]
    # without a holdout: one part, every user's windows
    st0 = ssrgan.Steps(c, model, critic, info, 8, bsh)
    assert st0.part(data, 'critic') is data and st0.seq2seq_windows == info.num_windows


def test_mle_step_draws_from_the_seq2seq_users():
    c, info, data, held, cums, model, critic, bsh = _setup(0.5)
    c.aos4rec.oracle = False
    st = ssrgan.Steps(c, model, critic, info, 64, bsh, window_cums=cums)
    drawn = []
    orig = data_lib.sample_windows

    def spy(d, key, *a):                  # the drawn targets' users, recorded as the step runs
        b = orig(d, key, *a)
        jax.debug.callback(lambda t: drawn.extend(int(x) // 10 for x in np.asarray(t).ravel()
                                                  if x > 0), b.target)
        return b
    params = seq2seq.init_params(model, info, jax.random.PRNGKey(0))
    state = dict(step=jnp.int32(0), rng=jax.random.PRNGKey(2), params=params,
                 opt_state=st.mle_tx.init(params))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data_lib, 'sample_windows', spy)
        jax.block_until_ready(jax.jit(st.seq2seq_step)(state, data))
    assert drawn and set(drawn) == set(np.flatnonzero(~held).tolist())
