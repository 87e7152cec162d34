"""The closing summary of a run (issue 16): where the results are, the kept step and why, every
test metric of both protocols beside PopRec's on the same split, the oracle's NLL, the wall time;
and what `evaluate` / `recommend` say about the parameters they use and the flags they ignore.

Runs are tiny and cheap: BPR-MF (a next-item method: a cheap train step, top-K lists) and PopRec
on the tiny synthetic data, one device."""
import json
import os
import re
import time

import pytest

from aos4rec_jax import config as config_lib
from aos4rec_jax import data as data_lib
from aos4rec_jax import evaluate as evaluate_cli
from aos4rec_jax import methods
from aos4rec_jax import recommend as recommend_cli
from aos4rec_jax import run_summary
from aos4rec_jax import trainer
from experiments.configs import base
from experiments.configs import bpr as bpr_cfg
from experiments.configs import poprec as poprec_cfg
from experiments.configs import transformer as tf_cfg

METRICS = ('prec', 'ndcg', 'bleu', 'hr', 'mrr')


def _tiny(c, cache):
    c.mesh.num_devices = 1            # next-item steps on one device (docs/testing.md, issue 9)
    c.synthetic.cache_dir = cache     # PopRec's run and BPR's read the same generated data
    return c


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('summary')
    cache = str(root / 'data')
    c = _tiny(bpr_cfg.get_config('tiny'), cache)
    c.train_steps, c.eval_every, c.checkpoint_every, c.log_every = 12, 4, 4, 4
    c.select_by = 'nll_oracle'
    printed = []
    orig = run_summary._print
    run_summary._print = printed.append          # finish() prints through it by default
    try:
        t0 = time.time()
        trainer.train_and_evaluate(c, str(root / 'bpr'))
        bpr_elapsed = time.time() - t0
        p = _tiny(poprec_cfg.get_config('tiny'), cache)
        trainer.train_and_evaluate(p, str(root / 'pop'))
    finally:
        run_summary._print = orig
    return dict(root=root, bpr=root / 'bpr', pop=root / 'pop', printed=printed, elapsed=bpr_elapsed)


def _rows(text):
    """{metric: [numbers of its row]} of a summary table."""
    out = {}
    for line in text.splitlines():
        m = re.match(r'\s+(\w+)@\d+\s+([-\d. ]+)$', line)
        if m:
            out[m.group(1)] = [float(x) for x in m.group(2).split()]
    return out


def test_summary_names_the_kept_step_every_metric_poprec_and_the_wall_time(runs):
    text = runs['printed'][0]
    bpr = runs['bpr']
    assert 'RUN SUMMARY' in text
    assert (bpr / 'summary.txt').read_text() == text + '\n'
    rec = json.loads((bpr / 'metrics' / 'summary.json').read_text())
    test = json.loads((bpr / 'metrics' / 'test.json').read_text())
    pop = json.loads((runs['pop'] / 'metrics' / 'test.json').read_text())
    # the kept step: the validation with the lowest oracle NLL, recomputed from the log
    hist = [json.loads(l) for l in (bpr / 'metrics' / 'valid_history.jsonl').read_text().splitlines()]
    assert len({round(h['nll_oracle'], 6) for h in hist}) > 1, 'precondition: distinct validations'
    best = min(hist, key=lambda h: h['nll_oracle'])['step']
    assert rec['kept_step'] == best and os.path.isdir(bpr / 'best' / str(best))
    assert f'step {best} of 12, {bpr}/best/{best}: kept for the lowest validation NLL_oracle' in text
    # every metric of both protocols: this run's from test.json, PopRec's from PopRec's own run
    rows = _rows(text)
    assert set(rows) == set(METRICS)
    for m in METRICS:
        key = f'{m}@10'
        assert rows[m] == pytest.approx([round(test['sampled'][key], 4), round(pop['sampled'][key], 4),
                                         round(test['full'][key], 4), round(pop['full'][key], 4)],
                                        abs=1e-4), m
    assert rec['poprec_test']['sampled'] == pop['sampled'] and rec['poprec_test']['full'] == pop['full']
    # the oracle's NLL of both lists and of the true continuations
    nll = re.search(r'NLL_oracle \(nats/list\)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)', text)
    assert [float(x) for x in nll.groups()] == pytest.approx(
        [test['nll_oracle']['sampled'], pop['nll_oracle']['sampled'], test['nll_oracle']['full'],
         pop['nll_oracle']['full']], abs=0.006)
    assert f"the true continuations (the oracle's samples): {test['nll_oracle']['target']:.2f}" in text
    og = rec['oracle_greedy']
    assert f"the oracle's own greedy lists (an exact model decoding greedily): {og['nll']:.2f}" in text
    assert og['nll'] < test['nll_oracle']['target'] and og['distinct']['users'] == test['users']
    # the verdict on the figure the run is selected by
    better = test['nll_oracle']['sampled'] < pop['nll_oracle']['sampled']
    assert ('lower (better) than' if better else 'not lower than') in rec['verdict']
    # where the results are, and the wall time of the run (not more than the call took)
    for f in ('metrics/test.json', 'predictions/test.parquet', 'plots/training.png'):
        assert f in text and (bpr / f).exists()
    wall = re.search(r'wall time (\d+)m(\d+)s', text)
    assert wall and 0 < rec['wall_s'] <= runs['elapsed'] + 1
    assert int(wall.group(1)) * 60 + int(wall.group(2)) == int(rec['wall_s'])
    # the PopRec reference is quick (fit + one compiled evaluation of 200 users)
    assert rec['poprec_seconds'] < 60


