"""SASRec training and full-ranking evaluation throughput: ours (JAX) against PyTorch SASRec.

    python -m benchmarks.bench_sasrec --out results.json \
        [--items 18357 --maxlen 50 --dim 64 --blocks 2 --heads 1 --batch 128 --eval-batch 1024 \
         --per-user-users 256 --steps 10 --warmup 2 --rounds 2 --peer auto|on|off]

What is timed (steady state only: every callable is called `--warmup` times first, the first
call compiling; then each timed call ends with a device sync, `block_until_ready` / torch sync):

* ours, training: the SASRec method's train step exactly as the trainer runs it:
  `methods.build(config, ds).phases(mesh)[0].step_fn` jitted with the trainer's shardings
  (`trainer.sharded_init`, donated state), batches drawn on device from `ds.device_data()`
  (`data.sample_user_sequences`, one sampled negative a position, BCE, Adam).
  sequences/s = batch / step time.
* ours, evaluation: what `evaluation.Evaluator` runs for one batch of the full protocol, less
  the metrics: `data.history_ban_mask` (each user's whole history) and `method.generate_fn()`
  (decode.strategy 'topk': [B, L] -> [B, V] scores -> top-10 of the allowed items) in one jit.
  users/s = eval batch / call time.
* peer (benchmarks/peer_sasrec_torch.py): pmixer/SASRec.pytorch's model, training step and
  evaluation loop (one `model.predict` call per user, over all items), and the same evaluation
  batched in torch.

The data set is a prepared `data.Dataset` (data_prep.build_dataset, protocol 'loo', history_len =
maxlen) over random users and items made in memory: every one of the `--items` items occurs.
Both stacks see the same histories and ban the same items.

Timed calls of all cases are interleaved in `--rounds` rounds, so a change of machine load
during the run hits every case alike and the ratios (ours / peer, written in the same JSON)
stay comparable. Progress goes to stderr; the JSON is written atomically.
"""
from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import sys
import time
from typing import Any

# JAX must not grab 75 % of the GPU memory up front: torch runs in the same process.
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

import jax  # noqa: E402
import numpy as np  # noqa: E402

import data_prep  # noqa: E402
from aos4rec_jax import data as data_lib  # noqa: E402
from aos4rec_jax import methods  # noqa: E402
from aos4rec_jax import sharding as shard_lib  # noqa: E402
from aos4rec_jax import trainer  # noqa: E402
from benchmarks import peer_sasrec_torch  # noqa: E402
from benchmarks.bench_seq2seq import Case, device_info, log, stats_ms, write_json_atomic  # noqa: E402
from experiments.configs import sasrec as sasrec_cfg  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--out', required=True, help='JSON file to write')
    p.add_argument('--items', type=int, default=18357, help='item count N (Amazon Sports: 18357)')
    p.add_argument('--maxlen', type=int, default=50, help='sequence length L (history_len)')
    p.add_argument('--dim', type=int, default=64, help='embedding size d')
    p.add_argument('--blocks', type=int, default=2, help='self-attention blocks')
    p.add_argument('--heads', type=int, default=1, help='attention heads')
    p.add_argument('--dropout', type=float, default=0.5)
    p.add_argument('--batch', type=int, default=128, help='training batch size (sequences)')
    p.add_argument('--eval-batch', type=int, default=1024,
                   help='users per evaluation call (ours, and the batched torch peer)')
    p.add_argument('--per-user-users', type=int, default=256,
                   help="users per call of the peer's one-call-per-user loop (normalised to users/s)")
    p.add_argument('--users', type=int, default=2048, help='synthetic users (>= --eval-batch)')
    p.add_argument('--steps', type=int, default=10, help='timed calls per case')
    p.add_argument('--warmup', type=int, default=2, help='untimed calls first (the first compiles)')
    p.add_argument('--rounds', type=int, default=2, help='timed calls are interleaved over cases '
                   'in this many rounds')
    p.add_argument('--peer', choices=('auto', 'on', 'off'), default='auto',
                   help='auto: run the torch peer when torch imports')
    p.add_argument('--matmul-precision', choices=('default', 'highest'), default='default',
                   help="float32 matmuls on GPU: 'default' = TF32 on both stacks (JAX's default), "
                        "'highest' = full fp32 on both")
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    for f in ('items', 'maxlen', 'dim', 'blocks', 'heads', 'batch', 'eval_batch', 'per_user_users',
              'users', 'steps', 'rounds'):
        if getattr(args, f) < 1:
            p.error(f'--{f.replace("_", "-")} must be >= 1')
    if args.warmup < 1:
        p.error('--warmup must be >= 1 (the first call compiles)')
    if args.dim % args.heads:
        p.error('--dim must be a multiple of --heads')
    if args.users < max(args.eval_batch, args.per_user_users):
        p.error('--users must be >= --eval-batch and >= --per-user-users')
    if args.items < 11:
        p.error('--items must be >= 11 (top-10 lists)')
    return args


