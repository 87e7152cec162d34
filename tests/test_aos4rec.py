"""AOS4Rec building blocks (aos4rec_jax/aos4rec.py): oracle, mixing, SSRGAN losses, successors."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aos4rec_jax import aos4rec
from aos4rec_jax import decoding
from aos4rec_jax import metrics_ref
from aos4rec_jax import models
from aos4rec_jax import sampling
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
    # key 8: the p = 0.5 coins of user 0 at positions 3, 4 (where the oracle differs from y*) are
    # tails, heads, so the mixed context takes one oracle item and keeps one ground-truth item
    rng = jax.random.PRNGKey(8)
    k_mix, k_drop = jax.random.split(rng)

    @jax.jit
    def search(prm):
        state = model.apply({'params': prm}, history, T, method=model.init_decode_state)
        return decoding.beam_search(seq2seq.make_step_fn(model, prm), state, batch_size=3,
                                    vocab_size=V, length=T, bos_id=BOS, beam_size=5,
                                    banned=banned).sequences

    # The search does not see the target, so the targets of users 0 and 1 are built from their
    # beams: the first two items of a beam j > 0, then items that are in no beam. With random
    # targets every beam scores the same smoothed BLEU and the oracle is always beam 0, so a
    # search that picked the lowest BLEU (argmin) would go unnoticed.
    ref_cands = np.asarray(search(params))
    target = np.asarray(target).copy()
    for i in (0, 1):
        unused = [v for v in range(1, V) if v not in ref_cands[i]]
        for j in (4, 3, 2, 1):
            row = target[i].copy()
            row[:2] = ref_cands[i, j, :2]
            row[2:] = np.where(row[2:] > 0, unused[:T - 2], 0)
            if _ref_oracle_index(ref_cands[i], row) == j:
                target[i] = row
                break
        else:
            raise AssertionError(f'no beam of user {i} can be made the unique BLEU oracle')
    target = jnp.asarray(target)

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
        s_mle, _ = seq2seq.mle_loss(prm, model, history, target,
                                    seq2seq.decoder_inputs(target, BOS), k_drop, train=True)
        return dict(s=s, n=n, grads=grads, context=context, oracle=orc, cands=cands,
                    s_mle=s_mle)

    out = {p: dict(jax.device_get(run(params, jnp.float32(p))), ref_cands=ref_cands)
           for p in (0.0, 0.5, 1.0)}
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
    assert (oracle[:2] != cands[:2, 0]).any(-1).all()  # users 0, 1: not the first beam
    np.testing.assert_array_equal(context, np.where(target > 0, oracle, 0))  # p = 0


def test_oracle_loss_equals_mle_at_p1_and_gradient_skips_search(tiny):
    target, _, out = tiny
    # p = 1: exactly the MLE loss (same dropout key k_drop = split(rng)[1], train=True)
    r1 = out[1.0]
    np.testing.assert_array_equal(r1['context'], target)
    assert float(r1['n']) == 8.0
    # to float32 rounding: two programs, which XLA may fuse and sum in another order (1 ulp
    # apart on one CPU of the 2026-12-06 machines, equal on others)
    np.testing.assert_allclose(r1['s'], r1['s_mle'], rtol=1e-6, atol=0)
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
        return -jnp.sum(jnp.where(jnp.asarray(target) > 0, picked, 0.0)), logits

    # one compile for the model's logits on the hand-built inputs and the reference gradient
    (_, logits), g_ref = jax.jit(jax.value_and_grad(ref_loss, has_aux=True))(st['params'])
    logits = np.asarray(logits, np.float64)
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    nll = logz - np.take_along_axis(logits, target[..., None], -1)[..., 0]
    np.testing.assert_allclose(r5['s'], (nll * (target > 0)).sum(), rtol=1e-5)
    assert float(r5['n']) == float((target > 0).sum())
    # the gradient of the loss per token is that of this cross entropy: nothing flows through
    # the search
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
    log_probs = np.array([[-1., -2., -0.5], [-1., -5., -7.], [-1., -1., -1.]], np.float32)
    # A: row 0 = (1, 2, -1), row 1 = (0, -1, masked)
    row0 = (1 * -1. + 2 * -2. + -1 * -0.5) / 3.0   # -1.5
    row1 = (0 * -1. + -1 * -5.) / 2.0              # 2.5
    want = -(row0 + row1) / 2.0                    # -0.5: not 0, so a lost minus sign shows
    assert want == -0.5
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


@pytest.mark.parametrize('sampler', sampling.SAMPLERS)
def test_sample_next_items_allowed_with_replacement(sampler):
    B, TT, VV, c = 6, 5, 12, 3
    rs = np.random.RandomState(4)
    logits = rs.randn(B, TT, VV).astype(np.float32)
    logits[:, :, 0] = 50.0  # padding would win without the mask
    banned = rs.rand(B, VV) < 0.3
    banned[:, 0] = False
    generated = rs.randint(0, VV, size=(B, TT)).astype(np.int32)
    logits[np.arange(B)[:, None], :, generated] += 20.0  # earlier items would win if not banned
    fn = jax.jit(functools.partial(aos4rec.sample_next_items, sampler=sampler), static_argnames='c')
    out = np.asarray(fn(jax.random.PRNGKey(5), logits, c=c, banned=banned, generated=generated))
    assert out.shape == (B, TT, c)
    for i in range(B):
        allowed = [v for v in range(1, VV) if not banned[i, v]]
        for t in range(TT):
            earlier = set(generated[i, :t].tolist())
            ok = set(v for v in allowed if v not in earlier)
            row = out[i, t]
            assert (row > 0).all() if ok else (row == 0).all()   # 0 only with nothing allowed
            assert set(row.tolist()) <= ok
    out2 = np.asarray(fn(jax.random.PRNGKey(5), logits, c=c))  # no bans: only padding masked
    assert (out2 > 0).all()
    # a position whose every item is banned gets 0 in every slot
    none = np.asarray(fn(jax.random.PRNGKey(5), logits[:1, :1], c=2,
                         banned=np.arange(VV)[None] > 0))
    np.testing.assert_array_equal(none, [[[0, 0]]])


@pytest.mark.parametrize('sampler', sampling.SAMPLERS)
def test_eq8_target_is_unbiased_for_a_peaked_two_item_policy(sampler):
    """Issue 12, item 1: Eq. 8's target mean_k D(x, {y^_1:t-1, y'_k}) must estimate
    E_{y' ~ P_G} D. Two items, P_G = (0.9, 0.1), D(y' = 1) = 1, D(y' = 2) = 0: the expectation is
    0.9. c = 2 draws WITHOUT replacement always hold both items, so their mean is 0.5 whatever
    P_G is; c independent draws average 0.9 (4,000 keys: standard error 0.0047, the bound below
    is 5 of them). With one item banned the target is that of the other, exactly."""
    logits = np.log(np.array([[[1e-9, 0.9, 0.1]]], np.float32))        # [1, 1, V=3]
    d = np.array([0.0, 1.0, 0.0])                                       # D of each successor
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    draws = np.asarray(jax.jit(jax.vmap(lambda k: aos4rec.sample_next_items(k, logits, c=2, sampler=sampler)))(keys))
    targets = d[draws[:, 0, 0, :]].mean(axis=-1)                        # [n] one target per key
    se = np.sqrt(0.9 * 0.1 / 2 / len(keys))
    assert abs(targets.mean() - 0.9) < 5 * se, targets.mean()
    # the two draws of one key are independent: both 1 with probability 0.81
    both = np.mean((draws[:, 0, 0, :] == 1).all(axis=-1))
    assert abs(both - 0.81) < 5 * np.sqrt(0.81 * 0.19 / len(keys)), both
    only2 = np.asarray(aos4rec.sample_next_items(keys[0], logits, c=2, sampler=sampler,
                                                 banned=np.array([[False, True, False]])))
    np.testing.assert_array_equal(only2, [[[2, 2]]])


@pytest.mark.parametrize('temperature', [0.5, 2.0])
@pytest.mark.parametrize('sampler', sampling.SAMPLERS)
def test_successors_are_drawn_at_the_sampling_temperature(temperature, sampler):
    """Issue 12, item 2: the successors come from the policy the lists are sampled from,
    softmax(logits / temperature) over the allowed items (4,000 keys, 5 standard errors)."""
    logits = np.array([[[0.0, 2.0, 1.0, 0.0, -1.0]]], np.float32)
    n = 4000
    keys = jax.random.split(jax.random.PRNGKey(3), n)
    draws = np.asarray(jax.jit(jax.vmap(lambda k: aos4rec.sample_next_items(
        k, logits, c=1, temperature=temperature, sampler=sampler)))(keys))[:, 0, 0, 0]
    w = np.exp(logits[0, 0, 1:].astype(np.float64) / temperature)
    p = np.concatenate([[0.0], w / w.sum()])
    freq = np.bincount(draws, minlength=5) / n
    np.testing.assert_array_less(np.abs(freq - p), 5 * np.sqrt(p * (1 - p) / n) + 1e-9)
    # at temperature 1 item 1's probability is 0.64; at 0.5 it is 0.84, at 2 0.45
    w1 = np.exp(logits[0, 0, 1:].astype(np.float64))
    assert abs(p[1] - w1[0] / w1.sum()) > 0.15


def test_critic_separation_by_hand():
    """Wasserstein estimate, all-pairs AUC of the users' mean prefix scores, and the mean and
    standard deviation of Eq. 4's advantage over the valid positions, on hand values."""
    d_real = np.array([[9., 2., 4.], [9., 1., 1.], [9., 5., 5.]], np.float32)
    d_fake = np.array([[0., 1., 3.], [0., 2., 9.], [7., 7., 7.]], np.float32)
    mask = np.array([[1, 1], [1, 0], [0, 0]], bool)          # user 2: no valid position, left out
    out = {k: float(v) for k, v in jax.jit(aos4rec.critic_separation)(d_real, d_fake, mask).items()}
    # mean real scores: user 0 (2 + 4) / 2 = 3, user 1: 1; mean fake: user 0 2, user 1 2
    assert out['wasserstein'] == pytest.approx(((3 - 2) + (1 - 2)) / 2)
    # pairs (real u, fake v): 3 > 2, 3 > 2, 1 < 2, 1 < 2 -> 2 of 4
    assert out['auc'] == pytest.approx(0.5)
    # advantages: user 0: 1 - 0 = 1, 3 - 1 = 2; user 1: 2 - 0 = 2 -> mean 5/3
    adv = np.array([1., 2., 2.])
    assert out['adv_mean'] == pytest.approx(adv.mean(), rel=1e-6)
    assert out['adv_std'] == pytest.approx(adv.std(), rel=1e-6)
    # each user's own pair: user 0 3 > 2, user 1 1 < 2 -> 1 of 2
    assert out['auc_paired'] == pytest.approx(0.5)
    tie = aos4rec.critic_separation(d_real[:1], d_real[:1], mask[:1])
    assert float(tie['auc']) == 0.5 and float(tie['wasserstein']) == 0.0
    assert float(tie['auc_paired']) == 0.5


def test_paired_auc_ignores_a_score_offset_of_the_history_alone():
    """Two users whose scores differ by a per-user offset (10 and 0): each real list above its
    own generated one, so auc_paired = 1 and W = 1 with or without the offset; the pooled AUC
    sees user 1's real list (1) under user 0's generated one (9): 3 of 4 pairs."""
    mask = np.ones((2, 1), bool)
    d_real = np.array([[0., 10.], [0., 1.]], np.float32)
    d_fake = np.array([[0., 9.], [0., 0.]], np.float32)
    out = {k: float(v) for k, v in aos4rec.critic_separation(d_real, d_fake, mask).items()}
    assert out['auc_paired'] == 1.0 and out['auc'] == pytest.approx(0.75)
    assert out['wasserstein'] == pytest.approx(1.0)
    offset = np.array([[0., 9.], [0., 0.]], np.float32)       # user 0's scores moved down by 9
    flat = {k: float(v) for k, v in
            aos4rec.critic_separation(d_real - offset, d_fake - offset, mask).items()}
    assert flat['auc'] == 1.0 and flat['auc_paired'] == 1.0 and flat['wasserstein'] == pytest.approx(1.0)


# Eq. 8's successors y' at step t are draws from P_G(. | x, y^_1:t-1) restricted to the items not
# in y^_1:t-1 (and not banned, never padding): y^_t itself IS allowed. These two tests use only
# "y^_t is among the c draws" and the c = 1 marginal (c independent draws since issue 12).
SUCC_V = 8
SUCC_GENERATED = np.array([[3, 5, 2, 7], [6, 1, 4, 0]], np.int32)  # row 1: a shorter list
SUCC_BANNED = np.zeros((2, SUCC_V), bool)
SUCC_BANNED[0, 4] = SUCC_BANNED[1, 2] = True  # banned items outside the generated lists


@pytest.mark.parametrize('c', [1, 3])
@pytest.mark.parametrize('sampler', sampling.SAMPLERS)
def test_successors_may_repeat_the_current_item(c, sampler):
    # A policy that puts almost all its mass on y^_t at position t (logit 10 against -10: every
    # other item together has probability about 1e-8) must return y^_t among the successors.
    # Banning y^_t too (M7: `earlier` counting position t itself) returns something else.
    gen = SUCC_GENERATED
    logits = np.full((2, 4, SUCC_V), -10.0, np.float32)
    logits[np.arange(2)[:, None], np.arange(4)[None, :], gen] = 10.0
    out = np.asarray(jax.jit(functools.partial(aos4rec.sample_next_items, sampler=sampler), static_argnames='c')(
        jax.random.PRNGKey(0), logits, c=c, banned=SUCC_BANNED, generated=gen))
    for b in range(2):
        for t in range(4):
            if gen[b, t] > 0:
                assert gen[b, t] in out[b, t].tolist(), (b, t, out[b, t])


@pytest.mark.parametrize('sampler', sampling.SAMPLERS)
def test_successor_frequencies_follow_the_allowed_softmax(sampler):
    # c = 1 over 4,000 keys (one jit, vmapped over the keys). Expected by numpy: softmax of the
    # position's logits over the allowed items = not padding, not banned, not in y^_1:t-1;
    # y^_t allowed. The logits favour y^_t (+1.5), so under M7 (y^_t banned) its frequency falls
    # from p = 0.25-0.78 to 0, i.e. by more than 30 standard errors (0.007 at p = 0.25).
    rs = np.random.RandomState(6)
    gen = SUCC_GENERATED
    logits = rs.randn(2, 4, SUCC_V).astype(np.float32) * 0.7
    logits[np.arange(2)[:, None], np.arange(4)[None, :], gen] += 1.5
    n = 4000
    keys = jax.random.split(jax.random.PRNGKey(9), n)
    draws = jax.jit(jax.vmap(lambda k: aos4rec.sample_next_items(
        k, logits, c=1, banned=SUCC_BANNED, generated=gen, sampler=sampler)))(keys)
    draws = np.asarray(draws)[..., 0]  # [n, 2, 4]
    for b in range(2):
        for t in range(4):
            allowed = np.ones(SUCC_V, bool)
            allowed[0] = False                       # padding
            allowed[SUCC_BANNED[b]] = False
            allowed[gen[b, :t]] = False              # y^_1:t-1 (a 0 entry bans only padding)
            w = np.where(allowed, np.exp(logits[b, t].astype(np.float64)), 0.0)
            p = w / w.sum()
            if gen[b, t] > 0:
                assert p[gen[b, t]] > 0.15  # the check below can see y^_t being banned
            freq = np.bincount(draws[:, b, t], minlength=SUCC_V) / n
            # 5 standard errors of each item's own frequency; p = 0 items must never be drawn
            np.testing.assert_array_less(np.abs(freq - p), 5 * np.sqrt(p * (1 - p) / n) + 1e-9,
                                         err_msg=f'user {b}, position {t}')


def test_inverse_cdf_draws_each_allowed_item_of_a_wide_row_and_refuses_an_unknown_sampler():
    """V = 5,000 with one allowed item at the far end and the rest of the mass spread thinly:
    the last allowed item is drawn at its rate, a draw never lands on a banned item, and a
    row whose cumulative sum rounds short of 1 still returns allowed items."""
    v = 5000
    logits = np.zeros((1, 1, v), np.float32)
    logits[0, 0, v - 1] = np.log(v - 2.0)          # the last item holds about half the mass
    banned = np.zeros((1, v), bool)
    banned[0, 1:v // 2] = True                      # the first half (but padding) is banned
    n = 2000
    keys = jax.random.split(jax.random.PRNGKey(11), n)
    draws = np.asarray(jax.jit(jax.vmap(lambda k: aos4rec.sample_next_items(
        k, logits, c=2, banned=banned, sampler='inverse_cdf')))(keys)).reshape(-1)
    assert draws.min() >= v // 2 and draws.max() <= v - 1
    w = np.ones(v); w[0] = 0; w[banned[0]] = 0; w[v - 1] = v - 2.0
    p_last = w[v - 1] / w.sum()
    freq = np.mean(draws == v - 1)
    assert abs(freq - p_last) < 5 * np.sqrt(p_last * (1 - p_last) / draws.size), (freq, p_last)
    with pytest.raises(ValueError, match="sampler must be one of"):
        aos4rec.sample_next_items(keys[0], logits, c=1, sampler='categorical')