def test_poprec_run_says_it_has_no_training_and_writes_no_checkpoint(runs):
    text, pop = runs['printed'][1], runs['pop']
    assert 'this run is PopRec' in text and 'no training' in text
    assert set(_rows(text)) == set(METRICS)
    assert not (pop / 'checkpoints').exists() and not (pop / 'best').exists()
    visible = sorted(n for n in os.listdir(pop) if not n.startswith('.'))   # .lock: workdir_lock
    assert visible == ['config.json', 'dataset.json', 'metrics', 'predictions', 'summary.txt']
    assert sorted(os.listdir(pop / 'metrics')) == ['summary.json', 'test.json', 'valid.json']


def test_kept_parameters_follow_the_folders(tmp_path):
    """best/ wins; without it the latest checkpoint; nothing: a method that does not train."""
    assert run_summary.kept_parameters(str(tmp_path)) == (None, None)
    for s in (4, 8):
        (tmp_path / 'checkpoints' / str(s)).mkdir(parents=True)
    assert run_summary.kept_parameters(str(tmp_path)) == ('last', 8)
    (tmp_path / 'best' / '4').mkdir(parents=True)
    assert run_summary.kept_parameters(str(tmp_path)) == ('best', 4)
    assert run_summary.kept_parameters(str(tmp_path), which='last') == ('last', 8)


def test_evaluate_and_recommend_name_the_run_step_and_parameters(runs, tmp_path, capsys):
    bpr = runs['bpr']
    kept = json.loads((bpr / 'metrics' / 'summary.json').read_text())['kept_step']
    assert evaluate_cli.main(['--workdir', str(bpr), '--tag', 'again', '--splits', 'test']) == 0
    out = capsys.readouterr()
    assert f'run {os.path.abspath(bpr)} (model bpr, 12 training steps); parameters of step {kept}, ' \
           f'{bpr}/best/{kept}: kept for the lowest validation NLL_oracle' in out.out
    assert 'warning' not in out.err
    assert evaluate_cli.main(['--workdir', str(bpr), '--tag', 'last', '--params', 'last',
                              '--splits', 'test']) == 0
    assert f'parameters of step 12, {bpr}/checkpoints/12: the latest checkpoint' in capsys.readouterr().out
    raw = data_lib.Dataset.load(json.loads((bpr / 'dataset.json').read_text())['data_dir'], -1, -1) \
        .prepared.item_raw
    inp = tmp_path / 'h.jsonl'
    inp.write_text(json.dumps({'user': 'a', 'history': [str(x) for x in raw[1:4]]}) + '\n')
    assert recommend_cli.main(['--workdir', str(runs['pop']), '--input', str(inp), '--output',
                               str(tmp_path / 'r.jsonl')]) == 0
    err = capsys.readouterr().err
    assert f'run {os.path.abspath(runs["pop"])} (model poprec' in err and 'no training' in err


