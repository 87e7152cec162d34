"""Faults a run meets and the one outcome each must have (issue 15, second part): preemption
(SIGTERM / Ctrl-C, one host and several), a full disk, a changed data folder, a failed start, a
clobbered output, a user's mistake (one line, no traceback), absurd settings.
docs/reliability.md lists every case with the test that holds it."""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import data_prep
from aos4rec_jax import checkpoint as ckpt_lib
from aos4rec_jax import config as config_lib
from aos4rec_jax import datasets
from aos4rec_jax import evaluate as evaluate_cli
from aos4rec_jax import metrics_ref
from aos4rec_jax import preemption
from aos4rec_jax import recommend as recommend_cli
from aos4rec_jax import trainer
from tests.helpers import StopAt
from aos4rec_jax.methods.base import RunError
from experiments.configs import transformer as tf_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = 'experiments/configs/transformer.py:tiny'


def _config(cache, steps, **over):
    c = tf_cfg.get_config('tiny')
    c.synthetic.cache_dir = str(cache)
    c.train_steps, c.log_every, c.eval_every, c.checkpoint_every = steps, 4, steps, 50
    c.max_eval_users = 32
    c.mesh.num_devices = 1          # the faults do not depend on it; one device is faster here
    for k, v in over.items():
        c[k] = v
    return c


def _flags(cache, steps):
    """main.py flags giving the same config as `_config(cache, steps)`."""
    return [f'--config={TINY}', f'--config.synthetic.cache_dir={cache}',
            f'--config.train_steps={steps}', '--config.log_every=4', f'--config.eval_every={steps}',
            '--config.checkpoint_every=50', '--config.max_eval_users=32', '--config.mesh.num_devices=1']


def _env(tmp_path):
    return dict(os.environ, JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1',
                JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'jax_cache'))


def _steps(workdir, kind='checkpoints'):
    d = os.path.join(workdir, kind)
    return sorted(int(s) for s in os.listdir(d) if s.isdigit()) if os.path.isdir(d) else []


def _final_state(workdir):
    ck = ckpt_lib.Checkpointer(str(workdir))
    state = ck.restore(ck.latest_step(), None)[0]
    ck.close()
    return state


def _assert_same_end(a, b):
    """Same final train state bit for bit, same test figures, same log lines (timing aside)."""
    sa, sb = _final_state(a), _final_state(b)
    assert int(sa['step']) == int(sb['step'])
    la, lb = jax.tree_util.tree_leaves(sa), jax.tree_util.tree_leaves(sb)
    assert len(la) == len(lb) > 0
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    read = lambda p: json.loads(open(p).read())
    assert read(os.path.join(a, 'metrics', 'test.json')) == read(os.path.join(b, 'metrics', 'test.json'))
    strip = lambda r: {k: v for k, v in r.items() if k not in ('steps_per_s', 'examples_per_s')}
    lines = lambda d: [strip(json.loads(l)) for l in open(os.path.join(d, 'metrics', 'train.jsonl'))]
    assert lines(a) == lines(b)


# ------------------------------------------------------------------------------ preemption
def test_a_preemption_between_two_log_lines_saves_that_step_and_the_rerun_ends_as_an_uninterrupted_one(
        tmp_path, monkeypatch):
    """SIGTERM after step 10 (log lines every 4 steps, checkpoints every 50): step 10 is saved
    with the two unlogged steps' metrics, Stopped carries exit status 143, and the rerun ends with
    the uninterrupted run's state, test figures and log lines (the line of step 12 averages steps
    9-12 in both)."""
    trainer.train_and_evaluate(_config(tmp_path / 'data', 20), str(tmp_path / 'full'))
    wd = tmp_path / 'stopped'
    with monkeypatch.context() as m:
        m.setattr(preemption, 'Watcher', lambda: StopAt(10))
        with pytest.raises(preemption.Stopped) as e:
            trainer.train_and_evaluate(_config(tmp_path / 'data', 20), str(wd))
    assert e.value.exit_code == 143
    assert 'stopped by SIGTERM at step 10/20: checkpoint 10 saved' in str(e.value)
    assert _steps(wd) == [10]
    assert not os.path.exists(wd / 'metrics' / 'test.json')
    trainer.train_and_evaluate(_config(tmp_path / 'data', 20), str(wd))
    _assert_same_end(str(tmp_path / 'full'), str(wd))


