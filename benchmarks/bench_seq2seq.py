"""Training and beam-search throughput of our seq2seq models, and of the peer GPT-2 stack.

    python -m benchmarks.bench_seq2seq --out results.json \
        [--items 19295 --width 128 --layers 2 --history 50 --T 10 --beam 5 --batch 128 \
         --eval-batch 256 --steps 20 --warmup 3 --models transformer,gru --peer auto|on|off]

What is timed (steady state only: every callable is called `--warmup` times first, the first
call compiling; then each timed call ends with a device sync, `block_until_ready` / torch sync):

* ours, training: the trainer's jitted MLE step (`trainer.make_train_step` +
  `trainer.create_train_state`, 1-device mesh, donated state), batches drawn on device from a
  `data.DeviceData` of random sequences made in memory. examples/s = batch / step time.
* ours, beam search: the full-protocol evaluation path in one jit: `data.history_ban_mask`
  (ban the history), `init_decode_state`, `decoding.generate(strategy='beam')` over the whole
  vocabulary with `ban_generated=True`, via `seq2seq.make_step_fn` (the model's `decode_step`).
  users/s = eval batch / call time.
* peer (benchmarks/peer_gpt2.py): GPT2LMHeadModel of the same size, AdamW steps of
  `model(input_ids, labels=input_ids)` on sequences of history + T items, and
  `model.generate(num_beams=beam, max_new_tokens=T, logits_processor=[ban seen items])` on the
  same histories.

Timed calls of all cases are interleaved in `--rounds` rounds, so a change of machine load
during the run hits every case alike and the ratios (ours / peer, written in the same JSON)
stay comparable. Progress goes to stderr; the JSON is written atomically.
"""
from __future__ import annotations

import argparse
import faulthandler
import json
import os
import platform
import signal
import sys
import time
from typing import Any, Callable

# JAX must not grab 75 % of the GPU memory up front: torch runs in the same process.
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

import jax  # noqa: E402
import numpy as np  # noqa: E402

from aos4rec_jax import data as data_lib  # noqa: E402
from aos4rec_jax import decoding  # noqa: E402
from aos4rec_jax import optim  # noqa: E402
from aos4rec_jax import seq2seq  # noqa: E402
from aos4rec_jax import sharding as shard_lib  # noqa: E402
from aos4rec_jax import trainer  # noqa: E402
from benchmarks import peer_gpt2  # noqa: E402
from experiments.configs import base as base_cfg  # noqa: E402

MODELS = ('transformer', 'gru')


def log(msg: str) -> None:
    print(f'[bench {time.strftime("%H:%M:%S")}] {msg}', file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--out', required=True, help='JSON file to write')
    p.add_argument('--items', type=int, default=19295, help='item count N (ml-20m paper: 19295)')
    p.add_argument('--width', type=int, default=128, help='embedding / model width')
    p.add_argument('--layers', type=int, default=2, help='Transformer blocks per stack (peer: '
                   'GPT-2 blocks)')
    p.add_argument('--heads', type=int, default=4, help='attention heads')
    p.add_argument('--mlp', type=int, default=0, help='feed-forward width (0: 4 x width)')
    p.add_argument('--dropout', type=float, default=0.1)
    p.add_argument('--history', type=int, default=50, help='history length L')
    p.add_argument('--T', type=int, default=10, help='items generated / target length')
    p.add_argument('--beam', type=int, default=5)
    p.add_argument('--batch', type=int, default=128, help='training batch size')
    p.add_argument('--eval-batch', type=int, default=256, help='users per beam-search call')
    p.add_argument('--steps', type=int, default=20, help='timed calls per case (train steps and '
                   'beam-search batches)')
    p.add_argument('--warmup', type=int, default=3, help='untimed calls first (the first compiles)')
    p.add_argument('--rounds', type=int, default=2, help='timed calls are interleaved over cases '
                   'in this many rounds')
    p.add_argument('--models', default='transformer,gru')
    p.add_argument('--peer', choices=('auto', 'on', 'off'), default='auto',
                   help='auto: run the peer when torch + transformers import')
    p.add_argument('--dtype', choices=('float32', 'bfloat16'), default='float32',
                   help='computation dtype of ours (params stay f32); peer: torch.autocast')
    p.add_argument('--matmul-precision', choices=('default', 'highest'), default='default',
                   help="float32 matmuls on GPU: 'default' = TF32 on both stacks (JAX's default), "
                        "'highest' = full fp32 on both")
    p.add_argument('--users', type=int, default=2000, help='synthetic training users')
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(',') if m.strip()]
    bad = [m for m in args.models if m not in MODELS]
    if bad:
        p.error(f'unknown models {bad}; valid: {",".join(MODELS)}')
    if args.mlp <= 0:
        args.mlp = 4 * args.width
    for f in ('items', 'width', 'layers', 'heads', 'history', 'T', 'beam', 'batch', 'eval_batch',
              'steps', 'rounds', 'users'):
        if getattr(args, f) < 1:
            p.error(f'--{f.replace("_", "-")} must be >= 1')
    if args.warmup < 1:
        p.error('--warmup must be >= 1 (the first call compiles)')
    if args.width % args.heads:
        p.error('--width must be a multiple of --heads')
    return args


