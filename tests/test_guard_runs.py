"""Guards of the reported numbers, end to end: what a run writes is checked against expectations
computed here from the prepared folder's Parquet files, never through the code under test.

Each test names the wiring bug it exists to catch (docs/testing.md; tests/mutation_check.py
applies them): history banning off (M2), the sampled protocol ignoring the candidates (M3), model
selection keeping the wrong step (M4), PopRec upside down (M5), NLL_oracle ignoring the history
(M6). The runs go through `trainer.train_and_evaluate` and the CLIs only (the public surface),
so the refactor of the trainer into method modules does not touch these tests.
"""
import json
import math
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

import data_prep
from aos4rec_jax import data as data_lib
from aos4rec_jax import datasets
from aos4rec_jax import recommend as recommend_cli
from aos4rec_jax import synthetic
from aos4rec_jax import trainer
from experiments.configs import poprec as poprec_cfg
from experiments.configs import transformer as tf_cfg
from tests.helpers import tiny_prepared

N_USERS, N_ITEMS, SEQ_LEN, K = 60, 30, 16, 5


# ------------------------------------------------------------------------------ the data
@pytest.fixture(scope='module')
def ban_data(tmp_path_factory):
    """A prepared folder that bans history: 60 users, each 16 distinct items of 30 (raw ids
    101..130, so raw and internal ids differ). A user's history covers about half the catalogue,
    so a list that ignored the ban would hit it almost surely (asserted below for PopRec)."""
    rng = np.random.default_rng(0)
    seqs = [list(100 + 1 + rng.permutation(N_ITEMS)[:SEQ_LEN]) for _ in range(N_USERS)]
    prepared = tiny_prepared(seqs, ban_history=True, cap=3, k=K, target_len=K, history_len=8,
                             num_candidates=8)
    out = tmp_path_factory.mktemp('ban_data') / 'prepared'
    data_prep.write_dataset(prepared, out)
    return str(out)


def read_folder(path):
    """Independent view of a prepared folder: per raw user id, the whole history before the test
    part (raw ids), the train-part items (internal ids) and the test candidates (internal ids)."""
    seq = pq.read_table(os.path.join(path, 'sequences.parquet')).to_pydict()
    spl = pq.read_table(os.path.join(path, 'splits.parquet')).to_pydict()
    cand = pq.read_table(os.path.join(path, 'candidates_test.parquet')).to_pydict()
    imap = pq.read_table(os.path.join(path, 'item_map.parquet')).to_pydict()
    raw_of = dict(zip(imap['item'], imap['raw_item']))
    n_train = dict(zip(spl['user'], spl['n_train']))
    n_valid = dict(zip(spl['user'], spl['n_valid']))
    cands = dict(zip(cand['user'], cand['candidates']))
    users = {}
    for u, raw_u, items in zip(seq['user'], seq['raw_user'], seq['items']):
        h = n_train[u] + n_valid[u]
        users[str(raw_u)] = dict(history_raw={raw_of[i] for i in items[:h]}, train=items[:n_train[u]],
                                 candidates=list(cands[u]))
    return users, raw_of


def predictions(workdir):
    return pq.read_table(os.path.join(workdir, 'predictions', 'test.parquet')).to_pydict()


def read_json(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope='module')
def tf_run(ban_data, tmp_path_factory):
    """A tiny Transformer on the banning data, validated on every user every 10 steps (beam
    search: deterministic), so the validation history has several distinct values."""
    c = tf_cfg.get_config('tiny')
    c.data_dir = ban_data
    c.train_steps, c.eval_every, c.log_every, c.checkpoint_every = 40, 10, 10, 40
    c.max_eval_users = 0
    workdir = tmp_path_factory.mktemp('tf_run')
    trainer.train_and_evaluate(c, str(workdir))
    return str(workdir)


@pytest.fixture(scope='module')
def pop_run(ban_data, tmp_path_factory):
    c = poprec_cfg.get_config('tiny')
    c.data_dir = ban_data
    workdir = tmp_path_factory.mktemp('pop_run')
    trainer.train_and_evaluate(c, str(workdir))
    return str(workdir)


