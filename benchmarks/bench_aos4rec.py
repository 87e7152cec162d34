"""Cost of the AOS4Rec training steps relative to one MLE step of the same model (time ratios).

    python -m benchmarks.bench_aos4rec --out results.json \
        [--items 3322 --width 128 --layers 2 --history 50 --T 10 --batch 128 --steps 10 \
         --warmup 2 --models transformer,gru --beam 5 --num-next 3 --d-steps 5]

Cases per model, all jitted as the trainer jits them (ssrgan.Steps, donated state, 1-device mesh,
batches drawn on device from random in-memory sequences; benchmarks/bench_seq2seq.py's data):
  mle      one MLE step (the baseline of every ratio)
  oracle   one oracular-learning step (Sec. 4.1): beam search of b inside the step, BLEU oracle,
           mixed context, one update
  critic   one critic update (Eq. 7 + Eq. 8 with c successors + gradient penalty), including the
           Gumbel sampling of the fake lists and the drawing of their successors
  gan      one SSRGAN round: g-steps (1) generator updates (Eq. 4) and d-steps (5) critic updates
`--successor-samplers` (aos4rec.successor_sampler, default inverse_cdf): with a second one, e.g.
inverse_cdf,gumbel, the critic and gan cases are timed again under it, named critic[gumbel] and
gan[gumbel], interleaved with the others. `--critic-encode-once` (aos4rec.critic_encode_once:
on, off, or off,on): the first value for the critic and gan cases, a second adds critic[once]
and gan[once] (or [twice]) under it. `--successors-from-decode` (aos4rec.successors_from_decode:
on, off, or off,on) likewise: a second value adds critic[decode] and gan[decode] (or [forced]).
`--list-sampler` is aos4rec.list_sampler of every case. `--variant LABEL:KEY=VALUE,...`
(repeatable) adds critic[LABEL] and gan[LABEL] with those aos4rec settings, e.g. the settings of
earlier runs: `--variant before:list_sampler=gumbel,successors_from_decode=off`.
Timed calls are interleaved over `--rounds` rounds so load changes hit every case alike; the JSON
holds the median times and `ratio_to_mle` for each case. Absolute times mean something only on
the GPU; on a shared CPU read the ratios.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

from aos4rec_jax import critic as critic_lib
from aos4rec_jax import sampling
from aos4rec_jax import seq2seq
from aos4rec_jax import sharding as shard_lib
from aos4rec_jax import ssrgan
from aos4rec_jax import trainer
from benchmarks.bench_seq2seq import Case, device_info, stats_ms, synthetic_data, write_json_atomic
from benchmarks.bench_seq2seq import run_config as seq2seq_run_config

CASES = ('mle', 'oracle', 'critic', 'gan')


def log(msg: str) -> None:
    print(f'[bench {time.strftime("%H:%M:%S")}] {msg}', file=sys.stderr, flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--out', required=True, help='JSON file to write')
    p.add_argument('--items', type=int, default=3322, help='item count N (ml-1m-subset: 3322)')
    p.add_argument('--width', type=int, default=128)
    p.add_argument('--layers', type=int, default=2)
    p.add_argument('--heads', type=int, default=4)
    p.add_argument('--mlp', type=int, default=0, help='feed-forward width (0: 4 x width)')
    p.add_argument('--dropout', type=float, default=0.1)
    p.add_argument('--history', type=int, default=50)
    p.add_argument('--T', type=int, default=10)
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--beam', type=int, default=5, help='oracle beam size b')
    p.add_argument('--num-next', type=int, default=3, help='c successors (Eq. 8)')
    p.add_argument('--d-steps', type=int, default=5)
    p.add_argument('--g-steps', type=int, default=1)
    p.add_argument('--steps', type=int, default=10, help='timed calls per case')
    p.add_argument('--warmup', type=int, default=2, help='untimed calls first (the first compiles)')
    p.add_argument('--rounds', type=int, default=2)
    p.add_argument('--models', default='transformer,gru')
    p.add_argument('--users', type=int, default=2000)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--successor-samplers', default='inverse_cdf',
                   help="aos4rec.successor_sampler of the critic and gan cases; a second one "
                        "(comma-separated) adds cases critic[NAME] and gan[NAME]")
    p.add_argument('--critic-encode-once', default='on',
                   help="aos4rec.critic_encode_once of the critic and gan cases (on | off); a second "
                        "value (comma-separated, e.g. off,on) adds cases critic[once] and gan[once]")
    p.add_argument('--list-sampler', default='inverse_cdf', choices=sampling.SAMPLERS,
                   help='aos4rec.list_sampler of the critic and gan cases')
    p.add_argument('--variant', action='append', default=[], metavar='LABEL:KEY=VALUE[,KEY=VALUE]',
                   help="adds cases critic[LABEL] and gan[LABEL] with these aos4rec settings on "
                        "top of the others (values: on/off, numbers or names), e.g. "
                        "before:list_sampler=gumbel,successors_from_decode=off; repeatable")
    p.add_argument('--successors-from-decode', default='on',
                   help="aos4rec.successors_from_decode of the critic and gan cases (on | off); a "
                        "second value (comma-separated, e.g. off,on) adds cases critic[decode] "
                        "and gan[decode] (or [forced]: from a teacher-forced pass)")
    args = p.parse_args(argv)
    for f in ('critic_encode_once', 'successors_from_decode'):
        v = [x for x in getattr(args, f).split(',') if x]
        if not v or any(x not in ('on', 'off') for x in v):
            p.error(f'--{f.replace("_", "-")}: on, off or both comma-separated, got {v}')
        setattr(args, f, v)
    variants = []
    for v in args.variant:
        label, _, body = v.partition(':')
        sets = {}
        for kv in (x for x in body.split(',') if x):
            k, eq, val = kv.partition('=')
            if not eq or not k:
                p.error(f'--variant {v!r}: expected LABEL:KEY=VALUE[,KEY=VALUE]')
            sets[k] = {'on': True, 'true': True, 'off': False, 'false': False}.get(val.lower(), val)
        if not label or not sets:
            p.error(f'--variant {v!r}: expected LABEL:KEY=VALUE[,KEY=VALUE]')
        variants.append((label, sets))
    args.variant = variants
    args.successor_samplers = [x for x in args.successor_samplers.split(',') if x]
    bad = [x for x in args.successor_samplers if x not in sampling.SAMPLERS]
    if bad or not args.successor_samplers:
        p.error(f'--successor-samplers: unknown {bad}; valid: {",".join(sampling.SAMPLERS)}')
    args.mlp = args.mlp or 4 * args.width
    args.models = [m for m in args.models.split(',') if m]
    args.eval_batch, args.dtype = 8, 'float32'
    for f in ('steps', 'warmup', 'rounds', 'beam', 'num_next', 'd_steps', 'g_steps'):
        if getattr(args, f) < 1:
            p.error(f'--{f.replace("_", "-")} must be >= 1')
    return args


def case_config(args, name, case, sampler=None, once=None, decode=None, sets=None):
    """The run config of one case: the model's benchmark config with the case's aos4rec settings
    (the first value of each list flag unless given, then a --variant's KEY=VALUE pairs)."""
    config = seq2seq_run_config(args, name)
    a = config.aos4rec
    a.successor_sampler = sampler or args.successor_samplers[0]
    a.critic_encode_once = (once or args.critic_encode_once[0]) == 'on'
    a.successors_from_decode = (decode or args.successors_from_decode[0]) == 'on'
    a.list_sampler = args.list_sampler
    for k, v in (sets or {}).items():
        if k not in a:
            raise SystemExit(f'bench_aos4rec: --variant names aos4rec.{k}, which does not exist')
        a[k] = type(a[k])(v) if not isinstance(a[k], bool) else bool(v)
    a.beam_size, a.num_next = args.beam, args.num_next
    a.d_steps, a.g_steps = args.d_steps, args.g_steps
    a.oracle = case == 'oracle'
    a.adversarial = case in ('critic', 'gan')
    return config


def case_runs(args) -> list[tuple]:
    """Every timed case of one model, in order: (case, label, sampler, once, decode, sets); the
    four CASES first, then one critic and one gan case for each second value of a list flag and
    for each --variant."""
    sampler0, once0 = args.successor_samplers[0], args.critic_encode_once[0]
    decode0 = args.successors_from_decode[0]
    runs = [(case, case, sampler0, once0, decode0, None) for case in CASES]
    runs += [(case, f'{case}[{s}]', s, once0, decode0, None)
             for s in args.successor_samplers[1:] for case in ('critic', 'gan')]
    runs += [(case, f'{case}[{"once" if o == "on" else "twice"}]', sampler0, o, decode0, None)
             for o in args.critic_encode_once[1:] for case in ('critic', 'gan')]
    runs += [(case, f'{case}[{"decode" if d == "on" else "forced"}]', sampler0, once0, d, None)
             for d in args.successors_from_decode[1:] for case in ('critic', 'gan')]
    runs += [(case, f'{case}[{label}]', sampler0, once0, decode0, sets)
             for label, sets in args.variant for case in ('critic', 'gan')]
    return runs


def model_cases(args, name, dev_np, info) -> list[Case]:
    config = case_config(args, name, 'mle')
    mesh = shard_lib.make_mesh(jax.devices()[:1])
    repl = shard_lib.replicated(mesh)
    model = seq2seq.build_model(config, info)
    critic = critic_lib.build_critic(config, info)
    cases = []
    runs = case_runs(args)
    for case, label, sampler, once, decode, sets in runs:
        config = case_config(args, name, case, sampler, once, decode, sets)
        adversarial = config.aos4rec.adversarial
        # the whole-history ban of training, bounded as the method bounds it (longest train part)
        steps = ssrgan.Steps(config, model, critic if adversarial else None, info, args.batch,
                             shard_lib.batch_sharding(mesh),
                             max_history=int(max(1, np.asarray(dev_np.n_train).max() - 1)))
        init_fn, _, shardings, rng = trainer.create_train_state(
            config, model, steps.mle_tx, info, mesh, steps.critic, steps.d_tx)
        fn = {'mle': steps.seq2seq_step, 'oracle': steps.seq2seq_step,
              'critic': steps.critic_step, 'gan': steps.gan_round}[case]
        step = jax.jit(fn, in_shardings=(shardings, repl), out_shardings=(shardings, repl),
                       donate_argnums=0)
        data = jax.device_put(dev_np, repl)
        holder = {'state': init_fn(rng)}

        def once(step=step, holder=holder, data=data):
            holder['state'], m = step(holder['state'], data)
            jax.block_until_ready((holder['state'], m))
        c = Case(f'{name}/{label}', once, args.batch)
        # the compiled program's text (benchmarks/op_profile.py names its operations from it)
        c.hlo_text = (lambda step=step, holder=holder, data=data:
                      step.lower(holder['state'], data).compile().as_text())
        cases.append(c)
    return cases


def main(argv=None) -> dict:
    args = parse_args(argv)
    t0 = time.time()
    dev = device_info()
    log(f'{dev["platform"]} ({dev["device_kind"]}), {dev["cpu_count"]} CPUs, load average '
        f'{os.getloadavg()[0]:.2f}')
    dev_np, info, _, _ = synthetic_data(args, np.random.default_rng(args.seed))
    per_model = {}
    for name in args.models:
        log(f'building {name}')
        cases = model_cases(args, name, dev_np, info)
        for c in cases:
            c.warm(args.warmup)
        per_model[name] = cases
    all_cases = [c for cs in per_model.values() for c in cs]
    per_round = [args.steps // args.rounds + (r < args.steps % args.rounds) for r in range(args.rounds)]
    for r, n in enumerate(per_round):
        log(f'round {r + 1}/{args.rounds}: {n} timed calls per case, load {os.getloadavg()[0]:.2f}')
        for c in all_cases:
            c.run(n)
            log(f'  {c.name}: median {np.median(c.times) * 1e3:.1f} ms over {len(c.times)} calls')
    results = {}
    for name, cases in per_model.items():
        by = {c.name.split('/')[1]: c for c in cases}
        mle = float(np.median(by['mle'].times))
        results[name] = {case: {'step_ms': stats_ms(c.times), 'compile_s': c.first_call_s,
                                'ratio_to_mle': float(np.median(c.times)) / mle}
                         for case, c in by.items()}
    out = {'benchmark': 'aos4rec_steps', 'args': {k: v for k, v in vars(args).items()},
           'device': dev, 'results': results, 'load_average_end': os.getloadavg()[0],
           'wall_s': time.time() - t0,
           'note': 'ratio_to_mle = median time of one call / median time of one MLE step of the '
                   'same model in the same run; gan = one round of g_steps + d_steps updates'}
    write_json_atomic(args.out, out)
    for name, r in results.items():
        log(f'{name}: ' + ', '.join(f'{k} {v["ratio_to_mle"]:.2f}x' for k, v in r.items()))
    log(f'wrote {args.out}')
    return out


if __name__ == '__main__':
    main()