# ------------------------------------------------------------------------------ helpers
def stats_ms(seconds: list[float]) -> dict:
    a = np.asarray(seconds, np.float64) * 1e3
    return {'median': float(np.median(a)), 'p10': float(np.percentile(a, 10)),
            'p90': float(np.percentile(a, 90)), 'min': float(a.min()), 'max': float(a.max()),
            'n': int(a.size)}


class Case:
    """A callable timed in steady state; `units` = examples or users processed by one call."""

    def __init__(self, name: str, fn: Callable[[], Any], units: int):
        self.name, self.fn, self.units = name, fn, units
        self.first_call_s = None
        self.times: list[float] = []

    def warm(self, n: int) -> None:
        for i in range(n):
            t0 = time.perf_counter()
            self.fn()
            dt = time.perf_counter() - t0
            if i == 0:
                self.first_call_s = dt
        log(f'{self.name}: first call {self.first_call_s:.2f}s (jit: includes compilation), '
            f'{n} warm-up call(s) done')

    def run(self, n: int) -> None:
        for _ in range(n):
            t0 = time.perf_counter()
            self.fn()
            self.times.append(time.perf_counter() - t0)

    def rate(self) -> float:
        return self.units / float(np.median(self.times))


def write_text_atomic(path: str, text: str) -> None:
    """Writes `text` to a temporary file beside PATH, then renames it over PATH."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f'.{os.path.basename(path)}.tmp-{os.getpid()}')
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)


def write_json_atomic(path: str, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + '\n')


def device_info() -> dict:
    d = jax.devices()[0]
    import flax
    import optax
    return {'platform': d.platform, 'device_kind': d.device_kind, 'num_devices': jax.device_count(),
            'jax_version': jax.__version__, 'jaxlib_version': __import__('jaxlib').__version__,
            'flax_version': flax.__version__, 'optax_version': optax.__version__,
            'numpy_version': np.__version__, 'python': platform.python_version(),
            'machine': platform.machine(), 'cpu_count': os.cpu_count(),
            'matmul_precision': jax.config.jax_default_matmul_precision or 'default',
            'xla_python_client_preallocate': os.environ.get('XLA_PYTHON_CLIENT_PREALLOCATE')}


def xla_flops(compiled) -> float | None:
    """FLOPs of one call of a compiled executable by XLA's cost analysis (None if unavailable).
    A while loop's body (lax.scan, fori_loop) is counted once, not once per iteration."""
    try:
        ca = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return None
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else {}
    flops = (ca or {}).get('flops')
    return float(flops) if flops is not None and flops >= 0 else None


# ------------------------------------------------------------------------------ synthetic data
def synthetic_data(args, rng: np.random.Generator):
    """Random packed sequences (train parts only) + DataInfo + eval histories [E, L] (no files)."""
    L, T, N = args.history, args.T, args.items
    lens = rng.integers(L + T + 1, 2 * (L + T) + 1, size=args.users)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    items = rng.integers(1, N + 1, size=int(offsets[-1]), dtype=np.int64)
    windows = np.maximum(lens - 1, 0)
    window_cum = np.concatenate([[0], np.cumsum(windows)]).astype(np.int64)
    dev = data_lib.DeviceData(items=np.asarray(items, np.int32), offsets=offsets.astype(np.int32),
                              n_train=lens.astype(np.int32), window_cum=window_cum.astype(np.int32))
    info = data_lib.DataInfo(num_items=N, num_users=args.users, k=T, target_len=T, history_len=L,
                             ban_history=True, num_candidates=0, num_windows=int(window_cum[-1]),
                             profile='bench', protocol='paper')
    # Evaluation users: full histories of L items (the peer's prompts are the same arrays).
    histories = rng.integers(1, N + 1, size=(args.eval_batch, L)).astype(np.int32)
    # Peer training sequences: history + T items each.
    peer_train = rng.integers(1, N + 1, size=(args.batch, L + T)).astype(np.int64)
    return dev, info, histories, peer_train


