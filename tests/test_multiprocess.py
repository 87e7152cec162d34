"""Multi-host training on one machine: two `main.py` processes joined by `jax.distributed` on
localhost, each with 2 fake CPU devices (a 4-device mesh across two processes, cross-process
collectives through gloo), train the tiny SASRec config; this process trains the same config on
4 of its fake devices. Same global batch, same data, same seed: the logged losses and the final
parameters agree to float32 rounding (only the order of the sums differs), and the run saved by
two processes is read back in this process, whose devices are others (ids 0-7, not 0, 1, 2048,
2049): a run trained on a cluster is evaluated on a laptop (checkpoint._on_this_host).

SASRec rather than the seq2seq Transformer: the same sharded step, with a top-K evaluation that
compiles in seconds instead of a beam search (the test runs three trainings on two cores)."""
import json
import os
import socket
import subprocess
import sys

import importlib

import jax
import numpy as np

from aos4rec_jax import checkpoint as ckpt_lib
from aos4rec_jax import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 6


def _flags(tmp_path, workdir):
    return [f'--config={os.path.join(ROOT, "experiments/configs/sasrec.py")}:tiny',
            f'--workdir={workdir}', f'--config.synthetic.cache_dir={tmp_path / "data"}',
            f'--config.train_steps={STEPS}', '--config.log_every=2',
            f'--config.eval_every={STEPS}', f'--config.checkpoint_every={STEPS}',
            '--config.max_eval_users=16']


def _env(tmp_path, devices):
    env = {k: v for k, v in os.environ.items() if not k.startswith(('JAX_', 'XLA_'))}
    env.update(JAX_PLATFORMS='cpu', JAX_NUM_CPU_DEVICES=str(devices), PJRT_NPROC=str(2 * devices),
               PYTHONPATH=ROOT, PYTHONUNBUFFERED='1')
    return env


def _free_port():
    with socket.socket() as s:
        s.bind(('localhost', 0))
        return s.getsockname()[1]


def _losses(workdir):
    with open(os.path.join(workdir, 'metrics', 'train.jsonl')) as f:
        return [json.loads(line)['loss'] for line in f]


def _params(workdir):
    ck = ckpt_lib.Checkpointer(str(workdir), create=False)
    try:
        state, _ = ck.restore(STEPS, None)     # the layout as saved, placed on this host
    finally:
        ck.close()
    return [(jax.tree_util.keystr(p), a)
            for p, a in jax.tree_util.tree_flatten_with_path(state['params'])[0]]


def test_two_processes_train_like_one_and_their_run_loads_here(tmp_path):
    # one process, 4 devices (and the data, written once before the two processes read it)
    one = tmp_path / 'one'
    c = importlib.import_module('experiments.configs.sasrec').get_config('tiny')
    c.synthetic.cache_dir = str(tmp_path / 'data')
    c.train_steps, c.log_every, c.eval_every, c.checkpoint_every = STEPS, 2, STEPS, STEPS
    c.max_eval_users = 16
    c.mesh.num_devices = 4
    trainer.train_and_evaluate(c, str(one))

    two = tmp_path / 'two'
    port = _free_port()
    ps = [subprocess.Popen([sys.executable, 'main.py'] + _flags(tmp_path, two) +
                           [f'--coordinator_address=localhost:{port}', '--num_processes=2',
                            f'--process_id={i}'],
                           cwd=ROOT, env=_env(tmp_path, 2), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        outs = [p.communicate(timeout=600) for p in ps]
    finally:
        for p in ps:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in ps] == [0, 0], [e[-3000:] for _, e in outs]
    assert '4 device(s) cpu' in outs[0][0], outs[0][0][-2000:]   # one mesh over both processes
    assert 'RUN SUMMARY' in outs[0][0] and 'RUN SUMMARY' not in outs[1][0]   # process 0 reports

    l1, l2 = _losses(one), _losses(two)
    # six steps of the tiny config with dropout move the loss by noise only (1.61 1.59 1.62 with
    # the packed network; 1.60 1.60 1.58 without): that it learns is the guard tests' concern
    # (tests/test_guard_next_item.py); here, that every step changed the model
    assert len(l1) == STEPS // 2 and len(set(l1)) == len(l1) and np.all(np.isfinite(l1)), l1
    np.testing.assert_allclose(l2, l1, rtol=1e-5)
    p1, p2 = _params(one), _params(two)
    assert [k for k, _ in p1] == [k for k, _ in p2] and len(p1) > 0
    assert {a.sharding.device_set == {jax.local_devices()[0]} for _, a in p2} == {True}
    for (key, a), (_, b) in zip(p1, p2):
        if key.endswith("['key']['bias']"):
            # A key bias adds the same amount to every logit of a query: softmax ignores it, so
            # its gradient is 0 in exact arithmetic and rounding noise in floats, which Adam
            # scales up to steps of about the learning rate, differently on each layout.
            # Bounded, not compared: |value| <= steps x learning rate on both.
            bound = STEPS * 1e-3
            assert np.max(np.abs(np.asarray(a))) <= bound and np.max(np.abs(np.asarray(b))) <= bound
            continue
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6,
                                   err_msg=key)
    assert max(float(np.max(np.abs(np.asarray(a)))) for _, a in p1) > 0
