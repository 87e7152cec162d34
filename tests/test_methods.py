"""The method contract: the registry, the trainer's independence of methods, the next-item losses
and batches by hand, and each next-item config training a few steps end to end."""
import ast
import glob
import importlib
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aos4rec_jax import data as data_lib
from aos4rec_jax import methods
from aos4rec_jax import sampling
from aos4rec_jax import trainer
from aos4rec_jax.methods import losses
from aos4rec_jax.methods import next_item
from tests.helpers import tiny_prepared

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, 'experiments', 'configs', '*.py'))
                      if not os.path.basename(p).startswith('_') and os.path.basename(p) != 'base.py')


def _config(name, variant=''):
    return importlib.import_module(f'experiments.configs.{name}').get_config(variant)


# ------------------------------------------------------------------------------ registry
def test_every_config_file_names_a_registered_method_and_every_method_has_a_config():
    names = set(methods.names())
    used = {_config(n).model for n in CONFIG_FILES}
    assert used <= names, used - names
    assert names <= used, f'registered without a config file: {names - used}'
    assert {'poprec', 'transformer', 'gru', 'sasrec'} <= names


@pytest.mark.parametrize('name', CONFIG_FILES)
def test_every_config_and_variant_validates(name):
    """The full-size config of every file, and each of its own variants, passes config.validate
    (Caser's d = 50 once failed the shared block's heads check outside :tiny)."""
    from aos4rec_jax import config as config_lib
    mod = importlib.import_module(f'experiments.configs.{name}')
    for variant in [''] + sorted(getattr(mod, 'VARIANTS', {})):
        config_lib.validate(mod.get_config(variant))


def test_unknown_model_is_refused_with_the_known_names():
    c = _config('sasrec', 'tiny')
    c.unlock() if hasattr(c, 'unlock') else None
    c.model = 'nosuchmodel'
    from aos4rec_jax import config as config_lib
    with pytest.raises(config_lib.ConfigError, match="config.model: 'nosuchmodel' is not one of .*sasrec"):
        config_lib.validate(c)


def test_trainer_evaluator_and_clis_name_no_method():
    """No string constant of trainer.py, evaluation.py, evaluate.py or recommend.py is a model
    name: adding a method edits none of them."""
    names = set(methods.names())
    for rel in ('aos4rec_jax/trainer.py', 'aos4rec_jax/evaluation.py', 'aos4rec_jax/evaluate.py',
                'aos4rec_jax/recommend.py', 'main.py'):
        with open(os.path.join(ROOT, rel)) as f:
            tree = ast.parse(f.read())
        consts = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        assert not (consts & names), f'{rel} names {consts & names}'


def test_unknown_option_of_a_method_block_is_refused():
    from aos4rec_jax import config as config_lib
    c = _config('sasrec', 'tiny')
    c.sasrec.unlock()
    c.sasrec.los = 'ce'
    with pytest.raises(config_lib.ConfigError, match=r"config.sasrec: unknown field\(s\) \['los'\]"):
        config_lib.validate(c)
    c = _config('sasrec', 'tiny')
    c.sasrec.loss = 'hinge'
    with pytest.raises(config_lib.ConfigError, match="config.sasrec.loss: 'hinge'"):
        config_lib.validate(c)


def test_seq2seq_models_refuse_topk_and_poprec_refuses_aos4rec_switches():
    from aos4rec_jax import config as config_lib
    c = _config('transformer', 'tiny')
    c.decode.strategy = 'topk'
    with pytest.raises(config_lib.ConfigError, match='decode.strategy'):
        config_lib.validate(c)
    c = _config('poprec', 'tiny')
    c.aos4rec.oracle = True
    with pytest.raises(config_lib.ConfigError, match='not poprec'):
        config_lib.validate(c)


