"""SSRGAN: the critic (critic.py), the training steps (ssrgan.py) and the AOS4Rec schedule."""
import dataclasses
import json
import math
import os

import jax
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from aos4rec_jax import aos4rec as aos4rec_lib
from aos4rec_jax import checkpoint as ckpt_lib
from aos4rec_jax import config as config_lib
from aos4rec_jax import critic as critic_lib
from aos4rec_jax import data as data_lib
from aos4rec_jax import decoding
from aos4rec_jax import seq2seq
from aos4rec_jax import sharding as shard_lib
from aos4rec_jax import ssrgan
from aos4rec_jax import trainer
from experiments.configs import aos4rec as aos_cfg
from tests.test_trainer import assert_predictions_agree, read_json

N_ITEMS, L, T = 20, 6, 4
INFO = data_lib.DataInfo(num_items=N_ITEMS, num_users=10, k=T, target_len=T, history_len=L,
                         ban_history=True, num_candidates=5, num_windows=100, profile='default',
                         protocol='paper')


def tiny_config(model='transformer', variant='tiny'):
    c = aos_cfg.get_config(variant)
    c.model = model
    return c


def make_critic(model):
    c = tiny_config(model)
    cr = critic_lib.build_critic(c, INFO)
    return cr, critic_lib.init_critic(cr, INFO, jax.random.PRNGKey(0))


def random_inputs(seed=1, batch=3, c=3):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    hist = jax.random.randint(k1, (batch, L), 0, N_ITEMS + 1)
    seq = jax.random.randint(k2, (batch, T), 1, N_ITEMS + 1)
    succ = jax.random.randint(k3, (batch, T, c), 1, N_ITEMS + 1)
    return hist, seq, succ


# ----------------------------------------------------------------------------- the critic
def test_tree_mask_by_hand():
    pos, mask = critic_lib.tree_mask(2, 1)       # prefix tokens BOS, y1, y2; successors of t=1, 2
    np.testing.assert_array_equal(pos, [0, 1, 2, 1, 2])
    np.testing.assert_array_equal(np.asarray(mask, int), [[1, 0, 0, 0, 0],
                                                          [1, 1, 0, 0, 0],
                                                          [1, 1, 1, 0, 0],
                                                          [1, 0, 0, 1, 0],
                                                          [1, 1, 0, 0, 1]])


@pytest.mark.parametrize('model', ['transformer', 'gru'])
def test_critic_scores_every_prefix_and_successor_in_one_pass(model):
    """scores[:, t] = D(x, y_1:t) depends on y_1:t only; the successor scores equal the critic on
    the plain sequences {y_1:t-1, y'} (Eq. 8's D(x, {y^_1:t-1, y'})). Every variant sequence is
    scored in one batch by one jitted call (no Python loop over apply)."""
    cr, p = make_critic(model)
    hist, seq, succ = random_inputs()
    b, c = seq.shape[0], succ.shape[2]
    apply = jax.jit(lambda h, y, s=None: cr.apply({'params': p}, h, y, s))
    s, s_next = apply(hist, seq, succ)
    assert s.shape == (b, T + 1) and s_next.shape == (b, T, c)
    s_alone, none = apply(hist, seq)
    assert none is None
    np.testing.assert_allclose(s, s_alone, atol=1e-5)
    # variants: position t-1 changed (t = 1..T), then position t-1 set to each successor (t, k)
    changed = [seq.at[:, t - 1].set(seq[:, t - 1] % N_ITEMS + 1) for t in range(1, T + 1)]
    alts = [seq.at[:, t - 1].set(succ[:, t - 1, k]) for t in range(1, T + 1) for k in range(c)]
    variants = jnp.concatenate(changed + alts, axis=0)              # [(T + T c) b, T]
    scores = np.asarray(apply(jnp.tile(hist, (T + T * c, 1)), variants)[0])
    scores = scores.reshape(T + T * c, b, T + 1)
    s, s_next = np.asarray(s), np.asarray(s_next)
    for t in range(1, T + 1):
        s2 = scores[t - 1]
        np.testing.assert_allclose(s2[:, :t], s[:, :t], atol=1e-5)      # the past is unchanged
        assert np.abs(s2[:, t] - s[:, t]).max() > 1e-6                   # the prefix t is scored
        for k in range(c):
            np.testing.assert_allclose(s_next[:, t - 1, k], scores[T + (t - 1) * c + k][:, t],
                                       atol=1e-5)


