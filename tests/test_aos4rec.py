"""AOS4Rec building blocks (aos4rec_jax/aos4rec.py): oracle, mixing, SSRGAN losses, successors."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aos4rec_jax import aos4rec
from aos4rec_jax import decoding
from aos4rec_jax import metrics_ref
from aos4rec_jax import models
from aos4rec_jax import seq2seq

N_ITEMS, L, T = 30, 6, 4
V, BOS = N_ITEMS + 1, N_ITEMS + 1


# ----------------------------------------------------------------------------- Sec. 4.1
def test_mix_probability_paper_values():
    assert aos4rec.mix_probability(0) == pytest.approx(12.0 / 13.0)
    assert aos4rec.mix_probability(12) == pytest.approx(12.0 / (12.0 + math.e))
    assert aos4rec.mix_probability(24.0) == pytest.approx(12.0 / (12.0 + math.e ** 2))
    assert aos4rec.mix_probability(0, mu=1.0) == pytest.approx(0.5)
    traced = jax.jit(aos4rec.mix_probability)(jnp.arange(3) * 12)
    np.testing.assert_allclose(traced, [12 / 13, 12 / (12 + math.e), 12 / (12 + math.e ** 2)],
                               rtol=1e-6)
    assert aos4rec.mix_probability(jnp.float32(0.0)).dtype == jnp.float32


def _ref_oracle_index(cands, target):
    ref = [metrics_ref.compute(np.asarray(c).tolist(), np.asarray(target).tolist(), pad=0)["bleu"]
           for c in cands]
    best = max(ref)
    return next(i for i, s in enumerate(ref) if s >= best - 1e-6)  # ties: lower index


def test_select_oracle_matches_reference_bleu():
    rs = np.random.RandomState(0)
    B, b = 40, 5
    cands = rs.randint(0, 6, size=(B, b, T)).astype(np.int32)  # tiny item set: many ties
    cands[::4, 3] = cands[::4, 1]  # duplicated beams: exact ties
    lens = rs.randint(0, T + 1, size=B)
    target = rs.randint(1, 6, size=(B, T)).astype(np.int32)
    target[np.arange(T)[None, :] >= lens[:, None]] = 0
    cands[5, 2] = target[5] = [1, 2, 3, 4]  # an exact hit on a non-first beam
    got = np.asarray(jax.jit(aos4rec.select_oracle)(cands, target))
    for i in range(B):
        np.testing.assert_array_equal(got[i], cands[i, _ref_oracle_index(cands[i], target[i])])
    np.testing.assert_array_equal(got[5], target[5])


def test_mix_context_extremes_and_rate():
    rs = np.random.RandomState(1)
    B, TT = 200, 50
    target = rs.randint(1, 31, size=(B, TT)).astype(np.int32)
    target[:, 40:] = 0
    oracle = rs.randint(1, 31, size=(B, TT)).astype(np.int32)
    oracle[oracle == target] = (oracle[oracle == target] % 30) + 1  # differ everywhere
    key = jax.random.PRNGKey(3)
    mix = jax.jit(aos4rec.mix_context)
    np.testing.assert_array_equal(mix(key, target, oracle, 1.0), target)
    np.testing.assert_array_equal(mix(key, target, oracle, 0.0), np.where(target > 0, oracle, 0))
    out = np.asarray(mix(key, target, oracle, 0.3))
    valid = target > 0
    assert np.all(out[~valid] == 0)
    assert np.all((out == target) | (out == oracle))
    assert abs(np.mean(out[valid] == target[valid]) - 0.3) < 0.02  # 8000 coins, sd 0.005
    # an empty oracle slot falls back to the ground truth
    holes = oracle.copy()
    holes[:, ::2] = 0
    out = np.asarray(mix(key, target, holes, 0.0))
    np.testing.assert_array_equal(out[:, ::2], target[:, ::2])


@pytest.fixture(scope='module')
def tiny():
    """One compile for every model test: oracle_loss (value and grad), oracle_context, beam search
    called directly and the MLE loss on the ground truth, evaluated at p = 0, 0.5 and 1 (p is
    traced); the tests build their references from these without aos4rec's own functions."""
    model = models.build('transformer', dict(num_items=N_ITEMS, embed_dim=16, num_heads=2,
                                             num_layers=1, mlp_dim=32, max_history_len=L,
                                             max_target_len=T))
    rs = np.random.RandomState(2)
    history = rs.randint(1, V, size=(3, L)).astype(np.int32)
    history[0, :2] = 0
    target = rs.randint(1, V, size=(3, T)).astype(np.int32)
    target[1, 3:] = 0
    target[2, 1:] = 0
    banned = np.zeros((3, V), bool)
    banned[np.arange(3)[:, None], history] = True
    banned[:, 0] = False
    history, target, banned = jnp.asarray(history), jnp.asarray(target), jnp.asarray(banned)
    params = jax.jit(lambda k: model.init({'params': k, 'dropout': k}, history, target,
                                          train=False)['params'])(jax.random.PRNGKey(0))
    rng = jax.random.PRNGKey(7)
    k_mix, k_drop = jax.random.split(rng)

    def oracle(prm, p):
        s, n = aos4rec.oracle_loss(prm, model, history, target, rng, p=p, bos_id=BOS,
                                   vocab_size=V, beam_size=5, banned=banned, train=True)
        return s / n, (s, n)

    @jax.jit
    def run(prm, p):
        (_, (s, n)), grads = jax.value_and_grad(oracle, has_aux=True)(prm, p)
        context, orc, cands = aos4rec.oracle_context(
            prm, model, history, target, k_mix, p=p, bos_id=BOS, vocab_size=V, beam_size=5,
            banned=banned)
        state = model.apply({'params': prm}, history, T, method=model.init_decode_state)
        ref_cands = decoding.beam_search(seq2seq.make_step_fn(model, prm), state, batch_size=3,
                                         vocab_size=V, length=T, bos_id=BOS, beam_size=5,
                                         banned=banned).sequences
        s_mle, _ = seq2seq.mle_loss(prm, model, history, target,
                                    seq2seq.decoder_inputs(target, BOS), k_drop, train=True)
        return dict(s=s, n=n, grads=grads, context=context, oracle=orc, cands=cands,
                    ref_cands=ref_cands, s_mle=s_mle)

    out = {p: jax.device_get(run(params, jnp.float32(p))) for p in (0.0, 0.5, 1.0)}
    out['setup'] = dict(model=model, params=params, history=history, k_mix=k_mix, k_drop=k_drop)
    return np.asarray(target), np.asarray(banned), out


