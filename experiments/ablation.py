"""The AOS4Rec ablation (paper Table 4): base, +Oracle, +Adver., +both, +both with beam 1.

    python -m experiments.ablation --out runs/ablation \
        --data ml-1m-subset=data/ml-1m-subset --data yoochoose-100k=data/yoochoose-100k \
        --models transformer,gru --seeds 0,1,2 --workers 2 \
        --steps ml-1m-subset=200,20,20 --steps yoochoose-100k=300,30,40 \
        --set model_kwargs.embed_dim=64

Runs, per dataset, model and seed (folders OUT/<dataset>/<model>/seed<S>/<row>):
  base    aos4rec.py:base    train_steps=P (MLE)
  oracle  aos4rec.py:oracle  train_steps=P (oracular learning)
  adver   aos4rec.py:adver   train_steps=0, init_from=base:   C critic steps, G SSRGAN rounds
  both    aos4rec.py:both    train_steps=0, init_from=oracle: C critic steps, G SSRGAN rounds
  beam1   python -m aos4rec_jax.evaluate --workdir both --tag beam1 --strategy greedy
So +Adver. and +both start from exactly the generator their seq2seq row ended with (the paper:
"SSRGAN is initialized by the trained seq2seq model"), and the seq2seq runs are not repeated.

Jobs run `--workers` at a time (each XLA process limited to one intra-op thread when workers > 1),
a job starts when the run it starts from has finished, and a finished job (its metrics file
exists) is skipped: the same command continues an interrupted ablation (a killed run resumes from
its checkpoint). Logs: OUT/<dataset>/<model>/seed<S>/<row>.log. Then the tables and the plot:
python -m experiments.collect_ablation --root OUT --out docs/results.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANT = {'base': 'base', 'oracle': 'oracle', 'adver': 'adver', 'both': 'both'}
START_FROM = {'adver': 'base', 'both': 'oracle', 'beam1': 'both'}
ROWS = ('base', 'oracle', 'adver', 'both', 'beam1')


@dataclasses.dataclass
class Job:
    name: str               # dataset/model/seedS/row
    workdir: str
    cmd: list
    log: str
    done_file: str
    after: str | None       # the job that must finish first
    proc: subprocess.Popen | None = None
    status: str = 'waiting'  # waiting | running | done | failed | skipped
    t0: float = 0.0


def _pairs(values, what):
    out = {}
    for v in values:
        if '=' not in v:
            raise SystemExit(f'ablation: error: --{what} {v!r}: expected NAME=VALUE')
        k, val = v.split('=', 1)
        out[k] = val
    return out


def build_jobs(args) -> list[Job]:
    data = _pairs(args.data, 'data')
    steps = {k: [int(x) for x in v.split(',')] for k, v in _pairs(args.steps, 'steps').items()}
    for name, d in data.items():
        if not os.path.exists(os.path.join(d, 'protocol.json')):
            raise SystemExit(f'ablation: error: --data {name}={d}: not a prepared dataset '
                             '(no protocol.json; run python -m data_prep first)')
        if name not in steps or len(steps[name]) != 3:
            raise SystemExit(f'ablation: error: --steps {name}=P,C,G is missing')
    jobs = []
    for name, d in data.items():
        p, c, g = steps[name]
        for model in args.models.split(','):
            for seed in [int(s) for s in args.seeds.split(',')]:
                base = os.path.join(args.out, name, model, f'seed{seed}')
                for row in args.rows.split(','):
                    wd = os.path.join(base, 'both' if row == 'beam1' else row)
                    if row == 'beam1':
                        cmd = [sys.executable, '-m', 'aos4rec_jax.evaluate', f'--workdir={wd}',
                               '--tag=beam1', '--strategy=greedy']
                        done = os.path.join(wd, 'metrics', 'test_beam1.json')
                    else:
                        cmd = [sys.executable, os.path.join(ROOT, 'main.py'),
                               f'--config=experiments/configs/aos4rec.py:{VARIANT[row]}',
                               f'--workdir={wd}', f'--config.data_dir={os.path.abspath(d)}',
                               f'--config.model={model}', f'--config.seed={seed}']
                        if row in ('adver', 'both'):
                            cmd += ['--config.train_steps=0',
                                    f'--config.aos4rec.init_from={os.path.join(base, START_FROM[row])}',
                                    f'--config.aos4rec.critic_pretrain_steps={c}',
                                    f'--config.aos4rec.gan_steps={g}']
                        else:
                            cmd += [f'--config.train_steps={p}']
                        cmd += [f'--config.{s}' for s in args.set]
                        done = os.path.join(wd, 'metrics', 'test.json')
                    after = f'{name}/{model}/seed{seed}/{START_FROM[row]}' if row in START_FROM else None
                    jobs.append(Job(f'{name}/{model}/seed{seed}/{row}', wd, cmd,
                                    os.path.join(base, f'{row}.log'), done, after))
    return jobs


def run(jobs: list[Job], workers: int) -> int:
    by_name = {j.name: j for j in jobs}
    for j in jobs:
        if os.path.exists(j.done_file):
            j.status = 'done'
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    if workers > 1:
        env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_cpu_multi_thread_eigen=false '
                            'intra_op_parallelism_threads=1').strip()
    t_start = time.time()
    while True:
        for j in jobs:
            if j.status == 'running' and j.proc.poll() is not None:
                ok = j.proc.returncode == 0 and os.path.exists(j.done_file)
                j.status = 'done' if ok else 'failed'
                print(f'[{time.strftime("%H:%M:%S")}] {j.status:6s} {j.name} '
                      f'({time.time() - j.t0:.0f}s)' + ('' if ok else f'; see {j.log}'), flush=True)
            if j.status == 'waiting' and j.after and by_name[j.after].status in ('failed', 'skipped'):
                j.status = 'skipped'
                print(f'skipped {j.name}: {j.after} did not finish', flush=True)
        running = sum(j.status == 'running' for j in jobs)
        ready = [j for j in jobs if j.status == 'waiting'
                 and (j.after is None or by_name[j.after].status == 'done')]
        for j in ready[:max(workers - running, 0)]:
            os.makedirs(os.path.dirname(j.log), exist_ok=True)
            j.proc = subprocess.Popen(j.cmd, cwd=ROOT, env=env, stdout=open(j.log, 'a'),
                                      stderr=subprocess.STDOUT)
            j.status, j.t0 = 'running', time.time()
            n_done = sum(x.status == 'done' for x in jobs)
            print(f'[{time.strftime("%H:%M:%S")}] start  {j.name} ({n_done}/{len(jobs)} done, '
                  f'{(time.time() - t_start) / 60:.1f} min)', flush=True)
        if all(j.status in ('done', 'failed', 'skipped') for j in jobs):
            break
        time.sleep(2)
    failed = [j.name for j in jobs if j.status != 'done']
    print(f'ablation: {len(jobs) - len(failed)}/{len(jobs)} jobs done in '
          f'{(time.time() - t_start) / 60:.1f} min' + (f'; not done: {failed}' if failed else ''))
    return 1 if failed else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', required=True, help='root folder of the runs')
    ap.add_argument('--data', action='append', required=True, help='NAME=PREPARED_DIR (repeatable)')
    ap.add_argument('--steps', action='append', required=True,
                    help='NAME=P,C,G: seq2seq steps, critic pretraining steps, SSRGAN rounds')
    ap.add_argument('--models', default='transformer,gru')
    ap.add_argument('--seeds', default='0,1,2')
    ap.add_argument('--rows', default=','.join(ROWS),
                    help='the rows to run (a row also needs the one it starts from)')
    ap.add_argument('--workers', type=int, default=1)
    ap.add_argument('--set', action='append', default=[],
                    help='extra config override for every run, e.g. model_kwargs.embed_dim=64')
    ap.add_argument('--dry_run', action='store_true', help='print the commands only')
    args = ap.parse_args(argv)
    rows = args.rows.split(',')
    bad = [r for r in rows if r not in ROWS or (r in START_FROM and START_FROM[r] not in rows)]
    if bad:
        raise SystemExit(f'ablation: error: --rows {args.rows}: {bad[0]!r} is not one of {ROWS} '
                         'or lacks the row it starts from')
    jobs = build_jobs(args)
    if args.dry_run:
        for j in jobs:
            print(' '.join(j.cmd) + (f'   # after {j.after}' if j.after else ''))
        return 0
    return run(jobs, args.workers)


if __name__ == '__main__':
    sys.exit(main())