@pytest.mark.parametrize('model', ['transformer', 'gru'])
def test_gradient_penalty_is_per_user(model):
    """GP = mean over users of (||grad of that user's mean prefix score wrt its interpolated
    embedded inputs|| - 1)^2; users without a valid position skipped. The reference takes each
    user's gradient in FORWARD mode (jax.jacfwd, one user at a time under vmap) instead of the
    module's reverse-mode gradient of the batch sum, in one jitted call."""
    cr, p = make_critic(model)
    hist, real, fake = random_inputs(seed=2, batch=4, c=1)
    fake = fake[..., 0]
    mask = np.ones((4, T), bool)
    mask[1, 2:] = False
    mask[3] = False                              # no valid position: left out
    key = jax.random.PRNGKey(7)
    got = jax.jit(lambda: critic_lib.gradient_penalty(cr, p, hist, real, fake, mask, key))()
    a = jax.random.uniform(key, (4, 1, 1))
    m = jnp.asarray(mask, jnp.float32)

    @jax.jit
    def norms():
        e_r = cr.apply({'params': p}, real, method=cr.embed)
        e_f = cr.apply({'params': p}, fake, method=cr.embed)
        e_hat = a * e_r + (1 - a) * e_f

        def user_mean(e, h, mu):
            d = cr.apply({'params': p}, h[None], e[None], method=cr.score_embeds)[0, 1:]
            return jnp.sum(d * mu) / jnp.maximum(jnp.sum(mu), 1.0)

        g = jax.vmap(jax.jacfwd(user_mean))(e_hat, hist, m)
        return jnp.sqrt(jnp.sum(g ** 2, axis=(1, 2)))

    n = np.asarray(norms(), np.float64)[:3]
    assert float(got) == pytest.approx(np.mean((n - 1.0) ** 2), rel=1e-4)


# ----------------------------------------------------------------------------- the steps
def test_window_ban_mask_and_allowed_items_by_hand():
    hist = jnp.array([[0, 0, 3, 1], [2, 2, 0, 4]])
    ban = np.asarray(ssrgan.window_ban_mask(hist, 6))
    np.testing.assert_array_equal(ban, [[0, 1, 0, 1, 0, 0], [0, 0, 1, 0, 1, 0]])
    gen = jnp.array([[5, 2, 4]])
    allowed = np.asarray(ssrgan.allowed_items(gen, 6, jnp.array([[0, 0, 0, 1, 0, 0]], bool)))
    np.testing.assert_array_equal(allowed[0].astype(int), [[0, 1, 1, 0, 1, 1],
                                                           [0, 1, 1, 0, 1, 0],
                                                           [0, 1, 0, 0, 1, 0]])


@pytest.mark.parametrize('model', ['transformer', 'gru'])
def test_actor_log_probs_are_those_of_the_sampler(model):
    """Eq. 4 uses log P_G of the lists the sampler drew (aos4rec.list_sampler: Gumbel-max or
    inverse CDF): same distribution (banned and earlier items masked, dropout off), so the
    log-probabilities agree."""
    c = tiny_config(model)
    m = seq2seq.build_model(c, INFO)
    params = seq2seq.init_params(m, INFO, jax.random.PRNGKey(0))
    steps = ssrgan.Steps(c, m, None, INFO, 4, None)
    hist, _, _ = random_inputs(seed=3, batch=4)
    banned = ssrgan.window_ban_mask(hist, INFO.vocab_size)
    fake = steps.generate(params, hist, banned, jax.random.PRNGKey(5))
    assert fake.shape == (4, T)
    seqs = np.asarray(fake)
    for u in range(4):
        assert len(set(seqs[u])) == T and not set(seqs[u]) & set(np.asarray(hist[u])) - {0}
    state = m.apply({'params': params}, hist, T, method=m.init_decode_state)
    ref = decoding.sample(seq2seq.make_step_fn(m, params), state, jax.random.PRNGKey(5),
                          batch_size=4, vocab_size=INFO.vocab_size, length=T, bos_id=INFO.bos_id,
                          method=steps.list_method, banned=banned)
    np.testing.assert_array_equal(ref.sequences[:, 0], fake)
    logp, _ = steps.log_probs(params, hist, fake, banned)
    np.testing.assert_allclose(logp, ref.log_probs[:, 0], atol=1e-4)