# ------------------------------------------------------------------------------ M2: banning
def test_no_generated_item_is_in_the_history(ban_data, tf_run, pop_run):
    """M2a: on data that bans history, no list of either protocol holds an item of the user's
    whole history (train + validation parts), for a trained model and for PopRec."""
    users, _ = read_folder(ban_data)
    for workdir in (tf_run, pop_run):
        p = predictions(workdir)
        assert len(p['user']) == N_USERS
        for u, gen, full in zip(p['user'], p['generated'], p['generated_full']):
            hist = users[u]['history_raw']
            assert not hist & {x for x in gen if x is not None}, (workdir, u)
            assert not hist & {x for x in full if x is not None}, (workdir, u)
            assert sum(x is not None for x in full) == K       # enough allowed items for K
    # the guard can fail: PopRec's top-K without the ban would hit most users' histories
    users_list = list(users.values())
    counts = {}
    for v in users_list:
        for i in v['train']:
            counts[i] = counts.get(i, 0) + 1
    _, raw_of = read_folder(ban_data)
    top = {raw_of[i] for i in sorted(counts, key=lambda i: (-counts[i], i))[:K]}
    assert sum(bool(top & v['history_raw']) for v in users_list) > 0.9 * N_USERS


def test_recommend_bans_the_input_history(ban_data, tf_run, pop_run, tmp_path):
    """M2b: `recommend` on data that bans history never recommends an item of the input history."""
    rng = np.random.default_rng(1)
    hists = [[str(101 + i) for i in rng.permutation(N_ITEMS)[:15]] for _ in range(8)]
    inp = tmp_path / 'h.jsonl'
    inp.write_text(''.join(json.dumps({'user': f'u{j}', 'history': h}) + '\n'
                           for j, h in enumerate(hists)))
    for workdir in (tf_run, pop_run):
        out = tmp_path / (os.path.basename(workdir) + '.jsonl')
        assert recommend_cli.main(['--workdir', workdir, '--input', str(inp), '--output', str(out)]) == 0
        recs = [json.loads(l) for l in out.read_text().splitlines()]
        assert [r['user'] for r in recs] == [f'u{j}' for j in range(8)]
        for r, h in zip(recs, hists):
            assert len(r['items']) == K and not set(r['items']) & set(h), (workdir, r, h)


# ------------------------------------------------------------------------------ M3: candidates
def test_sampled_lists_come_from_the_candidates(ban_data, tf_run, pop_run):
    """M3: every item of a sampled-protocol list is one of that user's fixed test candidates."""
    users, raw_of = read_folder(ban_data)
    for workdir in (tf_run, pop_run):
        p = predictions(workdir)
        for u, gen in zip(p['user'], p['generated']):
            allowed = {raw_of[i] for i in users[u]['candidates'] if i > 0}
            got = [x for x in gen if x is not None]
            assert got and set(got) <= allowed, (workdir, u, got, allowed)
    # the guard can fail: the candidates are a strict subset of the items a list could use
    n_unseen = [N_ITEMS - len(v['history_raw']) for v in users.values()]
    assert all(len([i for i in v['candidates'] if i > 0]) < n
               for v, n in zip(users.values(), n_unseen))


# ------------------------------------------------------------------------------ M5: PopRec
def test_poprec_lists_are_the_most_popular_items(ban_data, pop_run):
    """M5: PopRec's lists are the top-K items by number of train-part interactions, computed
    here: full protocol over all items not in the history (ties: lower internal id), sampled over
    the candidates (ties: earlier candidate position)."""
    users, raw_of = read_folder(ban_data)
    counts = np.zeros(N_ITEMS + 1, np.int64)
    for v in users.values():
        np.add.at(counts, np.asarray(v['train']), 1)
    assert len(set(counts[1:].tolist())) > 3          # popularity really orders the items
    id_of = {r: i for i, r in raw_of.items()}
    p = predictions(pop_run)
    for u, gen, full in zip(p['user'], p['generated'], p['generated_full']):
        banned = {id_of[r] for r in users[u]['history_raw']}
        allowed = [i for i in range(1, N_ITEMS + 1) if i not in banned]
        want_full = sorted(allowed, key=lambda i: (-counts[i], i))[:K]
        assert full == [raw_of[i] for i in want_full], u
        cands = [(pos, i) for pos, i in enumerate(users[u]['candidates']) if i > 0 and i not in banned]
        want = [i for _, i in sorted(cands, key=lambda c: (-counts[c[1]], c[0]))[:K]]
        assert [x for x in gen if x is not None] == [raw_of[i] for i in want], u


