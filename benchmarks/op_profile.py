"""Where a jitted step spends its time: XLA operations from a jax.profiler trace, per call.

    python -m benchmarks.op_profile --out docs/results/op_profile_cpu.json \
        --cases mle,oracle,critic,gan --models transformer --calls 3 --top 12 \
        -- --width 64 --layers 1 --mlp 256
    python -m benchmarks.op_profile --out /tmp/beam.json --cases beam --models transformer,gpt

The cases `beam` and `greedy` profile the benchmark suite's generation jit instead
(`generation_case`: all items, 256 users, T = 10, beam 5, at `--gen-size`, default ml20m;
models transformer, gru, gpt), with the scopes init_decode_state / decode_step / other (the
decoder's bookkeeping).

The steps are those of ``benchmarks/bench_aos4rec.py`` (the trainer's jit: shardings, donated
state; the arguments after ``--`` are bench_aos4rec's size and option flags). Each case is
called once (compilation), then ``--calls`` times under ``jax.profiler.trace``. The trace is
read back with ``jax.profiler.ProfileData``; an event counts when its name is an instruction of
the compiled program (``compiled.as_text()``), so runtime bookkeeping is left out, and when it
is not control flow (a while loop's event encloses its body's). Each
instruction carries its JAX ``op_name``, from which come:
  scope      the innermost ``jax.named_scope`` of the program that names the instruction
             (``SCOPES``: oracle_beam, generate_lists, critic_loss, gradient_penalty,
             generator_loss, mle_loss, optimizer; ``other`` where none does)
  direction  ``backward`` where the op_name holds ``transpose(`` (the reverse pass of
             autodiff), else ``forward``
Written per case: the wall time of a call, the operation time of a call summed over the
threads that ran it (a CPU runs several operations at once, so it can exceed the wall time; on
a GPU, the kernels' time), that time by scope and direction, and the ``--top`` operations with
their HLO opcode (fusion kind), scope, share and op_name. ``--trace-dir`` keeps the raw traces
(TensorBoard / Perfetto).

Use it to find what bounds a step before changing it (docs/benchmarks.md quotes it). On a CPU
the flag ``--xla_cpu_enable_xprof_traceme=true`` is added to XLA_FLAGS before the backend
starts (``enable()``); without it the CPU emits no per-operation events.
"""
from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time

SCOPES = ('oracle_beam', 'generate_lists', 'critic_loss', 'gradient_penalty', 'generator_loss',
          'mle_loss', 'optimizer')
_FLAG = '--xla_cpu_enable_xprof_traceme=true'


def enable() -> None:
    """Asks the CPU backend for one trace event per operation. Call before JAX's first use of
    a device (the flag is read when the backend starts); harmless on a GPU."""
    flags = os.environ.get('XLA_FLAGS', '')
    if _FLAG not in flags:
        os.environ['XLA_FLAGS'] = (flags + ' ' + _FLAG).strip()


_NAME = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$')
_OPCODE = re.compile(r'(?:^|[\]\})]\s)([a-z][a-z0-9_\-]*)\(')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_KIND = re.compile(r'kind=(k\w+)')
_CALLS = re.compile(r'calls=%?([\w.\-]+)')
_COMPUTATION = re.compile(r'^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$')
# instructions whose trace event encloses the events of the computations they run (counting
# them would count their bodies twice)
CONTROL_FLOW = ('while', 'conditional', 'call')


def hlo_instructions(hlo_text: str) -> dict[str, dict]:
    """{instruction name: {'opcode', 'op_name'}} of every computation of an HLO module's text.
    A fusion's opcode carries its kind ('fusion:kLoop'); a fusion without an op_name of its
    own (XLA made it) takes the first one inside the computation it calls."""
    out, calls, first_op_name = {}, {}, {}
    computation = ''
    for line in hlo_text.splitlines():
        if line.lstrip().startswith('HloModule'):
            continue
        m = _NAME.match(line)
        if not m:
            c = _COMPUTATION.match(line)
            if c:
                computation = c.group(1)
            continue
        name, rest = m.groups()
        op = _OPCODE.search(rest)
        opcode = op.group(1) if op else '?'
        if opcode == 'fusion':
            kind = _KIND.search(rest)
            opcode = f'fusion:{kind.group(1)}' if kind else opcode
            called = _CALLS.search(rest)
            if called:
                calls[name] = called.group(1)
        op_name = _OP_NAME.search(rest)
        op_name = op_name.group(1) if op_name else ''
        if op_name and computation and computation not in first_op_name:
            first_op_name[computation] = op_name
        out[name] = {'opcode': opcode, 'op_name': op_name}
    for name, called in calls.items():
        if not out[name]['op_name']:
            out[name]['op_name'] = first_op_name.get(called, '')
    return out


