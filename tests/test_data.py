"""Device data: window sampler, evaluation sets, history banning, top-k lists."""
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from aos4rec_jax import data as data_lib
from aos4rec_jax import evaluation
from tests.helpers import tiny_prepared

# Items are remapped by first appearance: user 0's raw 10..19 become 1..10, etc.
SEQS = [list(range(10, 20)), list(range(20, 26)) + [10, 11], [30, 31, 32, 33, 20, 21]]


def make_ds(L=4, T=3):
    p = tiny_prepared(SEQS, cap=2, history_len=L, target_len=T, k=3, num_candidates=5)
    return data_lib.Dataset(p)


def all_windows(ds):
    """Every (history, target) training window, by brute force."""
    p, info = ds.prepared, ds.info
    L, T = info.history_len, info.target_len
    out = set()
    for u in range(len(p.n_train)):
        seq = p.items_flat[p.offsets[u]:p.offsets[u + 1]][:p.n_train[u]]
        for i in range(1, len(seq)):
            h = [0] * max(0, L - i) + list(seq[max(0, i - L):i])
            t = list(seq[i:i + T]) + [0] * max(0, i + T - len(seq))
            out.add((tuple(h), tuple(t)))
    return out


def test_split_and_window_count():
    ds = make_ds()
    p = ds.prepared
    # n=10: h=min(ceil(2),2)=2 -> train 6; n=8: h=2 -> train 4; n=6: h=min(ceil(1.2),2)=2 -> train 2
    np.testing.assert_array_equal(p.n_train, [6, 4, 2])
    assert ds.info.num_windows == 5 + 3 + 1


def test_sampler_draws_only_valid_windows_and_all_of_them():
    ds = make_ds()
    dd = ds.device_data()
    windows = all_windows(ds)
    f = jax.jit(lambda k: data_lib.sample_windows(dd, k, 256, 4, 3))
    seen = set()
    for s in range(4):
        b = f(jax.random.PRNGKey(s))
        for h, t in zip(np.asarray(b.history), np.asarray(b.target)):
            w = (tuple(h), tuple(t))
            assert w in windows, w
            seen.add(w)
    assert seen == windows


def test_sampler_exact_window_and_determinism():
    ds = make_ds()
    dd = ds.device_data()
    b1 = data_lib.sample_windows(dd, jax.random.PRNGKey(7), 64, 4, 3)
    b2 = data_lib.sample_windows(dd, jax.random.PRNGKey(7), 64, 4, 3)
    np.testing.assert_array_equal(b1.history, b2.history)
    np.testing.assert_array_equal(b1.target, b2.target)
    b3 = data_lib.sample_windows(dd, jax.random.PRNGKey(8), 64, 4, 3)
    assert not np.array_equal(b1.history, b3.history)
    # Remapping by first appearance: user 0 raw 10..19 -> 1..10; user 1 raw 20..25 -> 11..16;
    # user 2 raw 30..33 -> 17..20. User 2 (n=6, h=2, train=[17, 18]) has the single window i=1:
    # history [0, 0, 0, 17], target [18, 0, 0] (a tail window, padded).
    p = ds.prepared
    np.testing.assert_array_equal(p.items_flat[p.offsets[2]:p.offsets[3]], [17, 18, 19, 20, 11, 12])
    assert ((0, 0, 0, 17), (18, 0, 0)) in all_windows(ds)
    # And user 0's window i=5: history = items 2..5, target = 6 and the tail (train ends at 6).
    assert ((2, 3, 4, 5), (6, 0, 0)) in all_windows(ds)