# ------------------------------------------------------------------------------ M4: selection
def _history(workdir):
    with open(os.path.join(workdir, 'metrics', 'valid_history.jsonl')) as f:
        return [json.loads(l) for l in f if l.strip()]


def test_kept_parameters_are_the_best_validation_step(tf_run):
    """M4a: the final validation figures are those of the validation with the highest sampled
    NDCG@K: the same users (max_eval_users=0) and a deterministic decoder (beam) make them equal
    exactly, so the kept parameters are the argmax step's."""
    hist = _history(tf_run)
    key = f'sampled/ndcg@{K}'
    values = [r[key] for r in hist]
    assert len(hist) == 4 and len(set(values)) > 1, values      # otherwise any step would do
    best = hist[int(np.argmax(values))]                          # first maximum, as the trainer
    final = read_json(os.path.join(tf_run, 'metrics', 'valid.json'))
    assert final['users'] == best['users']
    for proto in ('sampled', 'full'):
        for name, v in final[proto].items():
            assert v == pytest.approx(best[f'{proto}/{name}'], abs=1e-9), (proto, name)


def test_select_by_nll_oracle_keeps_the_lowest(tmp_path):
    """M4b: with select_by=nll_oracle the kept step is the validation with the LOWEST oracle NLL
    of the generated lists (synthetic data; same users and beam search, so equal exactly)."""
    c = tf_cfg.get_config('tiny')
    c.select_by = 'nll_oracle'
    c.train_steps, c.eval_every, c.log_every, c.checkpoint_every = 40, 10, 10, 40
    c.max_eval_users = 0
    c.synthetic.num_users, c.synthetic.vocab_size = 100, 60
    trainer.train_and_evaluate(c, str(tmp_path))
    hist = _history(str(tmp_path))
    nll = [r['nll_oracle'] for r in hist]
    assert len(set(nll)) > 1, nll
    final = read_json(tmp_path / 'metrics' / 'valid.json')
    assert final['nll_oracle']['sampled'] == pytest.approx(min(nll), rel=1e-6)
    assert final['nll_oracle']['sampled'] != pytest.approx(max(nll), rel=1e-6)


def test_select_by_full_ndcg_keeps_the_best_all_items_validation(tmp_path):
    """M4c: with select_by=full_ndcg the kept step is the validation with the highest NDCG@K over
    all items (the S3-Rec repository's rule for its all-items figures), not the sampled one's."""
    c = tf_cfg.get_config('tiny')
    c.select_by = 'full_ndcg'
    # 12 validations: enough for the two rules to pick different steps (with 4, both curves of
    # some seeds rise to the last step, and the check below could not tell the rules apart;
    # seeds 0-2 all differ at this setting)
    c.train_steps, c.eval_every, c.log_every, c.checkpoint_every = 60, 5, 10, 60
    c.max_eval_users = 0
    c.synthetic.num_users, c.synthetic.vocab_size = 100, 60
    trainer.train_and_evaluate(c, str(tmp_path))
    hist = _history(str(tmp_path))
    (name,) = [k[len('full/'):] for k in hist[0] if k.startswith('full/ndcg@')]
    full = [r[f'full/{name}'] for r in hist]
    assert len(set(full)) > 1, full
    best = hist[int(np.argmax(full))]
    assert best is not hist[int(np.argmax([r[f'sampled/{name}'] for r in hist]))]  # tells them apart
    final = read_json(tmp_path / 'metrics' / 'valid.json')
    assert final['full'][name] == pytest.approx(max(full), abs=1e-9)
    assert final['sampled'][name] == pytest.approx(best[f'sampled/{name}'], abs=1e-9)


# ------------------------------------------------------------------------------ M6: NLL_oracle
T1 = math.tanh(1.0)
W_OUT = np.array([[3.0, -1.0], [-2.0, 2.0]])
B_OUT = np.array([0.5, -0.5])
# the oracle's LSTM state after each input (see two_state_oracle): h = tanh(1) * sign pattern
H_AFTER = {'start': np.array([-T1, -T1]), 1: np.array([T1, -T1]), 2: np.array([-T1, T1])}


