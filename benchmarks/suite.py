"""`python -m benchmarks`: every throughput case in one run, one JSON report and one Markdown table.

    python -m benchmarks [--out-dir docs/results/bench_<device>/] [--quick] [--budget-s 450]
                         [--groups train,generate,eval,aos4rec,data_prep] [--sizes ml1m,ml20m]
                         [--gen-sizes ml20m] [--dtypes float32,bfloat16] [--models transformer,gru,gpt]
                         [--strategies beam,greedy,multi] [--steps 6 --warmup 2 --rounds 2]

Groups (each one's cases, ours and the peer's, are timed interleaved in `--rounds` rounds, so a
change of machine load hits them alike; every ratio is ours / peer from the same run):

  train      MLE training examples/s on the peer's task (L = 50 history items + T = 10): the
             seq2seq Transformer and GRU (benchmarks/bench_seq2seq.our_cases: the trainer's step)
             and the decoder-only GPT (methods/gpt.py, next-item loss on windows of L + T - 1
             items, as GPT-2 with labels = input_ids on L + T items), against HF GPT-2
             (benchmarks/peer_gpt2.py), per size and dtype; FLOPs of one step from XLA's cost
             analysis of the timed executable and the achieved TFLOP/s.
  generate   users/s of one jit of history ban -> init_decode_state -> decoding.generate for
             beam 5, greedy and multi-sequence sampling (20 lists, RRA), T = 10, over all items
             and restricted to 1,000 candidates per user, against HF `generate`.
  eval       full-ranking evaluation users/s (score all items, ban the history, top-10) against
             pmixer's per-user loop and batched torch: benchmarks/bench_sasrec.main.
  aos4rec    one oracle step and one SSRGAN round as a ratio to one MLE step:
             benchmarks/bench_aos4rec.main.
  data_prep  `python -m data_prep --format movielens-csv` on a synthetic ML-20M-sized ratings.csv
             written to a temporary folder (20M rows, 138,493 users, 26,744 items): wall seconds
             and peak memory of the subprocess (resource.getrusage(RUSAGE_CHILDREN).ru_maxrss).

`--budget-s` is checked before each group and each build: what would start after it is skipped
and listed under "skipped". `--quick` runs tiny sizes (a CI smoke run, under a minute on a 2-core
CPU). The defaults are sized for one GPU (the whole run under 8 minutes).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import types
from typing import Any

os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from aos4rec_jax import data as data_lib  # noqa: E402
from aos4rec_jax import decoding  # noqa: E402
from aos4rec_jax import methods  # noqa: E402
from aos4rec_jax import seq2seq  # noqa: E402
from aos4rec_jax import sharding as shard_lib  # noqa: E402
from aos4rec_jax import trainer  # noqa: E402
from benchmarks import bench_aos4rec, bench_sasrec, bench_seq2seq, peer_gpt2  # noqa: E402
from benchmarks.bench_seq2seq import (Case, device_info, stats_ms, write_json_atomic,  # noqa: E402
                                      write_text_atomic, xla_flops)
from experiments.configs import gpt as gpt_cfg  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GROUPS = ('train', 'generate', 'eval', 'aos4rec', 'data_prep')
SIZES = {'ml1m': dict(items=3416, width=64), 'ml20m': dict(items=19295, width=128),
         'tiny': dict(items=40, width=16)}
MODELS = ('transformer', 'gru', 'gpt')
STRATEGIES = {'beam': 'beam', 'greedy': 'greedy', 'multi': 'multi_rra'}
ML20M_CSV = dict(rows=20_000_263, users=138_493, items=26_744)


def log(msg: str) -> None:
    print(f'[benchmarks {time.strftime("%H:%M:%S")}] {msg}', file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog='python -m benchmarks', description=__doc__.split('\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--out-dir', default=None,
                   help='folder of report.json and report.md (default docs/results/bench_<device>/)')
    p.add_argument('--quick', action='store_true', help='tiny sizes: a CI smoke run')
    p.add_argument('--budget-s', type=float, default=450.0,
                   help='skip whatever would start after this many seconds')
    p.add_argument('--groups', default=','.join(GROUPS))
    p.add_argument('--sizes', default='ml1m,ml20m', help='training sizes')
    p.add_argument('--gen-sizes', default='ml20m', help='generation sizes')
    p.add_argument('--dtypes', default='float32,bfloat16', help='training dtypes')
    p.add_argument('--models', default=','.join(MODELS))
    p.add_argument('--strategies', default=','.join(STRATEGIES))
    p.add_argument('--candidates', default='full,1000',
                   help="generation spaces: 'full' (all items) and/or a candidate count")
    p.add_argument('--peer', choices=('auto', 'on', 'off'), default='auto')
    p.add_argument('--layers', type=int, default=2)
    p.add_argument('--heads', type=int, default=4)
    p.add_argument('--history', type=int, default=50)
    p.add_argument('--T', type=int, default=10)
    p.add_argument('--beam', type=int, default=5)
    p.add_argument('--num-sequences', type=int, default=20)
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--eval-batch', type=int, default=256)
    p.add_argument('--steps', type=int, default=6, help='timed calls per case')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--rounds', type=int, default=2)
    p.add_argument('--csv-rows', type=int, default=ML20M_CSV['rows'],
                   help='rows of the synthetic ratings.csv of the data_prep case')
    p.add_argument('--loss-chunk', type=int, default=0,
                   help='also time the seq2seq training step with config.loss_chunk=N (the MLE '
                        'loss over blocks of N items, no logits array) beside the plain one, and '
                        'report both steps\' temporary memory; 0: not')
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args(argv)
    if a.quick:
        a.sizes = a.gen_sizes = 'tiny'
        a.dtypes = 'float32'
        a.strategies, a.candidates = 'beam', 'full,8'
        a.models = 'transformer'
        a.layers, a.heads, a.history, a.T, a.beam, a.num_sequences = 1, 2, 6, 3, 2, 3
        a.batch, a.eval_batch, a.steps, a.warmup, a.rounds = 8, 4, 2, 1, 2
        a.csv_rows = 20_000
    if a.quick and a.groups == ','.join(GROUPS):
        # Compiling the SSRGAN round alone takes minutes on a 2-core CPU; its own smoke test is
        # tests/test_benchmarks.py::test_bench_aos4rec_smoke. --groups overrides this.
        # The SASRec evaluation has its own smoke test too (tests/test_bench_sasrec.py).
        a.groups = 'train,generate,data_prep'
    for f in ('groups', 'sizes', 'gen_sizes', 'dtypes', 'models', 'strategies', 'candidates'):
        setattr(a, f, [x.strip() for x in getattr(a, f).split(',') if x.strip()])
    for f, valid in (('groups', GROUPS), ('sizes', SIZES), ('gen_sizes', SIZES),
                     ('dtypes', ('float32', 'bfloat16')), ('models', MODELS),
                     ('strategies', STRATEGIES)):
        bad = [x for x in getattr(a, f) if x not in valid]
        if bad:
            p.error(f'--{f.replace("_", "-")}: unknown {bad}; valid: {",".join(valid)}')
    if a.warmup < 1 or a.steps < 1 or a.rounds < 1:
        p.error('--warmup, --steps and --rounds must be >= 1')
    return a


class Budget:
    def __init__(self, seconds: float):
        self.t0, self.seconds, self.skipped = time.time(), seconds, []

    def elapsed(self) -> float:
        return time.time() - self.t0

    def allows(self, what: str, need_s: float = 0.0) -> bool:
        """Whether `what`, expected to take about `need_s` seconds, may start now."""
        if self.elapsed() + need_s <= self.seconds:
            return True
        self.skipped.append(f'{what}: --budget-s {self.seconds:g} spent at {self.elapsed():.0f}s')
        log(f'skipped {what} (budget)')
        return False


def size_args(a, size: str, dtype: str = 'float32') -> types.SimpleNamespace:
    """The argument namespace bench_seq2seq's helpers read, for one size."""
    s = SIZES[size]
    return types.SimpleNamespace(
        items=s['items'], width=s['width'], layers=a.layers, heads=a.heads, mlp=4 * s['width'],
        dropout=0.1, history=a.history, T=a.T, beam=a.beam, batch=a.batch,
        eval_batch=a.eval_batch, users=max(200, 4 * a.batch) if not a.quick else 30,
        seed=a.seed, dtype=dtype, loss_chunk=0)