def test_steps_keep_the_settings_they_were_built_with():
    """The steps are traced at their first call; changing the config afterwards (as a driver that
    builds several runs from one config would) must not change what they compute."""
    c = tiny_config('gru')
    c.aos4rec.oracle, c.aos4rec.beam_size = True, 3
    m = seq2seq.build_model(c, INFO)
    steps = ssrgan.Steps(c, m, None, INFO, 4, None)
    c.aos4rec.oracle, c.aos4rec.beam_size = False, 7
    assert steps.a.oracle is True and steps.a.beam_size == 3


def test_schedule_and_phases():
    c = tiny_config(variant='tiny')
    c.train_steps, c.aos4rec.critic_pretrain_steps, c.aos4rec.gan_steps = 3, 2, 4
    assert ssrgan.schedule(c) == (3, 2, 4)
    assert [ssrgan.phase_of(s, c) for s in range(9)] == ['seq2seq'] * 3 + ['critic'] * 2 + ['gan'] * 4
    c.aos4rec.adversarial = False
    assert ssrgan.schedule(c) == (3, 0, 0)


def test_ablation_variants_and_config_errors():
    rows = {v: (aos_cfg.get_config(v).aos4rec.oracle, aos_cfg.get_config(v).aos4rec.adversarial)
            for v in ('base', 'oracle', 'adver', 'both', '')}
    assert rows == {'base': (False, False), 'oracle': (True, False), 'adver': (False, True),
                    'both': (True, True), '': (True, True)}
    c = aos_cfg.get_config('tiny,base')
    assert c.train_steps == 30 and not c.aos4rec.oracle
    with pytest.raises(ValueError, match='unknown variant'):
        aos_cfg.get_config('tiny,nope')
    c = tiny_config(variant='tiny,oracle')
    c.aos4rec.init_from = '/somewhere'
    with pytest.raises(config_lib.ConfigError, match='aos4rec.init_from'):
        config_lib.validate(c)
    c = tiny_config()
    c.aos4rec.lipschitz = 'hope'
    with pytest.raises(config_lib.ConfigError, match='aos4rec.lipschitz'):
        config_lib.validate(c)
    c = tiny_config()
    c.aos4rec.d_steps = 0
    with pytest.raises(config_lib.ConfigError, match='aos4rec.d_steps'):
        config_lib.validate(c)
    c = tiny_config()
    c.model = 'poprec'
    with pytest.raises(config_lib.ConfigError, match='aos4rec'):
        config_lib.validate(c)


# ----------------------------------------------------------------------------- whole runs
def _phases(workdir):
    return [json.loads(l)['phase'] for l in open(os.path.join(workdir, 'metrics', 'train.jsonl'))]


