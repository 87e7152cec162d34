"""experiments/collect_ablation.py: the Table 4 ablation runs to Markdown, JSON and a plot."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from experiments import collect_ablation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(root, dataset, model, seed, row, ndcg, prec=0.1, bleu=0.01, K=10, users=100, fname='test.json'):
    """One fake run's metrics file; the full protocol gets half the sampled numbers."""
    mdir = root / dataset / model / f'seed{seed}' / row / 'metrics'
    mdir.mkdir(parents=True, exist_ok=True)

    def block(scale):
        return {f'prec@{K}': prec * scale, f'ndcg@{K}': ndcg * scale, f'bleu@{K}': bleu * scale,
                f'hr@{K}': 0.5 * scale, f'mrr@{K}': 0.25 * scale}

    metrics = {'sampled': block(1.0), 'full': block(0.5), 'users': users,
               'decode': {'strategy': 'beam', 'beam_size': 3}, 'ban_history': True}
    (mdir / fname).write_text(json.dumps(metrics))


@pytest.fixture
def fake_root(tmp_path):
    root = tmp_path / 'ablation'
    ds = 'ml-1m-subset'
    for seed, ndcg in ((0, 0.2), (1, 0.4)):
        _write(root, ds, 'transformer', seed, 'base', ndcg, users=2096)
        _write(root, ds, 'transformer', seed, 'oracle', 0.33, users=2096)
        _write(root, ds, 'transformer', seed, 'adver', 0.27, users=2096)
        _write(root, ds, 'transformer', seed, 'both', 0.36, users=2096)
        _write(root, ds, 'transformer', seed, 'both', 0.3, prec=0.1234, users=2096, fname='test_beam1.json')
        _write(root, ds, 'transformer', seed, 'base', 0.9, users=2096, fname='valid.json')
    # GRU: base with one seed only, oracle folder without a metrics file, adver absent.
    _write(root, ds, 'gru', 0, 'base', 0.25, users=2096)
    (root / ds / 'gru' / 'seed1' / 'oracle' / 'metrics').mkdir(parents=True)
    _write(root, ds, 'gru', 1, 'both', 0.3, users=2096)
    # Second dataset with K = 6 and a single seed everywhere.
    for model in ('transformer', 'gru'):
        for row in ('base', 'oracle', 'adver', 'both'):
            _write(root, 'yoochoose-100k', model, 3, row, 0.5 if row == 'base' else 0.49, K=6, users=777)
    return root


def _row(text, label, nth=0):
    """The nth table line of text that starts with '| label |'."""
    return [line for line in text.splitlines() if line.startswith(f'| {label} |')][nth]


def test_collect_aggregates_over_seeds(fake_root):
    agg = collect_ablation.collect(str(fake_root))
    assert list(agg) == ['ml-1m-subset', 'yoochoose-100k']
    st = agg['ml-1m-subset']['sampled']['transformer']['base']['ndcg@10']
    assert st['n'] == 2 and st['seeds'] == [0, 1] and st['values'] == [0.2, 0.4]
    assert st['mean'] == pytest.approx(0.3) and st['std'] == pytest.approx(0.141421356)
    assert agg['ml-1m-subset']['full']['transformer']['base']['ndcg@10']['mean'] == pytest.approx(0.15)
    assert agg['ml-1m-subset']['sampled']['transformer']['both_beam1']['prec@10']['mean'] == pytest.approx(0.1234)
    assert agg['ml-1m-subset']['sampled']['gru']['base']['ndcg@10']['std'] is None
    assert 'oracle' not in agg['ml-1m-subset']['sampled']['gru']
    assert 'ndcg@6' in agg['yoochoose-100k']['sampled']['gru']['base']
    valid = collect_ablation.collect(str(fake_root), split='valid')
    assert valid['ml-1m-subset']['sampled']['transformer']['base']['ndcg@10']['mean'] == pytest.approx(0.9)