def interleave(cases: list[Case], a, group: str) -> None:
    per_round = [a.steps // a.rounds + (r < a.steps % a.rounds) for r in range(a.rounds)]
    for r, n in enumerate(per_round):
        log(f'{group}: round {r + 1}/{a.rounds}, {n} timed calls per case, load '
            f'{os.getloadavg()[0]:.2f}')
        for c in cases:
            c.run(n)


def case_row(c: Case, unit: str, **extra) -> dict:
    return dict(rate=c.rate(), unit=unit, per_call=c.units, call_ms=stats_ms(c.times),
                first_call_s=c.first_call_s, **extra)


def make_peer(a, sargs, dtype: str, dev: dict):
    if a.peer == 'off':
        return None, {'skipped': '--peer off'}
    ok, why = peer_gpt2.availability()
    if not ok:
        if a.peer == 'on':
            raise SystemExit(f'--peer on but {why}')
        return None, {'skipped': why}
    import torch
    device = 'cuda' if dev['platform'] == 'gpu' and torch.cuda.is_available() else 'cpu'
    peer = peer_gpt2.PeerGPT2(num_items=sargs.items, width=sargs.width, layers=sargs.layers,
                              heads=sargs.heads, mlp_dim=sargs.mlp, dropout=sargs.dropout,
                              history=sargs.history, T=sargs.T, beam=sargs.beam, lr=1e-3,
                              dtype=dtype, matmul_precision='default', device=device, seed=a.seed)
    return peer, dict(peer.info)


# ------------------------------------------------------------------------------ GPT (ours)
def gpt_config(sargs, dtype: str):
    c = gpt_cfg.get_config()
    c.model, c.seed, c.batch_size = 'gpt', sargs.seed, sargs.batch
    c.eval_batch_size = sargs.eval_batch
    k = c.model_kwargs
    k.embed_dim, k.num_layers, k.num_heads = sargs.width, sargs.layers, sargs.heads
    k.mlp_dim, k.dropout_rate = sargs.mlp, sargs.dropout
    c.compute_dtype = dtype
    c.gpt.train_len = sargs.history + sargs.T - 1      # GPT-2 on L + T items: L + T - 1 targets
    return c


def gpt_dataset(sargs):
    """A prepared loo dataset whose users all have full training windows of L + T items."""
    ns = types.SimpleNamespace(items=sargs.items, maxlen=sargs.history + sargs.T,
                               users=max(sargs.users, sargs.eval_batch), seed=sargs.seed)
    return bench_sasrec.synthetic_dataset(ns, np.random.default_rng(sargs.seed))


def gpt_train_case(sargs, dtype: str, ds) -> tuple[Case, dict]:
    config = gpt_config(sargs, dtype)
    method = methods.build(config, ds)
    mesh = shard_lib.make_mesh(jax.devices()[:1])
    repl = shard_lib.replicated(mesh)
    init_fn, abstract, shardings, rng = trainer.sharded_init(method.init_state, config, mesh)
    step = jax.jit(method.phases(mesh)[0].step_fn, in_shardings=(shardings, repl),
                   out_shardings=(shardings, repl), donate_argnums=0)
    data = ds.device_data(repl)
    holder = {'state': init_fn(rng)}
    t0 = time.perf_counter()
    step = step.lower(holder['state'], data).compile()
    compile_s = time.perf_counter() - t0

    def once():
        holder['state'], m = step(holder['state'], data)
        jax.block_until_ready((holder['state'], m))
    n_params = int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(abstract['params'])))
    facts = dict(num_params=n_params, flops=xla_flops(step), compile_s=compile_s,
                 train_len=method.train_len)
    return Case(f'train/gpt/{dtype}', once, sargs.batch), dict(facts, method=method,
                                                               params=lambda: holder['state']['params'])


