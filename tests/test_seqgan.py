"""SeqGAN / RecGAN (aos4rec_jax/methods/seqgan.py, docs/seqgan.md): the Monte Carlo reward of
every prefix on a hand-computable case, the direction of the REINFORCE update, the
discriminator separating real from generated lists, and a run through main.py on :tiny that goes
through every phase and, stopped in the adversarial phase and resumed, ends identical to an
uninterrupted run."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aos4rec_jax import data as data_lib
from aos4rec_jax import seq2seq
from aos4rec_jax.methods import seqgan
from experiments.configs import seqgan as seqgan_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_ITEMS, L, T, B = 20, 6, 4, 32
V = N_ITEMS + 1
INFO = data_lib.DataInfo(num_items=N_ITEMS, num_users=40, k=T, target_len=T, history_len=L,
                         ban_history=False, num_candidates=5, num_windows=40 * 11,
                         profile='default', protocol='paper')


def walks(starts, length=12):
    """+1 walks (item i followed by i + 1, 20 -> 1), one user a start, as packed DeviceData."""
    seqs = [[(s + j) % N_ITEMS + 1 for j in range(length)] for s in starts]
    n = np.array([length] * len(seqs))
    return data_lib.DeviceData(items=jnp.asarray(np.concatenate(seqs), jnp.int32),
                               offsets=jnp.asarray(np.concatenate([[0], np.cumsum(n)]), jnp.int32),
                               n_train=jnp.asarray(n, jnp.int32),
                               window_cum=jnp.asarray(np.concatenate([[0], np.cumsum(n - 1)]), jnp.int32))


def make_steps(**opts):
    c = seqgan_cfg.get_config('tiny')
    c.model_kwargs.dropout_rate = 0.0
    for k, v in opts.items():
        c.seqgan[k] = v
    gc = seqgan._generator_config(c)
    model = seq2seq.build_model(gc, INFO)
    disc = seqgan.build_discriminator(c.seqgan, INFO)
    steps = seqgan.SeqGANSteps(gc, model, disc, INFO, B, None)
    p_rng, d_rng = jax.random.split(jax.random.PRNGKey(0))
    params = seq2seq.init_params(model, INFO, p_rng)
    dp = seqgan.init_discriminator(disc, INFO, d_rng)
    state = dict(step=jnp.int32(0), rng=jax.random.PRNGKey(1), params=params,
                 opt_state=steps.g_tx.init(params), disc=dp, disc_opt_state=steps.d_tx.init(dp))
    return steps, state


# ------------------------------------------------------------------------------ the reward
def walk_step_fn(state, prev, t):
    """A deterministic policy: after item i, item i + 1 (margin 100 nats over every other)."""
    nxt = prev % N_ITEMS + 1
    logits = jnp.where(jnp.arange(V)[None, :] == nxt[:, None], 0.0, -100.0)
    return logits, state


def weighted(lists):
    """A fixed discriminator: sum_t t * y_t / 1000 (every position counts, 0 = padding)."""
    return jnp.sum(lists * jnp.arange(1, T + 1), axis=-1) / 1000.0


@pytest.mark.parametrize('method', ('categorical', 'gumbel'))
def test_monte_carlo_reward_of_every_prefix_equals_the_hand_computed_one(method):
    """Deterministic roll-outs (+1 walk) and a fixed D: Q_t = D(y_1:t + the walk after y_t),
    Q_T = D(y); a user whose real list has 2 items scores its completions with 2 items."""
    seq = jnp.asarray([[5, 9, 2, 12], [1, 2, 3, 4], [14, 3, 8, 17]], jnp.int32)
    mask = jnp.asarray([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]], bool)
    state = {'x': jnp.zeros((3, 1))}
    q, done = seqgan.mc_rewards(walk_step_fn, state, lambda rows, lists: weighted(lists), seq, mask,
                                jax.random.PRNGKey(0), num_rollouts=16, vocab_size=V,
                                bos_id=N_ITEMS + 1, temperature=1.0, method=method)
    d = lambda *l: sum((i + 1) * x for i, x in enumerate(l)) / 1000.0
    expected = [[d(5, 6, 7, 8), d(5, 9, 10, 11), d(5, 9, 2, 3), d(5, 9, 2, 12)],
                [d(1, 2, 3, 4)] * 4,
                [d(14, 15), d(14, 3), d(14, 3), d(14, 3)]]
    np.testing.assert_allclose(np.asarray(q), np.asarray(expected), rtol=0, atol=1e-7)
    assert done.shape == (3, T - 1, 16, T)
    np.testing.assert_array_equal(np.asarray(done[0, 0]), np.tile([5, 6, 7, 8], (16, 1)))


# A stochastic policy over items 1..6 (BOS 7): logits TABLE[prev], fixed numbers.
REC_V, REC_T, REC_N = 7, 4, 3
REC_TABLE = np.round(np.random.RandomState(0).normal(size=(REC_V + 1, REC_V)), 2).astype(np.float32)
# Recorded with the roll-outs as they were before `decoding.sample(prefix=...)` (the
# prefix forced inside the step function, rows of B x (T - 1) N): the completed lists of
# test_monte_carlo_rewards_are_the_recorded_ones, [B, T - 1, N, T].
REC_DONE = [[[[3, 4, 1, 5], [3, 1, 5, 2], [3, 1, 4, 2]], [[3, 1, 4, 2], [3, 1, 6, 4], [3, 1, 5, 2]],
             [[3, 1, 6, 5], [3, 1, 6, 5], [3, 1, 6, 5]]],
            [[[5, 1, 2, 0], [5, 1, 4, 0], [5, 2, 4, 0]], [[5, 2, 1, 0], [5, 2, 1, 0], [5, 2, 1, 0]],
             [[5, 2, 4, 0], [5, 2, 4, 0], [5, 2, 4, 0]]]]


def test_monte_carlo_rewards_are_the_recorded_ones():
    """The roll-outs (and so Q) of a fixed stochastic policy for a fixed key are exactly those
    recorded before the forced prefix moved from the step function into the decoder
    (`decoding.sample`'s `prefix`), and Q is the mean of D over them (Q_T = D(y))."""
    table = jnp.asarray(REC_TABLE)
    step = lambda state, prev, t: (table[prev] + 0.0 * state['x'][:, :1], state)
    d = lambda lists: jnp.sum(lists * jnp.arange(1, REC_T + 1), axis=-1) / 1000.0
    seq = jnp.asarray([[3, 1, 6, 2], [5, 2, 4, 1]], jnp.int32)
    mask = jnp.asarray([[1, 1, 1, 1], [1, 1, 1, 0]], bool)
    banned = jnp.zeros((2, REC_V), bool).at[1, 3].set(True)
    q, done = jax.jit(lambda key: seqgan.mc_rewards(
        step, {'x': jnp.zeros((2, 1))}, lambda rows, lists: d(lists), seq, mask, key,
        num_rollouts=REC_N, vocab_size=REC_V, bos_id=REC_V, temperature=0.7, banned=banned))(
        jax.random.PRNGKey(42))
    np.testing.assert_array_equal(np.asarray(done), np.asarray(REC_DONE))
    want = np.concatenate([np.asarray(d(jnp.asarray(REC_DONE))).mean(-1),
                           np.asarray(d(jnp.where(mask, seq, 0)))[:, None]], axis=1)
    np.testing.assert_allclose(np.asarray(q), want, rtol=1e-6)


def step_forced_rewards(step_fn, dec_state, score_fn, seq, mask, key, *, num_rollouts,
                        vocab_size, bos_id, temperature, banned=None, method='gumbel'):
    """mc_rewards as it was before `decoding.sample(prefix=...)`: the prefix forced by the step
    function on rows b * n + j (it indexes rows of B * n: against the decoding contract, and
    correct only because `sample` runs every step on all rows)."""
    B, T = seq.shape
    N = num_rollouts
    n = (T - 1) * N
    prefix = jnp.repeat(seq, n, axis=0)
    plen = jnp.tile(1 + jnp.arange(n, dtype=jnp.int32) // N, B)

    def fn(state, prev, t):
        logits, state = step_fn(state, prev, t)
        forced = jnp.where(t < plen, jnp.take(prefix, t, axis=1), 0)
        one = jnp.arange(logits.shape[-1])[None, :] == forced[:, None]
        return jnp.where((forced > 0)[:, None], jnp.where(one, 0.0, -jnp.inf), logits), state
    from aos4rec_jax import decoding
    out = decoding.sample(fn, dec_state, key, batch_size=B, vocab_size=vocab_size, length=T,
                          bos_id=bos_id, num_samples=n, temperature=temperature, method=method,
                          banned=banned, ban_generated=True)
    done = jnp.where(mask[:, None, :], out.sequences, 0)
    d = score_fn(jnp.repeat(jnp.arange(B), n), done.reshape(B * n, T)).reshape(B, T - 1, N)
    full = score_fn(jnp.arange(B), jnp.where(mask, seq, 0))
    return jnp.concatenate([jnp.mean(d, axis=-1), full[:, None]], axis=1), done.reshape(B, T - 1, N, T)


@pytest.mark.slow
def test_rollouts_of_the_generator_keep_their_prefix_and_follow_their_key():
    """The real (untrained, stochastic) generator: roll-out (t, n) starts with y_1:t, lists no
    item twice, and the same key gives the same rewards (another key other roll-outs); the
    roll-outs and Q are exactly those of the step-function forcing used before (its state holds
    decoding.PerUser parts: the encoder's output stays untiled in both)."""
    steps, state = make_steps(num_rollouts=8)
    data = walks(range(20))
    b, _ = steps.batch(data, jax.random.PRNGKey(3))
    y = steps.generate(state['params'], b.history, None, jax.random.PRNGKey(4))
    mask = b.target > 0
    f = jax.jit(lambda k: steps.rewards(state['params'], state['disc'], b.history, y, mask, None, k))
    q1, d1 = f(jax.random.PRNGKey(5))
    q2, d2 = f(jax.random.PRNGKey(5))
    _, d3 = f(jax.random.PRNGKey(6))
    np.testing.assert_array_equal(np.asarray(q1), np.asarray(q2))
    q0, d0 = jax.jit(lambda k: step_forced_rewards(
        seq2seq.make_step_fn(steps.model, state['params']), steps.decode_state(state['params'], b.history),
        lambda rows, lists: steps.disc_prob(state['disc'], b.history[rows], lists), y, mask, k,
        num_rollouts=8, vocab_size=INFO.vocab_size, bos_id=INFO.bos_id,
        temperature=steps.temperature, method=steps.sample_method))(jax.random.PRNGKey(5))
    np.testing.assert_array_equal(np.asarray(d1), np.asarray(d0))
    np.testing.assert_array_equal(np.asarray(q1), np.asarray(q0))
    assert not np.array_equal(np.asarray(d1), np.asarray(d3))
    d1, ym = np.asarray(d1), np.asarray(jnp.where(mask, y, 0))   # scored with the real padding
    for t in range(1, T):
        np.testing.assert_array_equal(d1[:, t - 1, :, :t], np.broadcast_to(ym[:, None, :t], (B, 8, t)))
    assert all(len(set(x for x in r if x)) == sum(1 for x in r if x) for r in d1.reshape(-1, T).tolist())
    assert (d1 > 0).sum() == 8 * (T - 1) * int(mask.sum())
    assert np.all((np.asarray(q1) > 0) & (np.asarray(q1) < 1))


# ------------------------------------------------------------------------------ the updates
def test_reinforce_loss_gradient_on_a_two_item_policy():
    """d/dtheta of -(Q log softmax(theta)[a]) by hand: -Q (onehot(a) - p), baseline 'mean'
    subtracts the batch mean of Q."""
    theta = jnp.asarray([0.3, -0.2])
    p = jax.nn.softmax(theta)
    acts, q = jnp.asarray([0, 1]), jnp.asarray([[0.9], [0.2]])
    mask = jnp.ones((2, 1), bool)

    def loss(th, baseline):
        logp = jax.nn.log_softmax(th)[acts][:, None]
        return seqgan.reinforce_loss(logp, q, mask, baseline)

    g = jax.grad(loss)(theta, 'none')
    hand = -(0.9 * (jnp.eye(2)[0] - p) + 0.2 * (jnp.eye(2)[1] - p)) / 2
    np.testing.assert_allclose(np.asarray(g), np.asarray(hand), atol=1e-6)
    g = jax.grad(loss)(theta, 'mean')
    hand = -(0.35 * (jnp.eye(2)[0] - p) - 0.35 * (jnp.eye(2)[1] - p)) / 2
    np.testing.assert_allclose(np.asarray(g), np.asarray(hand), atol=1e-6)


@pytest.mark.slow
def test_reinforce_update_raises_the_item_the_discriminator_rewards():
    """D fixed to 'the list holds item 7': five REINFORCE updates (with the Monte Carlo rewards)
    make item 7 more likely at every position; the probability of another item does not rise as
    much. (Flipping the sign of the policy-gradient loss makes item 7 less likely.)"""
    steps, state = make_steps(g_learning_rate=3e-3, num_rollouts=4)
    steps.disc_prob = lambda dp, h, s: jnp.any(s == 7, axis=-1).astype(jnp.float32)
    data = walks(range(20))
    b, _ = steps.batch(data, jax.random.PRNGKey(11))

    def p_item(params, item):
        logits = steps.model.apply({'params': params}, b.history,
                                   seq2seq.decoder_inputs(b.target, INFO.bos_id), train=False)
        return float(jnp.mean(jax.nn.softmax(logits, -1)[..., item]))

    before = p_item(state['params'], 7), p_item(state['params'], 13)
    upd = jax.jit(lambda s, k: steps.g_update(s, data, k, s['params']))
    for i in range(5):
        state, m = upd(state, jax.random.PRNGKey(100 + i))
        assert 0.0 <= float(m['reward']) <= 1.0
    after = p_item(state['params'], 7), p_item(state['params'], 13)
    assert after[0] > 1.5 * before[0], (before, after)
    assert after[0] / before[0] > after[1] / before[1], (before, after)


@pytest.mark.slow
def test_discriminator_learns_to_separate_real_from_generated():
    """On +1 walks against an untrained generator, 80 discriminator steps (d_learning_rate 3e-3)
    score fresh real continuations above fresh generated lists: accuracy > 0.85."""
    steps, state = make_steps(d_learning_rate=3e-3)
    data = walks(range(20))
    step = jax.jit(lambda s: steps.disc_step(s, data))
    for _ in range(80):
        state, m = step(state)
    assert float(m["d_loss"]) < 0.6, m
    b, _ = steps.batch(data, jax.random.PRNGKey(999))
    fake = steps.generate(state['params'], b.history, None, jax.random.PRNGKey(998))
    real_p = steps.disc_prob(state['disc'], b.history, b.target)
    fake_p = steps.disc_prob(state['disc'], b.history, fake)
    acc = 0.5 * (float(jnp.mean(real_p > 0.5)) + float(jnp.mean(fake_p < 0.5)))
    assert acc > 0.85, (acc, np.asarray(real_p).round(2), np.asarray(fake_p).round(2))


# ------------------------------------------------------------------------------ end to end
ARGS = ['--config=experiments/configs/seqgan.py:tiny', '--config.train_steps=6',
        '--config.seqgan.d_pretrain_steps=2', '--config.log_every=1', '--config.eval_every=2',
        '--config.checkpoint_every=2', '--config.max_eval_users=32']


def _main(workdir, env, *extra):
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'main.py'), *ARGS, *extra,
                        f'--workdir={workdir}'], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r.stdout


