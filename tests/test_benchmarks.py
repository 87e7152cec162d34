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