# ------------------------------------------------------------------------------ groups
def train_group(a, dev, budget: Budget) -> dict:
    out = {}
    for size in a.sizes:
        for dtype in a.dtypes:
            key = f'{size}/{dtype}'
            if not budget.allows(f'train {key}'):
                continue
            sargs = size_args(a, size, dtype)
            rng = np.random.default_rng(a.seed)
            dev_np, info, histories, peer_train = bench_seq2seq.synthetic_data(sargs, rng)
            cases, facts = {}, {}
            chunked = [n for n in a.models if n != 'gpt'] if a.loss_chunk > 0 else []
            for name in list(a.models) + [f'{n}/chunk{a.loss_chunk}' for n in chunked]:
                if not budget.allows(f'train {key} {name}'):
                    continue
                log(f'train {key}: building ours/{name}')
                if name == 'gpt':
                    c, f = gpt_train_case(sargs, dtype, gpt_dataset(sargs))
                    f.pop('method'), f.pop('params')
                else:
                    model, _, chunk = name.partition('/chunk')
                    s = types.SimpleNamespace(**{**vars(sargs), 'loss_chunk': int(chunk or 0)})
                    c, _, f = bench_seq2seq.our_cases(s, model, dev_np, info, histories)
                    # XLA's cost analysis counts a while loop's body once, not once per
                    # iteration: the chunked loss's scan would be undercounted, so no FLOPs there
                    f = dict(num_params=f['num_params'], flops=None if chunk else f['train_flops'],
                             compile_s=f['train_compile_s'], temp_mb=f.get('train_temp_mb'),
                             loss_chunk=int(chunk or 0))
                c.warm(a.warmup)
                cases[name], facts[name] = c, f
            peer, peer_info = (None, {'skipped': 'budget'})
            if budget.allows(f'train {key} peer'):
                peer, peer_info = make_peer(a, sargs, dtype, dev)
            if peer is not None:
                cases['peer'] = Case(f'train/peer/{dtype}', peer.train_step_fn(peer_train), sargs.batch)
                facts['peer'] = dict(num_params=peer_info['num_params'],
                                     flops=peer_flops(peer, peer_train), compile_s=None)
                cases['peer'].warm(a.warmup)
            interleave(list(cases.values()), a, f'train {key}')
            rows = {}
            for name, c in cases.items():
                f = facts[name]
                med = float(np.median(c.times))
                rows[name] = case_row(c, 'examples/s', **f,
                                      tflops_per_s=(f['flops'] / med / 1e12) if f['flops'] else None)
            ratios = ({n: rows[n]['rate'] / rows['peer']['rate'] for n in rows if n != 'peer'}
                      if 'peer' in rows else {'skipped': peer_info.get('skipped')})
            out[key] = dict(size=size, items=sargs.items, width=sargs.width, dtype=dtype,
                            cases=rows, ratios=ratios,
                            peer=peer_info if 'peer' not in rows else
                            {k: v for k, v in peer_info.items() if k != 'generate'})
            if peer is not None:
                del peer
    return out