# every phase on the trainer's default mesh, all 8 fake devices (tests/conftest.py)
@pytest.mark.slow
@pytest.mark.all_devices
def test_gru_tiny_run_goes_through_every_phase(tmp_path):
    c = tiny_config('gru')
    res = trainer.train_and_evaluate(c, str(tmp_path))
    phases = _phases(str(tmp_path))
    assert {'seq2seq', 'critic', 'gan'} == set(phases) and phases == sorted(
        phases, key=['seq2seq', 'critic', 'gan'].index)
    train = [json.loads(l) for l in open(tmp_path / 'metrics' / 'train.jsonl')]
    # p of the oracle phase follows the paper's schedule, computed here: the logged value is the
    # mean over the steps s of its log interval of 12 / (12 + exp(e / 12)), e = s * B / windows.
    # rel 1e-5 (float32 rounding): a constant p (0.923 at every step) is off by up to 2e-3.
    windows = read_json(tmp_path / 'dataset.json')['num_windows']
    s2s = [r for r in train if r['phase'] == 'seq2seq']
    assert [r['step'] for r in s2s] == list(range(c.log_every, c.train_steps + 1, c.log_every))
    prev = 0
    for r in s2s:
        want = np.mean([12 / (12 + math.exp(s * c.batch_size / windows / 12))
                        for s in range(prev, r['step'])])
        assert r['p'] == pytest.approx(want, rel=1e-5), r
        prev = r['step']
    assert s2s[0]['p'] - s2s[-1]['p'] > 1e-4          # and it falls
    gan = [r for r in train if r['phase'] == 'gan']
    assert gan and all(np.isfinite([r['wasserstein'], r['td_loss'], r['gp'], r['advantage']]).all()
                       for r in gan)
    # the critic's separation on held-out validation users, at the validation steps of the
    # critic and SSRGAN phases: here the end of each (eval_every 15 falls in neither)
    P, C, G = ssrgan.schedule(c)
    sep = [r for r in train if 'val_auc' in r]
    assert [(r['step'], r['phase']) for r in sep] == [(P + C, 'critic'), (P + C + G, 'gan')]
    for r in sep:
        assert 0.0 <= r['val_auc'] <= 1.0 and r['val_adv_std'] >= 0.0
        assert np.isfinite([r['val_wasserstein'], r['val_adv_mean']]).all()
    assert not any('val_count' in r for r in train)
    valid = [json.loads(l) for l in open(tmp_path / 'metrics' / 'valid_history.jsonl')]
    # the seq2seq validations, the generator that starts the rounds (gan_start_competes), the end
    assert [(v['phase'], v.get('at_entry', False)) for v in valid] == [
        ('seq2seq', False), ('seq2seq', False), ('gan', True), ('gan', False)]
    assert res['test']['users'] > 0 and (tmp_path / 'plots' / 'training.png').exists()
    assert_predictions_agree(str(tmp_path))

    # SSRGAN started from this finished run's generator, in a new run (what the ablation does)
    c2 = tiny_config('gru', 'tiny,adver')
    c2.train_steps = 0
    c2.aos4rec.init_from = str(tmp_path)
    c2.aos4rec.gan_steps = 2
    # checkpoints 0 (SSRGAN phase entered), 6 (the critic checked against the bar, entering the
    # SSRGAN rounds) and 8 (the end): keep all three, step 0 is read below
    c2.keep_checkpoints = 3
    trainer.train_and_evaluate(c2, str(tmp_path / 'adver'))
    ck = ckpt_lib.Checkpointer(str(tmp_path))
    src_params = ck.restore_best(None)[0]
    ck.close()
    ck = ckpt_lib.Checkpointer(str(tmp_path / 'adver'))
    start = ck.restore(0, None)[0]       # the state saved when the SSRGAN phase began
    ck.close()
    for a, b in zip(jax.tree_util.tree_leaves(src_params), jax.tree_util.tree_leaves(start['params'])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert set(_phases(str(tmp_path / 'adver'))) == {'critic', 'gan'}
    c3 = tiny_config('transformer', 'tiny,adver')
    c3.train_steps = 0
    c3.aos4rec.init_from = str(tmp_path)
    with pytest.raises(trainer.RunError, match='differs from this run in model'):
        trainer.train_and_evaluate(c3, str(tmp_path / 'wrong'))
    # a critic on held-out users needs a source that left the same users out
    c4 = tiny_config('gru', 'tiny,adver')
    c4.train_steps = 0
    c4.aos4rec.init_from = str(tmp_path)
    c4.aos4rec.critic_holdout = 0.2
    with pytest.raises(trainer.RunError, match=r'differs from this run in aos4rec\.critic_holdout '
                                               r'\(0 there, 0\.2 here\)'):
        trainer.train_and_evaluate(c4, str(tmp_path / 'wrong_holdout'))


# Killed and resumed in every AOS4Rec phase: tests/test_guard_resume.py.


def test_generator_update_weights_and_the_mle_only_control():
    """gan_adv_weight 0 with gan_mle_weight 1 (the MLE-only control) updates the generator without
    looking at the critic; the default (Eq. 4 only) depends on it; both 0 is refused."""
    c = tiny_config('gru')
    m = seq2seq.build_model(c, INFO)
    params = seq2seq.init_params(m, INFO, jax.random.PRNGKey(0))
    cr = critic_lib.build_critic(c, INFO)
    critics = [critic_lib.init_critic(cr, INFO, jax.random.PRNGKey(k)) for k in (1, 2)]
    # one user whose train part is items 1..12: 11 windows
    data = data_lib.DeviceData(items=jnp.arange(1, 13, dtype=jnp.int32), offsets=jnp.array([0, 12]),
                               n_train=jnp.array([12]), window_cum=jnp.array([0, 11]))

    def updated(adv_w, mle_w):
        """The updated generator for each critic: one compile per weight setting."""
        c.aos4rec.gan_adv_weight, c.aos4rec.gan_mle_weight = adv_w, mle_w
        config_lib.validate(c)
        bsharding = shard_lib.batch_sharding(shard_lib.make_mesh(jax.devices()[:1]))
        steps = ssrgan.Steps(c, m, cr, INFO, 4, bsharding)
        update = jax.jit(steps.generator_update)
        out = []
        for cp in critics:
            state = dict(step=jnp.int32(0), rng=jax.random.PRNGKey(3), params=params,
                         opt_state=steps.g_tx.init(params), critic=cp,
                         critic_opt_state=steps.d_tx.init(cp))
            out.append(jax.tree_util.tree_leaves(update(state, data, jax.random.PRNGKey(4))[0]['params']))
        return out

    def same(x, y):
        return all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(x, y))

    start = jax.tree_util.tree_leaves(params)
    control = updated(0.0, 1.0)
    assert same(*control) and not same(control[0], start)
    paper = updated(1.0, 0.0)
    assert not same(*paper) and not same(paper[0], start)
    # (that the paper's update goes the critic's way: test_guard_ssrgan.py, M1c)
    c.aos4rec.gan_adv_weight, c.aos4rec.gan_mle_weight = 0.0, 0.0
    with pytest.raises(config_lib.ConfigError, match='aos4rec.gan_adv_weight'):
        config_lib.validate(c)


