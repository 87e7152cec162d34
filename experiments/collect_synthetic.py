"""Table of the synthetic check: NLL_oracle of generated lists per ablation row, mean +- std.

    python -m experiments.collect_synthetic --root runs/synthetic_check/synthetic/transformer \
        --out docs/results/synthetic_check.md
Reads ROOT/seed*/<row>/metrics/test.json (beam 5: nll_oracle.sampled / .full / .target) and
test_sample.json (ancestral sampling, the SeqGAN measure). Lower is better.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import numpy as np

ROWS = (('base', 'seq2seq, MLE'), ('oracle', '+Oracle'), ('adver', '+Adver. (SSRGAN)'),
        ('both', '+both'))


def _cell(values) -> str:
    if not values:
        return 'n/a'
    if len(values) == 1:
        return f'{values[0]:.2f}'
    return f'{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}'


def collect(root: str) -> dict:
    out = {}
    for row, _ in ROWS:
        cols = {'beam_sampled': [], 'beam_full': [], 'sample_full': [], 'target': [],
                'ndcg_sampled': []}
        for seed_dir in sorted(glob.glob(os.path.join(root, 'seed*'))):
            mdir = os.path.join(seed_dir, row, 'metrics')
            try:
                with open(os.path.join(mdir, 'test.json')) as f:
                    t = json.load(f)
            except FileNotFoundError:
                continue
            cols['beam_sampled'].append(t['nll_oracle']['sampled'])
            cols['beam_full'].append(t['nll_oracle']['full'])
            cols['target'].append(t['nll_oracle']['target'])
            k = next(k for k in t['sampled'] if k.startswith('ndcg@'))
            cols['ndcg_sampled'].append(t['sampled'][k])
            p = os.path.join(mdir, 'test_sample.json')
            if os.path.exists(p):
                with open(p) as f:
                    cols['sample_full'].append(json.load(f)['nll_oracle']['full'])
        out[row] = cols
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--root', required=True)
    ap.add_argument('--out', required=True)
    args = ap.parse_args(argv)
    agg = collect(args.root)
    if not any(agg[r]['beam_full'] for r, _ in ROWS):
        print(f'collect_synthetic: error: no run under {args.root}/seed*/<row>/metrics/test.json',
              file=sys.stderr)
        return 2
    n = max(len(agg[r]['beam_full']) for r, _ in ROWS)
    lines = ['# Synthetic oracle check (SeqGAN-style): NLL_oracle of generated lists', '',
             f'Test users of the synthetic oracle data; mean ± std over {n} seeds; nats per list, '
             'lower is better. `beam` = the beam-5 lists of the metric files, `sampling` = '
             'ancestral sampling (python -m aos4rec_jax.evaluate --strategy sample), the '
             'measure of SeqGAN Table 1. Made by `bash experiments/synthetic_check.sh`.', '',
             '| row | NLL_oracle, beam, 1000 candidates | NLL_oracle, beam, all items | '
             'NLL_oracle, sampling, all items | sampled NDCG@10 |',
             '|---|---|---|---|---|']
    for row, label in ROWS:
        c = agg[row]
        if not c['beam_full']:
            continue
        lines.append(f'| {label} | {_cell(c["beam_sampled"])} | {_cell(c["beam_full"])} | '
                     f'{_cell(c["sample_full"])} | {_cell([100 * v for v in c["ndcg_sampled"]])} (x100) |')
    tgt = [v for r, _ in ROWS for v in agg[r]['target']]
    lines += ['', f'NLL_oracle of the true test continuations: {np.mean(tgt):.2f}.', '']
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + '.tmp'
    with open(tmp, 'w') as f:
        f.write('\n'.join(lines))
    os.replace(tmp, args.out)
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
