"""Resume in every phase of AOS4Rec (issue 17): a run of the full schedule (oracular seq2seq ->
critic pretraining -> SSRGAN) is SIGKILLed four times in a row: inside the ORACLE seq2seq phase,
right after the seq2seq -> SSRGAN boundary, inside critic pretraining and in the SSRGAN rounds;
each rerun of the same command resumes from the checkpoint it must (the boundary one is written
only by the boundary save), and the last one ends byte-identical to an uninterrupted run
(generator, critic, both optimizer states, test metrics, the train and validation logs).
(This replaced the older test that killed an MLE + SSRGAN run once, in its SSRGAN phase.)"""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from aos4rec_jax import checkpoint as ckpt_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 7 oracular steps, 4 critic pretraining steps, 3 SSRGAN rounds = 14 schedule steps; periodic
# checkpoints at 3, 6, 9, 12 and the boundary one at 7 (not a multiple of 3: only the boundary
# save writes it)
TOTAL = 14
ARGS = ['--config=experiments/configs/aos4rec.py:tiny,both', '--config.train_steps=7',
        '--config.aos4rec.critic_pretrain_steps=4', '--config.aos4rec.gan_steps=3',
        '--config.checkpoint_every=3', '--config.log_every=1', '--config.eval_every=2']
# (console marker, the checkpoint that must be finalized before the kill = where the rerun resumes)
KILLS = (('[seq2seq] step 5/14', 3),        # oracle phase
         ('[critic] step 8/14', 7),         # right after the seq2seq -> SSRGAN boundary
         ('[critic] step 10/14', 9),        # critic pretraining
         ('[gan] step 13/14', 12))          # SSRGAN rounds


def finalized(workdir):
    d = os.path.join(workdir, 'checkpoints')
    return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def run(workdir, env, kill_at=None, limit_s=600):
    """Runs main.py to the end, or kills it at the marker once checkpoint `ckpt` is finalized
    (orbax saves in the background; waiting makes the resume step exact). Returns the console."""
    cmd = [sys.executable, os.path.join(ROOT, 'main.py'), *ARGS, f'--workdir={workdir}']
    if kill_at is None:
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit_s)
        assert r.returncode == 0, r.stderr[-3000:]
        return r.stdout
    marker, ckpt = kill_at
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    seen, t0 = [], time.time()
    try:
        for line in p.stdout:
            seen.append(line)
            if marker in line:
                break
        while p.poll() is None and time.time() - t0 < limit_s:
            if any(s >= ckpt for s in finalized(workdir)):
                break
            time.sleep(0.002)
        p.send_signal(signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    log = ''.join(seen)
    assert p.returncode == -signal.SIGKILL, f'ended before {marker!r}: ' + log[-2000:]
    # a missing boundary (or periodic) save shows here: the step it should have written is absent
    assert ckpt in finalized(workdir), (ckpt, finalized(workdir))
    return log


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
        logs = [run(killed, env, kill_at=k) for k in KILLS] + [run(killed, env)]
        assert 'resumed from checkpoint step' not in logs[0]
        for log, (_, ckpt) in zip(logs[1:], KILLS):
            assert f'resumed from checkpoint step {ckpt} ' in log, log[-2000:]
        # resumed in the oracle phase, the second run crossed the boundary itself; resumed at the
        # boundary checkpoint, the third did not enter the SSRGAN phase a second time
        assert 'SSRGAN phase: generator copied from this run' in logs[1]
        assert 'SSRGAN phase: generator copied' not in logs[2]
    finally:
        ARGS.pop()
    a, b = final_state(tmp_path / 'full'), final_state(killed)
    assert int(a['step']) == int(b['step']) == TOTAL
    for key in ('params', 'opt_state', 'critic', 'critic_opt_state', 'rng'):
        la, lb = jax.tree_util.tree_leaves(a[key]), jax.tree_util.tree_leaves(b[key])
        assert len(la) == len(lb) > 0
        for x, y in zip(la, lb):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=key)
    read = lambda p: json.loads(p.read_text())
    assert read(tmp_path / 'full' / 'metrics' / 'test.json') == read(killed / 'metrics' / 'test.json')
    lines = [json.loads(l) for l in open(killed / 'metrics' / 'train.jsonl')]
    assert [r['step'] for r in lines] == list(range(1, TOTAL + 1))
    full_lines = [json.loads(l) for l in open(tmp_path / 'full' / 'metrics' / 'train.jsonl')]
    strip = lambda r: {k: v for k, v in r.items() if k not in ('steps_per_s', 'examples_per_s')}
    assert [strip(r) for r in lines] == [strip(r) for r in full_lines]
    # the validation history is truncated on resume too: every validation once, same values
    # (11: the generator that starts the SSRGAN rounds, aos4rec.gan_start_competes)
    vh = [json.loads(l) for l in open(killed / 'metrics' / 'valid_history.jsonl')]
    full_vh = [json.loads(l) for l in open(tmp_path / 'full' / 'metrics' / 'valid_history.jsonl')]
    assert [r['step'] for r in vh] == [r['step'] for r in full_vh] == [2, 4, 6, 7, 11, 12, 14]
    assert vh == full_vh