def peer_flops(peer, sequences) -> float | None:
    """FLOPs of one peer training step by torch's FlopCounterMode (forward + backward)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
        step = peer.train_step_fn(sequences)
        with FlopCounterMode(display=False) as fc:
            step()
        return float(fc.get_total_flops())
    except Exception:
        return None


def ours_generate_fn(model, params_fn, info_like, strategy: str, a, candidates):
    """One jit: history ban -> init_decode_state -> decoding.generate (as the evaluation)."""
    L, T, V, bos = info_like['L'], info_like['T'], info_like['V'], info_like['bos']

    @jax.jit
    def fn(params, history, flat, start, length, cands, rng):
        banned = data_lib.history_ban_mask(flat, start, length, L, V)
        state = model.apply({'params': params}, history, T, method=model.init_decode_state)

        def step(s, prev, t):
            return model.apply({'params': params}, s, prev, t, method=model.decode_step)
        return decoding.generate(step, state, rng, strategy=STRATEGIES[strategy],
                                 batch_size=history.shape[0], vocab_size=V, bos_id=bos, k=T,
                                 beam_size=a.beam, num_sequences=a.num_sequences, temperature=1.0,
                                 candidates=cands, banned=banned, ban_generated=True)
    return fn


def generation_inputs(histories, L: int):
    """[users, L] histories -> (hist, flat, start, length) on the device: the arguments of
    `ours_generate_fn`'s jit (every history L items long, stored one after another)."""
    hist = jax.device_put(np.asarray(histories, np.int32))
    users = hist.shape[0]
    return (hist, hist.reshape(-1), jnp.arange(users, dtype=jnp.int32) * L,
            jnp.full((users,), L, jnp.int32))