def _popen_main(args, env):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, 'main.py'), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _signal_when(p, marker, signum):
    for line in p.stdout:
        if marker in line:
            p.send_signal(signum)
            break
    out, err = p.communicate(timeout=300)
    return out, err


@pytest.mark.slow
def test_sigterm_and_ctrl_c_save_exit_143_and_130_and_the_rerun_resumes_to_the_same_end(tmp_path):
    """The real signals on main.py: SIGTERM mid-training -> one line, exit 143, the step saved
    (no temporary folder left); the same command resumes from it and ends as an uninterrupted run.
    Ctrl-C (SIGINT) -> exit 130, saved the same way."""
    env, cache = _env(tmp_path), tmp_path / 'data'
    steps = 200

    def run_to_end(wd):
        r = subprocess.run([sys.executable, 'main.py', *_flags(cache, steps), f'--workdir={wd}'],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        return r.stdout

    run_to_end(tmp_path / 'full')      # a process of its own: the same devices as the resumed one
    wd = tmp_path / 'term'
    p = _popen_main(_flags(cache, steps) + [f'--workdir={wd}'], env)
    out, err = _signal_when(p, f'step 12/{steps}', signal.SIGTERM)
    assert p.returncode == 143, err[-3000:]
    assert 'Traceback' not in err, err[-3000:]
    (saved,) = _steps(wd)
    assert 12 <= saved < steps
    assert f'stopped by SIGTERM at step {saved}/{steps}: checkpoint {saved} saved' in err
    assert not [n for n in os.listdir(wd / 'checkpoints') if 'tmp' in n]
    assert f'resumed from checkpoint step {saved} ' in run_to_end(wd)
    _assert_same_end(str(tmp_path / 'full'), str(wd))

    wd = tmp_path / 'int'
    p = _popen_main(_flags(cache, steps) + [f'--workdir={wd}'], env)
    out, err = _signal_when(p, f'step 12/{steps}', signal.SIGINT)
    assert p.returncode == 130, err[-3000:]
    assert 'Traceback' not in err and 'stopped by SIGINT' in err, err[-3000:]
    assert len(_steps(wd)) == 1


def test_on_several_hosts_every_process_stops_at_the_same_step(tmp_path):
    """Two processes joined by jax.distributed, each asking its Watcher after every step; SIGTERM
    reaches one of them only: both stop at the same step (JAX's preemption sync point), and the
    one that got the signal is not killed by it."""
    script = textwrap.dedent("""
        import sys, time
        import jax
        jax.distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
        from aos4rec_jax import preemption
        with preemption.Watcher() as w:
            print('READY', flush=True)
            for step in range(1, 20000):
                time.sleep(0.005)
                if w.requested(step):
                    print('STOP', step, flush=True)
                    break
            else:
                print('NONE', flush=True)
    """)
    import socket
    with socket.socket() as s:
        s.bind(('localhost', 0))
        port = s.getsockname()[1]
    env = dict(_env(tmp_path), PYTHONPATH=ROOT)
    ps = [subprocess.Popen([sys.executable, '-c', script, f'localhost:{port}', str(i)], cwd=ROOT,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
          for i in range(2)]
    try:
        for p in ps:
            assert p.stdout.readline().strip() == 'READY'
        time.sleep(1.0)
        ps[1].send_signal(signal.SIGTERM)
        outs = [p.communicate(timeout=120)[0].split() for p in ps]
    finally:
        for p in ps:
            if p.poll() is None:
                p.kill()
    assert [o[0] for o in outs] == ['STOP', 'STOP'], outs
    assert outs[0][1] == outs[1][1]
    assert [p.returncode for p in ps] == [0, 0]


# ------------------------------------------------------------------------------ full disk
def test_a_full_disk_stops_training_at_the_save_that_does_not_fit(tmp_path, monkeypatch):
    """Free space too small for the state: the save of step 20 writes nothing and the run stops
    there with one line (workdir, space needed and free, the newest intact step); step 10 is
    intact, and the rerun on a freed disk resumes from it."""
    wd = tmp_path / 'run'
    real = ckpt_lib.free_bytes
    orig_save = ckpt_lib.Checkpointer.save
    calls = []

    def save(self, step, state, meta):
        calls.append(step)
        if step >= 20:
            monkeypatch.setattr(ckpt_lib, 'free_bytes', lambda p: 1000)
        return orig_save(self, step, state, meta)

    monkeypatch.setattr(ckpt_lib.Checkpointer, 'save', save)
    with pytest.raises(ckpt_lib.DiskFullError) as e:
        trainer.train_and_evaluate(_config(tmp_path / 'data', 30, checkpoint_every=10), str(wd))
    msg = str(e.value)
    assert f'checkpoint step 20 could not be saved in {wd}' in msg and '1000 B free' in msg, msg
    assert 'newest: 10' in msg
    assert _steps(wd) == [10]
    with open(wd / 'metrics' / 'train.jsonl') as f:
        assert json.loads(f.readlines()[-1])['step'] == 20          # no step after the failed save
    monkeypatch.setattr(ckpt_lib, 'free_bytes', real)
    monkeypatch.setattr(ckpt_lib.Checkpointer, 'save', orig_save)
    ckpt_lib.Checkpointer(str(wd)).restore(10, None)                 # verifies
    trainer.train_and_evaluate(_config(tmp_path / 'data', 30, checkpoint_every=10), str(wd))
    assert _steps(wd)[-1] == 30


@pytest.mark.slow
def test_a_write_that_fails_in_the_background_stops_the_run_in_one_line(tmp_path, monkeypatch):
    """A real failed write (a file-size limit, as a disk filling during the save would do): the
    async save of step 10 fails in orbax's background thread; the run stops at the first step
    after it is over (at the latest at the next save), with one DiskFullError naming step 10,
    and its temporary folder is removed; step 5 stays intact."""
    wd = tmp_path / 'run'
    orig_save = ckpt_lib.Checkpointer.save
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def save(self, step, state, meta):
        if step == 10:
            self.wait()
            resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, old_limit[1]))
        return orig_save(self, step, state, meta)

    monkeypatch.setattr(ckpt_lib.Checkpointer, 'save', save)
    try:
        with pytest.raises(ckpt_lib.DiskFullError, match='checkpoint step 10 could not be saved'):
            trainer.train_and_evaluate(_config(tmp_path / 'data', 200, checkpoint_every=5),
                                       str(wd))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert _steps(wd) == [5]
    assert not [n for n in os.listdir(wd / 'checkpoints') if n.startswith('10.')]
    with open(wd / 'metrics' / 'train.jsonl') as f:
        assert json.loads(f.readlines()[-1])['step'] <= 15      # not the 200 steps of the run
    monkeypatch.setattr(ckpt_lib.Checkpointer, 'save', orig_save)
    ckpt_lib.Checkpointer(str(wd)).restore(5, None)