def _state(workdir):
    import orbax.checkpoint as ocp
    d = os.path.join(workdir, 'checkpoints')
    last = max(int(n) for n in os.listdir(d) if n.isdigit())
    return last, ocp.StandardCheckpointer().restore(os.path.join(d, str(last), 'state'))


@pytest.mark.slow
def test_tiny_run_through_main_every_phase_and_resumed_in_the_adversarial_phase(tmp_path):
    """main.py on :tiny: MLE, discriminator and adversarial phases, test.json written. The same
    run stopped after 2 of its 4 rounds and rerun with gan_steps=4 resumes mid-adversarial-phase
    and ends with the same state (generator, both optimizers, discriminator), test figures and
    logs as the uninterrupted run."""
    env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1',
               JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'jax_cache'))
    data = f'--config.synthetic.cache_dir={tmp_path / "data"}'
    out = _main(tmp_path / 'full', env, data)
    assert 'SeqGAN: generator copied from this run' in out
    recs = [json.loads(l) for l in open(tmp_path / 'full' / 'metrics' / 'train.jsonl')]
    phases = [r['phase'] for r in recs]
    assert phases == ['seq2seq'] * 6 + ['disc'] * 2 + ['gan'] * 4, phases
    assert all(0.0 <= r['reward'] <= 1.0 for r in recs if r['phase'] == 'gan')
    assert all(np.isfinite(r['d_loss']) for r in recs if r['phase'] != 'seq2seq')
    test = json.load(open(tmp_path / 'full' / 'metrics' / 'test.json'))
    assert 0.0 <= test['full']['ndcg@10'] <= 1.0

    _main(tmp_path / 'resumed', env, data, '--config.seqgan.gan_steps=2')
    out = _main(tmp_path / 'resumed', env, data)
    assert 'resumed from checkpoint step 10' in out and 'steps 10 -> 12' in out, out[-2000:]
    assert 'SeqGAN: generator copied' not in out
    (sa, a), (sb, b) = _state(tmp_path / 'full'), _state(tmp_path / 'resumed')
    assert sa == sb == 12
    for key in ('params', 'opt_state', 'disc', 'disc_opt_state', 'rng'):
        la, lb = jax.tree_util.tree_leaves(a[key]), jax.tree_util.tree_leaves(b[key])
        assert len(la) == len(lb) > 0
        for x, y in zip(la, lb):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=key)
    read = lambda p: json.loads(p.read_text())
    assert read(tmp_path / 'full' / 'metrics' / 'test.json') == read(tmp_path / 'resumed' / 'metrics' / 'test.json')
    strip = lambda r: {k: v for k, v in r.items() if k not in ('steps_per_s', 'examples_per_s')}
    lines = lambda d: [strip(json.loads(l)) for l in open(d / 'metrics' / 'train.jsonl')]
    assert lines(tmp_path / 'full') == lines(tmp_path / 'resumed')


