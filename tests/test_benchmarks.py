"""Smoke test of the throughput benchmark: tiny sizes, checks the JSON it writes."""
import json
import os
import subprocess
import sys

import pytest

from benchmarks import peer_gpt2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_bench_seq2seq_smoke(tmp_path):
    out = tmp_path / 'bench.json'
    cmd = [sys.executable, '-m', 'benchmarks.bench_seq2seq', '--out', str(out),
           '--items', '40', '--width', '16', '--layers', '1', '--heads', '2', '--history', '6',
           '--T', '3', '--beam', '2', '--batch', '8', '--eval-batch', '4', '--steps', '2',
           '--warmup', '1', '--users', '30', '--models', 'transformer,gru', '--peer', 'auto']
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'round 2/2' in r.stderr                      # progress goes to stderr
    res = json.loads(out.read_text())
    assert set(res) >= {'device', 'config', 'ours', 'peer', 'ratios'}
    assert {'platform', 'device_kind', 'jax_version', 'cpu_count'} <= set(res['device'])
    assert res['config']['items'] == 40 and res['config']['beam'] == 2
    assert set(res['ours']) == {'transformer', 'gru'}
    for m in res['ours'].values():
        assert m['train_examples_per_s'] > 0 and m['beam_users_per_s'] > 0
        for k in ('train_step_ms', 'beam_batch_ms'):
            assert {'median', 'p10', 'p90'} <= set(m[k]) and m[k]['n'] == 2
        assert m['lists_valid']                           # distinct items, history banned
    available, _ = peer_gpt2.availability()
    if available:
        peer = res['peer']
        assert peer['train_examples_per_s'] > 0 and peer['beam_users_per_s'] > 0
        assert peer['lists_valid'] and peer['torch_version'] and peer['transformers_version']
        for name in ('transformer', 'gru'):
            assert set(res['ratios'][name]) == {'train_examples_per_s', 'beam_users_per_s'}
    else:                                               # no torch: the peer part says why
        assert 'skipped' in res['peer'] and 'skipped' in res['ratios']
    assert not [p for p in os.listdir(tmp_path) if p != 'bench.json']   # atomic: no temp left


def test_bench_aos4rec_cases_and_their_settings_from_the_flags():
    """Which cases the list flags and --variant add, and the aos4rec settings each case runs
    with (no compilation: the smoke test below times the four base cases)."""
    from benchmarks import bench_aos4rec as B
    args = B.parse_args(['--out', 'x.json', '--models', 'gru', '--beam', '2', '--d-steps', '2',
                         '--critic-encode-once', 'off,on', '--successors-from-decode', 'off,on',
                         '--successor-samplers', 'inverse_cdf,gumbel',
                         '--variant', 'before:list_sampler=gumbel,successors_from_decode=off'])
    runs = B.case_runs(args)
    assert [r[1] for r in runs] == [
        'mle', 'oracle', 'critic', 'gan', 'critic[gumbel]', 'gan[gumbel]', 'critic[once]',
        'gan[once]', 'critic[decode]', 'gan[decode]', 'critic[before]', 'gan[before]']
    got = {}
    for case, label, sampler, once, decode, sets in runs:
        a = B.case_config(args, 'gru', case, sampler, once, decode, sets).aos4rec
        got[label] = (a.oracle, a.adversarial, a.successor_sampler, a.critic_encode_once,
                      a.successors_from_decode, a.list_sampler, a.beam_size, a.d_steps)
    assert got['mle'] == (False, False, 'inverse_cdf', False, False, 'inverse_cdf', 2, 2)
    assert got['oracle'][:2] == (True, False) and got['critic'][:2] == (False, True)
    assert got['gan[gumbel]'] == (False, True, 'gumbel', False, False, 'inverse_cdf', 2, 2)
    assert got['critic[once]'] == (False, True, 'inverse_cdf', True, False, 'inverse_cdf', 2, 2)
    assert got['gan[decode]'] == (False, True, 'inverse_cdf', False, True, 'inverse_cdf', 2, 2)
    assert got['gan[before]'] == (False, True, 'inverse_cdf', False, False, 'gumbel', 2, 2)
    with pytest.raises(SystemExit):
        B.parse_args(['--out', 'x', '--critic-encode-once', 'twice'])
    with pytest.raises(SystemExit, match='aos4rec.no_such_key'):
        B.case_config(args, 'gru', 'gan', sets={'no_such_key': 1})