def generation_net(name: str, sargs, info, hist, seed: int):
    """(network, params, bos id) of one generation case: the GPT-style decoder ('gpt') or a
    seq2seq model, at `size_args`' sizes, initialised from `seed`."""
    L, T, V = info.history_len, info.k, info.vocab_size
    if name == 'gpt':
        from aos4rec_jax.models.gpt import GPT, GPTConfig
        net = GPT(GPTConfig(num_items=sargs.items, max_len=L + T - 1, embed_dim=sargs.width,
                            num_layers=sargs.layers, num_heads=sargs.heads, mlp_dim=sargs.mlp))
        params = net.init({'params': jax.random.key(seed), 'dropout': jax.random.key(1)},
                          hist[:2], None, False, method=net.encode)['params']
        return net, params, V
    net = seq2seq.build_model(bench_seq2seq.run_config(sargs, name), info)
    return net, seq2seq.init_params(net, info, jax.random.key(seed)), info.bos_id


def generate_group(a, dev, budget: Budget) -> dict:
    out = {}
    for size in a.gen_sizes:
        if not budget.allows(f'generate {size}'):
            continue
        sargs = size_args(a, size)
        rng = np.random.default_rng(a.seed + 1)
        dev_np, info, histories, _ = bench_seq2seq.synthetic_data(sargs, rng)
        L, T, V = info.history_len, info.k, info.vocab_size
        hist, flat, start, length = generation_inputs(histories, L)
        spaces = {}
        for c in a.candidates:
            if c == 'full':
                spaces['full'] = None
            else:
                n = min(int(c), sargs.items)
                spaces[f'c{n}'] = np.stack([rng.choice(np.arange(1, sargs.items + 1), n, replace=False)
                                            for _ in range(sargs.eval_batch)]).astype(np.int32)
        nets = {name: generation_net(name, sargs, info, hist, a.seed) for name in a.models}
        peer, peer_info = make_peer(a, sargs, 'float32', dev)
        cases, meta = {}, {}
        for strategy in a.strategies:
            for space, cands in spaces.items():
                key = f'{strategy}/{space}'
                if not budget.allows(f'generate {size} {key}'):
                    continue
                for name, (net, params, bos) in nets.items():
                    fn = ours_generate_fn(net, None, dict(L=L, T=T, V=V, bos=bos), strategy, a,
                                          cands)
                    c_arr = None if cands is None else jax.device_put(cands)
                    key_rng = jax.random.key(a.seed)

                    def once(fn=fn, params=params, c_arr=c_arr, key_rng=key_rng):
                        return jax.block_until_ready(fn(params, hist, flat, start, length, c_arr,
                                                        key_rng))
                    log(f'generate {size}: ours/{name} {key}')
                    case = Case(f'gen/{name}/{key}', once, sargs.eval_batch)
                    case.warm(a.warmup)
                    lists = np.asarray(once())
                    meta[(key, name)] = dict(lists_valid=lists_valid(lists, histories, cands))
                    cases[(key, name)] = case
                if peer is not None:
                    gen = peer_gpt2.generate_strategy_fn(peer, histories, strategy=strategy,
                                                         candidates=cands,
                                                         num_sequences=a.num_sequences)
                    log(f'generate {size}: peer {key}')
                    case = Case(f'gen/peer/{key}', gen, sargs.eval_batch)
                    case.warm(a.warmup)
                    lists = gen().cpu().numpy()
                    meta[(key, 'peer')] = dict(lists_valid=lists_valid(lists, histories, cands))
                    cases[(key, 'peer')] = case
        interleave(list(cases.values()), a, f'generate {size}')
        res = {}
        for (key, name), c in cases.items():
            res.setdefault(key, {'cases': {}, 'ratios': {}})['cases'][name] = case_row(
                c, 'users/s', **meta[(key, name)])
        for key, r in res.items():
            if 'peer' in r['cases']:
                r['ratios'] = {n: r['cases'][n]['rate'] / r['cases']['peer']['rate']
                               for n in r['cases'] if n != 'peer'}
            else:
                r['ratios'] = {'skipped': peer_info.get('skipped', 'peer not run')}
        out[size] = dict(items=sargs.items, width=sargs.width, users_per_call=sargs.eval_batch,
                         strategies={s: STRATEGIES[s] for s in a.strategies},
                         beam=a.beam, num_sequences=a.num_sequences, results=res,
                         peer={k: v for k, v in peer_info.items() if k != 'generate'})
    return out


def lists_valid(lists, histories, cands) -> bool:
    """Distinct items, none from the history, all among the candidates (0 = no item)."""
    for i, (r, h) in enumerate(zip(np.asarray(lists), histories)):
        r = r[r > 0]
        if len(set(r.tolist())) != len(r) or set(r.tolist()) & set(np.asarray(h).tolist()):
            return False
        if cands is not None and not set(r.tolist()) <= set(cands[i].tolist()):
            return False
    return True