def scope_of(op_name: str, scopes=SCOPES) -> str:
    """The innermost of `scopes` named in an op_name path ('other' if none)."""
    best, at = 'other', -1
    for s in scopes:
        i = op_name.rfind(s)
        if i > at:
            best, at = s, i
    return best


def direction_of(op_name: str) -> str:
    return 'backward' if 'transpose(' in op_name else 'forward'


def profile(fn, hlo_text: str, calls: int = 3, top: int = 12, trace_dir: str | None = None,
            scopes=SCOPES) -> dict:
    """Traces `calls` calls of `fn` (already compiled; it must block until its result is ready)
    and sums the events of the program's instructions (`hlo_text`), per call."""
    import jax

    if trace_dir is None:                       # a temporary trace, removed whatever happens
        with tempfile.TemporaryDirectory(prefix='op_profile_') as tmp:
            return dict(profile(fn, hlo_text, calls, top, tmp, scopes), trace_dir=None)
    instructions = hlo_instructions(hlo_text)
    t0 = time.perf_counter()
    with jax.profiler.trace(trace_dir):
        for _ in range(calls):
            fn()
    wall = (time.perf_counter() - t0) / calls
    files = sorted(glob.glob(os.path.join(trace_dir, '**', '*.xplane.pb'), recursive=True),
                   key=os.path.getmtime)
    if not files:
        raise RuntimeError(f'op_profile: jax.profiler wrote no trace under {trace_dir}')
    data = jax.profiler.ProfileData.from_file(files[-1])
    per_op = collections.Counter()
    counts = collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            for ev in line.events:
                if (ev.name in instructions
                        and instructions[ev.name]['opcode'] not in CONTROL_FLOW):
                    per_op[ev.name] += ev.duration_ns
                    counts[ev.name] += 1
    total_ns = sum(per_op.values())
    if total_ns == 0:
        raise RuntimeError('op_profile: no operation events in the trace (on a CPU, call enable() '
                           'before JAX starts its backend)')
    by_scope: dict[str, dict[str, float]] = {}
    for name, ns in per_op.items():
        op_name = instructions[name]['op_name']
        d = by_scope.setdefault(scope_of(op_name, scopes), {'forward': 0.0, 'backward': 0.0})
        d[direction_of(op_name)] += ns / calls / 1e6
    ops = []
    for name, ns in per_op.most_common(top):
        info = instructions[name]
        ops.append({'name': name, 'opcode': info['opcode'], 'scope': scope_of(info['op_name'], scopes),
                    'direction': direction_of(info['op_name']),
                    'ms_per_call': ns / calls / 1e6, 'share': ns / total_ns,
                    'events_per_call': counts[name] / calls, 'op_name': info['op_name']})
    op_ms = total_ns / calls / 1e6
    return {'calls': calls, 'wall_ms_per_call': wall * 1e3, 'op_ms_per_call': op_ms,
            'by_scope': {k: dict(v, share=(v['forward'] + v['backward']) / op_ms)
                         for k, v in sorted(by_scope.items(), key=lambda kv: -sum(kv[1].values()))},
            'top_ops': ops, 'trace_dir': trace_dir}


GEN_CASES = ('beam', 'greedy')
# the generation jit's parts: the model's init_decode_state / decode_step (their Flax scopes) and
# the decoder's own bookkeeping ('other': masking, log-normaliser, top-k, reorders)
GEN_SCOPES = ('init_decode_state', 'decode_step')


def generation_case(model: str, strategy: str, size: str, seed: int = 0):
    """(fn, hlo_text) of the benchmark suite's generation jit (`benchmarks.suite`: history ban ->
    init_decode_state -> decoding.generate over all items, 256 users, T = 10, beam 5, the suite's
    default sizes), compiled and called twice; `fn()` blocks until its lists are ready."""
    import jax
    import numpy as np
    from benchmarks import bench_seq2seq, suite

    a = suite.parse_args([])
    sargs = suite.size_args(a, size)
    _, info, histories, _ = bench_seq2seq.synthetic_data(sargs, np.random.default_rng(seed + 1))
    L, T, V = info.history_len, info.k, info.vocab_size
    hist, flat, start, length = suite.generation_inputs(histories, L)
    net, params, bos = suite.generation_net(model, sargs, info, hist, seed)
    jitted = suite.ours_generate_fn(net, None, dict(L=L, T=T, V=V, bos=bos), strategy, a, None)
    call = (params, hist, flat, start, length, None, jax.random.key(seed))
    hlo = jitted.lower(*call).compile().as_text()

    def fn():
        return jax.block_until_ready(jitted(*call))
    fn()
    fn()
    return fn, hlo


