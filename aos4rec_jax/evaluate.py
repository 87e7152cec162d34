"""Evaluate a finished run again with another decoder, without touching its own results.

  python -m aos4rec_jax.evaluate --workdir DIR --tag greedy --strategy greedy [--beam 1]
      [--temperature T] [--num-sequences N] [--splits valid,test] [--params best|last]

Writes DIR/metrics/{split}_{tag}.json (same format as metrics/test.json) and
DIR/predictions/test_{tag}.parquet.
"""
from __future__ import annotations

import argparse
import os
import re
import sys

import jax

from aos4rec_jax import datasets
from aos4rec_jax import evaluation
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
    try:
        config, ds, model, params, gen = trainer.load_run(
            a.workdir, dict(strategy=a.strategy, beam_size=a.beam, temperature=a.temperature,
                            num_sequences=a.num_sequences), which=a.params)
    except (FileNotFoundError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    ev = evaluation.Evaluator(gen, ds, config.eval_batch_size)
    oracle = datasets.oracle_for(ds)
    for split in a.splits.split(','):
        es = ds.eval_set(split)
        summ, sampled, full = ev(params, es, jax.random.PRNGKey(a.seed), log=trainer.log)
        summ['decode'] = config.decode.to_dict() if model is not None else 'top-k scores'
        summ['ban_history'] = ds.info.ban_history
        if oracle is not None:
            summ['nll_oracle'] = {'sampled': datasets.oracle_nll(ds, es, sampled),
                                  'full': datasets.oracle_nll(ds, es, full),
                                  'target': datasets.oracle_nll(ds, es, es.target)}
        evaluation.write_json(os.path.join(a.workdir, 'metrics', f'{split}_{a.tag}.json'), summ)
        if split == 'test':
            evaluation.write_predictions(os.path.join(a.workdir, 'predictions', f'test_{a.tag}.parquet'),
                                         ds, es, sampled, full)
        K = ds.info.k
        trainer.log(f'{split} [{a.tag}]: ' + ' '.join(
            f'{p}/{m}@{K}={summ[p][f"{m}@{K}"]:.4f}' for p in ('sampled', 'full')
            for m in ('prec', 'ndcg', 'bleu')))
    return 0


if __name__ == '__main__':
    sys.exit(main())