def run_config(args, model_name: str):
    c = base_cfg.get_config()
    c.model = model_name
    c.seed = args.seed
    c.batch_size = args.batch
    c.eval_batch_size = args.eval_batch
    c.decode.strategy = 'beam'
    c.decode.beam_size = args.beam
    c.decode.ban_generated = True
    c.model_kwargs.embed_dim = args.width
    c.model_kwargs.hidden_dim = args.width
    c.model_kwargs.num_layers = args.layers
    c.model_kwargs.num_heads = args.heads
    c.model_kwargs.mlp_dim = args.mlp
    c.model_kwargs.dropout_rate = args.dropout
    c.compute_dtype = args.dtype
    c.loss_chunk = int(getattr(args, 'loss_chunk', 0))
    return c


# ------------------------------------------------------------------------------ our cases
def jitted_train_step(config, info, mesh):
    """The trainer's MLE step for `config` over `mesh`: (model, the step jitted with the state's
    shardings and donation, the initial state laid out on the mesh, the abstract state)."""
    model = seq2seq.build_model(config, info)
    repl = shard_lib.replicated(mesh)
    tx = optim.make_optimizer(config)
    init_fn, abstract, shardings, rng = trainer.create_train_state(config, model, tx, info, mesh)
    step = jax.jit(
        trainer.make_train_step(model, tx, info, config.batch_size, shard_lib.batch_sharding(mesh),
                                int(config.loss_chunk)),
        in_shardings=(shardings, repl), out_shardings=(shardings, repl), donate_argnums=0)
    return model, step, init_fn(rng), abstract