def test_poprec_counts_train_or_all():
    """poprec.counts: 'train' counts the train parts, 'all' every interaction (S3-Rec's way);
    both by hand on a tiny dataset (cap 1: the last two items of each user are valid and test)."""
    from aos4rec_jax.methods import poprec
    p = tiny_prepared([[10, 11, 12, 13], [11, 12, 13, 14]], cap=1, k=2, history_len=3,
                      target_len=1, num_candidates=2)
    ds = data_lib.Dataset(p)
    ids = {str(r): i for i, r in enumerate(p.item_raw) if i > 0}
    want_train = {10: 1, 11: 2, 12: 1, 13: 0, 14: 0}
    want_all = {10: 1, 11: 2, 12: 2, 13: 2, 14: 1}
    for counts, want in (('train', want_train), ('all', want_all)):
        got = np.asarray(poprec.fit(ds, counts)['counts'])
        assert {r: int(got[ids[str(r)]]) for r in want} == want, counts
        assert got[0] == 0


# ------------------------------------------------------------------------------ losses by hand
def test_bce_sampled_by_hand():
    pos = jnp.array([[0.0, 2.0]])
    neg = jnp.array([[[0.0], [-1.0]]])
    s, n = losses.bce_sampled(pos, neg, jnp.array([[True, True]]))
    want = (math.log(2) + math.log(2)) + (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1)))
    assert float(n) == 2.0
    np.testing.assert_allclose(float(s), want, rtol=1e-6)
    s, n = losses.bce_sampled(pos, neg, jnp.array([[False, True]]))      # a masked position
    np.testing.assert_allclose(float(s), math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1)), rtol=1e-6)
    assert float(n) == 1.0


def test_softmax_ce_by_hand_ignores_padding_logit():
    logits = jnp.array([[100.0, 1.0, 2.0, 3.0]])            # index 0 (padding) never counts
    s, n = losses.softmax_ce(logits, jnp.array([2]), jnp.array([True]))
    want = -(2.0 - math.log(math.exp(1) + math.exp(2) + math.exp(3)))
    np.testing.assert_allclose(float(s), want, rtol=1e-6)
    assert float(n) == 1.0


def test_bpr_bpr_max_and_top1_max_by_hand():
    pos, neg, m = jnp.array([1.0]), jnp.array([[0.0, 2.0]]), jnp.array([True])
    sig = lambda x: 1 / (1 + math.exp(-x))
    s, _ = losses.bpr(pos, neg, m)
    np.testing.assert_allclose(float(s), -(math.log(sig(1.0)) + math.log(sig(-1.0))) / 2, rtol=1e-6)
    w = np.exp([0.0, 2.0]) / np.exp([0.0, 2.0]).sum()
    s, _ = losses.bpr_max(pos, neg, m, reg=0.5)
    want = -math.log(w[0] * sig(1.0) + w[1] * sig(-1.0)) + 0.5 * (w[0] * 0.0 + w[1] * 4.0)
    np.testing.assert_allclose(float(s), want, rtol=1e-6)
    s, _ = losses.top1_max(pos, neg, m)
    want = w[0] * (sig(-1.0) + sig(0.0)) + w[1] * (sig(1.0) + sig(4.0))
    np.testing.assert_allclose(float(s), want, rtol=1e-6)
    # a masked-out negative gets no weight
    s, _ = losses.bpr_max(pos, neg, m, neg_valid=jnp.array([[True, False]]), reg=0.0)
    np.testing.assert_allclose(float(s), -math.log(sig(1.0)), rtol=1e-6)


def _bpr_max_autodiff(pos, neg, valid, reg):
    """The textbook form, differentiated by JAX: the reference of the custom VJP."""
    s = jnp.where(valid, jax.nn.softmax(jnp.where(valid, neg, losses.NEG_INF), axis=-1), 0.0)
    p = jnp.sum(s * jax.nn.sigmoid(pos[..., None] - neg), axis=-1)
    return -jnp.log(p + 1e-24) + reg * jnp.sum(s * jnp.square(neg), axis=-1)


def _top1_max_autodiff(pos, neg, valid):
    s = jnp.where(valid, jax.nn.softmax(jnp.where(valid, neg, losses.NEG_INF), axis=-1), 0.0)
    return jnp.sum(s * (jax.nn.sigmoid(neg - pos[..., None]) + jax.nn.sigmoid(jnp.square(neg))),
                   axis=-1)


