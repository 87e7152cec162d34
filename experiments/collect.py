"""Collects the metrics of run folders into a Markdown table.

  python experiments/collect.py RUNS_ROOT [--out FILE.md]

Every sub-folder with metrics/test.json is a row; metrics/test_TAG.json files (from
`python -m aos4rec_jax.evaluate --tag TAG`) are extra rows named "RUN (TAG)".
"""
import argparse
import glob
import json
import os
import sys


def rows(root):
    for run in sorted(os.listdir(root)):
        mdir = os.path.join(root, run, 'metrics')
        for path in sorted(glob.glob(os.path.join(mdir, 'test*.json'))):
            tag = os.path.basename(path)[len('test'):-len('.json')].lstrip('_')
            with open(path) as f:
                m = json.load(f)
            dec = m.get('decode')
            if isinstance(dec, dict):
                dec = dec['strategy'] + (f" b={dec['beam_size']}" if dec['strategy'] == 'beam' else '')
            yield (f'{run} ({tag})' if tag else run), dec, m


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('root')
    ap.add_argument('--out', default=None)
    a = ap.parse_args(argv)
    data = list(rows(a.root))
    if not data:
        print(f'no metrics/test*.json under {a.root}', file=sys.stderr)
        return 1
    K = next(iter(data[0][2]['sampled'])).split('@')[1]
    names = ['prec', 'ndcg', 'bleu', 'hr', 'mrr']
    head = ('| run | decoding | users | ' + ' | '.join(f'sampled {n}@{K}' for n in names) + ' | '
            + ' | '.join(f'full {n}@{K}' for n in names) + ' |')
    lines = [head, '|' + '---|' * (3 + 2 * len(names))]
    for name, dec, m in data:
        cells = [f"{m['sampled'][f'{n}@{K}']:.4f}" for n in names] + [f"{m['full'][f'{n}@{K}']:.4f}" for n in names]
        lines.append(f"| {name} | {dec} | {m['users']} | " + ' | '.join(cells) + ' |')
    text = '\n'.join(lines) + '\n'
    if a.out:
        os.makedirs(os.path.dirname(a.out) or '.', exist_ok=True)
        with open(a.out + '.tmp', 'w') as f:
            f.write(text)
        os.replace(a.out + '.tmp', a.out)
    print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