def two_state_oracle():
    """A synthetic.py LSTM oracle over tokens {1, 2} that is a Markov chain on the last token.

    Gates saturate: input and output gates sigmoid(+50) = 1, forget gate sigmoid(-50) = 0 (to
    float32 precision), g = tanh(100 x - 50) = +-1 per unit; so c' = +-1 and h = tanh(1) * (+-1):
    [+, -] after token 1 (embedding [1, 0]), [-, +] after token 2 ([0, 1]), [-, -] after the
    start token ([0, 0]). The next-token distribution is softmax(h @ W_OUT + B_OUT)."""
    w_x = np.zeros((2, 8), np.float32)
    w_x[:, 4:6] = 100.0 * np.eye(2)                    # the g block (gates ordered i, f, g, o)
    b = np.array([50, 50, -50, -50, -50, -50, 50, 50], np.float32)
    params = dict(embed=np.eye(2, dtype=np.float32), start=np.zeros(2, np.float32), w_x=w_x,
                  w_h=np.zeros((2, 8), np.float32), b=b, w_out=W_OUT.astype(np.float32),
                  b_out=B_OUT.astype(np.float32))
    return params, synthetic.OracleConfig(vocab_size=2, hidden_size=2, embed_size=2, seed=0)


def markov_nll(last, continuation):
    """-sum log P(g_t | previous token), by hand in float64, starting after `last`."""
    total, prev = 0.0, last
    for g in continuation:
        logits = H_AFTER[prev] @ W_OUT + B_OUT
        logp = logits - math.log(math.exp(logits[0]) + math.exp(logits[1]))
        total -= logp[g - 1]
        prev = g
    return total


def test_oracle_nll_on_a_two_state_oracle(tmp_path):
    """M6: NLL_oracle of generated lists is the oracle's NLL GIVEN each user's whole history:
    with a two-state oracle it is a Markov chain from the last history token, computed by hand.
    Raw item '2' appears first, so the internal id of token 2 is 1 (the raw -> token map is
    checked too)."""
    seqs = [[2, 1, 1, 2, 2, 1, 2], [2, 2, 1, 2, 1, 1, 1, 2], [2, 1, 2, 1, 2, 1]]
    prepared = tiny_prepared(seqs, cap=2, k=3, target_len=2, num_candidates=2)
    folder = tmp_path / 'two_state'
    data_prep.write_dataset(prepared, folder)
    synthetic.save_oracle(*two_state_oracle(), str(folder / datasets.ORACLE_FILE))
    ds = data_lib.Dataset.load(str(folder))
    es = ds.eval_set('test')
    imap = pq.read_table(folder / 'item_map.parquet').to_pydict()
    id_of = {int(r): i for i, r in zip(imap['item'], imap['raw_item'])}
    assert id_of == {2: 1, 1: 2}
    spl = pq.read_table(folder / 'splits.parquet').to_pydict()
    lists_raw = [[1, 1, 2], [2, 1, 2], [1, 2, 2]]
    lists = np.array([[id_of[x] for x in l] for l in lists_raw], np.int32)
    assert list(es.users) == [0, 1, 2]
    want = []
    for u, l in enumerate(lists_raw):
        last = seqs[u][spl['n_train'][u] + spl['n_valid'][u] - 1]        # the last history item
        want.append(markov_nll(last, l))
    # the histories end in different tokens, so ignoring them would change the value
    assert len({seqs[u][spl['n_train'][u] + spl['n_valid'][u] - 1] for u in range(3)}) == 2
    got = datasets.oracle_nll(ds, es, lists)
    assert got == pytest.approx(np.mean(want), rel=1e-5)
    # one list of padding only scores 0 nats: empty slots are not scored
    assert datasets.oracle_nll(ds, es, np.zeros((3, 3), np.int32)) == 0.0


# ------------------------------------------------------------------------------ evaluate / recommend
def test_evaluate_params_last_best_and_splits(tf_run):
    """`evaluate --params last` decodes the latest checkpoint's parameters and `--params best` the
    kept ones: their validation figures equal the validation history at the last step and at the
    argmax step (same users, beam search); `--splits` writes only the splits it names."""
    from aos4rec_jax import evaluate as evaluate_cli
    hist = _history(tf_run)
    key = f'sampled/ndcg@{K}'
    best = hist[int(np.argmax([r[key] for r in hist]))]
    last = hist[-1]
    assert best['step'] != last['step'], 'precondition: the kept step is not the last one'
    for which, want in (('last', last), ('best', best)):
        assert evaluate_cli.main(['--workdir', tf_run, '--tag', which, '--params', which,
                                  '--splits', 'valid']) == 0
        got = read_json(os.path.join(tf_run, 'metrics', f'valid_{which}.json'))
        for proto in ('sampled', 'full'):
            for name, v in got[proto].items():
                assert v == pytest.approx(want[f'{proto}/{name}'], abs=1e-9), (which, proto, name)
        assert not os.path.exists(os.path.join(tf_run, 'metrics', f'test_{which}.json'))
    assert evaluate_cli.main(['--workdir', tf_run, '--tag', 'bad', '--splits', 'valid,train']) == 2