# ----------------------------------------------------------------------------- issue 12
class FixedPolicy(nn.Module):
    """A parameter-free generator whose every step has the same logits `table` [V], whatever the
    history and the prefix: its policy at temperature tau is softmax(table / tau) over the allowed
    items, known exactly."""
    table: tuple

    def _logits(self, shape):
        return jnp.broadcast_to(jnp.asarray(self.table, jnp.float32), shape + (len(self.table),))

    def __call__(self, history, dec_inputs, train=False):
        return self._logits(dec_inputs.shape)

    def init_decode_state(self, history, max_len):
        return {'h': jnp.zeros((history.shape[0],), jnp.float32)}

    def decode_step(self, state, prev_items, t):
        return self._logits(prev_items.shape), state


POLICY = (0.0,) + tuple(np.linspace(3.0, -3.0, N_ITEMS).tolist())


@pytest.mark.slow
def test_eq4_log_probs_are_those_of_the_tempered_sampling_policy():
    """Issue 12, item 2: at aos4rec.temperature = 2 the lists are drawn from softmax(logits / 2),
    so Eq. 4's log-probabilities must be those of that policy: log softmax(table / 2) over the
    allowed items (not banned, not earlier in the list), to float precision. The sampler's
    first-item frequencies over 3,000 users follow the same policy (5 standard errors)."""
    c = tiny_config('gru')
    c.aos4rec.temperature = 2.0
    policy = FixedPolicy(POLICY)
    steps = ssrgan.Steps(c, policy, None, INFO, 4, None)
    hist, _, _ = random_inputs(seed=3, batch=4)
    banned = ssrgan.window_ban_mask(hist, INFO.vocab_size)
    fake = np.asarray(steps.generate({}, hist, banned, jax.random.PRNGKey(5)))
    logp = np.asarray(steps.log_probs({}, hist, jnp.asarray(fake), banned)[0])
    table = np.asarray(POLICY, np.float64)
    ban = np.asarray(banned)
    for b in range(4):
        for t in range(T):
            allowed = ~ban[b].copy()
            allowed[0] = False
            allowed[fake[b, :t]] = False
            w = np.where(allowed, np.exp(table / 2.0), 0.0)
            assert logp[b, t] == pytest.approx(np.log(w[fake[b, t]] / w.sum()), abs=1e-5), (b, t)
    n = 3000
    first = np.asarray(steps.generate({}, jnp.ones((n, L), jnp.int32) * 0, None,
                                      jax.random.PRNGKey(6)))[:, 0]
    w = np.exp(table / 2.0)
    w[0] = 0.0
    p = w / w.sum()
    freq = np.bincount(first, minlength=len(p)) / n
    np.testing.assert_array_less(np.abs(freq - p), 5 * np.sqrt(p * (1 - p) / n) + 1e-9)


BAN_INFO = dataclasses.replace(INFO, num_users=2, num_windows=13 + 5)