@pytest.mark.parametrize('name', ['bpr_max', 'top1_max'])
def test_bpr_max_and_top1_max_gradients_equal_autodiff_over_split_negative_groups(name):
    """The hand-written VJP (two groups of negatives, never concatenated) against autodiff of the
    plain formula on the concatenation: values and gradients to float32 rounding, with invalid
    negatives, a masked position and a row whose negatives are all invalid."""
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(3), 4)
    pos = jax.random.normal(k1, (3, 4)) * 2
    a, b = jax.random.normal(k2, (3, 4, 5)) * 2, jax.random.normal(k3, (3, 4, 7))
    va = jax.random.uniform(k4, (3, 4, 5)) > 0.3
    vb = jnp.ones((3, 4, 7), bool).at[0, 1].set(False)
    va = va.at[0, 1].set(False)                                  # row (0, 1): nothing valid
    mask = jnp.ones((3, 4), bool).at[2, 3].set(False)

    def ours(pos, a, b):
        if name == 'bpr_max':
            s, n = losses.bpr_max(pos, (a, b), mask, (va, vb), reg=0.7)
        else:
            s, n = losses.top1_max(pos, (a, b), mask, (va, vb))
        return s, n

    def ref(pos, a, b):
        neg, valid = jnp.concatenate([a, b], -1), jnp.concatenate([va, vb], -1)
        per = (_bpr_max_autodiff(pos, neg, valid, 0.7) if name == 'bpr_max'
               else _top1_max_autodiff(pos, neg, valid))
        return jnp.sum(per * mask), jnp.sum(mask.astype(jnp.float32))

    (s1, n1), (s2, n2) = jax.jit(ours)(pos, a, b), jax.jit(ref)(pos, a, b)
    np.testing.assert_allclose(float(s1), float(s2), rtol=1e-5)
    assert float(n1) == float(n2) == 11.0
    total = lambda f: lambda *x: f(*x)[0]
    g1 = jax.jit(jax.grad(total(ours), argnums=(0, 1, 2)))(pos, a, b)
    g2 = jax.jit(jax.grad(total(ref), argnums=(0, 1, 2)))(pos, a, b)
    for x, y in zip(g1, g2):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)
    assert float(jnp.abs(g1[1]).sum()) > 0 and not bool(jnp.any(g1[1][~va] != 0))
    assert not bool(jnp.any(g1[0][2, 3] != 0))                   # the masked position


# ------------------------------------------------------------------------------ batches by hand
SEQS = [list(range(10, 20)), [20, 21, 22, 23], [30, 31, 32]]


def test_user_sequences_are_the_last_train_items_shifted_by_one():
    # cap 2: train parts of 6, 2 and 1 items (user 2 has no next-item example and is never drawn)
    p = tiny_prepared(SEQS, cap=2, history_len=4, target_len=1, k=2, num_candidates=3)
    ds = data_lib.Dataset(p)
    n_train = list(p.n_train)
    users, inp, tgt = jax.jit(data_lib.sample_user_sequences, static_argnums=(2, 3))(
        ds.device_data(), jax.random.PRNGKey(0), 64, 4)
    users, inp, tgt = map(np.asarray, (users, inp, tgt))
    assert set(users.tolist()) <= {u for u, n in enumerate(n_train) if n >= 2}
    assert len(set(users.tolist())) >= 2
    for u, x, y in zip(users, inp, tgt):
        train = p.items_flat[p.offsets[u]:p.offsets[u] + p.n_train[u]].tolist()
        want_y = ([0] * 4 + train[1:])[-4:]
        want_x = ([0] * 4 + train[:-1])[-4:]
        assert y.tolist() == want_y and x.tolist() == want_x, (u, x, y, train)


def test_interactions_are_train_pairs_and_cover_them():
    p = tiny_prepared(SEQS, cap=2, history_len=4, target_len=1, k=2, num_candidates=3)
    ds = data_lib.Dataset(p)
    u, i = map(np.asarray, data_lib.sample_interactions(ds.device_data(), jax.random.PRNGKey(1), 2000))
    pairs = {(int(a), int(b)) for a, b in zip(u, i)}
    want = {(a, int(b)) for a in range(len(p.n_train))
            for b in p.items_flat[p.offsets[a]:p.offsets[a] + p.n_train[a]]}
    assert pairs == want