# ------------------------------------------------------------------------------ data
def synthetic_dataset(args, rng: np.random.Generator) -> data_lib.Dataset:
    """A prepared loo dataset of random sequences in which every item occurs (k-core 1)."""
    L = args.maxlen
    lens = rng.integers(L + 3, 2 * L + 4, size=args.users)           # full windows, loo split
    total = int(lens.sum())
    items = rng.integers(1, args.items + 1, size=total)
    head = rng.permutation(args.items)[:min(args.items, total)] + 1     # every item at least once
    items[:head.size] = head
    users = np.repeat(np.arange(args.users), lens)
    times = np.concatenate([np.arange(n) for n in lens])
    settings = data_prep.settings_for('default', 'loo', k_core=1, min_len=3, history_len=L,
                                      ban_history=True, seed=args.seed)
    ds = data_lib.Dataset(data_prep.build_dataset(users, items, times, settings))
    assert ds.info.num_items == args.items, (ds.info.num_items, args.items)
    return ds


def run_config(args):
    c = sasrec_cfg.get_config()
    c.seed = args.seed
    c.batch_size = args.batch
    c.eval_batch_size = args.eval_batch
    c.model_kwargs.embed_dim = args.dim
    c.model_kwargs.num_layers = args.blocks
    c.model_kwargs.num_heads = args.heads
    c.model_kwargs.dropout_rate = args.dropout
    return c


def whole_histories(ds: data_lib.Dataset, es: data_lib.EvalSet) -> list[np.ndarray]:
    """Every evaluated user's whole history (the items `history_ban_mask` bans), item ids."""
    items = ds.prepared.items_flat
    return [np.asarray(items[s:s + n], np.int64) for s, n in zip(es.hist_start, es.hist_len)]


def lists_valid(lists: np.ndarray, banned: list[np.ndarray], k: int) -> bool:
    """Every row: k distinct item ids in 1..N, none of them in the user's history."""
    return all(len(r) == k and (r > 0).all() and len(set(r.tolist())) == k
               and not set(r.tolist()) & set(b.tolist()) for r, b in zip(lists, banned))


# ------------------------------------------------------------------------------ our cases
def our_cases(args, ds: data_lib.Dataset, es: data_lib.EvalSet):
    config = run_config(args)
    method = methods.build(config, ds)
    mesh = shard_lib.make_mesh(jax.devices()[:1])
    repl = shard_lib.replicated(mesh)
    phases = method.phases(mesh)
    init_fn, abstract, shardings, rng = trainer.sharded_init(method.init_state, config, mesh)
    step = jax.jit(phases[0].step_fn, in_shardings=(shardings, repl),
                   out_shardings=(shardings, repl), donate_argnums=0)
    data = ds.device_data(repl)
    holder = {'state': init_fn(rng)}
    n_params = int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(abstract['params'])))

    def train_once():
        holder['state'], m = step(holder['state'], data)
        jax.block_until_ready((holder['state'], m))

    info = ds.info
    gen = method.generate_fn()
    max_hist = ds.max_history

    @jax.jit
    def eval_fn(params, b):
        # evaluation.Evaluator's batch: the whole history banned, full protocol (no candidates)
        banned = data_lib.history_ban_mask(data.items, b['hist_start'], b['hist_len'], max_hist,
                                           info.vocab_size)
        batch = dict(history=b['history'], target=b['target'], candidates=None, banned=banned,
                     users=b['users'])
        return gen(params, batch, None)[1]

    b = jax.device_put({'history': es.history, 'target': es.target, 'hist_start': es.hist_start,
                        'hist_len': es.hist_len, 'users': es.users.astype(np.int32)}, repl)

    def eval_once():
        return jax.block_until_ready(eval_fn(holder['state']['params'], b))

    train = Case('ours/train', train_once, args.batch)
    evaluate = Case('ours/eval', eval_once, len(es))
    facts = {'num_params': n_params, 'method': type(method).__name__,
             'model_config': {k: (str(v) if k == 'dtype' else v)
                              for k, v in method.model.cfg.__dict__.items()},
             'loss': str(method.opts.loss), 'decode': method.decode_description()}
    return train, evaluate, facts, holder


