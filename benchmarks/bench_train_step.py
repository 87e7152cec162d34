"""Training-step time of any method on a prepared dataset, as the trainer runs it.

    python -m benchmarks.bench_train_step --config gru4rec:uniform --data PREPARED_DIR \
        --out step.json [--set gru4rec.loss=top1_max ...] [--steps 8 --warmup 3] [--label NAME]

What is timed: the method's first phase's step (`methods.build(config, ds).phases(mesh)[0]`),
jitted with the trainer's shardings and donated state (`trainer.sharded_init`), its batches drawn
on the device from `ds.device_data()`, each call ended by `block_until_ready`. Written: the
median / p10 / p90 step time, examples/s (batch_size / median) and XLA's cost analysis of the
compiled step (FLOPs and bytes accessed). No peer here: the figure is compared with itself, e.g.
one code version against another on the same machine in alternation (`--label` names the side);
docs/results/next_item_notes.md, "GRU4Rec+ step time", is one such comparison.
"""
from __future__ import annotations

import argparse
import ast
import datetime
import importlib
import sys
import time

import jax

from aos4rec_jax import data as data_lib
from aos4rec_jax import methods
from aos4rec_jax import sharding as shard_lib
from aos4rec_jax import trainer
from benchmarks.bench_seq2seq import Case, device_info, log, stats_ms, write_json_atomic


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--config', required=True,
                   help='NAME[:variant] of experiments/configs/NAME.py, e.g. gru4rec:uniform')
    p.add_argument('--data', required=True, help='prepared dataset folder (python -m data_prep)')
    p.add_argument('--out', required=True, help='JSON file to write')
    p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                   help='config override, e.g. batch_size=256 or gru4rec.loss=top1_max')
    p.add_argument('--steps', type=int, default=8, help='timed steps')
    p.add_argument('--warmup', type=int, default=3, help='untimed steps first (the step is compiled before them)')
    p.add_argument('--label', default='', help='a name for this side of a comparison')
    return p.parse_args(argv)


def build_config(spec: str, sets: list[str], data_dir: str):
    name, _, variant = spec.partition(':')
    try:
        module = importlib.import_module(f'experiments.configs.{name}')
    except ModuleNotFoundError:
        raise SystemExit(f'bench_train_step: --config {spec!r}: no experiments/configs/{name}.py')
    c = module.get_config(variant)
    c.data_dir = data_dir
    for item in sets:
        key, eq, raw = item.partition('=')
        if not eq:
            raise SystemExit(f'bench_train_step: --set {item!r}: expected KEY=VALUE')
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        *path, node = key.split('.')
        target = c
        for part in path:
            target = getattr(target, part)
        setattr(target, node, value)
    return c


def main(argv=None) -> dict:
    args = parse_args(argv)
    config = build_config(args.config, args.set, args.data)
    hist = int(config.history_len) if 'history_len' in config else -1
    ds = data_lib.Dataset.load(args.data, history_len=hist)
    method = methods.build(config, ds)
    mesh = shard_lib.make_mesh(jax.devices()[:1])
    repl = shard_lib.replicated(mesh)
    phase = method.phases(mesh)[0]
    init_fn, _, shardings, rng = trainer.sharded_init(method.init_state, config, mesh)
    step = jax.jit(phase.step_fn, in_shardings=(shardings, repl), out_shardings=(shardings, repl),
                   donate_argnums=0)
    data = ds.device_data(repl)
    holder = {'state': init_fn(rng)}
    t0 = time.perf_counter()
    compiled = step.lower(holder['state'], data).compile()   # compiled once: timed and analysed
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
    log(f'{args.config} on {args.data}: compiled in {compile_s:.1f}s; '
        f'{cost.get("flops", 0) / 1e9:.2f} GFLOP a step')

    def train_once():
        holder['state'], m = compiled(holder['state'], data)
        jax.block_until_ready(m)

    case = Case(f'{args.config}/train', train_once, int(config.batch_size))
    if args.warmup:
        case.warm(args.warmup)
    case.run(args.steps)
    st = stats_ms(case.times)
    report = {
        'benchmark': 'bench_train_step', 'label': args.label,
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'command': ' '.join(['python -m benchmarks.bench_train_step'] + sys.argv[1:]),
        'device': device_info(), 'config': args.config, 'sets': args.set, 'data': args.data,
        'phase': phase.name, 'batch_size': int(config.batch_size),
        'step_ms': st, 'examples_per_s': int(config.batch_size) / (st['median'] / 1e3),
        'compile_s': compile_s, 'flops_per_step': float(cost.get('flops', 0.0)),
        'bytes_accessed_per_step': float(cost.get('bytes accessed', 0.0)),
    }
    write_json_atomic(args.out, report)
    log(f'median {st["median"]:.1f} ms a step -> {args.out}')
    return report


if __name__ == '__main__':
    main()