def test_eval_set_history_and_target():
    ds = make_ds(L=4, T=3)
    es = ds.eval_set('test')
    # user 0: items 1..10; n_train 6, valid 2, test 2 -> test history = items[4:8] = 5..8,
    # target = first min(T=3, h=2) test items = 9, 10 (padded)
    np.testing.assert_array_equal(es.history[0], [5, 6, 7, 8])
    np.testing.assert_array_equal(es.target[0], [9, 10, 0])
    vs = ds.eval_set('valid')
    np.testing.assert_array_equal(vs.history[0], [3, 4, 5, 6])
    np.testing.assert_array_equal(vs.target[0], [7, 8, 0])
    assert es.hist_len[0] == 8 and vs.hist_len[0] == 6
    assert es.candidates.shape == (3, 5)
    for u in range(3):
        for t in es.target[u][es.target[u] > 0]:
            assert t in es.candidates[u]


def test_history_ban_mask():
    ds = make_ds()
    dd = ds.device_data()
    es = ds.eval_set('test')
    m = np.asarray(data_lib.history_ban_mask(dd.items, jnp.asarray(es.hist_start), jnp.asarray(es.hist_len),
                                             ds.max_history, ds.info.vocab_size))
    p = ds.prepared
    for u in range(3):
        hist = set(p.items_flat[p.offsets[u]:p.offsets[u] + es.hist_len[u]].tolist())
        assert set(np.nonzero(m[u])[0].tolist()) == hist


def test_topk_lists_exact():
    scores = jnp.array([9.0, 1.0, 5.0, 5.0, 3.0, 0.0])  # item 0 is padding: never returned
    banned = jnp.array([[False, False, True, False, False, False],
                        [False, False, False, False, False, False]])
    full = evaluation.topk_lists(scores, 3, banned=banned)
    np.testing.assert_array_equal(full, [[3, 4, 1], [2, 3, 4]])   # tie 2/3 -> lower id first
    cands = jnp.array([[5, 1, 2, 0], [4, 5, 0, 0]])
    samp = evaluation.topk_lists(scores, 3, candidates=cands, banned=banned)
    # row 0: 2 banned, 0 is padding -> 1 (1.0), 5 (0.0) then nothing left -> 0
    np.testing.assert_array_equal(samp, [[1, 5, 0], [4, 5, 0]])


def test_eval_set_subset_is_a_fixed_seeded_random_sample_not_the_first_users():
    """Issue 12, item 4: max_eval_users takes a seeded random subset, in user order, not the first
    N users by raw id. Exact: the first N of np.random.default_rng([seed, 12]).permutation(U),
    sorted; the data's own seed (protocol.json) by default; the same on every call and for a fresh
    load; nested (a smaller N is a subset of a larger one's); N >= U gives every user."""
    seqs = [list(range(100 * u, 100 * u + 6)) for u in range(40)]
    ds = data_lib.Dataset(tiny_prepared(seqs, cap=1, history_len=3, target_len=1, k=1,
                                        num_candidates=2, seed=5))
    full = ds.eval_set('valid')
    assert len(full) == 40
    want = np.sort(np.random.default_rng([5, 12]).permutation(40)[:10])
    sub = ds.eval_set('valid', 10)
    np.testing.assert_array_equal(sub.users, want)
    assert not np.array_equal(sub.users, np.arange(10))            # not the first 10 users
    again = data_lib.Dataset(tiny_prepared(seqs, cap=1, history_len=3, target_len=1, k=1,
                                           num_candidates=2, seed=5)).eval_set('valid', 10)
    np.testing.assert_array_equal(again.users, want)
    # every field follows its user: rows of the subset equal the full set's rows of those users
    for f in ('history', 'target', 'candidates', 'hist_start', 'hist_len'):
        np.testing.assert_array_equal(getattr(sub, f), getattr(full, f)[want], err_msg=f)
    assert set(ds.eval_set('valid', 4).users) <= set(sub.users)
    np.testing.assert_array_equal(ds.eval_set('valid', 40).users, full.users)
    np.testing.assert_array_equal(ds.eval_set('valid', 1000).users, full.users)
    np.testing.assert_array_equal(ds.eval_set('valid', 10, seed=6).users,
                                  np.sort(np.random.default_rng([6, 12]).permutation(40)[:10]))


