"""Resume in every phase of AOS4Rec (issue 17): a run of the full schedule (oracular seq2seq ->
critic pretraining -> SSRGAN) is SIGKILLed four times in a row: inside the ORACLE seq2seq phase,
right after the seq2seq -> SSRGAN boundary, inside critic pretraining and in the last SSRGAN
round; each rerun of the same command resumes, and the last one ends byte-identical to an
uninterrupted run (generator, critic, both optimizer states, test metrics, the train log).
(This replaced the older test that killed an MLE + SSRGAN run once, in its SSRGAN phase.)"""
import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from aos4rec_jax import checkpoint as ckpt_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 8 oracular steps, 4 critic pretraining steps, 3 SSRGAN rounds = 15 schedule steps
ARGS = ['--config=experiments/configs/aos4rec.py:tiny,both', '--config.train_steps=8',
        '--config.aos4rec.critic_pretrain_steps=4', '--config.aos4rec.gan_steps=3',
        '--config.checkpoint_every=2', '--config.log_every=1', '--config.eval_every=4']
KILLS = ('[seq2seq] step 5/15',        # oracle phase, after the checkpoint at 4
         '[critic] step 9/15',         # after the boundary (the SSRGAN start is saved at 8)
         '[critic] step 11/15',        # critic pretraining, after the checkpoint at 10
         '[gan] step 15/15')           # the last SSRGAN round, before its final save


def run(workdir, env, kill_at=None):
    cmd = [sys.executable, os.path.join(ROOT, 'main.py'), *ARGS, f'--workdir={workdir}']
    if kill_at is None:
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        return r.stdout
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    seen = []
    for line in p.stdout:
        seen.append(line)
        if kill_at in line:
            p.send_signal(signal.SIGKILL)
            break
    p.wait()
    assert p.returncode == -signal.SIGKILL, f'ended before {kill_at!r}: ' + ''.join(seen[-20:])
    return ''.join(seen)


def final_state(workdir):
    ck = ckpt_lib.Checkpointer(str(workdir))
    state, _ = ck.restore(ck.latest_step(), None)
    ck.close()
    return state


@pytest.mark.slow
def test_killed_in_every_aos4rec_phase_resumes_to_the_same_end(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1',
               JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'jax_cache'))
    ARGS.append(f'--config.synthetic.cache_dir={tmp_path / "data"}')
    try:
        run(tmp_path / 'full', env)
        killed = tmp_path / 'killed'
        logs = [run(killed, env, kill_at=k) for k in KILLS]
        assert 'resumed from checkpoint step' not in logs[0]
        for log in logs[1:]:
            assert 'resumed from checkpoint step' in log
        # the second run resumed in the oracle phase and crossed the boundary itself
        assert 'SSRGAN phase: generator copied from this run' in logs[1]
        last = run(killed, env)
        assert 'resumed from checkpoint step' in last          # 14 (or 12: async saves)
    finally:
        ARGS.pop()
    a, b = final_state(tmp_path / 'full'), final_state(killed)
    assert int(a['step']) == int(b['step']) == 15
    for key in ('params', 'opt_state', 'critic', 'critic_opt_state', 'rng'):
        la, lb = jax.tree_util.tree_leaves(a[key]), jax.tree_util.tree_leaves(b[key])
        assert len(la) == len(lb) > 0
        for x, y in zip(la, lb):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=key)
    read = lambda p: json.loads(p.read_text())
    assert read(tmp_path / 'full' / 'metrics' / 'test.json') == read(killed / 'metrics' / 'test.json')
    lines = [json.loads(l) for l in open(killed / 'metrics' / 'train.jsonl')]
    assert [r['step'] for r in lines] == list(range(1, 16))
    full_lines = [json.loads(l) for l in open(tmp_path / 'full' / 'metrics' / 'train.jsonl')]
    strip = lambda r: {k: v for k, v in r.items() if k not in ('steps_per_s', 'examples_per_s')}
    assert [strip(r) for r in lines] == [strip(r) for r in full_lines]