def long_users():
    """Two users with distinct items and train parts longer than L = 6: user 0 items 1..14, user 1
    items 15..20; every item once, so a window's first target item names its user and position."""
    seqs = [list(range(1, 15)), list(range(15, 21))]
    n = np.array([len(s) for s in seqs])
    return seqs, data_lib.DeviceData(
        items=jnp.asarray(np.concatenate(seqs), jnp.int32),
        offsets=jnp.asarray(np.concatenate([[0], np.cumsum(n)]), jnp.int32),
        n_train=jnp.asarray(n, jnp.int32),
        window_cum=jnp.asarray(np.concatenate([[0], np.cumsum(n - 1)]), jnp.int32))


def _assert_whole_history_banned(seqs, tgt, banned):
    """Each of the 64 windows of `long_users` (its first target item names user u and position
    i) bans exactly that user's items before i; more than 10 windows have a whole history
    longer than L. Returns (row, u, i) of every window."""
    rows = []
    for r in range(64):
        u = 0 if tgt[r, 0] <= 14 else 1
        i = seqs[u].index(int(tgt[r, 0]))
        assert set(np.flatnonzero(banned[r]).tolist()) == set(seqs[u][:i]), (r, u, i)
        rows.append((r, u, i))
    assert sum(i > L for _, _, i in rows) > 10    # windows whose whole history is longer than L
    return rows


@pytest.mark.slow
def test_training_bans_the_whole_history_as_evaluation_does():
    """Issue 12, item 3: with a profile that bans history items, a training window at position i
    of user u bans items[offsets[u] : offsets[u] + i], the user's whole history before the target
    (what evaluation bans), not only the L = 6 items of the window; the lists the generator draws
    under that ban hold none of them. 64 windows of two users whose train parts reach 13 items."""
    seqs, data = long_users()
    c = tiny_config('gru')
    m = seq2seq.build_model(c, BAN_INFO)
    params = seq2seq.init_params(m, BAN_INFO, jax.random.PRNGKey(0))
    bsharding = shard_lib.batch_sharding(shard_lib.make_mesh(jax.devices()[:1]))
    steps = ssrgan.Steps(c, m, None, BAN_INFO, 64, bsharding, max_history=13)
    b, banned = jax.jit(steps.batch)(data, jax.random.PRNGKey(2))
    fake = np.asarray(steps.generate(params, b.history, banned, jax.random.PRNGKey(3)))
    hist, tgt, banned = np.asarray(b.history), np.asarray(b.target), np.asarray(banned)
    for r, u, i in _assert_whole_history_banned(seqs, tgt, banned):
        whole = set(seqs[u][:i])
        window = [0] * max(0, L - i) + seqs[u][max(0, i - L):i]
        assert hist[r].tolist() == window                       # the window sample_windows drew
        assert not whole & set(fake[r].tolist())
    # the users and positions repeat sample_windows' own draw
    users, pos = ssrgan.window_positions(data, jax.random.PRNGKey(2), 64)
    np.testing.assert_array_equal(
        np.asarray(data.items)[np.asarray(data.offsets)[np.asarray(users)] + np.asarray(pos)],
        tgt[:, 0])


@pytest.mark.slow
def test_the_oracle_beams_of_a_seq2seq_step_ban_the_whole_history(monkeypatch):
    """Issue 12, item 3, inside the oracular update: the beam search that picks the oracle gets
    the same whole-history ban as `Steps.batch` makes for that step's windows (the user's items
    before the target, not the L = 6 of the window), read from the step's own key."""
    seqs, data = long_users()
    c = tiny_config('gru')
    c.aos4rec.oracle = True
    m = seq2seq.build_model(c, BAN_INFO)
    params = seq2seq.init_params(m, BAN_INFO, jax.random.PRNGKey(0))
    bsharding = shard_lib.batch_sharding(shard_lib.make_mesh(jax.devices()[:1]))
    steps = ssrgan.Steps(c, m, None, BAN_INFO, 64, bsharding, max_history=13)
    seen = []
    real_loss = aos4rec_lib.oracle_loss

    def spy(*args, banned=None, **kw):
        seen.append(banned)
        return real_loss(*args, banned=banned, **kw)

    monkeypatch.setattr(aos4rec_lib, 'oracle_loss', spy)
    state = dict(step=jnp.int32(3), rng=jax.random.PRNGKey(5), params=params,
                 opt_state=steps.mle_tx.init(params))
    steps.seq2seq_step(state, data)
    assert len(seen) == 1 and seen[0] is not None
    k_batch, _ = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(5), 3))
    b, want = steps.batch(data, k_batch)
    banned, tgt = np.asarray(seen[0]), np.asarray(b.target)
    np.testing.assert_array_equal(banned, np.asarray(want))
    _assert_whole_history_banned(seqs, tgt, banned)