def test_decoding_flags_a_method_does_not_read_are_warned_about(runs, tmp_path, capsys):
    pop = runs['pop']
    # PopRec reads no decoder flag: warned, and the run's lists are the same as without it
    assert evaluate_cli.main(['--workdir', str(pop), '--tag', 'beam', '--strategy', 'beam', '--beam', '3',
                              '--splits', 'test']) == 0
    err = capsys.readouterr().err
    assert 'warning: --strategy beam, --beam 3: not used' in err and 'top-k scores' in err
    assert json.loads((pop / 'metrics' / 'test_beam.json').read_text())['sampled'] == \
        json.loads((pop / 'metrics' / 'test.json').read_text())['sampled']
    inp = tmp_path / 'h.jsonl'
    raw = data_lib.Dataset.load(json.loads((pop / 'dataset.json').read_text())['data_dir'], -1, -1) \
        .prepared.item_raw
    inp.write_text(json.dumps({'user': 'a', 'history': [str(raw[1])]}) + '\n')
    assert recommend_cli.main(['--workdir', str(pop), '--input', str(inp), '--output',
                               str(tmp_path / 'r.jsonl'), '--strategy', 'beam']) == 0
    assert 'warning: --strategy beam: not used' in capsys.readouterr().err
    # a next-item method ranking its top-K scores reads no beam size
    assert evaluate_cli.main(['--workdir', str(runs['bpr']), '--tag', 'b3', '--beam', '3',
                              '--splits', 'test']) == 0
    assert 'warning: --beam 3: not used by the topk strategy' in capsys.readouterr().err


def test_decode_warnings_per_strategy():
    """A method that decodes reads the fields of its strategy only (decoding.generate)."""
    c = tf_cfg.get_config('tiny')

    class Fake:                        # the contract's default: decode_description = config.decode
        config = c
        decode_description = methods.Method.decode_description

    f = Fake()
    c.decode.strategy = 'greedy'
    w = run_summary.decode_warnings(f, dict(strategy='greedy', beam_size=3, temperature=0.5,
                                            num_sequences=None))
    assert w == ['warning: --beam 3: not used by the greedy strategy',
                 'warning: --temperature 0.5: not used by the greedy strategy']
    c.decode.strategy = 'beam'
    assert run_summary.decode_warnings(f, dict(strategy='beam', beam_size=3, temperature=None)) == []
    c.decode.strategy = 'multi_rra'
    assert run_summary.decode_warnings(f, dict(strategy=None, beam_size=None, temperature=0.5,
                                               num_sequences=4)) == []
    assert run_summary.decode_warnings(f, dict(strategy=None, beam_size=None)) == []


def test_quick_variant_selects_by_oracle_nll_and_refuses_real_data_clearly(tmp_path):
    """The README's first run keeps the parameters the oracle likes best; on a prepared folder
    without an oracle the config says what to add."""
    c = tf_cfg.get_config('quick')
    assert c.select_by == 'nll_oracle' and base.quick(base.get_config()).select_by == 'nll_oracle'
    config_lib.validate(c)
    (tmp_path / 'real').mkdir()
    c.data_dir = str(tmp_path / 'real')
    with pytest.raises(config_lib.ConfigError, match='config.select_by: .*--config.select_by=ndcg'):
        config_lib.validate(c)
    c.select_by = 'ndcg'
    config_lib.validate(c)


