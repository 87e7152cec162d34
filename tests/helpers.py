"""Small shared builders for tests."""
import json
import os
import signal

import numpy as np

import data_prep


def tiny_prepared(seqs, **overrides):
    """A PreparedData from explicit per-user raw item lists (user i gets seqs[i], time = position)."""
    users = np.concatenate([np.full(len(s), i) for i, s in enumerate(seqs)])
    items = np.concatenate([np.asarray(s) for s in seqs])
    times = np.concatenate([np.arange(len(s)) for s in seqs])
    kw = dict(k_core=1, min_len=3)
    kw.update(overrides)
    settings = data_prep.settings_for('default', **kw)
    return data_prep.build_dataset(users, items, times, settings)


def run_full_then_killed_and_resumed(cmd, env, full_dir, killed_dir, marker, cwd, limit_s=400):
    """Runs `cmd` + --workdir=full_dir to the end; runs it again in killed_dir, SIGKILLs it at the
    first output line containing `marker`, and runs the same command once more (the resume).
    Returns the resumed run's CompletedProcess (stdout has the log). Asserts each stage worked."""
    import signal
    import subprocess
    import time
    full = subprocess.run(cmd + [f'--workdir={full_dir}'], cwd=cwd, env=env, capture_output=True,
                          text=True)
    assert full.returncode == 0, full.stderr[-3000:]
    p = subprocess.Popen(cmd + [f'--workdir={killed_dir}'], cwd=cwd, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    for line in p.stdout:
        if marker in line:
            p.send_signal(signal.SIGKILL)
            break
        assert time.time() - t0 < limit_s
    p.wait()
    assert p.returncode == -signal.SIGKILL, f'the run ended before {marker!r}'
    assert not os.path.exists(os.path.join(killed_dir, 'metrics', 'test.json'))
    again = subprocess.run(cmd + [f'--workdir={killed_dir}'], cwd=cwd, env=env,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert 'resumed from checkpoint step' in again.stdout
    return again


class StopAt:
    """A preemption.Watcher that 'receives' SIGTERM after a chosen step (deterministic)."""

    def __init__(self, step):
        self.step = step

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def requested(self, step):
        return signal.SIGTERM if step == self.step else None

    def immediate(self):
        pass


def valid_history(workdir):
    """The run's metrics/valid_history.jsonl, one dict a validation."""
    with open(os.path.join(workdir, 'metrics', 'valid_history.jsonl')) as f:
        return [json.loads(l) for l in f]


def run_summary(workdir):
    """The run's metrics/summary.json."""
    with open(os.path.join(workdir, 'metrics', 'summary.json')) as f:
        return json.load(f)