@pytest.mark.slow
@pytest.mark.parametrize('model', ['transformer', 'gru'])
def test_gradient_penalty_treats_the_interpolates_as_data(model):
    """Issue 12, item 5: the penalty's gradient reaches the critic's layers (and the item rows of
    the history it reads) but not, through the interpolated points, the item-table rows of the
    items of y* and y^ or of BOS: those rows get exactly 0 (items 11..18, no history holds them)."""
    cr, p = make_critic(model)
    hist = jax.random.randint(jax.random.PRNGKey(1), (3, L), 1, 6)
    real = jnp.array([[11, 12, 13, 14]] * 3)
    fake = jnp.array([[15, 16, 17, 18]] * 3)
    mask = np.ones((3, T), bool)
    g = jax.jit(jax.grad(lambda q: critic_lib.gradient_penalty(
        cr, q, hist, real, fake, mask, jax.random.PRNGKey(4))))(p)
    table = np.asarray(g['backbone']['item_embed']['embedding'])
    assert np.all(table[11:19] == 0.0) and np.all(table[INFO.bos_id] == 0.0)
    assert np.abs(table[1:6]).sum() > 0                 # the history's rows still move
    head = np.asarray(g['head']['kernel'])
    assert np.abs(head).sum() > 0


@pytest.mark.slow
def test_critic_dropout_acts_in_the_critic_updates_only():
    """Issue 12, item 6: aos4rec.critic_dropout is applied in the critic's updates (one update
    from the same start differs between dropout 0 and 0.5), and not where the critic is read:
    the generator's advantages are the same at both rates."""
    from tests.test_guard_ssrgan import INFO as GUARD_INFO
    from tests.test_guard_ssrgan import init_state, make_config, make_steps, walks
    data = walks(range(20))
    out = {}
    for rate in (0.0, 0.5):
        cfg = make_config(critic_dropout=rate)
        critic = critic_lib.build_critic(cfg, GUARD_INFO)
        cp = critic_lib.init_critic(critic, GUARD_INFO, jax.random.PRNGKey(5))
        model, steps = make_steps(cfg, critic)
        state = init_state(model, steps, cp)
        new, m = jax.jit(steps.critic_step)(state, data)
        _, g = jax.jit(steps.generator_update)(state, data, jax.random.PRNGKey(9))
        out[rate] = (jax.device_get(cp), float(m['critic_loss']), float(g['advantage']),
                     jax.device_get(new['critic']))
    leaves = lambda t: [np.asarray(x) for x in jax.tree_util.tree_leaves(t)]
    for a, b in zip(leaves(out[0.0][0]), leaves(out[0.5][0])):
        np.testing.assert_array_equal(a, b)             # the same start
    assert out[0.0][1] != out[0.5][1]                   # the update sees the dropout
    assert any(not np.array_equal(a, b) for a, b in zip(leaves(out[0.0][3]), leaves(out[0.5][3])))
    assert out[0.0][2] == out[0.5][2]                   # the advantages do not