@pytest.mark.parametrize('strategy', ['sample', 'gumbel', 'multi_rra', 'multi_ra'])
def test_sampling_strategies_through_evaluate_and_recommend(ban_data, tf_run, tmp_path, strategy):
    """Every decoder through the CLIs: valid lists (K distinct items, none from the history, the
    sampled protocol within the candidates), the decoder recorded, the figures equal to the
    predictions file's, the same seed the same lists and another seed other lists."""
    from aos4rec_jax import evaluate as evaluate_cli
    from aos4rec_jax import metrics_ref
    users, raw_of = read_folder(ban_data)
    lists = {}
    for seed in (0, 0, 1):
        tag = f'{strategy}_{seed}'
        assert evaluate_cli.main(['--workdir', tf_run, '--tag', tag, '--strategy', strategy,
                                  '--splits', 'test', '--seed', str(seed),
                                  '--num-sequences', '4']) == 0
        m = read_json(os.path.join(tf_run, 'metrics', f'test_{tag}.json'))
        assert m['decode']['strategy'] == strategy and m['decode']['num_sequences'] == 4
        path = os.path.join(tf_run, 'predictions', f'test_{tag}.parquet')
        ref = metrics_ref.summarize_predictions(path)
        for proto in ('sampled', 'full'):
            for name, v in ref[proto].items():
                assert m[proto][name] == pytest.approx(v, abs=1e-6)
        p = pq.read_table(path).to_pydict()
        for u, gen, full in zip(p['user'], p['generated'], p['generated_full']):
            cands = {raw_of[i] for i in users[u]['candidates'] if i > 0}
            assert len(set(full)) == K and not set(full) & users[u]['history_raw']
            got = [x for x in gen if x is not None]
            assert len(set(got)) == len(got) and set(got) <= cands
        lists.setdefault(seed, []).append(p['generated_full'])
    assert lists[0][0] == lists[0][1]
    assert lists[0][0] != lists[1][0]
    inp = tmp_path / 'h.jsonl'
    hist = [str(101 + i) for i in range(12)]
    inp.write_text(json.dumps({'user': 'a', 'history': hist}) + '\n')
    out = tmp_path / 'r.jsonl'
    assert recommend_cli.main(['--workdir', tf_run, '--input', str(inp), '--output', str(out),
                               '--strategy', strategy]) == 0
    rec = json.loads(out.read_text())
    assert len(set(rec['items'])) == K and not set(rec['items']) & set(hist)


def test_sample_at_a_tiny_temperature_is_greedy(tf_run):
    from aos4rec_jax import evaluate as evaluate_cli
    for tag, args in (('t0', ['--strategy', 'sample', '--temperature', '1e-6']),
                      ('greedy', ['--strategy', 'greedy'])):
        assert evaluate_cli.main(['--workdir', tf_run, '--tag', tag, '--splits', 'test'] + args) == 0
    a = pq.read_table(os.path.join(tf_run, 'predictions', 'test_t0.parquet')).to_pydict()
    b = pq.read_table(os.path.join(tf_run, 'predictions', 'test_greedy.parquet')).to_pydict()
    assert a['generated'] == b['generated'] and a['generated_full'] == b['generated_full']


# ------------------------------------------------------------------------------ training options
def test_divergence_stops_the_run_without_results(tmp_path):
    """A learning rate of 1e39 makes the loss non-finite: the run stops with an error that names
    the phase and that no checkpoint was saved yet (it diverges before the first one; the message
    once said "step None"), and writes no result files."""
    c = tf_cfg.get_config('tiny')
    c.learning_rate, c.warmup_steps = 1e39, 0
    c.train_steps, c.log_every, c.eval_every, c.checkpoint_every = 20, 2, 10, 2
    c.synthetic.num_users, c.synthetic.vocab_size = 100, 60
    with pytest.raises(trainer.TrainingDivergedError, match='seq2seq phase.*no checkpoint was saved yet'):
        trainer.train_and_evaluate(c, str(tmp_path))
    assert not (tmp_path / 'metrics' / 'test.json').exists()
    assert not (tmp_path / 'metrics' / 'valid.json').exists()


