"""Smoke test of the SASRec throughput benchmark: tiny sizes, no peer, checks the JSON it writes."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_bench_sasrec_smoke(tmp_path):
    out = tmp_path / 'bench.json'
    cmd = [sys.executable, '-m', 'benchmarks.bench_sasrec', '--out', str(out),
           '--items', '40', '--maxlen', '6', '--dim', '16', '--blocks', '1', '--heads', '2',
           '--batch', '8', '--eval-batch', '16', '--per-user-users', '4', '--users', '32',
           '--steps', '2', '--warmup', '1', '--rounds', '2', '--peer', 'off']
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'round 2/2' in r.stderr                      # progress goes to stderr
    res = json.loads(out.read_text())
    assert set(res) >= {'device', 'config', 'ours', 'peer', 'ratios', 'command'}
    assert {'platform', 'device_kind', 'jax_version', 'cpu_count'} <= set(res['device'])
    cfg = res['config']
    assert cfg['items'] == 40 and cfg['maxlen'] == 6 and cfg['k'] == 10 and cfg['peer'] == 'off'
    o = res['ours']
    assert o['method'] == 'SASRec' and o['loss'] == 'bce' and o['decode']['strategy'] == 'topk'
    assert o['model_config']['num_blocks'] == 1 and o['model_config']['embed_dim'] == 16
    assert o['train_sequences_per_s'] > 0 and o['eval_users_per_s'] > 0
    assert o['eval_batch_users'] == 16
    for k in ('train_step_ms', 'eval_batch_ms'):
        assert {'median', 'p10', 'p90', 'min', 'max'} <= set(o[k]) and o[k]['n'] == 2
    assert o['lists_valid']                             # 10 distinct items, history banned
    assert res['peer'] == {'skipped': '--peer off'} and res['ratios'] == {'skipped': '--peer off'}
    assert not [p for p in os.listdir(tmp_path) if p != 'bench.json']   # atomic: no temp left
