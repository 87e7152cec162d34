"""Data-parallel scaling of the seq2seq Transformer's training step over 1, 2, 4, 8 devices.

    python -m benchmarks.scaling [--out-dir docs/results/scaling_cpu] [--devices 1,2,4,8]
                                 [--items 3416 --width 64] [--per-device-batch 32]
                                 [--steps 10 --warmup 2] [--check-steps 3]

Each device count runs in its own process (JAX fixes the device count when the backend starts;
on a CPU the n devices are fake ones, `JAX_NUM_CPU_DEVICES=n`), with the trainer's own step:
trainer.create_train_state + trainer.make_train_step, jitted over a `data` mesh of the n
devices with the state's shardings and donation (benchmarks/bench_seq2seq.our_cases does the
same on one device). Two measurements a device count:

  weak scaling   global batch = n x --per-device-batch: median step time over --steps calls
                 after --warmup, examples/s and examples/s per device. Ideal weak scaling keeps
                 the step time flat; on one CPU the n fake devices share the same cores, so the
                 per-device rate there shows the sharding's overhead, not a speed-up.
  same results   --check-steps steps from the same initial state and the same batches at one
                 global batch (8 x --per-device-batch, divisible by every n): the losses and a
                 parameter digest, compared with 1 device's by the parent (max |difference|).
                 Data parallelism changes only the order of float sums.

Writes OUT/report.json and OUT/report.md (device, date, command, one row a device count).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--out-dir', default='docs/results/scaling_cpu')
    p.add_argument('--devices', default='1,2,4,8', help='device counts, one process each')
    p.add_argument('--items', type=int, default=3416, help='item count (ML-1M size: 3416)')
    p.add_argument('--width', type=int, default=64)
    p.add_argument('--layers', type=int, default=2)
    p.add_argument('--heads', type=int, default=4)
    p.add_argument('--history', type=int, default=50)
    p.add_argument('--T', type=int, default=10)
    p.add_argument('--per-device-batch', type=int, default=32)
    p.add_argument('--steps', type=int, default=10, help='timed steps a device count')
    p.add_argument('--warmup', type=int, default=2, help='untimed steps first (the first compiles)')
    p.add_argument('--check-steps', type=int, default=3)
    p.add_argument('--users', type=int, default=2000)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--child', type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.devices = [int(x) for x in str(a.devices).split(',') if x.strip()]
    if not a.devices or min(a.devices) < 1 or any(8 % n for n in a.devices):
        p.error('--devices: counts that divide 8 (the check batch is 8 x --per-device-batch)')
    for f in ('items', 'width', 'layers', 'heads', 'history', 'T', 'per_device_batch', 'steps',
              'warmup', 'check_steps', 'users'):
        if getattr(a, f) < 1:
            p.error(f'--{f.replace("_", "-")} must be >= 1')
    return a


# ------------------------------------------------------------------------------ child
def child(a) -> dict:
    import jax
    import numpy as np
    from aos4rec_jax import sharding as shard_lib
    from benchmarks import bench_seq2seq

    n = a.child
    assert jax.device_count() == n, (jax.device_count(), n)
    mesh = shard_lib.make_mesh(jax.devices())
    repl = shard_lib.replicated(mesh)
    sargs = types.SimpleNamespace(
        items=a.items, width=a.width, layers=a.layers, heads=a.heads, mlp=4 * a.width,
        dropout=0.1, history=a.history, T=a.T, beam=5, batch=a.per_device_batch * n,
        eval_batch=8, users=a.users, seed=a.seed, dtype='float32')
    dev_np, info, _, _ = bench_seq2seq.synthetic_data(sargs, np.random.default_rng(a.seed))
    data = jax.device_put(dev_np, repl)

    def build(batch):
        sargs.batch = batch
        _, step, state, _ = bench_seq2seq.jitted_train_step(
            bench_seq2seq.run_config(sargs, 'transformer'), info, mesh)
        return step, state

    # weak scaling
    step, state = build(a.per_device_batch * n)
    for _ in range(a.warmup):
        state, m = step(state, data)
    jax.block_until_ready(state)
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        state, m = step(state, data)
        jax.block_until_ready((state, m))
        times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    batch = a.per_device_batch * n
    # same results at one global batch
    step, state = build(8 * a.per_device_batch)
    losses = []
    for _ in range(a.check_steps):
        state, m = step(state, data)
        m = jax.device_get(m)
        losses.append(float(m['loss_sum']) / max(float(m['tokens']), 1.0))
    leaves = [np.asarray(jax.device_get(x), np.float64).ravel()
              for x in jax.tree_util.tree_leaves(state['params'])]
    flat = np.concatenate(leaves)
    return {'devices': n, 'global_batch': batch, 'step_ms_median': med * 1e3,
            'step_ms_min': float(np.min(times)) * 1e3, 'examples_per_s': batch / med,
            'examples_per_s_per_device': batch / med / n,
            'check_batch': 8 * a.per_device_batch, 'check_losses': losses,
            'param_digest': [float(np.sum(flat)), float(np.sum(np.abs(flat))),
                             float(np.sum(flat * np.arange(flat.size) % 9973))],
            'params_sample': flat[::max(1, flat.size // 4096)].tolist()}


# ------------------------------------------------------------------------------ parent
def run_child(a, argv, n: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ('JAX_NUM_CPU_DEVICES', 'XLA_FLAGS')}
    env.update(JAX_NUM_CPU_DEVICES=str(n), PJRT_NPROC=str(max(os.cpu_count() or 1, 2 * n)),
               PYTHONPATH=ROOT)
    env.setdefault('JAX_PLATFORMS', 'cpu')
    r = subprocess.run([sys.executable, '-m', 'benchmarks.scaling'] + list(argv) +
                       [f'--child={n}'], cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f'error: the {n}-device process failed:\n{r.stderr[-3000:]}')
    return json.loads(r.stdout.strip().splitlines()[-1])


def markdown(rep: dict) -> str:
    lines = [f'# Data-parallel scaling ({rep["device"]})', '',
             f'`{rep["command"]}`, {rep["date"]}; load average before / after: '
             f'{rep["load_average_before"]} / {rep["load_average_after"]}.', '',
             f'Seq2seq Transformer, {rep["config"]["items"]:,} items, width {rep["config"]["width"]}, '
             f'{rep["config"]["layers"]} layers, L = {rep["config"]["history"]}, '
             f'T = {rep["config"]["T"]}; the trainer\'s jitted step over a `data` mesh.', '',
             '| devices | global batch | step ms (median) | examples/s | examples/s per device | '
             f'losses after {rep["config"]["check_steps"]} steps at batch '
             f'{rep["rows"][0]["check_batch"]} | max abs loss diff vs 1 | max abs param diff vs 1 |',
             '|---|---|---|---|---|---|---|---|']
    for r in rep['rows']:
        lines.append(f'| {r["devices"]} | {r["global_batch"]} | {r["step_ms_median"]:.1f} | '
                     f'{r["examples_per_s"]:.0f} | {r["examples_per_s_per_device"]:.0f} | '
                     f'{", ".join(f"{x:.6f}" for x in r["check_losses"])} | '
                     f'{r["loss_diff_vs_first"]:.2e} | {r["param_diff_vs_first"]:.2e} |')
    lines += ['', rep['note'], '']
    return '\n'.join(lines)


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse_args(argv)
    if a.child:
        print(json.dumps(child(a)))
        return {}
    import numpy as np
    from benchmarks.bench_seq2seq import write_json_atomic, write_text_atomic
    load0 = [round(x, 2) for x in os.getloadavg()]
    rows = []
    for n in a.devices:
        print(f'[scaling] {n} device(s) ...', file=sys.stderr, flush=True)
        rows.append(run_child(a, argv, n))
        r = rows[-1]
        print(f'[scaling] {n} device(s): {r["step_ms_median"]:.1f} ms/step at batch '
              f'{r["global_batch"]}, {r["examples_per_s"]:.0f} examples/s', file=sys.stderr,
              flush=True)
    first = rows[0]
    for r in rows:
        r['loss_diff_vs_first'] = float(np.max(np.abs(np.subtract(r['check_losses'],
                                                                  first['check_losses']))))
        r['param_diff_vs_first'] = float(np.max(np.abs(np.subtract(r['params_sample'],
                                                                   first['params_sample']))))
    for r in rows:
        r.pop('params_sample')
    cpu = os.cpu_count()
    rep = {
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'command': 'python -m benchmarks.scaling ' + ' '.join(shlex.quote(x) for x in argv),
        'device': f'CPU, {cpu} cores, n fake devices (JAX_NUM_CPU_DEVICES=n)',
        'load_average_before': load0,
        'load_average_after': [round(x, 2) for x in os.getloadavg()],
        'config': {k: v for k, v in vars(a).items() if k != 'child'},
        'rows': rows,
        'note': ('On one CPU every fake device runs on the same cores, so examples/s cannot grow '
                 'with the device count: the per-device column measures what the sharding costs '
                 '(collectives, per-device launches), not a speed-up. "max abs param diff": over '
                 'a strided sample of 4,096 parameters after the check steps; the loss and '
                 'parameter differences are float32 rounding from the order of the sums (an '
                 'attention key bias, whose gradient is 0 in exact arithmetic, can differ by '
                 'Adam steps of rounding noise: tests/test_multiprocess.py).'),
    }
    write_json_atomic(os.path.join(a.out_dir, 'report.json'), rep)
    write_text_atomic(os.path.join(a.out_dir, 'report.md'), markdown(rep))
    print(markdown(rep))
    return rep


if __name__ == '__main__':
    main()
