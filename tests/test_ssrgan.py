"""SSRGAN: the critic (critic.py), the training steps (ssrgan.py) and the AOS4Rec schedule."""
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
    """Eq. 4 uses log P_G of the lists the Gumbel-max sampler drew: same distribution (banned and
    earlier items masked, dropout off), so the log-probabilities agree."""
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
                          method='gumbel', banned=banned)
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


@pytest.mark.slow
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
    valid = [json.loads(l) for l in open(tmp_path / 'metrics' / 'valid_history.jsonl')]
    assert [v['phase'] for v in valid] == ['seq2seq', 'seq2seq', 'gan']
    assert res['test']['users'] > 0 and (tmp_path / 'plots' / 'training.png').exists()
    assert_predictions_agree(str(tmp_path))

    # SSRGAN started from this finished run's generator, in a new run (what the ablation does)
    c2 = tiny_config('gru', 'tiny,adver')
    c2.train_steps = 0
    c2.aos4rec.init_from = str(tmp_path)
    c2.aos4rec.gan_steps = 2
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
