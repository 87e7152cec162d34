"""Guards of the next-item baselines' figures, end to end through `trainer.train_and_evaluate`:
on data whose next item is a fixed function of the last one, every sequence model must learn to
put it first; BPR-MF, which ignores order, must learn which cluster of items a user belongs to.
A loss with a flipped sign, scores read at the wrong position, BERT4Rec predicting without its
[MASK], a broken causal mask or a dropped user embedding fail these (tests/mutation_check.py).
Also the leave-one-out evaluation rule (a target that repeats a history item stays rankable in
the sampled scene and is banned in the full one) and BERT4Rec's cloze masking.
"""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import data_prep
from aos4rec_jax import data as data_lib
from aos4rec_jax import evaluation
from aos4rec_jax import methods
from aos4rec_jax import trainer
from aos4rec_jax.methods import bert4rec as bert4rec_method
from tests.helpers import tiny_prepared

N_ITEMS, N_USERS, SEQ_LEN = 40, 160, 14


def _write(tmp_path_factory, name, seqs, **settings):
    p = tiny_prepared(seqs, protocol='loo', k=10, history_len=10, num_candidates=20, **settings)
    out = tmp_path_factory.mktemp(name) / 'data'
    data_prep.write_dataset(p, str(out))
    return str(out)


@pytest.fixture(scope='module')
def chain_data(tmp_path_factory):
    """Every user walks a fixed random permutation of 40 items from a random start: the next
    item is a function of the last one (raw ids 1001..1040)."""
    return _write(tmp_path_factory, 'chain', chain_sequences())


def chain_sequences():
    """The sequences of `chain_data`."""
    rng = np.random.default_rng(0)
    succ = rng.permutation(N_ITEMS)
    seqs = []
    for _ in range(N_USERS):
        x, s = int(rng.integers(N_ITEMS)), []
        for _ in range(SEQ_LEN):
            s.append(1001 + x)
            x = int(succ[x])
        seqs.append(s)
    return seqs


@pytest.fixture(scope='module')
def cluster_data(tmp_path_factory):
    """Four groups of users; a user's items are drawn only from its group's 10 items (in random
    order, repeats allowed): a user's next item is one of 10, whatever the order."""
    rng = np.random.default_rng(1)
    seqs = []
    for u in range(N_USERS):
        g = u % 4
        seqs.append([int(2001 + 10 * g + rng.integers(10)) for _ in range(SEQ_LEN)])
    return _write(tmp_path_factory, 'cluster', seqs, k_core=1)


SEQUENCE_MODELS = {'sasrec': 400, 'sasrec_plus': 300, 'gru4rec': 400, 'caser': 600,
                   'bert4rec': 600, 'gcsan': 400}


def _run(name, data_dir, steps, tmp_path, edit=None, **over):
    c = importlib.import_module(f'experiments.configs.{name}').get_config('tiny')
    if edit is not None:
        edit(c)
    c.data_dir = data_dir
    c.train_steps, c.eval_every, c.checkpoint_every, c.log_every = steps, steps, steps, steps
    c.warmup_steps, c.learning_rate, c.batch_size = 0, 3e-3, 64
    c.model_kwargs.dropout_rate = 0.0
    for k, v in over.items():
        c[k] = v
    return trainer.train_and_evaluate(c, str(tmp_path))


@pytest.mark.parametrize('name', sorted(SEQUENCE_MODELS))
def test_sequence_models_learn_the_successor_function(chain_data, tmp_path, name):
    """The test item is the successor of the last validation item: a model that learned the
    permutation ranks it first among the 20 candidates and among all 40 items."""
    res = _run(name, chain_data, SEQUENCE_MODELS[name], tmp_path)
    assert res['test']['sampled']['mrr@10'] > 0.9, res['test']['sampled']
    assert res['test']['full']['hr@10'] > 0.95, res['test']['full']


@pytest.mark.parametrize('loss', ['bce', 'top1_max'])
def test_gru4rec_other_losses_learn_the_successor_function(chain_data, tmp_path, loss):
    """GRU4Rec+ with SASRec's one-negative BCE (`:bce`) and with TOP1-max (its hand-written
    backward pass) learns the permutation as the BPR-max default does."""
    res = _run('gru4rec', chain_data, 400, tmp_path, edit=lambda c: setattr(c.gru4rec, 'loss', loss))
    assert res['test']['sampled']['mrr@10'] > 0.9, res['test']['sampled']
    assert res['test']['full']['hr@10'] > 0.95, res['test']['full']


def test_bpr_learns_the_users_cluster(cluster_data, tmp_path):
    """PopRec-level guessing gives HR@10 about 10/40 in the full scene; BPR-MF that learned the
    user factors puts the user's 10 group items first: HR@10 = 1 up to banned repeats (none:
    this data allows history items)."""
    res = _run('bpr', cluster_data, 600, tmp_path)
    assert res['test']['full']['hr@10'] > 0.95, res['test']['full']
    assert res['test']['sampled']['hr@10'] > 0.95, res['test']['sampled']


# ------------------------------------------------------------------------------ evaluation rules
def test_loo_sampled_scene_ranks_a_repeated_target_full_scene_bans_it():
    """A leave-one-out user whose test item repeats a history item: PopRec (item 1 is the most
    popular) lists it in the sampled scene (the candidate list is ranked as it is) and never in
    the full scene (--ban-history)."""
    seqs = [[1, 2, 3, 4, 1]] + [[1, 5, 6, 7, 8, 9]] * 6 + [[2, 3, 4, 5, 6, 7]]
    p = tiny_prepared(seqs, protocol='loo', k=3, history_len=5, num_candidates=3, k_core=1,
                      ban_history=True)
    ds = data_lib.Dataset(p)
    method = methods.build(importlib.import_module('experiments.configs.poprec').get_config(), ds)
    ev = evaluation.Evaluator(method.generate_fn(), ds, 8)
    es = ds.eval_set('test')
    _, sampled, full = ev(method.fit(), es, jax.random.PRNGKey(0))
    row = int(np.nonzero(es.users == 0)[0][0])
    target = int(es.target[row, 0])
    assert target == int(p.items_flat[p.offsets[0]])           # item "1", seen before
    assert target in sampled[row].tolist()
    assert target not in full[row].tolist()


def test_cloze_mask_never_masks_padding_and_masks_the_right_count():
    seq = jnp.array([[0, 0, 0, 5, 6, 7, 8, 9, 10, 11], [0] * 9 + [4], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])
    for s in range(20):
        pos, w = bert4rec_method.cloze_mask(jax.random.PRNGKey(s), seq, 0.2, 3)
        pos, w = np.asarray(pos), np.asarray(w)
        chosen = [set(pos[b][w[b] > 0].tolist()) for b in range(3)]
        for b in range(3):
            assert all(int(seq[b, i]) > 0 for i in chosen[b])          # never padding
        assert [len(c) for c in chosen] == [1, 1, 2]                   # round(0.2 n), >= 1