def test_oracle_greedy_continuation_takes_the_most_likely_unused_token():
    """The oracle's own greedy list (the summary's reference): each token is the one with the
    lowest NLL given the prefix and the tokens before it, among those not yet in the list;
    checked by scoring every candidate with synthetic.nll."""
    import numpy as np
    from aos4rec_jax import synthetic
    cfg = synthetic.OracleConfig(vocab_size=9, hidden_size=4, embed_size=4, seed=3)
    params = synthetic.init_oracle(cfg)
    rng = np.random.default_rng(0)
    prefix = rng.integers(1, 10, size=(5, 6)).astype(np.int32)
    prefix[0, :3] = 0                                   # left padding
    got = np.asarray(synthetic.greedy_continuation(params, prefix, 4))
    assert got.shape == (5, 4)
    for b in range(5):
        assert len(set(got[b].tolist())) == 4 and set(got[b].tolist()) <= set(range(1, 10))
        for t in range(4):
            cands = [c for c in range(1, 10) if c not in got[b, :t]]
            conts = np.array([list(got[b, :t]) + [c] for c in cands], np.int32)
            scores = np.asarray(synthetic.nll(params, np.repeat(prefix[b:b + 1], len(cands), 0), conts))
            assert got[b, t] == cands[int(np.argmin(scores))], (b, t)


def test_the_plot_shows_the_critics_separation_and_the_advantage_on_validation_users(tmp_path,
                                                                                    monkeypatch):
    """plots/training.png has a panel for the critic's AUC / Wasserstein estimate and one for the
    advantage's mean and spread, both read from the validation lines of train.jsonl."""
    import types
    import matplotlib.pyplot as plt
    wd = tmp_path / 'run'
    (wd / 'metrics').mkdir(parents=True)
    lines = [{'step': 10, 'phase': 'seq2seq', 'loss': 3.0}]
    for step, m, s in ((20, 0.5, 0.2), (30, -0.25, 0.5)):
        lines.append({'step': step, 'phase': 'ssrgan', 'wasserstein': 0.1, 'val_auc': 0.6,
                      'val_auc_paired': 0.7, 'val_wasserstein': 0.3, 'val_adv_mean': m,
                      'val_adv_std': s})
    (wd / 'metrics' / 'train.jsonl').write_text('\n'.join(json.dumps(r) for r in lines) + '\n')
    figs = []
    monkeypatch.setattr(plt, 'close', lambda fig=None: figs.append(fig))
    cfg = types.SimpleNamespace(model='aos4rec', select_by='sampled_ndcg', max_eval_users=0,
                                eval_batch_size=8)
    ds = types.SimpleNamespace(info=types.SimpleNamespace(k=3))
    path = run_summary.plot(str(wd), cfg, ds, None)
    assert path and os.path.exists(path)
    titles = [ax.get_title() for ax in figs[0].axes]
    assert "the critic's separation on validation users" in titles
    ax = figs[0].axes[titles.index("the generator's advantage on validation users")]
    (mean,) = [ln for ln in ax.get_lines() if ln.get_label().startswith('advantage')]
    assert list(mean.get_xdata()) == [20, 30] and list(mean.get_ydata()) == [0.5, -0.25]
    band = ax.collections[0].get_paths()[0].vertices[:, 1]       # the mean ± std band
    assert min(band) == pytest.approx(-0.75) and max(band) == pytest.approx(0.7)


def test_the_validation_subset_is_written_to_valid_users_json(tmp_path):
    """Issue 12, item 4: a run validating on max_eval_users users writes which ones
    (metrics/valid_users.json, raw ids): the data seed's fixed random subset, not the first N."""
    from aos4rec_jax import datasets
    c = _tiny(bpr_cfg.get_config('tiny'), str(tmp_path / 'data'))
    c.max_eval_users, c.train_steps, c.eval_every, c.checkpoint_every = 7, 2, 2, 2
    trainer.train_and_evaluate(c, str(tmp_path / 'bpr'))
    got = json.loads((tmp_path / 'bpr' / 'metrics' / 'valid_users.json').read_text())
    ds = datasets.get_dataset(c, str(tmp_path / 'bpr'), log=lambda *a, **k: None)
    users = ds.eval_set('valid').users
    want = data_lib.eval_subset(users, 7, ds.prepared.settings.seed)
    assert got['max_eval_users'] == 7 and got['users'] == 7
    assert got['raw_users'] == [str(u) for u in ds.prepared.raw_users[want]]
    assert got['raw_users'] != [str(u) for u in ds.prepared.raw_users[users[:7]]]