def test_markdown_tables(fake_root, tmp_path):
    agg = collect_ablation.collect(str(fake_root))
    out = tmp_path / 'out'
    paths = collect_ablation.write_tables(agg, str(out))
    assert paths == [str(out / 'ablation_ml-1m-subset.md'), str(out / 'ablation_yoochoose-100k.md')]
    text = (out / 'ablation_ml-1m-subset.md').read_text()
    assert text.startswith('# AOS4Rec ablation (paper Table 4): ml-1m-subset\n')
    assert 'Seeds found: 0, 1 (2). Users: 2096.' in text
    assert '## Sampled protocol' in text and '## Full protocol' in text
    labels = [line.split(' | ')[0][2:] for line in text.splitlines()
              if line.startswith('| ') and not line.startswith('| row')]
    assert labels[:5] == ['AOS4Rec-base (seq2seq, MLE)', '+Oracle', '+Adver.', '+both (AOS4Rec)', '+both, beam 1']
    assert ('| row | Transformer Prec@10 | Transformer NDCG@10 | Transformer BLEU@10 '
            '| GRU Prec@10 | GRU NDCG@10 | GRU BLEU@10 |') in text
    # Sampled table: two seeds -> mean ± std; GRU base has one of two seeds; GRU oracle is missing.
    assert _row(text, 'AOS4Rec-base (seq2seq, MLE)') == (
        '| AOS4Rec-base (seq2seq, MLE) | 0.1000 ± 0.0000 | 0.3000 ± 0.1414 | 0.0100 ± 0.0000 '
        '| 0.1000 (1 seed) | 0.2500 (1 seed) | 0.0100 (1 seed) |')
    assert _row(text, '+Oracle') == '| +Oracle | 0.1000 ± 0.0000 | 0.3300 ± 0.0000 | 0.0100 ± 0.0000 | n/a | n/a | n/a |'
    assert _row(text, '+both, beam 1') == (
        '| +both, beam 1 | 0.1234 ± 0.0000 | 0.3000 ± 0.0000 | 0.0100 ± 0.0000 | n/a | n/a | n/a |')
    # Full table (second occurrence): half the numbers.
    assert '| 0.1500 ± 0.0707 |' in _row(text, 'AOS4Rec-base (seq2seq, MLE)', nth=1)
    # NDCG change table: 0.33 / 0.30 - 1 = +10.0 %, 0.27 / 0.30 - 1 = -10.0 %.
    assert '| row | Transformer sampled | Transformer full | GRU sampled | GRU full |' in text
    assert _row(text, '+Oracle', nth=2) == '| +Oracle | +10.0% | +10.0% | n/a | n/a |'
    assert _row(text, '+Adver.', nth=2) == '| +Adver. | -10.0% | -10.0% | n/a | n/a |'
    # GRU +both ran on a seed that GRU base did not: no common seed, so no change is shown
    # (0.30 / 0.25 would compare two seeds' runs)
    assert _row(text, '+both (AOS4Rec)', nth=2) == '| +both (AOS4Rec) | +20.0% | +20.0% | n/a | n/a |'
    # Single seed everywhere: just the mean, no seed count; K read from the keys.
    yoo = (out / 'ablation_yoochoose-100k.md').read_text()
    assert 'Transformer NDCG@6' in yoo and 'Seeds found: 3 (1). Users: 777.' in yoo
    assert _row(yoo, 'AOS4Rec-base (seq2seq, MLE)').startswith('| AOS4Rec-base (seq2seq, MLE) | 0.1000 | 0.5000 | 0.0100 |')
    assert _row(yoo, '+both, beam 1') == '| +both, beam 1 | n/a | n/a | n/a | n/a | n/a | n/a |'
    assert _row(yoo, '+Oracle', nth=2) == '| +Oracle | -2.0% | -2.0% | -2.0% | -2.0% |'
    # Deterministic: the same input gives the same bytes.
    collect_ablation.write_tables(collect_ablation.collect(str(fake_root)), str(tmp_path / 'again'))
    assert (tmp_path / 'again' / 'ablation_ml-1m-subset.md').read_bytes() == text.encode()


