"""Next-item training on a mesh of 8 fake CPU devices (sharding.use_fake_cpu_devices).

GRU4Rec's BPR-max step is the one with the most cross-device traffic: its in-batch negatives
score every row against every other row's targets (all-gathers in the middle of the step, an
all-reduce inside the GRU's backward scan). With XLA:CPU's thread pool at its default size (the
larger of the core count and the device count) that step deadlocked on a 2-core machine and
XLA aborted the process after 40 s ("only 7 of them arrived"), every time with synchronous
dispatch, about one run in three with asynchronous dispatch.
"""
import importlib
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np

from aos4rec_jax import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _gru4rec_tiny(data_dir, steps, num_devices):
    c = importlib.import_module('experiments.configs.gru4rec').get_config('tiny')
    c.synthetic.cache_dir = str(data_dir)
    c.train_steps, c.log_every, c.eval_every, c.checkpoint_every = steps, steps, steps, steps
    c.max_eval_users = 32
    c.mesh.num_devices = num_devices
    return c


def test_gru4rec_step_on_eight_fake_devices_does_not_deadlock(tmp_path):
    """In a fresh process with synchronous dispatch, the helper's pool size lets 400 GRU4Rec
    steps run on 8 devices (the run of test_guard_next_item on its chain data). With
    TEST_FORCE_PJRT_NPROC=8 (the old pool size on a 2-core machine) XLA aborted this process
    within those 400 steps in every one of 9 tries (20 or 60 steps were not enough to show it)."""
    import data_prep
    from tests.helpers import tiny_prepared
    from tests.test_guard_next_item import chain_sequences
    p = tiny_prepared(chain_sequences(), protocol='loo', k=10, history_len=10, num_candidates=20)
    data_prep.write_dataset(p, str(tmp_path / 'data'))
    script = textwrap.dedent(f"""
        import jax
        from aos4rec_jax import sharding
        sharding.use_fake_cpu_devices(8)
        jax.config.update('jax_cpu_enable_async_dispatch', False)
        import pathlib
        from tests.test_guard_next_item import _run
        assert jax.device_count() == 8
        _run('gru4rec', {str(tmp_path / 'data')!r}, 400, pathlib.Path({str(tmp_path / 'run')!r}))
        print('STEPS DONE')
    """)
    env = {k: v for k, v in os.environ.items() if k != 'PJRT_NPROC'}
    env.update(JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
    if os.environ.get('TEST_FORCE_PJRT_NPROC'):
        env['PJRT_NPROC'] = os.environ['TEST_FORCE_PJRT_NPROC']
    r = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 0 and 'STEPS DONE' in r.stdout, (r.returncode, r.stderr[-3000:])
    assert '8 device(s) cpu' in r.stdout, r.stdout[-2000:]


def test_gru4rec_trains_alike_on_one_and_eight_devices(tmp_path, capsys):
    """Data parallelism changes only the order of float sums: after 12 steps the parameters on
    8 devices equal those on 1 device to float32 rounding, and so do the logged losses."""
    import json
    out = {}
    for n in (1, 8):
        d = tmp_path / f'run{n}'
        c = _gru4rec_tiny(tmp_path / 'data', 12, n)
        c.log_every = 3
        trainer.train_and_evaluate(c, str(d))
        import orbax.checkpoint as ocp
        state = ocp.StandardCheckpointer().restore(str(d / 'checkpoints' / '12' / 'state'))
        with open(d / 'metrics' / 'train.jsonl') as f:
            losses = [json.loads(l)['loss'] for l in f]
        assert f'{n} device(s) cpu' in capsys.readouterr().out
        out[n] = (jax.tree_util.tree_leaves(state['params']), losses)
    (p1, l1), (p8, l8) = out[1], out[8]
    assert len(l1) == 4 and l1[-1] < l1[0], l1
    np.testing.assert_allclose(l1, l8, rtol=1e-5)
    assert len(p1) == len(p8)
    for a, b in zip(p1, p8):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