# ------------------------------------------------------------------------------ data and workdir
def _copy_synthetic(cache, dst):
    (src,) = [os.path.join(cache, n) for n in os.listdir(cache) if n.startswith('synthetic-')]
    shutil.copytree(src, dst)
    return str(dst)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """One small finished run on a prepared folder of its own (a copy of the synthetic data)."""
    tmp = tmp_path_factory.mktemp('trained')
    datasets.get_dataset(_config(tmp / 'data', 6), str(tmp))       # the synthetic data
    data = _copy_synthetic(tmp / 'data', tmp / 'prepared')
    wd = tmp / 'run'
    c = _config(tmp / 'data', 6)
    c.data_dir = data
    c.select_by = 'ndcg'
    trainer.train_and_evaluate(c, str(wd))
    return dict(wd=str(wd), data=data, config=c, tmp=tmp)


def test_a_changed_data_folder_is_refused_by_resume_evaluate_and_recommend(trained, tmp_path):
    """The run records a fingerprint of the prepared files; after the folder changes (here
    splits.parquet rewritten with one user's split moved), resuming, `evaluate` and `recommend`
    refuse in one line naming the changed file; the original data is accepted again."""
    wd = tmp_path / 'run'
    shutil.copytree(trained['wd'], wd)
    path = os.path.join(trained['data'], 'splits.parquet')
    keep = tmp_path / 'splits.keep'
    shutil.copy(path, keep)
    t = pq.read_table(path).to_pydict()
    t['n_train'][0] -= 1
    t['n_valid'][0] += 1
    pq.write_table(pa.table(t), path)
    try:
        c = trained['config'].copy_and_resolve_references()
        c.train_steps = 8
        with pytest.raises(RunError, match=r'is not the data this run was trained on \(splits.parquet changed'):
            trainer.train_and_evaluate(c, str(wd))
        with pytest.raises(RunError, match='splits.parquet changed'):
            trainer.load_run(str(wd))
    finally:
        shutil.copy(keep, path)
    trainer.load_run(str(wd))