def test_evaluator_takes_the_item_array_as_an_argument_not_a_constant():
    """Issue 12, item 8: the compiled evaluation program reads the packed item array (for the
    history ban) from an argument, so it is not baked into the executable as a constant (about
    80 MB at ML-20M size). Checked two ways: no constant of the traced program is as large as the
    item array, and a different array given at call time changes the ban."""
    p = tiny_prepared(SEQS, cap=2, history_len=4, target_len=3, k=3, num_candidates=5,
                      ban_history=True)
    ds = data_lib.Dataset(p)
    V = ds.info.vocab_size

    def generate_fn(params, batch, rng):           # the 3 lowest allowed items
        return evaluation.topk_sampled_and_full(-jnp.arange(V, dtype=jnp.float32), batch, 3)

    ev = evaluation.Evaluator(generate_fn, ds, 4)
    es = ds.eval_set('test')
    b, _ = next(data_lib.eval_batches(es, 4))
    items = ds.device_data().items
    key = jax.random.PRNGKey(0)
    closed = jax.make_jaxpr(ev._run)(None, b, key, items)

    def consts(jaxpr):
        out = list(jaxpr.consts)
        for eqn in jaxpr.jaxpr.eqns:
            for v in eqn.params.values():
                if isinstance(v, jax.extend.core.ClosedJaxpr):
                    out += consts(v)
        return out
    assert all(np.size(c) < items.size for c in consts(closed)), \
        [np.shape(c) for c in consts(closed)]
    _, full, _, _ = ev._run(None, b, key, items)
    # user 0's test history is items 1..8: the 3 lowest allowed items are 9, 10, 11
    np.testing.assert_array_equal(np.asarray(full)[0], [9, 10, 11])
    _, full0, _, _ = ev._run(None, b, key, jnp.zeros_like(items))   # an array that bans nothing
    np.testing.assert_array_equal(np.asarray(full0)[0], [1, 2, 3])
    summary, _, _ = ev(None, es, key)                 # the public call passes the run's array
    assert summary['users'] == 3


def test_a_target_len_override_that_breaks_the_prepared_protocol_is_refused(tmp_path):
    """Issue 12, item 7: the candidate lists hold the first min(T0, h) items of each evaluated
    part (T0 the prepared target_len, h <= cap), so an override T with min(T, cap) != min(T0, cap)
    is refused, naming config.target_len; under the paper protocol T must also equal K. Overrides
    that change nothing the data was made with pass (-1; T = T0; T beyond cap under loo)."""
    import data_prep
    import pytest
    from aos4rec_jax import config as config_lib
    from experiments.configs import aos4rec as aos_cfg
    seqs = [list(range(100 * u, 100 * u + 12)) for u in range(6)]

    def prepared(name, **kw):
        out = str(tmp_path / name)
        data_prep.write_dataset(tiny_prepared(seqs, **kw), out)
        return out

    def config(data_dir, target_len):
        c = aos_cfg.get_config('tiny')
        c.data_dir, c.target_len = data_dir, target_len
        return c

    paper = prepared('paper', cap=3, target_len=3, k=3, num_candidates=5)
    for ok in (-1, 3):
        config_lib.validate(config(paper, ok))
    with pytest.raises(config_lib.ConfigError, match=r'config\.target_len: 2 no longer matches'):
        config_lib.validate(config(paper, 2))           # the candidates hold a 3rd target item
    with pytest.raises(config_lib.ConfigError, match=r'config\.target_len: 5 differs from K = 3'):
        config_lib.validate(config(paper, 5))           # min(5, cap 3) = 3: candidates fine, T != K
    loo = prepared('loo', cap=1, target_len=1, k=3, num_candidates=5,
                   protocol='loo')
    config_lib.validate(config(loo, 4))                 # h = 1: T = 4 evaluates the same item
    # the synthetic data (no data_dir): the profile's settings, default T0 = K = 10, cap 10
    config_lib.validate(config('', 10))
    with pytest.raises(config_lib.ConfigError, match=r'config\.target_len: 4 no longer matches'):
        config_lib.validate(config('', 4))