@pytest.mark.parametrize('model', ['transformer', 'gru'])
def test_bfloat16_training_learns_with_float32_master_weights(ban_data, tmp_path, model):
    """compute_dtype=bfloat16: finite losses that fall (first vs last logged mean loss), the
    parameters kept float32, and the results written."""
    from aos4rec_jax import checkpoint as ckpt_lib
    from experiments.configs import gru as gru_cfg
    c = (tf_cfg if model == 'transformer' else gru_cfg).get_config('tiny')
    c.data_dir, c.compute_dtype = ban_data, 'bfloat16'
    c.train_steps, c.log_every, c.eval_every, c.checkpoint_every = 60, 10, 60, 60
    trainer.train_and_evaluate(c, str(tmp_path))
    with open(tmp_path / 'metrics' / 'train.jsonl') as f:
        losses = [json.loads(l)['loss'] for l in f]
    assert np.isfinite(losses).all() and losses[-1] < losses[0] - 0.05, losses
    ck = ckpt_lib.Checkpointer(str(tmp_path))
    state, _ = ck.restore(ck.latest_step(), None)
    ck.close()
    assert {np.asarray(x).dtype for x in jax_leaves(state['params'])} == {np.dtype('float32')}
    assert (tmp_path / 'metrics' / 'test.json').exists()


def jax_leaves(tree):
    import jax
    return jax.tree_util.tree_leaves(tree)


def test_leave_one_out_end_to_end(tmp_path):
    """`data_prep --protocol loo` then PopRec and a tiny Transformer through main.py's trainer: the
    test target is each user's last item, the 101 candidates hold it and 100 items the user never
    touched, and the figures equal the predictions file's."""
    import subprocess
    import sys
    from aos4rec_jax import metrics_ref
    rng = np.random.default_rng(3)
    rows = ['user,item,time']
    seqs = {}
    for u in range(40):
        items = rng.permutation(150)[:20] + 1
        seqs[str(u)] = [str(i) for i in items]
        rows += [f'{u},{i},{t}' for t, i in enumerate(items)]
    (tmp_path / 'log.csv').write_text('\n'.join(rows) + '\n')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, '-m', 'data_prep', '--format', 'csv', '--input',
                        str(tmp_path / 'log.csv'), '--output', str(tmp_path / 'loo'),
                        '--protocol', 'loo', '--k-core', '1', '--quiet'],
                       cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    proto = read_json(tmp_path / 'loo' / 'protocol.json')
    assert proto['protocol'] == 'loo' and proto['num_candidates'] == 101 and proto['k'] == 10
    users, raw_of = read_folder(str(tmp_path / 'loo'))
    for u, v in users.items():
        cands = [raw_of[i] for i in v['candidates']]
        assert len(cands) == 101 and len(set(cands)) == 101 and seqs[u][-1] in cands
        assert not set(cands) & set(seqs[u][:-1])
    for name, cfg in (('pop', poprec_cfg), ('tf', tf_cfg)):
        c = cfg.get_config('tiny')
        c.data_dir = str(tmp_path / 'loo')
        c.train_steps, c.eval_every, c.checkpoint_every = 20, 20, 20
        trainer.train_and_evaluate(c, str(tmp_path / name))
        p = predictions(str(tmp_path / name))
        assert sorted(p['user']) == sorted(seqs)
        for u, tgt, gen in zip(p['user'], p['target'], p['generated']):
            assert tgt == [seqs[u][-1]] and len(gen) == 10
        m = read_json(tmp_path / name / 'metrics' / 'test.json')
        ref = metrics_ref.summarize_predictions(tmp_path / name / 'predictions' / 'test.parquet')
        assert set(m['sampled']) >= {'hr@10', 'ndcg@10'}
        for proto_ in ('sampled', 'full'):
            for k, v in ref[proto_].items():
                assert m[proto_][k] == pytest.approx(v, abs=1e-6)