def test_oracle_context_bans_and_picks_bleu_oracle(tiny):
    target, banned, out = tiny
    r = out[0.0]
    cands, oracle, context = r['cands'], r['oracle'], r['context']
    assert cands.shape == (3, 5, T)
    np.testing.assert_array_equal(cands, r['ref_cands'])  # the search is decoding.beam_search
    for i in range(3):
        assert not banned[i][cands[i]].any() and (cands[i] > 0).all()
        assert all(len(set(c)) == T for c in cands[i].tolist())
        np.testing.assert_array_equal(oracle[i], cands[i, _ref_oracle_index(cands[i], target[i])])
    np.testing.assert_array_equal(context, np.where(target > 0, oracle, 0))  # p = 0


def test_oracle_loss_equals_mle_at_p1_and_gradient_skips_search(tiny):
    target, _, out = tiny
    # p = 1: exactly the MLE loss (same dropout key k_drop = split(rng)[1], train=True)
    r1 = out[1.0]
    np.testing.assert_array_equal(r1['context'], target)
    assert float(r1['n']) == 8.0
    np.testing.assert_array_equal(r1['s'], r1['s_mle'])
    # p = 0.5: a really mixed context. The reference is built here without aos4rec's functions:
    # the oracle is the beam with the best reference BLEU (metrics_ref), each position keeps the
    # ground truth where a uniform draw of the mixing key is < p (what a Bernoulli(p) coin is)
    # or where the oracle slot is empty, padding stays padding; decoder inputs are [BOS, ctx[:-1]];
    # the loss is the cross entropy of y* by a numpy log-softmax of the model's logits.
    r5, st = out[0.5], out['setup']
    cands = r5['ref_cands']
    oracle = np.stack([cands[i, _ref_oracle_index(cands[i], target[i])] for i in range(3)])
    coin = np.asarray(jax.random.uniform(st['k_mix'], target.shape)) < 0.5
    ctx = np.where(target > 0, np.where(coin | (oracle == 0), target, oracle), 0)
    assert np.any(ctx != target) and np.any((ctx == target) & (target > 0) & (oracle != target))
    np.testing.assert_array_equal(r5['context'], ctx)
    dec_in = np.concatenate([np.full((3, 1), BOS), ctx[:, :-1]], axis=1).astype(np.int32)
    model = st['model']

    def ref_loss(prm):
        logits = model.apply({'params': prm}, st['history'], dec_in, train=True,
                             rngs={'dropout': st['k_drop']})
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
        picked = jnp.take_along_axis(logp, jnp.asarray(target)[..., None], -1)[..., 0]
        return -jnp.sum(jnp.where(jnp.asarray(target) > 0, picked, 0.0))

    logits = np.asarray(model.apply({'params': st['params']}, st['history'], dec_in, train=True,
                                    rngs={'dropout': st['k_drop']}), np.float64)
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    nll = logz - np.take_along_axis(logits, target[..., None], -1)[..., 0]
    np.testing.assert_allclose(r5['s'], (nll * (target > 0)).sum(), rtol=1e-5)
    assert float(r5['n']) == float((target > 0).sum())
    # the gradient of the loss per token is that of this cross entropy: nothing flows through
    # the search
    g_ref = jax.grad(ref_loss)(st['params'])
    for a, b in zip(jax.tree_util.tree_leaves(r5['grads']), jax.tree_util.tree_leaves(g_ref)):
        np.testing.assert_allclose(a, np.asarray(b) / float(r5['n']), rtol=1e-4, atol=1e-7)
    assert any(np.abs(g).max() > 0 for g in jax.tree_util.tree_leaves(r5['grads']))


