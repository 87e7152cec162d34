"""BERT4Rec's training data (aos4rec_jax/methods/bert4rec.py): the authors' sliding windows
(gen_data_fin.py, prop_sliding_window), the "mask only the last item" rows (their mask_last
instances) and the option checks. The network is tested in tests/test_next_item_models.py, the
cloze mask and the end-to-end guard in tests/test_guard_next_item.py."""
import collections
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aos4rec_jax import config as config_lib
from aos4rec_jax.methods import bert4rec as bm

Packed = collections.namedtuple('Packed', 'items offsets n_train')


def _packed():
    """user 0: 12 train items 100..111 (+ 2 eval items); user 1: 3 train items 200..202 (+ 2);
    user 2: 1 train item (not a training sequence, as for sample_user_sequences)."""
    items = list(range(100, 114)) + [200, 201, 202, 0, 0] + [300, 0, 0]
    return Packed(jnp.array(items, jnp.int32), jnp.array([0, 14, 19, 22], jnp.int32),
                  jnp.array([12, 3, 1], jnp.int32))


def test_sample_windows_are_the_authors_windows():
    """L = 5, step 3: the 12-item user gives range(12 - 5, 0, -3) + [0] = starts 7, 4, 1, 0;
    the 3-item user its whole sequence, left-padded; eval items never appear; every window
    equally likely."""
    users, seq = bm.sample_windows(_packed(), jax.random.PRNGKey(0), 4000, 5, 3)
    users, seq = np.asarray(users), np.asarray(seq)
    expected = {tuple(range(100 + s, 105 + s)): 0 for s in (0, 1, 4, 7)}
    expected[(0, 0, 200, 201, 202)] = 1
    rows = collections.Counter(tuple(int(x) for x in r) for r in seq)
    assert set(rows) == set(expected)
    for r, u in zip(seq, users):
        assert expected[tuple(int(x) for x in r)] == u
    freq = np.array(list(rows.values())) / len(seq)
    assert np.all(np.abs(freq - 0.2) < 0.03), rows


def test_sample_windows_step_larger_than_the_overhang():
    """n = 12, L = 10, step 5: starts range(2, 0, -5) + [0] = 2, 0 (the last L items and the
    first L)."""
    _, seq = bm.sample_windows(_packed(), jax.random.PRNGKey(1), 500, 10, 5)
    rows = {tuple(int(x) for x in r) for r in np.asarray(seq)}
    assert rows == {tuple(range(102, 112)), tuple(range(100, 110)),
                    tuple([0] * 7 + [200, 201, 202])}


def test_mask_batch_mask_last_rows_mask_only_the_last_item():
    seq = jnp.tile(jnp.array([[0, 0, 5, 6, 7, 8, 9, 10, 11, 12]]), (400, 1))
    masked, where, w = bm.mask_batch(jax.random.PRNGKey(0), seq, 0.5, 5, 0.3, 99)
    masked, where, w = map(np.asarray, (masked, where, w))
    n_masked = (masked == 99).sum(1)
    last_only = (n_masked == 1) & (masked[:, -1] == 99)
    assert 0.2 < last_only.mean() < 0.4                        # about mask_last_prob of the rows
    assert np.all(n_masked[~last_only] == 4)                   # round(0.5 x 8) cloze positions
    for b in np.nonzero(last_only)[0]:
        assert where[b, 0] == 9 and w[b].tolist() == [1, 0, 0, 0, 0]
    # weights mark exactly the masked positions; padding is never masked
    for b in range(len(seq)):
        assert sorted(where[b][w[b] > 0].tolist()) == np.nonzero(masked[b] == 99)[0].tolist()
    assert np.all(masked[:, :2] == 0)


def test_mask_batch_without_mask_last_is_the_cloze_mask():
    seq = jnp.array([[0, 0, 5, 6, 7, 8, 9, 10, 11, 12]] * 8)
    key = jax.random.PRNGKey(3)
    masked, where, w = bm.mask_batch(key, seq, 0.25, 3, 0.0, 99)
    where0, w0 = bm.cloze_mask(key, seq, 0.25, 3)
    np.testing.assert_array_equal(where, where0)
    np.testing.assert_array_equal(w, w0)
    assert np.all((np.asarray(masked) == 99).sum(1) == 2)