def eval_group(a, budget: Budget) -> dict:
    if not budget.allows('eval', 0 if a.quick else 60):   # runs to its end once started
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        argv = ['--out', os.path.join(tmp, 'sasrec.json'), '--peer', a.peer]
        if a.quick:
            argv += ['--items', '60', '--maxlen', '8', '--dim', '16', '--blocks', '1', '--batch', '8',
                     '--eval-batch', '16', '--per-user-users', '4', '--users', '40', '--steps', '2',
                     '--warmup', '1', '--rounds', '1']
        else:
            argv += ['--steps', str(a.steps), '--warmup', str(a.warmup), '--rounds', str(a.rounds)]
        r = bench_sasrec.main(argv)
    return {'command': 'bench_sasrec.main(' + ' '.join(argv[2:]) + ')', 'config': r['config'],
            'ours': r['ours'], 'peer': r['peer'], 'ratios': r['ratios']}


def aos4rec_group(a, budget: Budget) -> dict:
    if not budget.allows('aos4rec', 0 if a.quick else 150):   # runs to its end once started
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        argv = ['--out', os.path.join(tmp, 'aos4rec.json')]
        if a.quick:
            argv += ['--items', '40', '--width', '16', '--layers', '1', '--heads', '2',
                     '--history', '6', '--T', '3', '--beam', '2', '--batch', '8', '--steps', '1',
                     '--warmup', '1', '--rounds', '1', '--users', '30', '--d-steps', '2',
                     '--models', 'gru']
        else:
            s = SIZES['ml1m']
            argv += ['--items', str(s['items']), '--width', str(s['width']), '--layers',
                     str(a.layers), '--steps', str(a.steps), '--warmup', str(a.warmup),
                     '--rounds', str(a.rounds), '--models',
                     ','.join(m for m in a.models if m != 'gpt') or 'transformer']
        r = bench_aos4rec.main(argv)
    return {'command': 'bench_aos4rec.main(' + ' '.join(argv[2:]) + ')', 'args': r['args'],
            'results': {m: {c: {'ratio_to_mle': v['ratio_to_mle'], 'step_ms': v['step_ms']}
                            for c, v in cases.items()} for m, cases in r['results'].items()}}


