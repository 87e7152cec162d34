"""Faults a run survives (issue 15): divergence never reaches a checkpoint, a checkpoint that
fails verification is moved aside and the run goes on from the previous one, one process per
workdir, torn log lines. docs/reliability.md lists the cases and what holds each."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aos4rec_jax import checkpoint as ckpt_lib
from aos4rec_jax import trainer
from aos4rec_jax import workdir_lock
from aos4rec_jax.methods.base import RunError
from experiments.configs import transformer as tf_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(tmp_path, steps, **over):
    c = tf_cfg.get_config('tiny')
    c.synthetic.cache_dir = str(tmp_path / 'data')
    c.train_steps, c.log_every, c.eval_every, c.checkpoint_every = steps, 5, steps, 10
    c.max_eval_users = 32
    for k, v in over.items():
        c[k] = v
    return c


def _steps(workdir, kind='checkpoints'):
    d = os.path.join(workdir, kind)
    return sorted(int(s) for s in os.listdir(d) if s.isdigit()) if os.path.isdir(d) else []


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


# ------------------------------------------------------------------------------ checksums
def test_checksums_are_exact_and_catch_one_changed_number():
    """The checksums of a tree do not depend on how its sums are ordered, and change when one
    element changes by one ulp, or when two elements swap places."""
    x = jnp.arange(1000, dtype=jnp.float32) / 7
    tree = {'a': x, 'b': jnp.ones((3, 4), jnp.bfloat16), 'step': jnp.int32(7),
            'rng': jax.random.PRNGKey(0)}
    sums, finite = ckpt_lib.checksums_and_finite(tree)
    assert finite and len(sums) == 4
    ckpt_lib.verify(tree, {'checksums': sums}, 'the tree')
    bumped = dict(tree, a=x.at[500].set(jnp.nextafter(x[500], jnp.inf)))
    with pytest.raises(ckpt_lib.CheckpointError, match='checksum mismatch in 1 of 4'):
        ckpt_lib.verify(bumped, {'checksums': sums}, 'the tree')
    swapped = dict(tree, a=x.at[1].set(x[2]).at[2].set(x[1]))
    with pytest.raises(ckpt_lib.CheckpointError, match='checksum mismatch'):
        ckpt_lib.verify(swapped, {'checksums': sums}, 'the tree')
    with pytest.raises(ckpt_lib.CheckpointError, match='NaN or inf'):
        ckpt_lib.verify(dict(tree, a=x.at[3].set(jnp.nan)), {}, 'the tree')
    # the plain sum by hand: bits of 1.0 in bfloat16 are 0x3F80, twelve of them
    assert sums[1][0] == 12 * 0x3F80


# ------------------------------------------------------------------------------ divergence
def test_divergence_never_reaches_a_checkpoint_and_a_lower_rate_resumes(tmp_path):
    """lr 1e39 with a checkpoint at every step: the first update makes the state non-finite; the
    run stops with the advice when it is about to save it, and no saved step holds NaN/inf; the same command with a lower rate resumes
    from the newest (finite) checkpoint and finishes with finite test figures."""
    wd = tmp_path / 'run'
    c = _config(tmp_path, 6, learning_rate=1e39, warmup_steps=0, checkpoint_every=1, eval_every=6)
    with pytest.raises(trainer.TrainingDivergedError) as e:
        trainer.train_and_evaluate(c, str(wd))
    msg = str(e.value)
    assert 'nothing non-finite was saved' in msg or 'diverged' in msg
    assert 'lower --config.learning_rate' in msg, msg
    ck = ckpt_lib.Checkpointer(str(wd))
    for s in _steps(wd):
        ck.restore(s, None)                       # verifies: finite and unchanged
    for s in _steps(wd, 'best'):
        ck.restore_best(None, s)
    ck.close()
    c2 = _config(tmp_path, 6, learning_rate=1e-3, warmup_steps=0, checkpoint_every=3, eval_every=6)
    res = trainer.train_and_evaluate(c2, str(wd))
    assert np.isfinite(res['test']['sampled']['ndcg@10'])


def test_a_loss_a_million_times_its_start_is_warned_about(tmp_path, capsys):
    """lr 1e4 without clipping: the loss of step 1 (before any update) is about 5.5, later ones
    about 1e9, all finite: the run goes on, with the warning."""
    c = _config(tmp_path, 8, learning_rate=1e4, warmup_steps=0, grad_clip=0.0)
    c.log_every = 1
    try:
        trainer.train_and_evaluate(c, str(tmp_path / 'run'))
    except trainer.TrainingDivergedError:
        pass
    out = capsys.readouterr().out
    with open(tmp_path / 'run' / 'metrics' / 'train.jsonl') as f:
        losses = [json.loads(l)['loss'] for l in f]
    assert losses[0] < 10 and max(losses) > 1e6 * losses[0], losses
    assert out.count('over a million times its first logged value') == 1, out[-3000:]


# ------------------------------------------------------------------------------ corrupt checkpoints
def _damage(step_dir):
    """Overwrites 64 bytes in the middle of the largest data file of every data folder (`d/`)
    of a saved step (orbax's OCDBT layout: the merged top-level one is the one read)."""
    damaged = []
    for r, _, fs in os.walk(step_dir):
        if os.path.basename(r) != 'd' or not fs:
            continue
        big = max((os.path.join(r, f) for f in fs), key=os.path.getsize)
        size = os.path.getsize(big)
        with open(big, 'r+b') as f:
            f.seek(size // 2)
            chunk = f.read(64)
            f.seek(size // 2)
            f.write(bytes((b ^ 0x5A) for b in chunk))
        damaged.append(big)
    assert damaged, step_dir
    return damaged


@pytest.mark.slow
def test_a_damaged_newest_checkpoint_is_moved_aside_and_the_run_ends_as_an_uninterrupted_one(
        tmp_path, capsys):
    """Run A: 20 steps. Run B: 10 steps (checkpoints 5, 10), step 10's data damaged, then the
    20-step command again: one warning line, step 10 moved to corrupt/ (kept), resumed from
    step 5, and the end state equals run A's bit for bit."""
    trainer.train_and_evaluate(_config(tmp_path, 20, checkpoint_every=5), str(tmp_path / 'a'))
    b = tmp_path / 'b'
    trainer.train_and_evaluate(_config(tmp_path, 10, checkpoint_every=5), str(b))
    assert _steps(b) == [5, 10]
    _damage(b / 'checkpoints' / '10')
    capsys.readouterr()
    trainer.train_and_evaluate(_config(tmp_path, 20, checkpoint_every=5), str(b))
    out = capsys.readouterr().out
    assert 'checkpoint step 10' in out and 'moved to' in out, out[-3000:]
    assert 'resumed from checkpoint step 5' in out, out[-3000:]
    assert any(n.startswith('checkpoints-10-') for n in os.listdir(b / 'corrupt'))
    ck_a, ck_b = ckpt_lib.Checkpointer(str(tmp_path / 'a')), ckpt_lib.Checkpointer(str(b))
    sa, sb = ck_a.restore(20, None)[0], ck_b.restore(20, None)[0]
    ck_a.close(), ck_b.close()
    for x, y in zip(_leaves(sa), _leaves(sb)):
        np.testing.assert_array_equal(x, y)


def test_evaluate_refuses_damaged_best_parameters_in_one_line(tmp_path):
    wd = tmp_path / 'run'
    trainer.train_and_evaluate(_config(tmp_path, 10), str(wd))
    (step,) = _steps(wd, 'best')
    _damage(wd / 'best' / str(step))
    with pytest.raises(RunError, match=f'best parameters of step {step}'):
        trainer.load_run(str(wd))


# ------------------------------------------------------------------------------ one process per workdir
def test_a_second_process_on_a_workdir_is_refused_with_the_holders_pid(tmp_path):
    wd = tmp_path / 'run'
    os.makedirs(wd)
    with workdir_lock.hold(str(wd)):
        with pytest.raises(RunError, match=f'in use by another run \\(process {os.getpid()}\\)'):
            trainer.train_and_evaluate(_config(tmp_path, 5), str(wd))
    assert not (wd / 'checkpoints').exists()
    trainer.train_and_evaluate(_config(tmp_path, 5), str(wd))      # released: it runs


def test_a_killed_holder_does_not_block_the_workdir(tmp_path):
    wd = tmp_path / 'run'
    os.makedirs(wd)
    script = textwrap.dedent(f"""
        import sys, time
        from aos4rec_jax import workdir_lock
        with workdir_lock.hold({str(wd)!r}):
            print('HELD', flush=True)
            time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.PIPE, text=True,
                         cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        assert p.stdout.readline().strip() == 'HELD'
        with pytest.raises(RunError, match=f'process {p.pid}'):
            with workdir_lock.hold(str(wd)):
                pass
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        with workdir_lock.hold(str(wd)):
            pass
    finally:
        if p.poll() is None:
            p.kill()


# ------------------------------------------------------------------------------ torn log lines
def test_a_torn_last_log_line_is_repaired_on_resume_and_a_damaged_middle_line_refused(
        tmp_path, capsys):
    wd = tmp_path / 'run'
    trainer.train_and_evaluate(_config(tmp_path, 10), str(wd))
    path = wd / 'metrics' / 'train.jsonl'
    good = path.read_text()
    path.write_text(good + '{"step": 10, "loss": 1.2')            # a kill mid-append
    capsys.readouterr()
    trainer.train_and_evaluate(_config(tmp_path, 20), str(wd))
    out = capsys.readouterr().out
    assert 'the last line was cut off' in out, out[-2000:]
    recs = [json.loads(l) for l in path.read_text().splitlines()]
    assert [r['step'] for r in recs] == [5, 10, 15, 20]
    lines = path.read_text().splitlines()
    path.write_text('\n'.join(lines[:1] + ['{"step": 1'] + lines[1:]) + '\n')
    with pytest.raises(RunError, match='train.jsonl:2: not a JSON line'):
        trainer.train_and_evaluate(_config(tmp_path, 30), str(wd))