# ----------------------------------------------------------------------------- Sec. 4.2
MASK = np.array([[1, 1, 1], [1, 1, 0], [0, 0, 0]], np.float32)  # row 2: no valid term


def test_critic_loss_eq7_by_hand():
    d_real = np.array([[9., 1., 2., 3.], [9., 4., 5., 6.], [9., 7., 7., 7.]], np.float32)
    d_fake = np.array([[9., 0., 0., 1.], [9., 1., 1., 1.], [9., 0., 0., 0.]], np.float32)
    # row 0: diffs 1, 2, 2 -> 5/3; row 1: 3, 4 (6 - 1 masked) -> 3.5; row 2 left out
    want = -(5.0 / 3.0 + 3.5) / 2.0
    assert float(aos4rec.critic_loss_eq7(d_real, d_fake, MASK)) == pytest.approx(want, rel=1e-6)
    g_real, g_fake = jax.grad(aos4rec.critic_loss_eq7, argnums=(0, 1))(
        jnp.asarray(d_real), jnp.asarray(d_fake), jnp.asarray(MASK))
    want_g = np.array([[0, 1 / 3, 1 / 3, 1 / 3], [0, .5, .5, 0], [0, 0, 0, 0]]) / 2.0
    np.testing.assert_allclose(g_real, -want_g, atol=1e-7)
    np.testing.assert_allclose(g_fake, want_g, atol=1e-7)