@pytest.mark.slow
def test_critic_separation_is_measured_on_held_out_users_at_validation_steps():
    """Issue 12, "Measure the critic": the critic and SSRGAN steps return the critic's separation
    on the held-out validation users (val_wasserstein, val_auc, val_adv_mean, val_adv_std) at the
    validation steps of their phases only (multiples of eval_every = 4 and each phase's last step;
    val_count 1 there, 0 elsewhere), equal to aos4rec.critic_separation of the critic's scores of
    those users' validation targets and of lists drawn with the fixed measurement key under their
    whole-history ban; the method's summarize averages them over val_count and drops them when
    there was none."""
    from aos4rec_jax.methods.aos4rec import AOS4Rec
    from tests.helpers import tiny_prepared
    seqs = [[(s + j) % N_ITEMS + 1 for j in range(12)] for s in range(12)]
    ds = data_lib.Dataset(tiny_prepared(seqs, cap=2, history_len=L, target_len=T, k=T,
                                        num_candidates=6, ban_history=True))
    info = ds.info
    c = tiny_config('gru')
    c.train_steps, c.eval_every = 2, 4
    c.aos4rec.critic_pretrain_steps, c.aos4rec.gan_steps, c.aos4rec.d_steps = 3, 2, 1
    es = ds.eval_set('valid', 8)
    model = seq2seq.build_model(c, info)
    critic = critic_lib.build_critic(c, info)
    bsharding = shard_lib.batch_sharding(shard_lib.make_mesh(jax.devices()[:1]))
    steps = ssrgan.Steps(c, model, critic, info, 8, bsharding, max_history=8, critic_eval=es)
    params = seq2seq.init_params(model, info, jax.random.PRNGKey(0))
    cp = critic_lib.init_critic(critic, info, jax.random.PRNGKey(1))
    state = dict(step=jnp.int32(2), rng=jax.random.PRNGKey(2), params=params,
                 opt_state=steps.g_tx.init(params), critic=cp, critic_opt_state=steps.d_tx.init(cp))
    data = ds.device_data()
    crit, gan = jax.jit(steps.critic_step), jax.jit(steps.gan_round)
    counts, measured = [], {}
    for s in range(2, 7):
        state, m = (crit if s < 5 else gan)(state, data)
        m = jax.device_get(m)
        counts.append(float(m['val_count']))
        if m['val_count']:
            measured[s + 1] = (m, jax.device_get(state))
    assert counts == [0.0, 1.0, 1.0, 0.0, 1.0]                # steps 4 (eval_every), 5 (end), 7
    m, st = measured[4]
    # the same figures from the pieces: the users' validation examples, the fixed key, their ban
    banned = data_lib.history_ban_mask(data.items, jnp.asarray(es.hist_start),
                                       jnp.asarray(es.hist_len), int(es.hist_len.max()),
                                       info.vocab_size)
    key = jax.random.fold_in(st['rng'], ssrgan.Steps.MEASURE_KEY)
    fake = steps.generate(st['params'], jnp.asarray(es.history), banned, key)
    p = ds.prepared
    for r, u in enumerate(es.users):
        assert not set(np.asarray(fake)[r].tolist()) & set(
            p.items_flat[p.offsets[u]:p.offsets[u] + p.n_train[u]].tolist())
    d_real, _ = critic.apply({'params': st['critic']}, jnp.asarray(es.history), jnp.asarray(es.target))
    d_fake, _ = critic.apply({'params': st['critic']}, jnp.asarray(es.history), fake)
    want = aos4rec_lib.critic_separation(d_real, d_fake, es.target > 0)
    for k in ('wasserstein', 'auc', 'adv_mean', 'adv_std'):
        assert float(m[f'val_{k}']) == pytest.approx(float(want[k]), rel=1e-5, abs=1e-6), k
    # the reference judge: the generator's per-item NLL of each list, computed here from logits
    # (both lists' mean over the positions the real one fills, as the critic's scores)
    ok = np.asarray(es.target) > 0

    def nll(seq):
        seq = jnp.asarray(seq)
        logits = model.apply({'params': st['params']}, jnp.asarray(es.history),
                             seq2seq.decoder_inputs(seq, info.bos_id))
        lp = np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1))
        per = -np.take_along_axis(lp, np.asarray(seq)[..., None], axis=-1)[..., 0]
        return (per * ok).sum(1) / np.maximum(ok.sum(1), 1), ok.any(1)
    (s_real, r_ok), (s_fake, _) = nll(es.target), nll(fake)
    pairs = [(a, b) for a, ua in zip(s_real, r_ok) for b, ub in zip(s_fake, r_ok) if ua and ub]
    auc_nll = np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs])
    assert float(m['val_auc_nll']) == pytest.approx(auc_nll, abs=1e-6)
    assert 0.0 <= float(m['val_auc']) <= 1.0
    method = AOS4Rec(c, ds)
    out = method.summarize('critic', {'critic_loss': 2.0, 'val_auc': 1.4, 'val_wasserstein': 0.6,
                                      'val_adv_mean': 0.2, 'val_adv_std': 1.0, 'val_count': 2.0}, 4)
    assert out == pytest.approx({'critic_loss': 0.5, 'val_auc': 0.7, 'val_wasserstein': 0.3,
                                 'val_adv_mean': 0.1, 'val_adv_std': 0.5})
    out = method.summarize('gan', {'critic_loss': 2.0, 'val_auc': 0.0, 'val_count': 0.0}, 4)
    assert out == {'critic_loss': 0.5}