def test_a_failed_start_leaves_the_workdir_reusable(trained, tmp_path):
    """A mistyped data_dir, then a damaged file: each fails in one line, writes no config.json;
    the corrected command then runs (it is not refused as 'a different config')."""
    wd = tmp_path / 'run'
    c = trained['config'].copy_and_resolve_references()
    c.data_dir = trained['data'] + '-typo'
    with pytest.raises(FileNotFoundError, match='is not a folder'):
        trainer.train_and_evaluate(c, str(wd))
    assert not os.path.exists(wd / 'config.json')
    bad = _copy_synthetic(trained['tmp'] / 'data', tmp_path / 'bad')
    raw = open(os.path.join(bad, 'sequences.parquet'), 'rb').read()
    open(os.path.join(bad, 'sequences.parquet'), 'wb').write(raw[:len(raw) // 2])
    c.data_dir = bad
    with pytest.raises(data_prep.DataPrepError, match='sequences.parquet: cannot read it as Parquet'):
        trainer.train_and_evaluate(c, str(wd))
    assert not os.path.exists(wd / 'config.json')
    c.data_dir = trained['data']
    c.train_steps = 2
    trainer.train_and_evaluate(c, str(wd))
    assert os.path.exists(wd / 'config.json')


@pytest.mark.parametrize('name,damage,message', [
    ('stats.json', lambda b: b[:5], 'stats.json: not a valid JSON file'),
    ('protocol.json', lambda b: b'[1, 2]', 'protocol.json: expected a JSON object'),
    ('item_map.parquet', lambda b: b[:100], 'item_map.parquet: cannot read it as Parquet'),
    ('candidates_test.parquet', lambda b: b'PAR1' + b'\0' * 50 + b'PAR1', 'candidates_test.parquet: cannot read'),
])
def test_a_damaged_prepared_file_is_named_in_one_line(trained, tmp_path, name, damage, message):
    bad = _copy_synthetic(trained['tmp'] / 'data', tmp_path / 'bad')
    path = os.path.join(bad, name)
    raw = open(path, 'rb').read()
    open(path, 'wb').write(damage(raw))
    with pytest.raises(data_prep.DataPrepError, match=message.replace('.', r'\.')) as e:
        data_prep.load_dataset(bad)
    assert '\n' not in str(e.value)


def test_a_predictions_file_that_cannot_be_scored_is_one_line(trained, tmp_path, capsys):
    pred = os.path.join(trained['wd'], 'predictions', 'test.parquet')
    assert metrics_ref.main([pred]) == 0
    cut = tmp_path / 'cut.parquet'
    cut.write_bytes(open(pred, 'rb').read()[:200])
    nocol = tmp_path / 'nocol.parquet'
    pq.write_table(pa.table({'user': ['a'], 'generated': [['1']]}), nocol)
    capsys.readouterr()
    for path, want in ((tmp_path / 'none.parquet', 'no such file'), (cut, 'cannot read it as Parquet'),
                       (nocol, "no column 'target'")):
        assert metrics_ref.main([str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and want in err and str(path) in err, err


# ------------------------------------------------------------------------------ recommend
def test_recommend_never_clobbers_and_names_a_bad_input_line(trained, tmp_path, capsys):
    wd = trained['wd']
    raw = data_prep.load_dataset(trained['data']).item_raw
    good = tmp_path / 'h.jsonl'
    good.write_text(json.dumps({'user': 'u1', 'history': [str(raw[1]), str(raw[2])]}) + '\n')
    out = tmp_path / 'recs.jsonl'

    def run(*args):
        capsys.readouterr()
        rc = recommend_cli.main(['--workdir', wd, *args])
        return rc, capsys.readouterr().err

    assert run('--input', str(good), '--output', str(out))[0] == 0
    first = out.read_text()
    rc, err = run('--input', str(good), '--output', str(out))
    assert rc == 2 and 'exists; pass --overwrite' in err
    assert run('--input', str(good), '--output', str(out), '--overwrite')[0] == 0
    assert out.read_text() == first                                  # same seed, same lists
    rc, err = run('--input', str(good), '--output', str(good), '--overwrite')
    assert rc == 2 and 'is the --input file' in err
    assert good.read_text().startswith('{"user": "u1"')              # the input is untouched
    rc, err = run('--input', str(good), '--output', str(tmp_path))
    assert rc == 2 and 'is a folder' in err
    cases = [(b'{"user": "u1", "history": ["1"]}\n{"user": "u2", "history": ["\xff"]}\n',
              'bad.jsonl:2: not UTF-8 text'),
             (b'{"user": null, "history": ["1"]}\n', 'nul.jsonl:1: "user" must be a non-empty'),
             (b'user,item\nu1,1\n\xfe,2\n', 'bad.csv:3: not UTF-8 text')]
    for i, (content, want) in enumerate(cases):
        name = want.split(':')[0]
        (tmp_path / name).write_bytes(content)
        rc, err = run('--input', str(tmp_path / name), '--output', str(tmp_path / f'o{i}.jsonl'))
        assert rc == 2 and want in err and err.count('\n') <= 2, err
        assert not os.path.exists(tmp_path / f'o{i}.jsonl')
    assert not [n for n in os.listdir(tmp_path) if '.tmp' in n]


# ------------------------------------------------------------------------------ absurd settings
def test_a_beam_wider_than_the_item_set_is_refused(trained, tmp_path, capsys):
    c = trained['config'].copy_and_resolve_references()
    c.decode.beam_size = 5000
    with pytest.raises(config_lib.ConfigError, match='config.decode.beam_size: 5000 beams, but the dataset has only 256 items'):
        trainer.train_and_evaluate(c, str(tmp_path / 'run'))
    assert not os.path.exists(tmp_path / 'run' / 'config.json')
    capsys.readouterr()
    assert evaluate_cli.main(['--workdir', trained['wd'], '--tag', 'wide', '--beam', '5000']) == 2
    assert 'decode.beam_size: 5000 beams' in capsys.readouterr().err


def test_evaluate_and_recommend_on_a_folder_without_checkpoints_create_nothing(trained, tmp_path, capsys):
    """A workdir whose run never saved a step: evaluate says so in one line and leaves no empty
    best/ or checkpoints/ behind."""
    wd = tmp_path / 'run'
    os.makedirs(wd)
    for f in ('config.json', 'dataset.json'):
        shutil.copy(os.path.join(trained['wd'], f), wd / f)
    capsys.readouterr()
    assert evaluate_cli.main(['--workdir', str(wd), '--tag', 'x']) == 2
    assert 'no checkpoint under' in capsys.readouterr().err
    assert sorted(os.listdir(wd)) == ['config.json', 'dataset.json']


# ------------------------------------------------------------------------------ command line
@pytest.mark.parametrize('args,want', [
    (['--config.lerning_rate=1'], "--config.lerning_rate: no such config field; did you mean 'learning_rate'?"),
    (['--config.model_kwargs.embed_dm=8'], "--config.model_kwargs.embed_dm: no such config field; did you mean 'embed_dim'?"),
    (['--config.learning_rate=abc'], "could not convert string to float: 'abc'"),
])
def test_a_bad_command_line_is_one_line_not_a_traceback(tmp_path, args, want):
    r = subprocess.run([sys.executable, 'main.py', f'--config={TINY}', f'--workdir={tmp_path}/w', *args],
                       cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2 and want in lines[0] and lines[1].startswith('usage:'), r.stderr[-2000:]
    assert not os.path.exists(tmp_path / 'w')


@pytest.mark.parametrize('config,want', [
    ('experiments/configs/transformer.py:tinyy', "unknown variant 'tinyy' of transformer.py (known: quick, tiny)"),
    ('experiments/configs/nothere.py', 'cannot load the config file ([Errno 2] No such file'),
])
def test_a_bad_config_file_or_variant_is_one_line(tmp_path, config, want):
    r = subprocess.run([sys.executable, 'main.py', f'--config={config}', f'--workdir={tmp_path}/w'],
                       cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert 'Traceback' not in r.stderr and want in r.stderr.splitlines()[0], r.stderr[-2000:]


# ------------------------------------------------------------------------------ data_prep temporaries
def test_data_prep_removes_the_temporary_folders_of_dead_processes(tmp_path):
    from data_prep import storage
    out = tmp_path / 'ds'
    p = subprocess.Popen([sys.executable, '-c', 'pass'])
    p.wait()
    dead, alive = p.pid, os.getpid()
    for name in (f'.ds.tmp-{dead}-aaaa', f'.ds.tmp-{alive}-bbbb', f'.ds.old-{dead}-cccc'):
        os.makedirs(tmp_path / name)
    removed = storage.remove_stale_temporaries(out)
    assert [os.path.basename(r) for r in removed] == [f'.ds.tmp-{dead}-aaaa']
    # the dead process's .old copy is the only copy while the output is missing; kept
    assert (tmp_path / f'.ds.old-{dead}-cccc').exists() and (tmp_path / f'.ds.tmp-{alive}-bbbb').exists()
    os.makedirs(out)
    assert [os.path.basename(r) for r in storage.remove_stale_temporaries(out)] == [f'.ds.old-{dead}-cccc']


def test_a_step_saved_again_replaces_the_old_copy_and_a_kill_in_between_loses_nothing(tmp_path):
    """A phase entered at a step that already has a checkpoint saves that step again: the new
    state replaces the old one (orbax alone refuses: StepAlreadyExistsError). If a kill leaves
    the old copy set aside and the new one unfinished, the next start puts the old one back."""
    ck = ckpt_lib.Checkpointer(str(tmp_path))
    a, b = {'w': jax.numpy.ones(3), 'step': jax.numpy.int32(5)}, {'w': jax.numpy.zeros(3), 'step': jax.numpy.int32(5)}
    ck.save(5, a, {})
    ck.wait()
    ck.save(5, b, {})
    ck.wait()
    assert ck.state_mgr.all_steps() == [5]
    np.testing.assert_array_equal(ck.restore(5, None)[0]['w'], np.zeros(3))
    assert not [n for n in os.listdir(tmp_path / 'checkpoints') if n.startswith('.replaced')]
    # the kill: the copy set aside, the new save never finished
    os.replace(tmp_path / 'checkpoints' / '5', tmp_path / 'checkpoints' / '.replaced-5')
    ck.close()
    ck = ckpt_lib.Checkpointer(str(tmp_path))
    step, state, _ = ck.restore_latest_verified(None, log=lambda m: None)
    assert step == 5
    np.testing.assert_array_equal(state['w'], np.zeros(3))
    ck.close()