@pytest.mark.parametrize('field,value', [('window_step', -1), ('mask_last_prob', 1.5),
                                         ('mask_last_prob', -0.1), ('mask_prob', 0.0)])
def test_bad_options_are_refused(field, value):
    c = importlib.import_module('experiments.configs.bert4rec').get_config()
    c.bert4rec[field] = value
    with pytest.raises(config_lib.ConfigError, match=field):
        bm.BERT4Rec.validate_config(c)


def _config(**over):
    c = importlib.import_module('experiments.configs.bert4rec').get_config()
    for k, v in over.items():
        c[k] = v
    return c


def test_optimizer_without_decay_is_the_shared_one():
    """lr_decay off and no weight decay: the shared optimizer (old checkpoints' state fits)."""
    from aos4rec_jax import optim
    c = _config(weight_decay=0.0)
    params = {'w': jnp.ones((2,))}
    a = jax.tree_util.tree_structure(bm.make_optimizer(c, False).init(params))
    b = jax.tree_util.tree_structure(optim.make_optimizer(c).init(params))
    assert a == b


def test_optimizer_decays_linearly_to_zero_and_spares_layernorm_and_biases():
    """lr 0.1, 2 warm-up steps, 6 steps: a constant gradient of 0 moves only the decayed
    weights (kernels, embeddings; not LayerNorm, not biases), by lr(t) x wd x w each step: the
    rate warms up from lr / 2 to lr at step 2 (as the shared schedule), then falls linearly to 0
    at step train_steps."""
    c = _config(learning_rate=0.1, warmup_steps=2, train_steps=6, weight_decay=0.5, grad_clip=0.0)
    tx = bm.make_optimizer(c, True)
    params = {'dense': {'kernel': jnp.ones((2,)), 'bias': jnp.ones((2,))},
              'ln': {'scale': jnp.ones((2,)), 'bias': jnp.ones((2,))},
              'item_embed': {'embedding': jnp.ones((2,))}, 'output_item_bias': jnp.ones((2,))}
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    state = tx.init(params)
    rates = []
    for _ in range(7):
        before = params
        updates, state = tx.update(zeros, state, params)
        params = optax_apply(params, updates)
        rates.append(float(1 - params['dense']['kernel'][0] / before['dense']['kernel'][0]) / 0.5)
    np.testing.assert_allclose(rates, [0.05, 0.075, 0.1, 0.075, 0.05, 0.025, 0.0], atol=1e-6)
    assert float(params['dense']['bias'][0]) == 1.0
    assert float(params['ln']['scale'][0]) == 1.0 and float(params['output_item_bias'][0]) == 1.0
    assert float(params['item_embed']['embedding'][0]) < 1.0


def optax_apply(params, updates):
    import optax
    return optax.apply_updates(params, updates)


def test_epoch_counts_the_windows(tmp_path):
    """An epoch of the train phase is the number of sequences drawn from: the users, or with
    window_step the sliding windows (n = 12, L = 5, step 3: 4 windows; n = 3: 1)."""
    from aos4rec_jax import data as data_lib
    from tests.helpers import tiny_prepared
    seqs = [list(range(1, 15)), [20, 21, 22, 23, 24]]    # 12 and 3 train items (loo: +2 each)
    ds = data_lib.Dataset(tiny_prepared(seqs, protocol='loo', k=2, history_len=5,
                                        num_candidates=3, k_core=1))
    assert ds.prepared.n_train.tolist() == [12, 3]
    c = _config(data_dir='')
    c.bert4rec.prefixes = False
    assert bm.BERT4Rec(c, ds).epoch_examples() == 2
    c.bert4rec.window_step = 3
    assert bm.BERT4Rec(c, ds).epoch_examples() == 5
    c.bert4rec.include_valid, c.select_by = True, 'last'    # n = 13: starts 8, 5, 2, 0
    assert bm.BERT4Rec(c, ds).epoch_examples() == 5
    c.bert4rec.prefixes = True                              # 12 + 3 prefixes of >= 2 items
    assert bm.BERT4Rec(c, ds).epoch_examples() == 15