def peer_batches(ds: data_lib.Dataset, args, rng: np.random.Generator, n: int = 4):
    """pmixer's sampler output for `n` batches: (u, seq, pos, neg) numpy, [B, L] each, drawn like
    `data.sample_user_sequences` (each user's last L + 1 train items), one negative a position
    (uniform, not in the user's train items, 0 where pos is 0)."""
    p, L, N = ds.prepared, args.maxlen, args.items
    out = []
    for _ in range(n):
        u = rng.integers(0, len(p.n_train), size=args.batch)
        seq = np.zeros((args.batch, L), np.int32)
        pos = np.zeros((args.batch, L), np.int32)
        for r, user in enumerate(u):
            train = p.items_flat[p.offsets[user]:p.offsets[user] + p.n_train[user]]
            tail = train[-(L + 1):]
            seq[r, L - len(tail) + 1:] = tail[:-1]
            pos[r, L - len(tail) + 1:] = tail[1:]
        neg = rng.integers(1, N + 1, size=(args.batch, L)).astype(np.int32)
        neg = np.where(pos != 0, neg, 0)
        out.append((u, seq, pos, neg))
    return out


# ------------------------------------------------------------------------------ main
def main(argv=None) -> dict:
    args = parse_args(argv)
    if hasattr(faulthandler, 'register'):     # `kill -USR1 PID` prints every thread's stack
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    if args.matmul_precision == 'highest':
        jax.config.update('jax_default_matmul_precision', 'highest')
    t_start = time.time()
    load_start = os.getloadavg()
    dev = device_info()
    log(f'{dev["platform"]} ({dev["device_kind"]}), jax {dev["jax_version"]}, '
        f'{dev["cpu_count"]} CPUs, load average {load_start[0]:.2f}')
    rng = np.random.default_rng(args.seed)
    ds = synthetic_dataset(args, rng)
    es = ds.eval_set('test', max_users=args.eval_batch)
    assert len(es) == args.eval_batch, (len(es), args.eval_batch)
    banned = whole_histories(ds, es)
    K = ds.info.k
    log(f'data: {ds.info.num_users} users, {ds.info.num_items} items, '
        f'{len(ds.prepared.items_flat)} interactions, eval batch {len(es)}, K {K}')

    log('building ours/sasrec')
    train, evaluate, facts, holder = our_cases(args, ds, es)
    train.warm(args.warmup)
    evaluate.warm(args.warmup)
    ours_lists = np.asarray(evaluate.fn())
    facts['lists_valid'] = lists_valid(ours_lists, banned, K)
    cases = [train, evaluate]

    peer_result: dict[str, Any]
    peer = None
    if args.peer == 'off':
        peer_result = {'skipped': '--peer off'}
    else:
        ok, why = peer_sasrec_torch.availability()
        if not ok and args.peer == 'on':
            raise SystemExit(f'--peer on but {why}')
        if not ok:
            peer_result = {'skipped': why}
            log(f'peer skipped: {why}')
        else:
            import torch
            device = 'cuda' if dev['platform'] == 'gpu' and torch.cuda.is_available() else 'cpu'
            log(f'building peer SASRec (pmixer) on {device} ({why})')
            peer = peer_sasrec_torch.PeerSASRec(
                num_items=args.items, embed_dim=args.dim, maxlen=args.maxlen,
                num_blocks=args.blocks, num_heads=args.heads, dropout=args.dropout, lr=1e-3,
                k=K, device=device, matmul_precision=args.matmul_precision, seed=args.seed)
            pu = args.per_user_users
            p_train = Case('peer/train', peer.train_step_fn(peer_batches(ds, args, rng)), args.batch)
            p_user = Case('peer/eval_per_user', peer.eval_per_user_fn(es.history[:pu], banned[:pu]), pu)
            p_batch = Case('peer/eval_batched', peer.eval_batched_fn(es.history, banned), len(es))
            for c in (p_train, p_user, p_batch):
                c.warm(args.warmup)
            lists_u = p_user.fn().cpu().numpy()
            lists_b = p_batch.fn().cpu().numpy()
            peer_result = dict(peer.info,
                               lists_valid_per_user=lists_valid(lists_u, banned[:pu], K),
                               lists_valid_batched=lists_valid(lists_b, banned, K),
                               per_user_equals_batched=float(np.mean(
                                   [set(a.tolist()) == set(b.tolist())
                                    for a, b in zip(lists_u, lists_b[:pu])])))
            cases += [p_train, p_user, p_batch]

    per_round = [args.steps // args.rounds + (r < args.steps % args.rounds)
                 for r in range(args.rounds)]
    for r, n in enumerate(per_round):
        log(f'round {r + 1}/{args.rounds}: {n} timed calls per case, load average '
            f'{os.getloadavg()[0]:.2f}')
        for c in cases:
            c.run(n)
            log(f'  {c.name}: median {np.median(c.times) * 1e3:.1f} ms over {len(c.times)} calls')

    ours_out = {'train_sequences_per_s': train.rate(), 'eval_users_per_s': evaluate.rate(),
                'train_step_ms': stats_ms(train.times), 'eval_batch_ms': stats_ms(evaluate.times),
                'eval_batch_users': len(es), 'train_compile_s': train.first_call_s,
                'eval_compile_s': evaluate.first_call_s, **facts}
    ratios: dict[str, Any]
    if peer is not None:
        peer_result.update({
            'train_sequences_per_s': p_train.rate(),
            'eval_per_user_users_per_s': p_user.rate(),
            'eval_batched_users_per_s': p_batch.rate(),
            'train_step_ms': stats_ms(p_train.times),
            'eval_per_user_call_ms': stats_ms(p_user.times),
            'eval_per_user_call_users': args.per_user_users,
            'eval_batched_call_ms': stats_ms(p_batch.times),
            'eval_batched_call_users': len(es),
            'train_first_call_s': p_train.first_call_s,
            'eval_per_user_first_call_s': p_user.first_call_s,
            'eval_batched_first_call_s': p_batch.first_call_s})
        ratios = {
            'definition': 'ours / peer (> 1: ours faster), medians of the same run',
            'train_sequences_per_s': ours_out['train_sequences_per_s'] / peer_result['train_sequences_per_s'],
            'eval_users_per_s_vs_per_user_loop':
                ours_out['eval_users_per_s'] / peer_result['eval_per_user_users_per_s'],
            'eval_users_per_s_vs_batched_torch':
                ours_out['eval_users_per_s'] / peer_result['eval_batched_users_per_s'],
            'fastest_call': {
                'definition': 'the same ratios from each case\'s fastest timed call (less '
                              'sensitive to load spikes on a shared machine)',
                'train_sequences_per_s': min(p_train.times) / min(train.times),
                'eval_users_per_s_vs_per_user_loop':
                    (len(es) / min(evaluate.times)) / (p_user.units / min(p_user.times)),
                'eval_users_per_s_vs_batched_torch': min(p_batch.times) / min(evaluate.times)}}
    else:
        ratios = {'skipped': peer_result['skipped']}

    load_end = os.getloadavg()
    config = {k: v for k, v in vars(args).items() if k != 'out'}
    config.update({'vocab_size': args.items + 1, 'k': K, 'num_users': ds.info.num_users,
                   'interactions': int(len(ds.prepared.items_flat)),
                   'timing': 'median of --steps timed calls after --warmup untimed calls; each '
                             'call ends with a device sync; calls of all cases interleaved in '
                             '--rounds rounds',
                   'data': "synthetic: uniform random item ids, made in memory, prepared with "
                           "data_prep.build_dataset (protocol 'loo', k-core 1, history banned)"})
    result = {'device': dict(dev, load_average_start=list(load_start),
                             load_average_end=list(load_end)),
              'config': config, 'ours': ours_out, 'peer': peer_result, 'ratios': ratios,
              'wall_s': time.time() - t_start,
              'command': 'python -m benchmarks.bench_sasrec ' + ' '.join(
                  sys.argv[1:] if argv is None else argv)}
    write_json_atomic(args.out, result)
    log(f'wrote {args.out} in {time.time() - t_start:.0f}s')
    log(f'ours/sasrec: train {ours_out["train_sequences_per_s"]:.0f} seq/s, eval '
        f'{ours_out["eval_users_per_s"]:.0f} users/s')
    if peer is not None:
        log(f'peer/sasrec: train {peer_result["train_sequences_per_s"]:.0f} seq/s, eval per-user '
            f'{peer_result["eval_per_user_users_per_s"]:.0f} users/s, eval batched '
            f'{peer_result["eval_batched_users_per_s"]:.0f} users/s')
        log(f'ratios ours/peer: train {ratios["train_sequences_per_s"]:.2f}, eval vs per-user '
            f'{ratios["eval_users_per_s_vs_per_user_loop"]:.2f}, eval vs batched '
            f'{ratios["eval_users_per_s_vs_batched_torch"]:.2f} (fastest calls: '
            + ', '.join(f'{v:.2f}' for k, v in ratios['fastest_call'].items() if k != 'definition')
            + ')')
    return result


if __name__ == '__main__':
    main()
