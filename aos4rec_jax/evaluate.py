"""Evaluate a finished run again with another decoder, without touching its own results.

  python -m aos4rec_jax.evaluate --workdir DIR --tag greedy --strategy greedy [--beam 1]
      [--temperature T] [--num-sequences N] [--splits valid,test] [--params best|last]

Writes DIR/metrics/{split}_{tag}.json (same format as metrics/test.json) and
DIR/predictions/test_{tag}.parquet.
"""
from __future__ import annotations

import argparse
import re
import sys

import jax

import data_prep
from aos4rec_jax import evaluation
from aos4rec_jax import run_summary
from aos4rec_jax import trainer


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description='Evaluate a finished run with another decoder.')
    ap.add_argument('--workdir', required=True)
    ap.add_argument('--tag', required=True, help='suffix of the written files, e.g. greedy')
    ap.add_argument('--strategy', default=None)
    ap.add_argument('--beam', type=int, default=None)
    ap.add_argument('--temperature', type=float, default=None)
    ap.add_argument('--num-sequences', type=int, default=None)
    ap.add_argument('--splits', default='valid,test')
    ap.add_argument('--params', choices=('best', 'last'), default='best',
                    help='best validation parameters (default) or the latest checkpoint\'s')
    ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args(argv)
    if not re.fullmatch(r'[A-Za-z0-9_.-]+', a.tag):
        print(f'error: --tag {a.tag!r} may hold only letters, digits, _ . -', file=sys.stderr)
        return 2
    decode = dict(strategy=a.strategy, beam_size=a.beam, temperature=a.temperature,
                  num_sequences=a.num_sequences)
    try:
        config, ds, method, params, gen = trainer.load_run(a.workdir, decode, which=a.params)
    except (FileNotFoundError, ValueError, data_prep.DataPrepError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(run_summary.params_line(a.workdir, config, method, a.params), flush=True)
    for line in run_summary.decode_warnings(method, decode):
        print(line, file=sys.stderr, flush=True)
    splits = a.splits.split(',')
    if not set(splits) <= {'valid', 'test'}:
        print(f"error: --splits takes 'valid', 'test' or both, got {a.splits!r}", file=sys.stderr)
        return 2
    ev = evaluation.Evaluator(gen, ds, config.eval_batch_size)
    for split in splits:
        trainer.evaluate_split(ev, params, ds, split, jax.random.PRNGKey(a.seed), a.workdir,
                               decode=method.decode_description(),
                               tag=a.tag)
    return 0


if __name__ == '__main__':
    sys.exit(main())