def test_td0_loss_eq8_by_hand_and_semi_gradient():
    d_prefix = np.array([[1., 2., 3., 9.], [0., 1., 5., 9.], [3., 3., 3., 3.]], np.float32)
    d_next = np.zeros((3, 3, 2), np.float32)
    d_next[0, 0] = [2., 4.]   # target 3, D = 1 -> err 2
    d_next[0, 1] = [1., 1.]   # target 1, D = 2 -> err -1
    d_next[0, 2] = [50., 50.]  # row T - 1: unused
    d_next[1, 0] = [1., 0.]   # target 0.5, D = 0 -> err 0.5
    d_next[1, 1] = [7., 7.]   # t = 2 of row 1: mask[1, 1] = 1 -> used: target 7, D = 1 -> err 6
    d_next[2] = 100.          # row without valid term
    # row 0: 0.5 * (4 + 1) / 2 = 1.25; row 1: 0.5 * (0.25 + 36) / 2 = 9.0625
    want = (1.25 + 9.0625) / 2.0
    loss = aos4rec.td0_loss_eq8(d_prefix, d_next, MASK)
    assert float(loss) == pytest.approx(want, rel=1e-6)
    g_prefix, g_next = jax.grad(aos4rec.td0_loss_eq8, argnums=(0, 1))(
        jnp.asarray(d_prefix), jnp.asarray(d_next), jnp.asarray(MASK))
    assert np.all(np.asarray(g_next) == 0.0)
    want_g = np.zeros((3, 4), np.float32)
    want_g[0, :2] = [-2.0 / 4, 1.0 / 4]   # -(target - D) / (n_b = 2 * U = 2)
    want_g[1, :2] = [-0.5 / 4, -6.0 / 4]
    np.testing.assert_allclose(g_prefix, want_g, atol=1e-7)


def test_generator_loss_eq4_by_hand():
    d_fake = np.array([[0., 1., 3., 2.], [1., 1., 0., 5.], [0., 9., 9., 9.]], np.float32)
    log_probs = np.array([[-1., -2., -0.5], [-1., -3., -7.], [-1., -1., -1.]], np.float32)
    # A: row 0 = (1, 2, -1), row 1 = (0, -1, masked)
    row0 = (1 * -1. + 2 * -2. + -1 * -0.5) / 3.0
    row1 = (0 * -1. + -1 * -3.) / 2.0
    want = -(row0 + row1) / 2.0
    loss = aos4rec.generator_loss_eq4(log_probs, d_fake, MASK)
    assert float(loss) == pytest.approx(want, rel=1e-6)
    g_lp, g_d = jax.grad(aos4rec.generator_loss_eq4, argnums=(0, 1))(
        jnp.asarray(log_probs), jnp.asarray(d_fake), jnp.asarray(MASK))
    assert np.all(np.asarray(g_d) == 0.0)
    want_g = -np.array([[1 / 3, 2 / 3, -1 / 3], [0., -1 / 2, 0.], [0., 0., 0.]]) / 2.0
    np.testing.assert_allclose(g_lp, want_g, atol=1e-7)
    # gamma scales D(x, y^_1:t) only: row 0 with gamma = 2 -> A = (2, 5, 1)
    g2 = aos4rec.generator_loss_eq4(log_probs[:1], d_fake[:1], MASK[:1], gamma=2.0)
    assert float(g2) == pytest.approx(-(2 * -1. + 5 * -2. + 1 * -0.5) / 3.0, rel=1e-6)


def test_sample_next_items_distinct_allowed():
    B, TT, VV, c = 6, 5, 12, 3
    rs = np.random.RandomState(4)
    logits = rs.randn(B, TT, VV).astype(np.float32)
    logits[:, :, 0] = 50.0  # padding would win without the mask
    banned = rs.rand(B, VV) < 0.3
    banned[:, 0] = False
    generated = rs.randint(0, VV, size=(B, TT)).astype(np.int32)
    logits[np.arange(B)[:, None], :, generated] += 20.0  # earlier items would win if not banned
    fn = jax.jit(aos4rec.sample_next_items, static_argnames='c')
    out = np.asarray(fn(jax.random.PRNGKey(5), logits, c=c, banned=banned, generated=generated))
    assert out.shape == (B, TT, c)
    for i in range(B):
        allowed = [v for v in range(1, VV) if not banned[i, v]]
        for t in range(TT):
            earlier = set(generated[i, :t].tolist())
            n_ok = len([v for v in allowed if v not in earlier])
            row = out[i, t]
            real = row[row > 0]
            assert len(real) == min(c, n_ok)
            assert len(set(real.tolist())) == len(real)
            assert not banned[i][real].any()
            assert not earlier & set(real.tolist())
    out2 = np.asarray(fn(jax.random.PRNGKey(5), logits, c=c))  # no bans: only padding masked
    assert (out2 > 0).all() and all(len(set(r)) == c for r in out2.reshape(-1, c).tolist())