def test_sampled_negatives_avoid_the_excluded_items():
    """Up to `rounds` redraws (SASRec's random_neq, bounded): with 3 of 100 items excluded a
    leak has probability 0.03^4 a draw; with 7 of 10 excluded the leak rate is about 0.7^4."""
    exclude = jnp.array([[1, 2, 3], [8, 9, 0]])
    neg = np.asarray(next_item.sample_negatives(jax.random.PRNGKey(0), (2, 1000), 100, exclude))
    assert neg.min() >= 1 and neg.max() <= 100
    assert not np.isin(neg[0], [1, 2, 3]).any()
    assert not np.isin(neg[1], [8, 9]).any()
    assert np.isin(neg[1], [1, 2, 3]).sum() > 0             # only the row's own items are excluded
    dense = np.asarray(next_item.sample_negatives(jax.random.PRNGKey(1), (1, 20000), 10,
                                                  jnp.array([[1, 2, 3, 4, 5, 6, 7]])))
    rate = np.isin(dense, [1, 2, 3, 4, 5, 6, 7]).mean()
    assert abs(rate - 0.7 ** 4) < 0.02, rate



@pytest.mark.parametrize('sampler', sampling.SAMPLERS)
def test_gru4rec_extra_negatives_follow_popularity_to_the_alpha(sampler):
    """GRU4Rec+'s additional samples: each item drawn in proportion to count^alpha over the
    training items (20,000 draws, 5 standard errors), padding never; both samplers."""
    from aos4rec_jax.methods.gru4rec import GRU4Rec
    seqs = [[1, 2, 3, 1, 1, 2, 4, 5], [1, 2, 1, 3, 6, 7], [1, 4, 2, 1, 8, 9]]
    p = tiny_prepared(seqs, cap=2, history_len=4, target_len=1, k=2, num_candidates=3)
    ds = data_lib.Dataset(p)
    c = _config('gru4rec', 'tiny')
    c.gru4rec.sampler = sampler
    m = GRU4Rec(c, ds)
    n = 20000
    draws = np.asarray(jax.jit(m.draw_extra, static_argnums=1)(jax.random.PRNGKey(3), n))
    w = ds.item_counts().astype(np.float64) ** float(c.gru4rec.sample_alpha)
    w[0] = 0.0
    prob = w / w.sum()
    assert draws.dtype == np.int32 and draws.min() >= 1
    freq = np.bincount(draws, minlength=len(prob)) / n
    np.testing.assert_array_less(np.abs(freq - prob), 5 * np.sqrt(prob * (1 - prob) / n) + 1e-9)
    assert len(set(prob.round(6).tolist())) > 2          # not uniform: the check can see alpha

# ------------------------------------------------------------------------------ end to end
NEXT_ITEM_CONFIGS = [n for n in CONFIG_FILES if isinstance(methods.get(_config(n).model), type)
                     and issubclass(methods.get(_config(n).model), next_item.NextItemMethod)]


@pytest.mark.parametrize('name', NEXT_ITEM_CONFIGS)
def test_next_item_tiny_config_trains_and_evaluates(tmp_path, name):
    """Each next-item config's :tiny variant trains on CPU with a finite, falling loss and writes
    the same workdir files as every run."""
    c = _config(name, 'tiny')
    c.train_steps, c.log_every, c.eval_every, c.checkpoint_every = 40, 10, 40, 40
    c.max_eval_users = 64
    res = trainer.train_and_evaluate(c, str(tmp_path))
    import json
    with open(tmp_path / 'metrics' / 'train.jsonl') as f:
        recs = [json.loads(l) for l in f]
    # a method with later phases (CRR's regression stage) logs them after the first; its own
    # test file checks them
    recs = [r for r in recs if r['phase'] == recs[0]['phase']]
    assert [r['step'] for r in recs] == [10, 20, 30, 40]
    assert all(math.isfinite(r['loss']) for r in recs)
    assert recs[-1]['loss'] < recs[0]['loss'], [r['loss'] for r in recs]
    for f in ('config.json', 'dataset.json', 'metrics/valid.json', 'metrics/test.json',
              'predictions/test.parquet', 'best'):
        assert (tmp_path / f).exists(), f
    assert res['test']['decode']['strategy'] == 'topk'
    assert 0.0 <= res['test']['full'][f'ndcg@{10}'] <= 1.0