# ------------------------------------------------------------------------------ init_from
def _run_folder(path, cfg: dict, data_dir='', finished=True, fingerprint=None):
    """A main.py run folder as init_from reads it: config.json, dataset.json[, metrics/test.json]."""
    os.makedirs(os.path.join(path, 'metrics'), exist_ok=True)
    with open(os.path.join(path, 'config.json'), 'w') as f:
        json.dump(cfg, f)
    with open(os.path.join(path, 'dataset.json'), 'w') as f:
        json.dump(dict(data_dir=data_dir, **({'fingerprint': fingerprint} if fingerprint else {})), f)
    if finished:
        with open(os.path.join(path, 'metrics', 'test.json'), 'w') as f:
            json.dump({}, f)
    return str(path)


def test_init_from_needs_train_steps_0_and_a_matching_finished_source_naming_the_field(tmp_path):
    """seqgan.init_from: train_steps != 0 is refused by the config check; the source must be a
    finished main.py run folder of the same seq2seq network (whichever method trained it), sizes
    and data, and every difference is named in one line (methods/init_from.py, shared with
    aos4rec.init_from)."""
    from types import SimpleNamespace
    from aos4rec_jax import config as config_lib
    from aos4rec_jax import datasets
    from aos4rec_jax.methods import init_from
    from aos4rec_jax.methods.base import RunError
    from experiments.configs import aos4rec as aos_cfg
    c = seqgan_cfg.get_config('tiny')
    c.seqgan.init_from = str(tmp_path / 'src')
    with pytest.raises(config_lib.ConfigError, match=r'config\.seqgan\.init_from: .*set train_steps=0 \(got 20\)'):
        config_lib.validate(c)
    c.train_steps = 0
    config_lib.validate(c)
    synthetic = SimpleNamespace(data_dir=str(tmp_path / 'cache'))

    def check(src, config=c, ds=synthetic, network=None):
        init_from.check('seqgan.init_from', src, config, ds,
                        network or config.seqgan.generator, 'seqgan.generator')

    mle = aos_cfg.get_config('tiny,base').to_dict()              # an MLE run of the same network
    check(_run_folder(tmp_path / 'mle', mle))
    with pytest.raises(RunError, match=r'config\.seqgan\.init_from: .*nowhere is not a run folder of main\.py'):
        check(str(tmp_path / 'nowhere'))
    with pytest.raises(RunError, match=r'config\.seqgan\.init_from: .*unfinished has not finished \(no metrics/test\.json\)'):
        check(_run_folder(tmp_path / 'unfinished', mle, finished=False))
    gru = c.copy_and_resolve_references()
    gru.seqgan.generator = 'gru'
    with pytest.raises(RunError, match=r"differs from this run in seqgan\.generator \('transformer' there, 'gru' here\)$"):
        check(str(tmp_path / 'mle'), gru)
    wide = c.copy_and_resolve_references()
    wide.model_kwargs.embed_dim, wide.target_len = 64, 6
    with pytest.raises(RunError, match=r"in model_kwargs\.embed_dim \(32 there, 64 here\); target_len \(-1 there, 6 here\)$"):
        check(str(tmp_path / 'mle'), wide)
    other_data = c.copy_and_resolve_references()
    other_data.synthetic.num_users = 300
    with pytest.raises(RunError, match=r'in synthetic\.num_users \(200 there, 300 here\)$'):
        check(str(tmp_path / 'mle'), other_data)
    sasrec = dict(mle, model='sasrec')
    with pytest.raises(RunError, match=r"in seqgan\.generator \(model 'sasrec' there keeps no generator network"):
        check(_run_folder(tmp_path / 'sasrec', sasrec))
    # a SeqGAN run with the GRU generator is a source of a GRU AOS4Rec run (and the reverse)
    sg_gru = gru.to_dict()
    aos_gru = aos_cfg.get_config('tiny,adver')
    aos_gru.model, aos_gru.train_steps = 'gru', 0
    init_from.check('aos4rec.init_from', _run_folder(tmp_path / 'sg_gru', sg_gru), aos_gru, synthetic,
                    'gru', 'model')
    with pytest.raises(RunError, match=r"config\.aos4rec\.init_from: .* in model \('gru' there, 'transformer' here\)"):
        init_from.check('aos4rec.init_from', str(tmp_path / 'sg_gru'), aos_cfg.get_config('tiny,adver'),
                        synthetic, 'transformer', 'model')
    # prepared data: the same folder, not prepared again since the source was trained
    prep = tmp_path / 'prepared'
    prep.mkdir()
    (prep / 'protocol.json').write_text('{"k": 10}')
    real = c.copy_and_resolve_references()
    real.data_dir = str(prep)
    ds = SimpleNamespace(data_dir=str(prep))
    src = _run_folder(tmp_path / 'real', dict(mle, data_dir=str(prep)), data_dir=str(prep),
                      fingerprint=datasets.fingerprint(str(prep)))
    check(src, real, ds)
    with pytest.raises(RunError, match=r'in data \(.*prepared there, .*elsewhere here\)$'):
        check(src, real, SimpleNamespace(data_dir=str(tmp_path / 'elsewhere')))
    (prep / 'protocol.json').write_text('{"k": 6}')
    with pytest.raises(RunError, match=r'was prepared again since that run was trained: protocol\.json changed\)$'):
        check(src, real, ds)