def test_cli_writes_tables_json_and_plot(fake_root, tmp_path):
    out = tmp_path / 'results'
    r = subprocess.run([sys.executable, '-m', 'experiments.collect_ablation', '--root', str(fake_root),
                        '--out', str(out)], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for name in ('ablation_ml-1m-subset.md', 'ablation_yoochoose-100k.md', 'ablation.json', 'ablation.png'):
        assert str(out / name) in r.stdout
        assert (out / name).is_file()
    assert (out / 'ablation.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert not [p for p in os.listdir(out) if p.endswith('.tmp')]
    agg = json.loads((out / 'ablation.json').read_text())
    st = agg['ml-1m-subset']['sampled']['transformer']['base']['ndcg@10']
    assert set(st) == {'mean', 'std', 'n', 'values', 'seeds'} and st['n'] == 2


def test_cli_refuses_to_drop_runs_the_output_holds(fake_root, tmp_path):
    """Collected again from a root that lacks some runs (their folders lost with a machine), the
    tables in OUT would lose their results: refused with one line naming them, nothing written;
    another --out or --replace writes."""
    import shutil
    out = tmp_path / 'results'
    cli = [sys.executable, '-m', 'experiments.collect_ablation', '--root', str(fake_root), '--out', str(out)]
    assert subprocess.run(cli, cwd=REPO, capture_output=True, text=True).returncode == 0
    before = {p: (out / p).read_bytes() for p in os.listdir(out)}
    assert subprocess.run(cli, cwd=REPO, capture_output=True, text=True).returncode == 0   # the same runs
    shutil.rmtree(fake_root / 'ml-1m-subset' / 'transformer' / 'seed1')
    shutil.rmtree(fake_root / 'yoochoose-100k' / 'gru')
    r = subprocess.run(cli, cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert ('holds runs that' in r.stderr
            and 'ml-1m-subset/transformer/seed1 (base, oracle, adver, both, both_beam1)' in r.stderr
            and 'yoochoose-100k/gru/seed3 (base, oracle, adver, both)' in r.stderr and '--replace' in r.stderr)
    assert {p: (out / p).read_bytes() for p in os.listdir(out)} == before
    r = subprocess.run(cli + ['--replace'], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    agg = json.loads((out / 'ablation.json').read_text())
    assert agg['ml-1m-subset']['sampled']['transformer']['base']['ndcg@10']['seeds'] == [0]


def test_cli_exits_2_when_no_run(tmp_path):
    empty = tmp_path / 'empty'
    empty.mkdir()
    r = subprocess.run([sys.executable, '-m', 'experiments.collect_ablation', '--root', str(empty),
                        '--out', str(tmp_path / 'out')], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2
    assert str(empty) in r.stderr and 'no ablation run found' in r.stderr
    assert not (tmp_path / 'out').exists()


def test_paired_differences_and_schedule_line(fake_root, tmp_path):
    """Per-seed differences vs the same seed's base, by hand; the schedule comes from config.json."""
    # transformer base: seed 0 -> 0.2, seed 1 -> 0.4; oracle 0.33 for both (full: half of each).
    # sampled: +0.13, -0.07 -> mean +0.03, sample std sqrt(2 * 0.1^2 / 1) = 0.1414, 1 of 2 up.
    text = collect_ablation.render_dataset('ml-1m-subset', collect_ablation.collect(str(fake_root))['ml-1m-subset'])
    assert _row(text, '+Oracle', nth=3).startswith('| +Oracle | +0.0300 ± 0.1414 (1/2 up) | +0.0150 ± 0.0707 (1/2 up) |')
    # GRU: only seed 0 has a base, only seed 1 a +both run: no seed in common.
    assert _row(text, '+both (AOS4Rec)', nth=3).endswith('| n/a | n/a |')
    assert 'Schedule' not in text  # the fake runs have no config.json
    for row, cfg in (('base', {'train_steps': 600, 'batch_size': 128,
                               'model_kwargs': {'embed_dim': 64, 'num_layers': 1}}),
                     ('adver', {'train_steps': 0, 'aos4rec': {'critic_pretrain_steps': 40, 'gan_steps': 30,
                                                              'g_steps': 1, 'd_steps': 5, 'lipschitz': 'gp'}})):
        (fake_root / 'ml-1m-subset' / 'transformer' / 'seed0' / row / 'config.json').write_text(json.dumps(cfg))
    sched = collect_ablation.collect_schedules(str(fake_root))
    assert sched == {'ml-1m-subset': {'transformer': {
        '600 seq2seq steps (batch 128, width 64, 1 layer(s))',
        '40 critic pretraining steps + 30 SSRGAN rounds (g-steps 1, d-steps 5, lipschitz gp)'}}}
    paths = collect_ablation.write_tables(collect_ablation.collect(str(fake_root)), str(tmp_path / 'o'), schedules=sched)
    md = open(paths[0]).read()
    assert ("Schedule (read from the runs' config.json): Transformer: 600 seq2seq steps (batch 128, width 64, "
            "1 layer(s)), 40 critic pretraining steps + 30 SSRGAN rounds (g-steps 1, d-steps 5, lipschitz gp).") in md


def test_critic_report_and_the_schedule_of_a_paper_regime_run(fake_root, tmp_path):
    """The adversarial rows' report (what the critic reached, the SSRGAN rounds run, the sampled
    lists' NLL, the kept step, distinct lists) read from the runs' files, and the schedule naming
    early stopping, the critic's settings and the held-out users."""
    run = fake_root / 'ml-1m-subset' / 'transformer' / 'seed1' / 'adver'
    a = {'critic_pretrain_steps': 100, 'gan_steps': 50, 'g_steps': 1, 'd_steps': 5, 'lipschitz': 'gp',
         'critic_patience': 4, 'd_learning_rate': 3e-4, 'gp_weight': 1.0, 'critic_holdout': 0.2,
         'critic_init': 'random'}
    (run / 'config.json').write_text(json.dumps({'train_steps': 0, 'early_stop_patience': 3, 'aos4rec': a}))
    m = run / 'metrics'
    (m / 'critic_pretraining.json').write_text(json.dumps({'val_auc': 0.6512, 'steps_run': 75,
                                                            'stopped_by_rule': True}))
    lines = [{'step': 50, 'phase': 'critic', 'val_auc': 0.6, 'val_auc_nll': 0.7},
             {'step': 75, 'phase': 'critic', 'val_auc': 0.65, 'val_auc_nll': 0.7123},
             {'step': 110, 'phase': 'gan', 'sample_nll': 3.5},
             {'step': 125, 'phase': 'gan', 'sample_nll': 3.25, 'val_auc': 0.61, 'val_wasserstein': 0.05}]
    (m / 'train.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in lines))
    (m / 'summary.json').write_text(json.dumps({'kept_step': 120,
                                                'distinct_full': {'distinct': 150, 'users': 200}}))
    rep = collect_ablation.critic_report(str(fake_root))
    assert list(rep) == ['ml-1m-subset'] and list(rep['ml-1m-subset']['transformer']) == ['adver']
    text = collect_ablation.render_dataset('ml-1m-subset', collect_ablation.collect(str(fake_root))['ml-1m-subset'],
                                           critic=rep['ml-1m-subset'])
    assert ('| Transformer | +Adver. | 1 | 75 (rule) | 0.6512 | 0.7123 | 25 | 0.6100 | 0.0500 | '
            '3.500 -> 3.250 | 120 (SSRGAN) | 0.750 |') in text
    sched = collect_ablation.collect_schedules(str(fake_root))['ml-1m-subset']['transformer']
    assert sched == {'at most 100 critic pretraining steps + at most 50 SSRGAN rounds (g-steps 1, '
                     'd-steps 5, lipschitz gp, critic lr 0.0003, gp 1, critic and SSRGAN on held-out '
                     'users (0.2), early stop after 3 validations without a gain)'}


def test_change_vs_base_compares_the_seeds_both_rows_have():
    """A row run on fewer seeds than base is compared with those seeds' base runs only: base
    0.30 (seed 0) and 0.40 (seed 1), +Adver. 0.30 on seed 0 alone is +0.0%, not -14.3% against
    both bases' mean; equal seed sets give the plain ratio of means."""
    base = collect_ablation._stats([0.30, 0.40], [0, 1])
    one = collect_ablation._stats([0.30], [0])
    assert collect_ablation.format_change(one, base) == '+0.0% (1 common seed)'
    both = collect_ablation._stats([0.33, 0.44], [0, 1])
    assert collect_ablation.format_change(both, base) == '+10.0%'
    assert collect_ablation.format_change(collect_ablation._stats([0.5], [2]), base) == 'n/a'