def test_next_item_lists_topk_or_fed_back_through_a_decoder():
    """decode.strategy 'topk' ranks one score vector; 'greedy' feeds the model its own
    predictions: both start with the same item (the argmax of the first scores), and the greedy
    list's second item is the argmax of the scores after that first item is shifted in."""
    p = tiny_prepared([list(range(10, 22)), list(range(15, 27)), list(range(12, 30))], cap=2,
                      history_len=6, target_len=1, k=4, num_candidates=6)
    ds = data_lib.Dataset(p)
    c = _config('sasrec', 'tiny')
    m_top = methods.build(c, ds)
    params = m_top.init_state(jax.random.PRNGKey(3))['params']
    c2 = _config('sasrec', 'tiny')
    c2.decode.strategy = 'greedy'
    m_greedy = methods.build(c2, ds)
    es = ds.eval_set('test')
    V = ds.info.vocab_size
    batch = dict(history=jnp.asarray(es.history), candidates=None, banned=jnp.zeros((len(es), V), bool),
                 users=jnp.asarray(es.users, jnp.int32))
    _, top = m_top.generate_fn()(params, batch, jax.random.PRNGKey(0))
    _, greedy = m_greedy.generate_fn()(params, batch, jax.random.PRNGKey(0))
    top, greedy = np.asarray(top), np.asarray(greedy)
    np.testing.assert_array_equal(top[:, 0], greedy[:, 0])
    shifted = jnp.concatenate([batch['history'][:, 1:], jnp.asarray(greedy[:, :1])], axis=1)
    s2 = np.array(m_top.scores(params, shifted, batch["users"]))
    s2[:, 0] = -np.inf
    s2[np.arange(len(es)), greedy[:, 0]] = -np.inf          # no item twice
    np.testing.assert_array_equal(greedy[:, 1], s2.argmax(1))
    assert m_greedy.decode_description()['strategy'] == 'greedy'
    assert m_top.decode_description()['strategy'] == 'topk'


def test_next_item_run_extended_from_its_checkpoint_ends_where_one_run_ends(tmp_path, capsys):
    """A SASRec run of 20 steps, rerun with train_steps=40, resumes from its step-20 checkpoint
    and ends with the same state and test figures as one 40-step run (the trainer's resume for a
    method it knows only through the contract)."""
    import json
    import orbax.checkpoint as ocp

    def run(d, steps):
        c = _config('sasrec', 'tiny')
        c.train_steps, c.log_every, c.eval_every, c.checkpoint_every = steps, 10, 20, 20
        c.max_eval_users = 32
        c.synthetic.cache_dir = str(tmp_path / 'data')
        return trainer.train_and_evaluate(c, str(d))

    run(tmp_path / 'a', 40)
    run(tmp_path / 'b', 20)
    with open(tmp_path / 'b' / 'metrics' / 'test.json') as f:
        first = json.load(f)
    capsys.readouterr()
    run(tmp_path / 'b', 40)
    out = capsys.readouterr().out
    assert 'resumed from checkpoint step 20' in out and 'steps 20 -> 40' in out, out[-2000:]
    # the 20-step run's final figures were moved aside before it went on (never shown as the
    # 40-step config's), not lost
    assert 'goes on under a changed config (train_steps)' in out
    (old,) = (tmp_path / 'b' / 'superseded').iterdir()
    with open(old / 'metrics' / 'test.json') as f:
        assert json.load(f) == first
    assert (old / 'summary.txt').exists() and (old / 'predictions' / 'test.parquet').exists()

    def state(d):
        return ocp.StandardCheckpointer().restore(str(d / 'checkpoints' / '40' / 'state'))
    a, b = state(tmp_path / 'a'), state(tmp_path / 'b')
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb) and int(a['step']) == 40
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    with open(tmp_path / 'a' / 'metrics' / 'test.json') as f, open(tmp_path / 'b' / 'metrics' / 'test.json') as g:
        assert json.load(f) == json.load(g)