@pytest.mark.slow
def test_bench_aos4rec_smoke(tmp_path):
    out = tmp_path / 'bench.json'
    cmd = [sys.executable, '-m', 'benchmarks.bench_aos4rec', '--out', str(out),
           '--items', '40', '--width', '16', '--layers', '1', '--heads', '2', '--history', '6',
           '--T', '3', '--beam', '2', '--batch', '8', '--steps', '2', '--warmup', '1',
           '--rounds', '1', '--users', '30', '--d-steps', '2', '--models', 'gru']
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    cases = res['results']['gru']
    assert set(cases) == {'mle', 'oracle', 'critic', 'gan'}
    assert cases['mle']['ratio_to_mle'] == 1.0
    for c in cases.values():
        assert c['step_ms']['n'] == 2 and c['step_ms']['median'] > 0 and c['ratio_to_mle'] > 0
    assert res['args']['d_steps'] == 2 and res['device']['platform'] == 'cpu'


@pytest.mark.slow
def test_python_m_benchmarks_quick(tmp_path):
    """`python -m benchmarks --quick`: one JSON report and one Markdown table; every ratio is the
    quotient of two rates of the same report (about 60 s on the 2-core CPU when it is quiet)."""
    cmd = [sys.executable, '-m', 'benchmarks', '--quick', '--out-dir', str(tmp_path)]
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == ['report.json', 'report.md']   # atomic: no temp left
    rep = json.loads((tmp_path / 'report.json').read_text())
    assert {'date', 'command', 'device', 'load_average_before', 'load_average_after', 'config',
            'groups', 'skipped', 'wall_s'} <= set(rep)
    assert rep['command'].startswith('python -m benchmarks --quick')
    assert {'platform', 'device_kind', 'jax_version'} <= set(rep['device'])
    assert len(rep['load_average_before']) == 3 and len(rep['load_average_after']) == 3
    assert set(rep['groups']) == {'train', 'generate', 'data_prep'} and not rep['skipped']
    train = rep['groups']['train']['tiny/float32']
    assert train['cases']['transformer']['rate'] > 0 and train['cases']['transformer']['flops'] > 0
    gen = rep['groups']['generate']['tiny']['results']
    assert set(gen) == {'beam/full', 'beam/c8'}
    for g in gen.values():
        assert all(c['lists_valid'] and c['rate'] > 0 for c in g['cases'].values())
    dp = rep['groups']['data_prep']
    assert dp['returncode'] == 0 and dp['rows'] == 20_000 and 0 < dp['peak_rss_gb'] < 2
    available, _ = peer_gpt2.availability()
    for g in [train] + list(gen.values()):
        if available:                    # ratios = ours / peer of this very report
            assert set(g['ratios']) == set(g['cases']) - {'peer'}
            for name, ratio in g['ratios'].items():
                assert ratio == pytest.approx(g['cases'][name]['rate'] / g['cases']['peer']['rate'])
        else:
            assert 'skipped' in g['ratios']
    md = (tmp_path / 'report.md').read_text()
    assert rep['command'] in md and 'load average' in md and '| transformer |' in md


def test_bench_train_step_writes_its_json_and_applies_the_sets(tmp_path):
    """In process, the tiny GRU4Rec+ config on a tiny prepared loo set: the JSON names the
    step time, the config overrides took effect, and nothing but the JSON is left."""
    import data_prep
    from benchmarks import bench_train_step
    from tests.helpers import tiny_prepared
    rng = __import__('numpy').random.default_rng(0)
    seqs = [list(rng.integers(1, 30, size=12)) for _ in range(40)]
    data = tmp_path / 'data'
    data_prep.write_dataset(tiny_prepared(seqs, protocol='loo', k=10, history_len=8,
                                          num_candidates=20), str(data))
    out = tmp_path / 'step.json'
    rep = bench_train_step.main(['--config', 'gru4rec:tiny', '--data', str(data), '--out', str(out),
                                 '--set', 'gru4rec.loss=top1_max', '--set', 'batch_size=16',
                                 '--steps', '2', '--warmup', '1', '--label', 'x'])
    res = json.loads(out.read_text())
    assert res == json.loads(json.dumps(rep))
    assert res['batch_size'] == 16 and res['label'] == 'x' and res['step_ms']['n'] == 2
    assert res['step_ms']['median'] > 0 and res['examples_per_s'] > 0
    assert res['flops_per_step'] > 0 and res['device']['platform'] == 'cpu'
    assert sorted(os.listdir(tmp_path)) == ['data', 'step.json']
    with pytest.raises(SystemExit, match='no experiments/configs/nosuch.py'):
        bench_train_step.main(['--config', 'nosuch', '--data', str(data), '--out', str(out)])
