"""Tests of aos4rec_jax/decoding.py, driven by hand-set logits of a toy Markov chain.

The toy chain has V = 6 (padding 0, items 1..5) and BOS = 6. ``P[prev]`` lists the transition
probabilities of items 1..5; the logits are their logs, and the padding logit is +10 (the largest
of all) so that any failure to mask padding shows up at once. Under a mask the allowed
distribution renormalises the listed probabilities, which keeps the hand arithmetic short.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aos4rec_jax import decoding as dec

V = 6
BOS = 6
PAD_LOGIT = 10.0
P = {
    BOS: [0.50, 0.40, 0.05, 0.03, 0.02],
    1: [0.10, 0.25, 0.22, 0.22, 0.21],
    2: [0.05, 0.05, 0.80, 0.05, 0.05],
    3: [0.10, 0.10, 0.10, 0.10, 0.60],
    4: [0.35, 0.25, 0.20, 0.12, 0.08],
    5: [0.05, 0.05, 0.12, 0.08, 0.70],
}


def _table(probs):
    table = np.zeros((V + 1, V), np.float32)  # row 0 (padding as input) is never used
    for prev, p in probs.items():
        table[prev, 0] = PAD_LOGIT
        table[prev, 1:] = np.log(p)
    return jnp.asarray(table)


TABLE = _table(P)


def chain_step(state, prev_items, t):
    """First-order chain; the state counts steps and poisons the logits if it is out of step."""
    ok = state["t"] == t
    logits = jnp.where(ok[:, None], TABLE[prev_items], jnp.nan)
    return logits, {"t": state["t"] + 1}


def chain_state(batch_size):
    return {"t": jnp.zeros((batch_size,), jnp.int32)}


@functools.lru_cache(maxsize=None)
def _jitted(fn, step_fn, static):
    return jax.jit(functools.partial(fn, step_fn, **dict(static)))


def call(fn, step_fn, *args, **kwargs):
    """fn(step_fn, *args, **kwargs) under jit; jitted once per (fn, step_fn, non-array options).

    Arrays (and None) are passed as traced arguments, everything else is bound statically, so
    tests that differ only in arrays (state, rng, candidates, banned, temperature) share a compile.
    """
    dynamic = {k: v for k, v in kwargs.items()
               if v is None or isinstance(v, (jax.Array, np.ndarray))}
    static = tuple(sorted((k, v) for k, v in kwargs.items() if k not in dynamic))
    return _jitted(fn, step_fn, static)(*args, **dynamic)


def kw(batch_size=1, **more):
    return dict(batch_size=batch_size, vocab_size=V, bos_id=BOS, **more)


def banned_mask(batch_size, items):
    return jnp.zeros((batch_size, V), bool).at[:, jnp.asarray(items, jnp.int32)].set(True)


# --------------------------------------------------------------------------------------------
# A second-order model whose logits depend on the whole prefix through the state, and an
# independent plain-Python reference of it. A beam search that gathered the state wrongly
# would feed one beam's running sum to another beam and diverge from the reference.
# --------------------------------------------------------------------------------------------
M = 7  # the prefix sum enters the logits modulo M


def make_prefix_model(seed, vocab=V):
    rng = np.random.default_rng(seed)
    t1 = rng.normal(size=(vocab + 1, vocab)).astype(np.float32)
    t2 = rng.normal(size=(M, vocab)).astype(np.float32)
    t1[:, 0] = PAD_LOGIT
    bos = vocab

    def step(state, prev_items, t):
        ok = state["t"] == t
        fed = jnp.where(t > 0, prev_items, 0)          # BOS does not count
        total = state["sum"] + fed                       # = sum of the prefix generated so far
        logits = jnp.asarray(t1)[prev_items] + jnp.asarray(t2)[(total + state["user"]) % M]
        logits = jnp.where(ok[:, None], logits, jnp.nan)
        return logits, {"t": state["t"] + 1, "sum": total, "user": state["user"]}

    def init(users):
        users = jnp.asarray(users, jnp.int32)
        zeros = jnp.zeros_like(users)
        return {"t": zeros, "sum": zeros, "user": users}

    def ref_logits(prefix, user):
        prev = prefix[-1] if prefix else bos
        return t1[prev].astype(np.float64) + t2[(sum(prefix) + user) % M]

    return step, init, ref_logits, bos


def ref_allowed(vocab, candidates, banned):
    items = range(1, vocab) if candidates is None else [c for c in candidates if 0 < c < vocab]
    return [i for i in dict.fromkeys(items) if i not in (banned or ())]


def ref_log_probs(logits, allowed):
    """Allowed log-probabilities {item: lp} of one step, float64."""
    if not allowed:
        return {}
    values = np.array([logits[i] for i in allowed])
    norm = values.max() + math.log(np.exp(values - values.max()).sum())
    return {i: float(logits[i] - norm) for i in allowed}


def ref_beam_search(ref_logits, user, vocab, length, beam, candidates=None, banned=None,
                    ban_generated=True):
    allowed = ref_allowed(vocab, candidates, banned)
    beams = [((), 0.0)]
    for _ in range(length):
        extended = []
        for seq, score in beams:
            choices = [i for i in allowed if not (ban_generated and i in seq)]
            if not choices:  # nothing left: pad with 0 at an unchanged score
                extended.append((seq + (0,), score))
            for item, lp in ref_log_probs(ref_logits(seq, user), choices).items():
                extended.append((seq + (item,), score + lp))
        beams = sorted(extended, key=lambda x: -x[1])[:beam]
    return beams


def ref_rescore(ref_logits, user, vocab, seq, candidates=None, banned=None, ban_generated=True):
    """Per-step allowed log-probabilities of a given sequence (0 = no item: log-prob 0)."""
    allowed = ref_allowed(vocab, candidates, banned)
    out, prefix = [], ()
    for item in seq:
        if item == 0:
            out.append(0.0)
            continue
        choices = [i for i in allowed if not (ban_generated and i in prefix)]
        out.append(ref_log_probs(ref_logits(prefix, user), choices)[item])
        prefix += (item,)
    return np.array(out)


# --------------------------------------------------------------------------------------------
# Beam helpers
# --------------------------------------------------------------------------------------------
def test_add_beam_dim():
    x = jnp.array([[1, 2], [3, 4]])
    y = dec.add_beam_dim({"a": x, "b": jnp.array([5, 6])}, 3)
    assert y["a"].shape == (2, 3, 2) and y["b"].shape == (2, 3)
    np.testing.assert_array_equal(y["a"][1], [[3, 4]] * 3)
    np.testing.assert_array_equal(y["b"], [[5, 5, 5], [6, 6, 6]])


def test_flatten_and_unflatten_beam_dim():
    x = jnp.arange(2 * 3 * 4).reshape(2, 3, 4)
    flat = dec.flatten_beam_dim(x)
    assert flat.shape == (6, 4)
    np.testing.assert_array_equal(flat[4], x[1, 1])  # row b * beam + j: beam-major per user
    np.testing.assert_array_equal(dec.unflatten_beam_dim(flat, 2, 3), x)
    with pytest.raises(ValueError):
        dec.unflatten_beam_dim(flat, 2, 2)


def test_gather_beams():
    x = {"seq": jnp.array([[[1, 1], [2, 2], [3, 3]], [[4, 4], [5, 5], [6, 6]]]),
         "score": jnp.array([[10, 20, 30], [40, 50, 60]])}
    y = dec.gather_beams(x, jnp.array([[2, 2, 0], [1, 0, 1]]))
    np.testing.assert_array_equal(y["seq"], [[[3, 3], [3, 3], [1, 1]], [[5, 5], [4, 4], [5, 5]]])
    np.testing.assert_array_equal(y["score"], [[30, 30, 10], [50, 40, 50]])
    # new beam count may differ from the old one
    assert dec.gather_beams(x, jnp.array([[0], [2]]))["seq"].shape == (2, 1, 2)


# --------------------------------------------------------------------------------------------
# Beam search and greedy on the hand-set chain
# --------------------------------------------------------------------------------------------
def test_beam_search_finds_what_greedy_misses():
    # Greedy: BOS -> 1 (p .5); row 1 without item 1 renormalises by .9: 2 (.25/.9) wins.
    #   [1, 2], log(.5 * .25 / .9) = log(.138889)
    # Beam 2, step 0: [1] (.5), [2] (.4). Step 1 extensions:
    #   [1,2] .5*.25/.9 = .138889   [1,3] = [1,4] = .5*.22/.9 = .122222   [1,5] .116667
    #   [2,3] .4*.80/.95 = .336842  [2,1] = [2,4] = [2,5] = .4*.05/.95 = .021053
    #   -> [2,3] (.336842) then [1,2] (.138889): beam search finds [2,3], which greedy misses.
    g = call(dec.greedy, chain_step, chain_state(1), **kw(length=2))
    np.testing.assert_array_equal(g.sequences, [[1, 2]])
    np.testing.assert_allclose(g.scores, [math.log(0.5 * 0.25 / 0.9)], rtol=1e-6)

    b = call(dec.beam_search, chain_step, chain_state(1), beam_size=2, **kw(length=2))
    np.testing.assert_array_equal(b.sequences, [[[2, 3], [1, 2]]])
    np.testing.assert_allclose(
        b.scores, [[math.log(0.4 * 0.8 / 0.95), math.log(0.5 * 0.25 / 0.9)]], rtol=1e-6)


@pytest.mark.parametrize("options", [
    dict(length=4),
    dict(length=3, ban_generated=False),
    dict(length=5, banned=[1, 2]),                       # runs out of items after 3 steps
    dict(length=3, candidates=[[4, 0, 2, 5, 2, 3]]),
])
def test_greedy_equals_beam_of_one(options):
    options = dict(options)
    if "banned" in options:
        options["banned"] = banned_mask(1, options["banned"])
    if "candidates" in options:
        options["candidates"] = jnp.asarray(options["candidates"], jnp.int32)
    g = call(dec.greedy, chain_step, chain_state(1), **kw(**options))
    b = call(dec.beam_search, chain_step, chain_state(1), beam_size=1, **kw(**options))
    np.testing.assert_array_equal(b.sequences[:, 0], g.sequences)
    np.testing.assert_array_equal(b.scores[:, 0], g.scores)  # same additions, same order


def test_ban_generated_prevents_repeats_and_can_be_switched_off():
    banned = banned_mask(1, [1, 2])
    # ban_generated: BOS over {3,4,5} (.05,.03,.02): 3 (.5); row 3 over {4,5} (.1,.6): 5 (6/7);
    #   row 5 over {4}: 4 (p 1).  [3, 5, 4], log(.5 * 6/7)
    g = call(dec.greedy, chain_step, chain_state(1), **kw(length=3, banned=banned))
    np.testing.assert_array_equal(g.sequences, [[3, 5, 4]])
    np.testing.assert_allclose(g.scores, [math.log(0.5 * 6 / 7)], rtol=1e-6)
    # no ban: row 3 over {3,4,5} (.1,.1,.6): 5 (.75); row 5 over {3,4,5} (.12,.08,.7): 5 (7/9).
    #   [3, 5, 5], log(.5 * .75 * 7/9)
    g = call(dec.greedy, chain_step, chain_state(1),
             **kw(length=3, banned=banned, ban_generated=False))
    np.testing.assert_array_equal(g.sequences, [[3, 5, 5]])
    np.testing.assert_allclose(g.scores, [math.log(0.5 * 0.75 * 7 / 9)], rtol=1e-6)
    b = call(dec.beam_search, chain_step, chain_state(1), beam_size=3,
             **kw(length=4, banned=banned, ban_generated=False))
    # beam 0: [3,5,5,5] = .5 * .75 * (7/9)^2; beam search keeps it best
    np.testing.assert_array_equal(b.sequences[0, 0], [3, 5, 5, 5])
    np.testing.assert_allclose(b.scores[0, 0], math.log(0.5 * 0.75 * (7 / 9) ** 2), rtol=1e-6)


def test_fewer_allowed_items_than_length_pads_with_zero():
    # Allowed {3,4,5}, T = 5, beam 3. Step 0: [3] .5, [4] .3, [5] .2 (of .1 in total).
    # Step 1: [3,5] .5*.6/.7 = .428571  [3,4] .5*.1/.7 = .071429
    #         [4,3] .3*.2/.28 = .214286 [4,5] .3*.08/.28 = .085714
    #         [5,3] .2*.12/.2 = .12     [5,4] .2*.08/.2 = .08
    # Step 2: one item left (p 1). Steps 3, 4: nothing left -> item 0, log-prob 0.
    b = call(dec.beam_search, chain_step, chain_state(1), beam_size=3,
             **kw(length=5, banned=banned_mask(1, [1, 2])))
    np.testing.assert_array_equal(
        b.sequences, [[[3, 5, 4, 0, 0], [4, 3, 5, 0, 0], [5, 3, 4, 0, 0]]])
    np.testing.assert_allclose(
        b.scores, [[math.log(0.5 * 6 / 7), math.log(0.3 * 0.2 / 0.28), math.log(0.12)]], rtol=1e-6)
    # Sampling pads the same way, with log-prob 0 on the padded steps.
    s = call(dec.sample, chain_step, chain_state(1), jax.random.key(0), num_samples=6,
             **kw(length=5, banned=banned_mask(1, [1, 2])))
    for seq in np.asarray(s.sequences[0]):
        assert sorted(seq[:3]) == [3, 4, 5] and list(seq[3:]) == [0, 0]
    np.testing.assert_array_equal(s.log_probs[0, :, 3:], 0.0)


def test_beams_that_cannot_be_distinct_score_minus_inf():
    # Allowed {3,4,5} but 5 beams: two beams die at step 0 (score -inf, items 0).
    b = call(dec.beam_search, chain_step, chain_state(1), beam_size=5,
             **kw(length=1, banned=banned_mask(1, [1, 2])))
    np.testing.assert_array_equal(b.sequences, [[[3], [4], [5], [0], [0]]])
    np.testing.assert_allclose(b.scores[0, :3], np.log([0.5, 0.3, 0.2]), rtol=1e-6)
    assert np.all(np.isneginf(b.scores[0, 3:]))
    # no item at all: every step is padding and the score stays 0
    g = call(dec.greedy, chain_step, chain_state(1),
             **kw(length=2, banned=banned_mask(1, [1, 2, 3, 4, 5])))
    np.testing.assert_array_equal(g.sequences, [[0, 0]])
    np.testing.assert_array_equal(g.scores, [0.0])


def test_padding_and_banned_items_never_generated():
    banned = banned_mask(2, [1, 3])
    b = call(dec.beam_search, chain_step, chain_state(2), beam_size=3,
             **kw(2, length=3, banned=banned))
    seqs = np.asarray(b.sequences)
    assert not np.isin(seqs, [0, 1, 3]).any()
    assert np.all(np.isfinite(b.scores))
    s = call(dec.sample, chain_step, chain_state(2), jax.random.key(3), num_samples=16,
             **kw(2, length=3, banned=banned, ban_generated=False))
    assert not np.isin(np.asarray(s.sequences), [0, 1, 3]).any()


def test_candidates_restrict_generation():
    # Candidates [5, 0, 3, 3, 1]: padding and the repeated 3 are dropped -> allowed {1, 3, 5}.
    # BOS over {1,3,5} (.5,.05,.02): 1 (.5/.57); row 1 over {3,5} (.22,.21): 3 (.22/.43);
    # row 3 over {5}: 5 (p 1); then nothing is left: 0.
    cands = jnp.array([[5, 0, 3, 3, 1]], jnp.int32)
    run = lambda banned: call(dec.greedy, chain_step, chain_state(1),
                              **kw(length=4, candidates=cands, banned=banned_mask(1, banned)))
    g = run([])
    np.testing.assert_array_equal(g.sequences, [[1, 3, 5, 0]])
    np.testing.assert_allclose(g.scores, [math.log(0.5 / 0.57 * 0.22 / 0.43)], rtol=1e-6)
    # banned is gathered at the candidates: ban 1 -> BOS over {3,5}: 3 (.05/.07); row 3: 5.
    np.testing.assert_array_equal(run([1]).sequences, [[3, 5, 0, 0]])
    for method in dec.SAMPLE_METHODS:
        s = call(dec.sample, chain_step, chain_state(1), jax.random.key(1), num_samples=32,
                 method=method, **kw(length=2, candidates=cands, ban_generated=False))
        assert set(np.unique(s.sequences)) <= {1, 3, 5}


def test_candidates_equal_to_all_items_match_full_search():
    # Every item, shuffled. The third beam is a tie: [1,3] = [1,4] = .5 * .22/.9; the compact space
    # is sorted by item id, so both searches break it the same way (lower id: [1,3]).
    cands = jnp.array([[4, 2, 5, 1, 3]], jnp.int32)
    full = call(dec.beam_search, chain_step, chain_state(1), beam_size=3, **kw(length=2))
    comp = call(dec.beam_search, chain_step, chain_state(1), beam_size=3,
                **kw(length=2, candidates=cands))
    np.testing.assert_array_equal(full.sequences, [[[2, 3], [1, 2], [1, 3]]])
    np.testing.assert_array_equal(comp.sequences, full.sequences)
    np.testing.assert_allclose(comp.scores, full.scores, rtol=1e-6)


def _eqn_outputs(jaxpr, out):
    for eqn in jaxpr.eqns:
        out.extend((eqn.primitive.name, v.aval.shape, v.aval.dtype) for v in eqn.outvars)
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", param)
            if hasattr(inner, "eqns"):
                _eqn_outputs(inner, out)
    return out


def test_candidate_mode_builds_no_vocabulary_sized_masks():
    # The step's own logits [B * beam, V] are unavoidable; they are made here by reshape-free
    # broadcasting, so every other operation with V in its output shape is the decoder's.
    vocab, batch, beam = 97, 2, 3

    def step(state, prev_items, t):
        logits = jnp.broadcast_to(jnp.arange(vocab, dtype=jnp.float32), (prev_items.shape[0], vocab))
        return logits, state

    def v_sized_work(candidates):
        run = functools.partial(dec.beam_search, step, {}, batch_size=batch, vocab_size=vocab,
                                length=3, bos_id=vocab, beam_size=beam)
        jaxpr = jax.make_jaxpr(lambda c: run(candidates=c))(candidates).jaxpr
        return {(name, shape) for name, shape, dtype in _eqn_outputs(jaxpr, [])
                if vocab in shape and (name not in ("reshape", "broadcast_in_dim", "iota"))}

    assert v_sized_work(jnp.ones((batch, 7), jnp.int32)) == set()
    assert v_sized_work(None)  # the full-vocabulary search does mask in V-space (sanity check)


def test_state_is_threaded_and_gathered_like_a_reference_beam_search():
    step, init, ref_logits, bos = make_prefix_model(seed=0)
    users = [0, 3]
    cands = [[5, 1, 2, 4, 3], [2, 0, 4, 5, 1]]
    banned = [[], [5]]
    out = call(dec.beam_search, step, init(users), batch_size=2, vocab_size=V, length=4, bos_id=bos,
               beam_size=3, candidates=jnp.asarray(cands, jnp.int32),
               banned=jnp.asarray([[i in b for i in range(V)] for b in banned]))
    for b, user in enumerate(users):
        ref = ref_beam_search(ref_logits, user, V, 4, 3, cands[b], banned[b])
        np.testing.assert_array_equal(out.sequences[b], [seq for seq, _ in ref])
        np.testing.assert_allclose(out.scores[b], [s for _, s in ref], rtol=1e-5)
        for seq, score in zip(np.asarray(out.sequences[b]), np.asarray(out.scores[b])):
            np.testing.assert_allclose(
                ref_rescore(ref_logits, user, V, seq, cands[b], banned[b]).sum(), score, rtol=1e-5)


@pytest.mark.parametrize("ban_generated", [True, False])
def test_beam_search_matches_reference_on_larger_vocabulary(ban_generated):
    vocab = 12
    step, init, ref_logits, bos = make_prefix_model(seed=1, vocab=vocab)
    out = call(dec.beam_search, step, init([2]), batch_size=1, vocab_size=vocab, length=5, bos_id=bos,
               beam_size=4, ban_generated=ban_generated)
    ref = ref_beam_search(ref_logits, 2, vocab, 5, 4, ban_generated=ban_generated)
    np.testing.assert_array_equal(out.sequences[0], [seq for seq, _ in ref])
    np.testing.assert_allclose(out.scores[0], [s for _, s in ref], rtol=1e-5)


def test_batch_elements_are_independent():
    step, init, _, bos = make_prefix_model(seed=2)
    users = [0, 1, 2]
    cands = jnp.array([[1, 2, 3, 4], [5, 4, 0, 2], [3, 1, 5, 2]], jnp.int32)
    banned = jnp.zeros((3, V), bool).at[1, 4].set(True)
    keys = jax.random.split(jax.random.key(7), 3)
    common = dict(vocab_size=V, length=3, bos_id=bos, candidates=cands, banned=banned)

    # greedy is beam search of one (tested above); multi_sequence samples by inverse CDF
    def run_all(state, rng, **c):
        return (call(dec.beam_search, step, state, beam_size=2, **c).sequences,
                call(dec.sample, step, state, rng, num_samples=4, method="gumbel", **c).sequences,
                call(dec.multi_sequence, step, state, rng, k=3, num_sequences=5, aggregation="ra",
                     **c))

    together = run_all(init(users), keys, batch_size=3, **common)
    for b in range(3):
        one = {k: v[b:b + 1] if k in ("candidates", "banned") else v for k, v in common.items()}
        alone = run_all(init(users[b:b + 1]), keys[b:b + 1], batch_size=1, **one)
        for x, y in zip(together, alone):
            np.testing.assert_array_equal(x[b:b + 1], y)


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", dec.SAMPLE_METHODS)
def test_sample_is_reproducible_and_valid(method):
    step, init, ref_logits, bos = make_prefix_model(seed=3)
    banned = [[2], []]
    run = lambda rng: call(dec.sample, step, init([0, 1]), rng, batch_size=2, vocab_size=V,
                           length=4, bos_id=bos, num_samples=8, method=method,
                           banned=jnp.asarray([[i in b for i in range(V)] for b in banned]))
    a, b = run(jax.random.key(0)), run(jax.random.key(0))
    c = run(jax.random.key(1))
    np.testing.assert_array_equal(a.sequences, b.sequences)
    assert not np.array_equal(a.sequences, c.sequences)
    assert a.sequences.shape == a.log_probs.shape == (2, 8, 4)
    for user in range(2):
        for seq, lps in zip(np.asarray(a.sequences[user]), np.asarray(a.log_probs[user])):
            assert 0 not in seq and not set(seq) & set(banned[user]) and len(set(seq)) == 4
            # log_probs are the temperature-1 allowed log-probabilities of the chosen items
            np.testing.assert_allclose(lps, ref_rescore(ref_logits, user, V, seq, None, banned[user]),
                                       rtol=1e-5, atol=1e-6)


def test_sample_methods_differ_but_tiny_temperature_is_greedy():
    # temperature is passed as an array, so it is traced and both runs share a compile
    run = lambda method, temperature: call(dec.sample, chain_step, chain_state(1), jax.random.key(0),
                                           num_samples=8, method=method,
                                           temperature=jnp.asarray(temperature), **kw(length=3))
    assert not np.array_equal(run("categorical", 1.0).sequences, run("gumbel", 1.0).sequences)
    g = call(dec.greedy, chain_step, chain_state(1), **kw(length=3)).sequences
    for method in dec.SAMPLE_METHODS:
        s = run(method, 0.0)  # clamped to MIN_TEMPERATURE
        np.testing.assert_array_equal(s.sequences[0], np.repeat(np.asarray(g), 8, axis=0))


@pytest.mark.parametrize("method", dec.SAMPLE_METHODS)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sample_frequencies_follow_tempered_softmax(method, temperature):
    n = 20000
    s = call(dec.sample, chain_step, chain_state(1), jax.random.key(11), num_samples=n,
             temperature=jnp.asarray(temperature), method=method, **kw(length=1))
    freq = np.bincount(np.asarray(s.sequences).ravel(), minlength=V)[1:] / n
    p = np.asarray(P[BOS], np.float64) ** (1 / temperature)
    p = p / p.sum()
    # 5 standard errors of each item's own frequency (0.005 at p = 0.02, n = 20,000); the old
    # atol 0.015 on probabilities of about 0.02 let a wrong temperature (T**2, or none) pass
    np.testing.assert_array_less(np.abs(freq - p), 5 * np.sqrt(p * (1 - p) / n) + 1e-9)


def forcing_step(step, prefix_rows):
    """The forced prefix as methods/seqgan.py had it before ``sample(prefix=...)``: in the step
    function, row r (= b * n + j) gets -inf everywhere but prefix_rows[r, t] while that is > 0.
    It indexes rows of B * n, so it only works when every step sees all rows (``sample``)."""
    def fn(state, prev, t):
        logits, state = step(state, prev, t)
        forced = prefix_rows[:, t]
        one = jnp.arange(logits.shape[-1])[None, :] == forced[:, None]
        return jnp.where((forced > 0)[:, None], jnp.where(one, 0.0, -jnp.inf), logits), state
    return fn


FORCED = np.zeros((2, 4, 4), np.int32)     # [B, n, T]; 0 = drawn
FORCED[0, 1, :1] = [2]
FORCED[0, 2, :2] = [2, 3]
FORCED[0, 3, :] = [4, 1, 5, 2]             # 5 is not a candidate of user 0 (candidate case)
FORCED[1, 0, :1] = [1]
FORCED[1, 1, :2] = [3, 3]                  # a repeat: no item at step 1
FORCED[1, 2, :1] = [5]                     # banned for user 1: no item at step 0
FORCED[1, 3, 1] = 2                        # forced after a drawn step


@pytest.mark.slow                           # 5-7 s a case on the shared 2-core CPU (3 compiles)
@pytest.mark.parametrize("candidates", [None, [[4, 2, 3, 1, 2], [5, 1, 2, 3, 4]]])
def test_sample_forced_prefix_per_row(candidates):
    """sample(prefix=...): every sample emits its forced items and the model's state sees them
    (the prefix model's logits depend on the whole list), the other steps are drawn; a forced
    item that is not allowed (banned, repeated, not a candidate) gives no item. The lists equal
    those of the old way (the step function forcing rows of B * n; methods/seqgan.py before) for
    the same key; the log-probabilities are the model's allowed ones, forced steps included; a
    free sample is the unforced call's; and with step 0 run once per user (the decoding
    contract's sharing, which the old way could not take) the lists are the same."""
    step, init, ref_logits, bos = make_prefix_model(seed=5)
    banned = banned_mask(2, []).at[1, 5].set(True)
    cands = None if candidates is None else jnp.asarray(candidates, jnp.int32)
    key, prefix = jax.random.key(7), jnp.asarray(FORCED)
    opts = dict(batch_size=2, vocab_size=V, length=4, bos_id=bos, num_samples=4, method="gumbel",
                temperature=0.8, candidates=cands, banned=banned)
    got = jax.jit(lambda: dec.sample(step, init([0, 1]), key, prefix=prefix, **opts))()
    old = jax.jit(lambda: dec.sample(forcing_step(step, prefix.reshape(8, 4)), init([0, 1]), key,
                                     **opts))()
    free = jax.jit(lambda: dec.sample(step, init([0, 1]), key, **opts))()
    seqs, lps = np.asarray(got.sequences), np.asarray(got.log_probs)
    np.testing.assert_array_equal(seqs, np.asarray(old.sequences))
    np.testing.assert_array_equal(seqs[0, 0], np.asarray(free.sequences)[0, 0])   # not forced
    invalid = {(1, 1, 1), (1, 2, 0)} | ({(0, 3, 2)} if candidates is not None else set())
    if seqs[1, 3, 0] == 2:                 # drawn at step 0 already: a repeat at step 1
        invalid.add((1, 3, 1))
    for b, j, t in zip(*np.nonzero(FORCED)):
        assert seqs[b, j, t] == (0 if (b, j, t) in invalid else FORCED[b, j, t]), (b, j, t)
    for b in range(2):
        for j in range(4):
            if any((b, j, t) in invalid for t in range(4)):
                continue
            assert 0 not in seqs[b, j] and len(set(seqs[b, j])) == 4
            np.testing.assert_allclose(lps[b, j], ref_rescore(
                ref_logits, b, V, seqs[b, j], None if candidates is None else candidates[b],
                [5] if b else None), rtol=1e-5, atol=1e-6)
    # the decoding contract: step 0 once per user (B rows), tiled after; forcing still per row
    seen = []

    def spy(state, prev, t):
        seen.append(prev.shape[0])
        return step(state, prev, t)
    space = dec._make_space(2, V, cands, banned)
    choose = dec._sampler("gumbel", dec._per_user_keys(key, 2), 0.8)
    shared = jax.jit(lambda: space.to_items(dec._decode_rows(
        spy, init([0, 1]), space, choose, batch_size=2, num_rows=4, length=4, bos_id=bos,
        ban_generated=True, share_first_step=True, prefix=prefix)[0]))()
    assert seen == [2, 8]                  # traced: step 0 on B rows, the scan on B * n
    np.testing.assert_array_equal(np.asarray(shared), seqs)


# --------------------------------------------------------------------------------------------
# Gumbel-top-k
# --------------------------------------------------------------------------------------------
def test_gumbel_topk_distinct_masked_and_filled():
    logits = jnp.array([[0.3, -1.0, 0.5, 2.0, -jnp.inf, 0.1]] * 64)  # index 4 has probability 0
    idx = np.asarray(dec.gumbel_topk(jax.random.key(0), logits, 5))
    assert idx.shape == (64, 5)
    assert all(sorted(row) == [0, 1, 2, 3, 5] for row in idx)  # distinct, never the -inf entry
    assert len({tuple(row) for row in idx}) > 1  # rows get their own noise
    mask = jnp.array([False, True, True, False, True, True])  # e.g. padding 0 masked
    idx = np.asarray(dec.gumbel_topk(jax.random.key(1), logits, 4, mask))
    # allowed and of non-zero probability: 1, 2, 5; the fourth slot gets the fill value (0)
    assert all(sorted(row[:3]) == [1, 2, 5] and row[3] == 0 for row in idx)
    few = jnp.array([False, False, True, False, False, True])
    idx = np.asarray(dec.gumbel_topk(jax.random.key(2), logits, 3, few, fill_value=0))
    assert all(sorted(row[:2]) == [2, 5] and row[2] == 0 for row in idx)
    jitted = jax.jit(dec.gumbel_topk, static_argnums=2)(jax.random.key(2), logits, 3, few)
    np.testing.assert_array_equal(jitted, idx)


def test_gumbel_topk_is_sampling_without_replacement():
    n = 40000
    p = np.array([0.1, 0.2, 0.3, 0.4])
    logits = jnp.log(jnp.asarray(p, jnp.float32))[None].repeat(n, 0)  # n independent rows
    idx = np.asarray(dec.gumbel_topk(jax.random.key(5), logits, 2))
    first = np.bincount(idx[:, 0], minlength=4) / n
    np.testing.assert_allclose(first, p, atol=0.01)  # first pick ~ softmax
    # second pick given the first: p_j / (1 - p_i), as in sequential sampling
    pairs = np.zeros((4, 4))
    np.add.at(pairs, (idx[:, 0], idx[:, 1]), 1 / n)
    expected = p[:, None] * p[None, :] / (1 - p[:, None]) * (1 - np.eye(4))
    np.testing.assert_allclose(pairs, expected, atol=0.01)


# --------------------------------------------------------------------------------------------
# Multi-sequence aggregation
# --------------------------------------------------------------------------------------------
def test_reciprocal_rank_scores_by_hand():
    seqs = jnp.array([[[3, 1, 2], [1, 3, 6]]], jnp.int32)  # 6 is outside [0, 6): ignored
    scores = dec.reciprocal_rank_scores(seqs, V)
    # item 3: 1/1 + 1/2 = 1.5; item 1: 1/2 + 1/1 = 1.5; item 2: 1/3
    np.testing.assert_allclose(scores, [[0, 1.5, 1 / 3, 1.5, 0, 0]], rtol=1e-6)
    # top items: tie 1 / 3 broken by lower id; then 2; then the zero-scored 4, 5 by id
    np.testing.assert_array_equal(dec.top_k_items(scores, 5), [[1, 3, 2, 4, 5]])
    np.testing.assert_array_equal(
        dec.top_k_items(scores, 4, candidates=jnp.array([[2, 3, 0, 1]])), [[1, 3, 2, 0]])
    np.testing.assert_array_equal(
        dec.top_k_items(scores, 2, banned=banned_mask(1, [1])), [[3, 2]])


IID = [0.1, 0.3, 0.3, 0.2, 0.1]  # the same distribution after every item


def iid_step(state, prev_items, t):
    row = jnp.asarray([PAD_LOGIT] + list(np.log(IID)), jnp.float32)
    return jnp.broadcast_to(row, (prev_items.shape[0], V)), state


def test_relevance_aggregation_by_hand():
    # Without ban_generated every step of every sequence has the same distribution, whatever was
    # sampled: RA score = N * T * p = 8 p -> .8, 2.4, 2.4, 1.6, .8; ties by lower id.
    run = functools.partial(call, dec.multi_sequence, iid_step, {}, jax.random.key(0),
                            num_sequences=4, aggregation="ra",
                            **kw(length=2, k=3, ban_generated=False))
    np.testing.assert_array_equal(run(), [[2, 3, 4]])
    # the tie between 2 and 3 is broken by item id also when candidates are listed backwards
    np.testing.assert_array_equal(run(candidates=jnp.array([[5, 4, 3, 2, 1]])), [[2, 3, 4]])
    np.testing.assert_array_equal(run(banned=banned_mask(1, [2])), [[3, 4, 1]])
    # fewer allowed items than k: 0 fills the list
    np.testing.assert_array_equal(run(candidates=jnp.array([[3, 0, 0]])), [[3, 0, 0]])


@pytest.mark.parametrize("aggregation", dec.AGGREGATIONS)
def test_multi_sequence_aggregates_its_samples(aggregation):
    step, init, ref_logits, bos = make_prefix_model(seed=4, vocab=9)
    n, t, k = 6, 3, 4
    common = dict(batch_size=2, vocab_size=9, length=t, bos_id=bos, temperature=jnp.asarray(1.5))
    rng = jax.random.key(3)
    got = call(dec.multi_sequence, step, init([0, 1]), rng, k=k, num_sequences=n,
               aggregation=aggregation, **common)
    samples = call(dec.sample, step, init([0, 1]), rng, num_samples=n, **common).sequences
    for user in range(2):
        scores = np.zeros(9)
        for seq in np.asarray(samples[user]):
            prefix = ()
            for pos, item in enumerate(seq):
                if aggregation == "rra":
                    scores[item] += 1 / (pos + 1)
                else:
                    choices = [i for i in range(1, 9) if i not in prefix]
                    for i, lp in ref_log_probs(ref_logits(prefix, user), choices).items():
                        scores[i] += math.exp(lp)
                prefix += (item,)
        order = sorted(range(1, 9), key=lambda i: (-scores[i], i))
        np.testing.assert_array_equal(got[user], order[:k])


# --------------------------------------------------------------------------------------------
# Dispatcher and jit
# --------------------------------------------------------------------------------------------
def test_generate_dispatches_by_name(monkeypatch):
    calls = []

    def recorder(name, out):
        def fake(step_fn, state, *args, **kwargs):
            calls.append((name, args, kwargs))
            return out
        return fake

    seqs = jnp.arange(2 * 3 * 4).reshape(2, 3, 4)
    monkeypatch.setattr(dec, "beam_search", recorder("beam_search", dec.BeamSearchOutput(seqs, None)))
    monkeypatch.setattr(dec, "greedy", recorder("greedy", dec.GreedyOutput(seqs[:, 0], None)))
    monkeypatch.setattr(dec, "sample", recorder("sample", dec.SampleOutput(seqs, None)))
    monkeypatch.setattr(dec, "multi_sequence", recorder("multi_sequence", seqs[:, 0]))
    cands, banned, rng = jnp.ones((2, 9), jnp.int32), jnp.zeros((2, V), bool), jax.random.key(0)
    shared = dict(batch_size=2, vocab_size=V, length=4, bos_id=BOS, candidates=cands, banned=banned,
                  ban_generated=False)
    expected = {
        "beam": ("beam_search", (), dict(beam_size=7)),
        "greedy": ("greedy", (), {}),
        "sample": ("sample", (rng,), dict(num_samples=1, temperature=0.5, method="categorical")),
        "gumbel": ("sample", (rng,), dict(num_samples=1, temperature=0.5, method="gumbel")),
        "multi_rra": ("multi_sequence", (rng,),
                      dict(k=4, num_sequences=11, temperature=0.5, aggregation="rra")),
        "multi_ra": ("multi_sequence", (rng,),
                     dict(k=4, num_sequences=11, temperature=0.5, aggregation="ra")),
    }
    assert set(expected) == set(dec.STRATEGIES)
    for strategy, (name, args, options) in expected.items():
        calls.clear()
        got = dec.generate(None, {}, rng, strategy=strategy, k=4, beam_size=7, temperature=0.5,
                           num_sequences=11, candidates=cands, banned=banned, ban_generated=False,
                           batch_size=2, vocab_size=V, bos_id=BOS)
        assert calls == [(name, args, {**shared, **options})], strategy
        np.testing.assert_array_equal(got, seqs[:, 0])  # one list per user: the first / best
    with pytest.raises(ValueError):
        dec.generate(None, {}, None, strategy="sample", k=3, **kw(2))
    with pytest.raises(ValueError):
        dec.generate(None, {}, rng, strategy="nucleus", k=3, **kw(2))


def test_generate_under_jit_equals_eager_beam_search():
    state = chain_state(2)
    common = kw(2, candidates=jnp.array([[1, 2, 3, 4], [5, 3, 1, 0]], jnp.int32),
                banned=banned_mask(2, [2]))
    want = dec.beam_search(chain_step, state, beam_size=2, length=3, **common).sequences[:, 0]
    got = call(dec.generate, chain_step, state, strategy="beam", k=3, beam_size=2, **common)
    assert got.shape == (2, 3) and got.dtype == jnp.int32
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("make_key", [jax.random.key, jax.random.PRNGKey])  # typed and raw
def test_per_user_keys(make_key):
    rng = make_key(0)
    keys = dec._per_user_keys(rng, 3)
    assert keys.shape[0] == 3
    np.testing.assert_array_equal(jax.random.key_data(keys[1]),
                                  jax.random.key_data(jax.random.fold_in(rng, 1)))
    given = jax.random.split(rng, 3)
    assert dec._per_user_keys(given, 3) is given
    with pytest.raises(ValueError):
        dec._per_user_keys(given, 2)


def test_bad_arguments_raise():
    with pytest.raises(ValueError):  # state leaves must have leading dimension B
        dec.greedy(chain_step, chain_state(3), **kw(2, length=2))
    with pytest.raises(ValueError):
        dec.beam_search(chain_step, chain_state(1), banned=jnp.zeros((1, V + 1), bool), **kw(length=2))
    with pytest.raises(ValueError):
        dec.sample(chain_step, chain_state(1), jax.random.key(0), method="top_p", **kw(length=2))
    with pytest.raises(ValueError):  # a forced prefix is [B, num_samples, T]
        dec.sample(chain_step, chain_state(1), jax.random.key(0), num_samples=2,
                   prefix=jnp.zeros((1, 2, 3), jnp.int32), **kw(length=2))
    with pytest.raises(ValueError):  # logits must have exactly vocab_size entries
        dec.greedy(chain_step, chain_state(1), batch_size=1, vocab_size=V - 1, bos_id=BOS, length=2)