def test_include_valid_sequences_end_with_the_validation_item(tmp_path):
    """The authors' protocol (train on train + valid): every training sequence of the last
    window ends with the validation item, never the test item; without it, with the last train
    item. It needs select_by='last'."""
    from aos4rec_jax import data as data_lib
    from tests.helpers import tiny_prepared
    seqs = [list(range(1, 15)), [20, 21, 22, 23, 24]]
    ds = data_lib.Dataset(tiny_prepared(seqs, protocol='loo', k=2, history_len=5,
                                        num_candidates=3, k_core=1))
    dev = ds.device_data()
    p = ds.prepared
    valid = {u: int(p.items_flat[p.offsets[u] + p.n_train[u]]) for u in range(2)}
    test = {u: int(p.items_flat[p.offsets[u] + p.n_train[u] + 1]) for u in range(2)}
    c = _config(data_dir='', batch_size=256)
    c.bert4rec.include_valid, c.bert4rec.prefixes = True, False
    with pytest.raises(config_lib.ConfigError, match='include_valid'):
        bm.BERT4Rec.validate_config(c)
    c.select_by = 'last'
    bm.BERT4Rec.validate_config(c)
    for step, prefixes in ((0, False), (2, False), (0, True)):
        c.bert4rec.window_step, c.bert4rec.prefixes = step, prefixes
        users, seq = bm.BERT4Rec(c, ds).training_sequences(dev, jax.random.PRNGKey(0))
        ends = {int(u): set() for u in np.asarray(users)}
        for u, r in zip(np.asarray(users), np.asarray(seq)):
            ends[int(u)].add(int(r[-1]))
            assert test[int(u)] not in r.tolist()
        assert all(valid[u] in e for u, e in ends.items())
    c.bert4rec.include_valid, c.bert4rec.window_step, c.bert4rec.prefixes = False, 0, False
    users, seq = bm.BERT4Rec(c, ds).training_sequences(dev, jax.random.PRNGKey(0))
    for u, r in zip(np.asarray(users), np.asarray(seq)):
        assert valid[int(u)] not in r.tolist() and int(r[-1]) == int(
            p.items_flat[p.offsets[u] + p.n_train[u] - 1])


def test_sample_prefixes_are_every_train_prefix():
    """Prefixes of >= 2 train items, their last L = 5 items: user 0 gives 11 (lengths 2..12),
    user 1 gives 2; eval items never appear; uniform."""
    users, seq = bm.sample_prefixes(_packed(), jax.random.PRNGKey(0), 6500, 5)
    rows = collections.Counter(tuple(int(x) for x in r) for r in np.asarray(seq))
    expected = {tuple([0] * max(5 - e, 0) + list(range(100 + max(e - 5, 0), 100 + e)))
                for e in range(2, 13)}
    expected |= {(0, 0, 0, 200, 201), (0, 0, 200, 201, 202)}
    assert set(rows) == expected
    freq = np.array(list(rows.values())) / 6500
    assert np.all(np.abs(freq - 1 / 13) < 0.02), rows


def test_attention_dropout_rate_is_its_own():
    """Hidden dropout 0: training equals evaluation unless attention_dropout_rate > 0; with the
    rate < 0 (default) attention takes the hidden rate."""
    from aos4rec_jax.models.bert4rec import BERT4Rec, BERT4RecConfig
    seq = jnp.array([[0, 3, 4, 5, 6, 7]])
    key = jax.random.PRNGKey(0)

    def encode(**kw):
        m = BERT4Rec(BERT4RecConfig(num_items=10, max_len=6, embed_dim=8, mlp_dim=16, **kw))
        p = m.init({'params': key, 'dropout': key}, seq)['params']
        run = lambda train: m.apply({'params': p}, seq, None, train, method=m.encode,
                                    rngs={'dropout': jax.random.PRNGKey(1)})
        return np.asarray(run(True)), np.asarray(run(False))

    for kw, same in ((dict(dropout_rate=0.0), True),
                     (dict(dropout_rate=0.0, attention_dropout_rate=0.0), True),
                     (dict(dropout_rate=0.0, attention_dropout_rate=0.5), False)):
        train, ev = encode(**kw)
        assert np.allclose(train, ev, atol=1e-6) == same, kw