def our_cases(args, model_name: str, dev_np, info, histories_np):
    """(train Case, beam Case, facts) for one of our models."""
    config = run_config(args, model_name)
    mesh = shard_lib.make_mesh(jax.devices()[:1])
    repl = shard_lib.replicated(mesh)
    model, train_step, state, abstract = jitted_train_step(config, info, mesh)
    data = jax.device_put(dev_np, repl)
    holder = {'state': state}
    n_params = int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(abstract['params'])))
    # Compiled once here (the first timed-warm-up call then runs it): XLA's cost analysis of the
    # very executable that is timed gives the FLOPs of one step.
    t0 = time.perf_counter()
    train_step = train_step.lower(holder['state'], data).compile()
    compile_s = time.perf_counter() - t0

    def train_once():
        holder['state'], m = train_step(holder['state'], data)
        jax.block_until_ready((holder['state'], m))

    # Beam search as the evaluation runs it for the full protocol (history banned).
    L, T, V = info.history_len, info.k, info.vocab_size
    hist_flat = jax.device_put(np.asarray(histories_np, np.int32).reshape(-1))
    hist_start = jax.device_put(np.arange(args.eval_batch, dtype=np.int32) * L)
    hist_len = jax.device_put(np.full((args.eval_batch,), L, np.int32))
    histories = jax.device_put(np.asarray(histories_np, np.int32))

    @jax.jit
    def beam_fn(params, history, flat, start, length):
        banned = data_lib.history_ban_mask(flat, start, length, L, V)
        state = model.apply({'params': params}, history, T, method=model.init_decode_state)
        return decoding.generate(seq2seq.make_step_fn(model, params), state, None, strategy='beam',
                                 batch_size=history.shape[0], vocab_size=V, bos_id=info.bos_id, k=T,
                                 beam_size=args.beam, candidates=None, banned=banned,
                                 ban_generated=True)

    def beam_once():
        out = beam_fn(holder['state']['params'], histories, hist_flat, hist_start, hist_len)
        return jax.block_until_ready(out)

    train = Case(f'ours/{model_name}/train', train_once, args.batch)
    beam = Case(f'ours/{model_name}/beam', beam_once, args.eval_batch)
    try:        # XLA's temporary buffers of the compiled step (the logits, or the loss's blocks)
        temp_mb = train_step.memory_analysis().temp_size_in_bytes / 2**20
    except Exception:       # a backend without the analysis
        temp_mb = None
    facts = {'num_params': n_params, 'train_flops': xla_flops(train_step),
             'train_compile_s': compile_s, 'train_temp_mb': temp_mb, 'model': model, 'params': lambda: holder['state']['params'],
             'model_config': {k: (str(v) if k == 'dtype' else v)
                              for k, v in model.cfg.__dict__.items()},
             'check': beam_once}
    return train, beam, facts


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
    dev_np, info, histories, peer_train = synthetic_data(args, rng)

    cases: list[Case] = []
    ours: dict[str, dict] = {}
    for name in args.models:
        log(f'building ours/{name}')
        train, beam, facts = our_cases(args, name, dev_np, info, histories)
        train.warm(args.warmup)
        beam.warm(args.warmup)
        seqs = np.asarray(facts.pop('check')())
        assert seqs.shape == (args.eval_batch, args.T), seqs.shape
        # Every list is distinct and avoids the history (the ban is in force).
        ok = all(len(set(r[r > 0])) == int((r > 0).sum()) and not set(r) & set(h)
                 for r, h in zip(seqs, histories))
        for key in ('model', 'params'):
            facts.pop(key)
        ours[name] = dict(facts, _train=train, _beam=beam, lists_valid=bool(ok))
        cases += [train, beam]

    peer_result: dict[str, Any]
    peer = None
    if args.peer == 'off':
        peer_result = {'skipped': '--peer off'}
    else:
        ok, why = peer_gpt2.availability()
        if not ok and args.peer == 'on':
            raise SystemExit(f'--peer on but {why}')
        if not ok:
            peer_result = {'skipped': why}
            log(f'peer skipped: {why}')
        else:
            import torch
            device = 'cuda' if dev['platform'] == 'gpu' and torch.cuda.is_available() else 'cpu'
            log(f'building peer GPT-2 on {device} ({why})')
            peer = peer_gpt2.PeerGPT2(
                num_items=args.items, width=args.width, layers=args.layers, heads=args.heads,
                mlp_dim=args.mlp, dropout=args.dropout, history=args.history, T=args.T, beam=args.beam,
                lr=1e-3, dtype=args.dtype, matmul_precision=args.matmul_precision, device=device,
                seed=args.seed)
            p_train = Case('peer/gpt2/train', peer.train_step_fn(peer_train), args.batch)
            p_beam = Case('peer/gpt2/beam', peer.generate_fn(histories), args.eval_batch)
            p_train.warm(args.warmup)
            p_beam.warm(args.warmup)
            gen = p_beam.fn().cpu().numpy()
            p_ok = all(len(set(r)) == len(r) and not set(r) & set(h) for r, h in zip(gen, histories))
            peer_result = dict(peer.info, lists_valid=bool(p_ok))
            cases += [p_train, p_beam]

    per_round = [args.steps // args.rounds + (r < args.steps % args.rounds)
                 for r in range(args.rounds)]
    for r, n in enumerate(per_round):
        log(f'round {r + 1}/{args.rounds}: {n} timed calls per case, load average '
            f'{os.getloadavg()[0]:.2f}')
        for c in cases:
            c.run(n)
            log(f'  {c.name}: median {np.median(c.times) * 1e3:.1f} ms over {len(c.times)} calls')

    ours_out = {}
    for name, o in ours.items():
        tr, bm = o.pop('_train'), o.pop('_beam')
        ours_out[name] = {'train_examples_per_s': tr.rate(), 'beam_users_per_s': bm.rate(),
                          'train_step_ms': stats_ms(tr.times), 'beam_batch_ms': stats_ms(bm.times),
                          'train_compile_s': tr.first_call_s, 'beam_compile_s': bm.first_call_s,
                          **o}
    ratios: dict[str, Any]
    if peer is not None:
        peer_result.update({'train_examples_per_s': p_train.rate(),
                            'beam_users_per_s': p_beam.rate(),
                            'train_step_ms': stats_ms(p_train.times),
                            'beam_batch_ms': stats_ms(p_beam.times),
                            'train_first_call_s': p_train.first_call_s,
                            'beam_first_call_s': p_beam.first_call_s})
        ratios = {'definition': 'ours / peer (> 1: ours faster), medians of the same run'}
        for name, o in ours_out.items():
            ratios[name] = {
                'train_examples_per_s': o['train_examples_per_s'] / peer_result['train_examples_per_s'],
                'beam_users_per_s': o['beam_users_per_s'] / peer_result['beam_users_per_s']}
    else:
        ratios = {'skipped': peer_result['skipped']}

    load_end = os.getloadavg()
    config = {k: v for k, v in vars(args).items() if k != 'out'}
    config.update({'vocab_size': args.items + 1, 'train_sequence_len': args.history + args.T,
                   'timing': 'median of --steps timed calls after --warmup untimed calls; each '
                             'call ends with a device sync; calls of all cases interleaved in '
                             '--rounds rounds',
                   'data': 'synthetic: uniform random item ids, made in memory'})
    result = {'device': dict(dev, load_average_start=list(load_start),
                             load_average_end=list(load_end)),
              'config': config, 'ours': ours_out, 'peer': peer_result, 'ratios': ratios,
              'wall_s': time.time() - t_start,
              'command': 'python -m benchmarks.bench_seq2seq ' + ' '.join(
                  sys.argv[1:] if argv is None else argv)}
    write_json_atomic(args.out, result)
    log(f'wrote {args.out} in {time.time() - t_start:.0f}s')
    for name, o in ours_out.items():
        log(f'ours/{name}: train {o["train_examples_per_s"]:.0f} ex/s, beam '
            f'{o["beam_users_per_s"]:.1f} users/s')
    if peer is not None:
        log(f'peer/gpt2: train {peer_result["train_examples_per_s"]:.0f} ex/s, beam '
            f'{peer_result["beam_users_per_s"]:.1f} users/s')
    return result


if __name__ == '__main__':
    main()