def _leaves_equal(a, b, what):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb) > 0, what
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=what)


@pytest.mark.slow
def test_init_from_starts_from_the_sources_kept_generator_and_resumes_from_its_own_checkpoint(
        tmp_path, monkeypatch):
    """A finished MLE run (aos4rec.py:tiny,base) is the source of a SeqGAN run with train_steps
    0, stopped after its first round (SIGTERM save) and resumed with the source moved away: the
    state saved on entering the discriminator phase (step 0) holds exactly the source's kept
    parameters, the resumed run goes on from its own checkpoint (reading the source again would
    fail) through 2 discriminator steps and 2 rounds to its test figures. A GRU generator is
    refused (naming seqgan.generator). (That a resumed SeqGAN run ends as an uninterrupted one
    is test_tiny_run_through_main_every_phase_and_resumed_in_the_adversarial_phase's; a fourth
    run here cost CI 35 s.)"""
    from aos4rec_jax import checkpoint as ckpt_lib
    from aos4rec_jax import preemption
    from aos4rec_jax import trainer
    from aos4rec_jax.methods.base import RunError
    from experiments.configs import aos4rec as aos_cfg
    from tests.helpers import StopAt
    common = dict(eval_every=2, checkpoint_every=2, log_every=1, max_eval_users=32)
    src = aos_cfg.get_config('tiny,base')
    src.update(dict(train_steps=6, **common))
    src.synthetic.cache_dir = str(tmp_path / 'data')
    trainer.train_and_evaluate(src, str(tmp_path / 'mle'))

    def config(source):
        c = seqgan_cfg.get_config('tiny')
        c.update(dict(train_steps=0, keep_checkpoints=5, **common))
        c.synthetic.cache_dir = str(tmp_path / 'data')
        c.seqgan.update(dict(init_from=str(source), d_pretrain_steps=2, gan_steps=2))
        return c

    gru = config(tmp_path / 'mle')
    gru.seqgan.generator = 'gru'
    with pytest.raises(RunError, match=r"config\.seqgan\.init_from: .* differs from this run in "
                                       r"seqgan\.generator \('transformer' there, 'gru' here\)"):
        trainer.train_and_evaluate(gru, str(tmp_path / 'gru'))

    with monkeypatch.context() as m:
        m.setattr(preemption, 'Watcher', lambda: StopAt(3))
        with pytest.raises(preemption.Stopped):
            trainer.train_and_evaluate(config(tmp_path / 'mle'), str(tmp_path / 'stopped'))
    ck = ckpt_lib.Checkpointer(str(tmp_path / 'mle'))
    kept = ck.restore_best(None)[0]
    ck.close()
    os.rename(tmp_path / 'mle', tmp_path / 'moved')        # the resume must not read it again
    trainer.train_and_evaluate(config(tmp_path / 'mle'), str(tmp_path / 'stopped'))
    ck = ckpt_lib.Checkpointer(str(tmp_path / 'stopped'))
    start, meta = ck.restore(0, None)
    ck.close()
    _leaves_equal(kept, start['params'], 'the generator at step 0')
    assert meta['seqgan_from'] == f'{tmp_path / "mle"} (its kept parameters)'
    lines = [json.loads(l) for l in open(tmp_path / 'stopped' / 'metrics' / 'train.jsonl')]
    assert [(r['step'], r['phase']) for r in lines] == [(1, 'disc'), (2, 'disc'), (3, 'gan'),
                                                        (4, 'gan')], lines
    assert _state(tmp_path / 'stopped')[0] == 4
    assert (tmp_path / 'stopped' / 'metrics' / 'test.json').exists()