def format_report(name: str, r: dict) -> str:
    lines = [f'== {name}: wall {r["wall_ms_per_call"]:.1f} ms a call, operations '
             f'{r["op_ms_per_call"]:.1f} ms (summed over threads)',
             '   by scope (forward + backward ms, share):']
    for s, v in r['by_scope'].items():
        lines.append(f'     {s:18s} {v["forward"]:8.1f} + {v["backward"]:8.1f}  {v["share"]:6.1%}')
    lines.append('   top operations:')
    for o in r['top_ops']:
        lines.append(f'     {o["ms_per_call"]:8.2f} ms {o["share"]:6.1%}  {o["name"]:32.32s} '
                     f'{o["opcode"]:16.16s} {o["scope"]:16.16s} {o["direction"]}')
    return '\n'.join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--out', required=True, help='JSON file to write')
    p.add_argument('--cases', default='mle,oracle,critic,gan',
                   help="bench_aos4rec's cases to profile (mle, oracle, critic, gan) and / or "
                        "the suite's generation (beam, greedy)")
    p.add_argument('--models', default='transformer,gru')
    p.add_argument('--gen-size', default='ml20m',
                   help="the generation cases' size (benchmarks.suite.SIZES: ml20m, ml1m, tiny)")
    p.add_argument('--calls', type=int, default=3, help='traced calls per case')
    p.add_argument('--top', type=int, default=12, help='operations listed per case')
    p.add_argument('--trace-dir', default=None, help='keep the raw traces under this folder')
    argv = list(sys.argv[1:] if argv is None else argv)
    rest = []
    if '--' in argv:
        i = argv.index('--')
        argv, rest = argv[:i], argv[i + 1:]
    args = p.parse_args(argv)
    args.cases = [c for c in args.cases.split(',') if c]
    if args.calls < 1 or args.top < 1:
        p.error('--calls and --top must be >= 1')
    return args, rest


def main(argv=None) -> dict:
    args, rest = parse_args(argv)
    enable()
    import jax  # noqa: F401  (after enable(): the backend starts with the flag)
    import numpy as np
    from benchmarks import bench_aos4rec as B
    from benchmarks.bench_seq2seq import device_info, write_json_atomic

    bargs = B.parse_args(rest + ['--out', args.out, '--models', args.models])
    unknown = [c for c in args.cases if c not in B.CASES + GEN_CASES]
    if unknown:
        raise SystemExit(f'op_profile: unknown case(s) {unknown}; valid: '
                         f'{",".join(B.CASES + GEN_CASES)}')
    results = {}
    for case_name in [c for c in args.cases if c in GEN_CASES]:
        for name in bargs.models:
            fn, hlo = generation_case(name, case_name, args.gen_size, bargs.seed)
            r = profile(fn, hlo, calls=args.calls, top=args.top, scopes=GEN_SCOPES,
                        trace_dir=(os.path.join(args.trace_dir, name, case_name)
                                   if args.trace_dir else None))
            results.setdefault(name, {})[case_name] = r
            print(format_report(f'{name}/{case_name}', r), flush=True)
    aos_cases = [c for c in args.cases if c in B.CASES]
    if aos_cases:
        dev_np, info, _, _ = B.synthetic_data(bargs, np.random.default_rng(bargs.seed))
    for name in (bargs.models if aos_cases else []):
        B.log(f'building {name}')
        for case in B.model_cases(bargs, name, dev_np, info):
            label = case.name.split('/')[1]
            if label not in args.cases:
                continue
            case.warm(1)
            r = profile(case.fn, case.hlo_text(), calls=args.calls, top=args.top,
                        trace_dir=(os.path.join(args.trace_dir, name, label) if args.trace_dir
                                   else None))
            results.setdefault(name, {})[label] = r
            print(format_report(f'{name}/{label}', r), flush=True)
    out = {'benchmark': 'op_profile', 'args': {**vars(args), 'bench_aos4rec': rest},
           'device': device_info(), 'results': results,
           'note': 'op_ms_per_call: operation time of one call summed over threads (a CPU runs '
                   'several at once); scope: innermost jax.named_scope; backward: autodiff '
                   'transpose; raw traces under trace_dir if kept'}
    write_json_atomic(args.out, out)
    B.log(f'wrote {args.out}')
    return out


if __name__ == '__main__':
    main()