def write_ratings_csv(path: str, rows: int, users: int, items: int, seed: int) -> None:
    """A MovieLens-20M-like ratings.csv (userId,movieId,rating,timestamp), users in order."""
    rng = np.random.default_rng(seed)
    per_user = rng.multinomial(rows - 20 * users, np.full(users, 1.0 / users)) + 20
    try:   # pyarrow's C++ CSV writer: about 20x faster than formatting the rows in Python
        import pyarrow as pa
        import pyarrow.csv as pa_csv
    except ImportError:
        pa = None
    with open(path, 'wb') as f:
        f.write(b'userId,movieId,rating,timestamp\n')
        bounds = np.concatenate([[0], np.cumsum(per_user)])
        step = max(1, users // 50)
        for u0 in range(0, users, step):
            u1 = min(users, u0 + step)
            n = int(bounds[u1] - bounds[u0])
            uid = np.repeat(np.arange(u0, u1) + 1, per_user[u0:u1])
            mid = (rng.zipf(1.3, n) % items) + 1
            rating = rng.integers(1, 11, n) / 2.0
            ts = 789652009 + rng.integers(0, 10 ** 9, n)
            if pa is not None:
                table = pa.table({'userId': uid, 'movieId': mid, 'rating': rating, 'timestamp': ts})
                pa_csv.write_csv(table, f, pa_csv.WriteOptions(include_header=False,
                                                               quoting_style='none'))
            else:
                f.write(('\n'.join(f'{a},{b},{c:.1f},{d}' for a, b, c, d in
                                   zip(uid.tolist(), mid.tolist(), rating.tolist(), ts.tolist()))
                         + '\n').encode())


def data_prep_group(a, budget: Budget) -> dict:
    if not budget.allows('data_prep', 0 if a.quick else 120):   # runs to its end once started
        return {}
    scale = a.csv_rows / ML20M_CSV['rows']
    users = max(50, int(ML20M_CSV['users'] * scale))
    items = max(50, int(ML20M_CSV['items'] * min(1.0, scale * 20)))
    with tempfile.TemporaryDirectory() as tmp:
        csv = os.path.join(tmp, 'ratings.csv')
        t0 = time.time()
        write_ratings_csv(csv, a.csv_rows, users, items, a.seed)
        gen_s = time.time() - t0
        size_mb = os.path.getsize(csv) / 2 ** 20
        cmd = [sys.executable, '-m', 'data_prep', '--format', 'movielens-csv', '--input', csv,
               '--output', os.path.join(tmp, 'prepared'), '--quiet']
        # Started from a small launcher: a child forked from this process (JAX and torch loaded)
        # would carry this process's resident set into its ru_maxrss until it execs.
        r = subprocess.run([sys.executable, '-c', _LAUNCHER] + cmd, cwd=ROOT, capture_output=True,
                           text=True)
        try:
            wall, peak_kb, code = r.stdout.strip().splitlines()[-1].split()
            wall, peak_kb, code = float(wall), int(peak_kb), int(code)
        except (ValueError, IndexError):
            wall, peak_kb, code = float('nan'), 0, r.returncode or 1
    out = dict(rows=a.csv_rows, users=users, items=items, csv_mb=size_mb, csv_write_s=gen_s,
               wall_s=wall, returncode=code, peak_rss_gb=peak_kb / 2 ** 20,
               peak_rss_note='resource.getrusage(RUSAGE_CHILDREN).ru_maxrss of the data_prep '
                             'subprocess, read by a small launcher process that started it',
               command=' '.join(shlex.quote(x) for x in cmd[1:]).replace(tmp, '$TMP'))
    if code:
        out['stderr_tail'] = r.stderr[-2000:]
    return out


_LAUNCHER = """import resource, subprocess, sys, time
t0 = time.time()
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)
print(f'{time.time() - t0:.3f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss} {r.returncode}')
"""


# ------------------------------------------------------------------------------ report
def markdown(rep: dict) -> str:
    d = rep['device']
    lines = [f"# Benchmarks: {d['device_kind']} ({d['platform']})", '',
             f"- date: {rep['date']}", f"- command: `{rep['command']}`",
             f"- jax {d['jax_version']}, jaxlib {d['jaxlib_version']}, flax {d['flax_version']}, "
             f"python {d['python']}, {d['cpu_count']} CPUs",
             f"- load average (1, 5, 15 min) before: {fmt_load(rep['load_average_before'])}, "
             f"after: {fmt_load(rep['load_average_after'])}",
             f"- wall: {rep['wall_s']:.0f} s; ratios are ours / peer from this run (> 1: ours "
             'faster)', '']
    if rep.get('skipped'):
        lines += ['Skipped: ' + '; '.join(rep['skipped']), '']
    tr = rep['groups'].get('train') or {}
    if tr:
        lines += ['## Training (examples/s; FLOPs of one step by XLA cost analysis, peer by '
                  'torch FlopCounterMode)', '',
                  '| size / dtype | case | examples/s | step ms (p10-p90) | GFLOP/step | TFLOP/s | '
                  'ours / peer |', '|---|---|---|---|---|---|---|']
        for key, g in tr.items():
            for name, r in g['cases'].items():
                ratio = g['ratios'].get(name) if isinstance(g['ratios'].get(name), float) else None
                lines.append(f"| {key} ({g['items']} items, width {g['width']}) | {name} | "
                             f"{r['rate']:.1f} | {ms(r['call_ms'])} | {gf(r['flops'])} | "
                             f"{tf(r['tflops_per_s'])} | {'' if ratio is None else f'{ratio:.2f}'} |")
        lines.append('')
    ge = rep['groups'].get('generate') or {}
    for size, g in ge.items():
        lines += [f"## Generation, {size} ({g['items']} items, width {g['width']}, "
                  f"{g['users_per_call']} users a call, T {rep['config']['T']}; users/s)", '',
                  '| strategy / space | case | users/s | call ms (p10-p90) | lists valid | '
                  'ours / peer |', '|---|---|---|---|---|---|']
        for key, r in g['results'].items():
            for name, c in r['cases'].items():
                ratio = r['ratios'].get(name) if isinstance(r['ratios'].get(name), float) else None
                lines.append(f"| {key} | {name} | {c['rate']:.1f} | {ms(c['call_ms'])} | "
                             f"{c['lists_valid']} | {'' if ratio is None else f'{ratio:.2f}'} |")
        lines.append('')
    ev = rep['groups'].get('eval') or {}
    if ev:
        o, p, rt = ev['ours'], ev['peer'], ev['ratios']
        lines += ['## Full-ranking evaluation (SASRec, bench_sasrec)', '',
                  f"ours {o['eval_users_per_s']:.0f} users/s"]
        if 'skipped' not in p:
            lines[-1] += (f", pmixer per-user loop {p['eval_per_user_users_per_s']:.0f}, batched torch "
                          f"{p['eval_batched_users_per_s']:.0f}; ratios "
                          f"{rt['eval_users_per_s_vs_per_user_loop']:.2f} / "
                          f"{rt['eval_users_per_s_vs_batched_torch']:.2f}")
        lines.append('')
    ao = rep['groups'].get('aos4rec') or {}
    if ao:
        lines += ['## AOS4Rec steps / one MLE step (bench_aos4rec)', '',
                  '| model | oracle step | critic update | SSRGAN round |', '|---|---|---|---|']
        for m, r in ao['results'].items():
            lines.append(f"| {m} | {r['oracle']['ratio_to_mle']:.2f}x | "
                         f"{r['critic']['ratio_to_mle']:.2f}x | {r['gan']['ratio_to_mle']:.2f}x |")
        lines.append('')
    dp = rep['groups'].get('data_prep') or {}
    if dp:
        lines += ['## data_prep on a synthetic ratings.csv', '',
                  f"{dp['rows']:,} rows, {dp['users']:,} users, {dp['items']:,} items "
                  f"({dp['csv_mb']:.0f} MB): {dp['wall_s']:.1f} s, peak {dp['peak_rss_gb']:.2f} GB "
                  f"(exit {dp['returncode']})", '']
    return '\n'.join(lines)


def fmt_load(x):
    return ', '.join(f'{v:.2f}' for v in x)


def ms(s):
    return f"{s['median']:.1f} ({s['p10']:.1f}-{s['p90']:.1f})"


def gf(x):
    return '' if x is None else f'{x / 1e9:.2f}'


def tf(x):
    return '' if x is None else f'{x:.4f}'


def main(argv=None) -> dict:
    a = parse_args(argv)
    budget = Budget(a.budget_s)
    load_before = os.getloadavg()
    dev = device_info()
    device_name = 'cpu' if dev['platform'] == 'cpu' else \
        dev['device_kind'].lower().replace(' ', '_').replace('nvidia_', '')
    out_dir = a.out_dir or os.path.join(ROOT, 'docs', 'results', f'bench_{device_name}')
    log(f"{dev['platform']} ({dev['device_kind']}), jax {dev['jax_version']}, load "
        f"{load_before[0]:.2f}, out {out_dir}")
    groups: dict[str, Any] = {}
    runners = {'train': lambda: train_group(a, dev, budget),
               'generate': lambda: generate_group(a, dev, budget),
               'eval': lambda: eval_group(a, budget),
               'aos4rec': lambda: aos4rec_group(a, budget),
               'data_prep': lambda: data_prep_group(a, budget)}
    for g in a.groups:
        t0 = time.time()
        log(f'group {g}')
        groups[g] = runners[g]()
        log(f'group {g} done in {time.time() - t0:.0f}s')
    rep = {'date': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
           'command': 'python -m benchmarks ' + ' '.join(sys.argv[1:] if argv is None else argv),
           'device': dev, 'device_name': device_name,
           'host': platform.node(),
           'load_average_before': list(load_before), 'load_average_after': list(os.getloadavg()),
           'config': {k: v for k, v in vars(a).items()},
           'timing': 'per case: --warmup untimed calls (the first compiles), then --steps timed '
                     'calls each ending with a device sync, interleaved with the other cases of '
                     'its group in --rounds rounds; rates from the median call',
           'flops_note': "XLA cost analysis counts a while loop's body once (lax.scan: the GRU "
                         'encoder and decoder recurrences), so the GRU figures are lower bounds',
           'groups': groups, 'skipped': budget.skipped, 'wall_s': budget.elapsed()}
    os.makedirs(out_dir, exist_ok=True)
    write_json_atomic(os.path.join(out_dir, 'report.json'), rep)
    write_text_atomic(os.path.join(out_dir, 'report.md'), markdown(rep) + '\n')
    log(f'wrote {out_dir}/report.json and report.md in {budget.elapsed():.0f}s')
    return rep
