"""Recommend the next K items for given histories with a trained run.

  python -m aos4rec_jax.recommend --workdir DIR --input histories.jsonl --output recs.jsonl \
      [--strategy beam --beam 5 --k 10] [--unknown skip|error] [--overwrite]

Input (raw item ids, as in the original logs):
  * .jsonl: one object per line, {"user": "u1", "history": ["1193", "661", ...]} (oldest first);
  * .csv:   header with columns user,item (rows of a user in time order; an optional timestamp
            column, if present, orders them).
Output .jsonl: {"user": ..., "items": [raw ids, best first], "unknown": [raw ids ignored]}.
Items the model never saw are skipped with a warning (--unknown skip, default) or refused
(--unknown error); an empty history (or one with only unknown items) is refused. An existing
--output is replaced only with --overwrite, and never when it is the --input file.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

import data_prep
from aos4rec_jax import run_summary
from aos4rec_jax import trainer


class InputError(ValueError):
    pass


def _decode(raw: bytes, path: str, ln: int) -> str:
    try:
        return raw.decode('utf-8')
    except UnicodeDecodeError as e:
        raise InputError(f'{path}:{ln}: not UTF-8 text (byte {raw[e.start]:#04x} at column '
                         f'{e.start + 1}); save the file as UTF-8') from None


def read_histories(path: str) -> list[tuple[str, list[str]]]:
    if not os.path.exists(path):
        raise InputError(f'{path}: no such file')
    out: list[tuple[str, list[str]]] = []
    if os.path.isdir(path):
        raise InputError(f'{path}: is a folder, not a .jsonl or .csv file')
    if path.endswith('.jsonl'):
        with open(path, 'rb') as f:
            for ln, raw in enumerate(f, 1):
                line = _decode(raw, path, ln)
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(f'{path}:{ln}: not valid JSON ({e.msg})') from None
                if not isinstance(obj, dict) or 'user' not in obj or 'history' not in obj:
                    raise InputError(f'{path}:{ln}: expected an object with "user" and "history"')
                if not isinstance(obj['history'], list):
                    raise InputError(f'{path}:{ln}: "history" must be a list of item ids')
                if not isinstance(obj['user'], (str, int)) or isinstance(obj['user'], bool) \
                        or str(obj['user']) == '':
                    raise InputError(f'{path}:{ln}: "user" must be a non-empty string or number, '
                                     f'got {json.dumps(obj["user"])}')
                if any(x is None or isinstance(x, (bool, dict, list)) for x in obj['history']):
                    raise InputError(f'{path}:{ln}: "history" holds a value that is not an item id')
                out.append((str(obj['user']), [str(x) for x in obj['history']]))
    elif path.endswith('.csv'):
        with open(path, 'rb') as fb:
            text = [_decode(raw, path, ln) for ln, raw in enumerate(fb, 1)]
        with io.StringIO(''.join(text), newline='') as f:
            reader = csv.DictReader(f)
            cols = reader.fieldnames or []
            for need in ('user', 'item'):
                if need not in cols:
                    raise InputError(f'{path}:1: header has no "{need}" column (found {cols})')
            rows: dict[str, list] = {}
            for ln, row in enumerate(reader, 2):
                if row.get('user') in (None, '') or row.get('item') in (None, ''):
                    raise InputError(f'{path}:{ln}: empty user or item')
                t = row.get('timestamp')
                if t is not None:
                    try:
                        t = float(t)
                    except ValueError:
                        raise InputError(f'{path}:{ln}: timestamp {t!r} is not a number') from None
                rows.setdefault(row['user'], []).append((t if t is not None else 0.0, ln, row['item']))
            for u, evs in rows.items():
                evs.sort(key=lambda e: (e[0], e[1]))
                out.append((u, [e[2] for e in evs]))
    else:
        raise InputError(f'{path}: unknown input type (use .jsonl or .csv)')
    if not out:
        raise InputError(f'{path}: no histories in the file')
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--workdir', required=True, help='a finished (or checkpointed) run of main.py')
    ap.add_argument('--input', required=True)
    ap.add_argument('--output', required=True)
    ap.add_argument('--strategy', default=None, help='decoder (default: the run\'s config.decode.strategy)')
    ap.add_argument('--beam', type=int, default=None, help='beam size (default: the run\'s)')
    ap.add_argument('--k', type=int, default=None, help='list length (default: the dataset\'s K)')
    ap.add_argument('--temperature', type=float, default=None)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--unknown', choices=('skip', 'error'), default='skip')
    ap.add_argument('--batch-size', type=int, default=256)
    ap.add_argument('--overwrite', action='store_true', help='replace an existing --output file')
    a = ap.parse_args(argv)
    try:
        check_output(a.output, a.input, a.overwrite)
        return _run(a)
    except (InputError, FileNotFoundError, ValueError, data_prep.DataPrepError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2


def check_output(output: str, input_path: str, overwrite: bool) -> None:
    """Refuses an output that is the input, a folder, or (without --overwrite) an existing file."""
    if os.path.isdir(output):
        raise InputError(f'--output {output}: is a folder; name a file (e.g. {output.rstrip("/")}/recs.jsonl)')
    if os.path.exists(input_path) and os.path.exists(output) and os.path.samefile(input_path, output):
        raise InputError(f'--output {output} is the --input file; name another file')
    if os.path.exists(output) and not overwrite:
        raise InputError(f'--output {output} exists; pass --overwrite to replace it')
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise InputError(f'--output {output}: the folder {parent} does not exist')


def _run(a) -> int:
    histories = read_histories(a.input)       # a bad input fails before the model is loaded
    decode = dict(strategy=a.strategy, beam_size=a.beam, temperature=a.temperature)
    config, ds, method, params, gen = trainer.load_run(a.workdir, decode, k=a.k)
    info = ds.info
    print(run_summary.params_line(a.workdir, config, method), file=sys.stderr, flush=True)
    for line in run_summary.decode_warnings(method, decode):
        print(line, file=sys.stderr, flush=True)

    raw_to_id = {str(r): i for i, r in enumerate(ds.prepared.item_raw) if i > 0}
    L = info.history_len
    rows, unknowns = [], []
    for ln, (user, hist) in enumerate(histories, 1):
        if not hist:
            raise InputError(f'{a.input}: user {user!r} (entry {ln}) has an empty history')
        unk = [x for x in hist if x not in raw_to_id]
        if unk and a.unknown == 'error':
            raise InputError(f'{a.input}: user {user!r} (entry {ln}) has items the model does not know: '
                             f'{unk[:5]}{" ..." if len(unk) > 5 else ""} (use --unknown skip to ignore them)')
        if unk:
            print(f'warning: user {user!r}: {len(unk)} unknown item(s) skipped: {unk[:5]}', file=sys.stderr)
        ids = [raw_to_id[x] for x in hist if x in raw_to_id]
        if not ids:
            raise InputError(f'{a.input}: user {user!r} (entry {ln}) has no known item in its history')
        rows.append(ids)
        unknowns.append(unk)

    @jax.jit
    def run(params, history, banned, rng):
        # users -1: a history given here, not a user row of the dataset (BPR-MF folds it in)
        batch = dict(history=history, banned=banned, candidates=None,
                     users=jnp.full((history.shape[0],), -1, jnp.int32))
        return gen(params, batch, rng)[1]   # the full-protocol list: every item may be recommended

    out_lines = []
    B = a.batch_size
    for lo in range(0, len(rows), B):
        chunk = rows[lo:lo + B]
        n = len(chunk)
        hist = np.zeros((B, L), np.int32)
        banned = np.zeros((B, info.vocab_size), bool)
        for i, ids in enumerate(chunk):
            last = ids[-L:]
            hist[i, L - len(last):] = last
            if info.ban_history:
                banned[i, ids] = True
        lists = np.asarray(run(params, hist, banned, jax.random.fold_in(jax.random.PRNGKey(a.seed), lo // B)))[:n]
        for i, lst in enumerate(lists):
            user = histories[lo + i][0]
            out_lines.append(json.dumps({'user': user,
                                         'items': [str(ds.prepared.item_raw[j]) for j in lst if j > 0],
                                         'unknown': unknowns[lo + i]}))
    # a temporary name of this process beside the output, removed if anything fails
    tmp = os.path.join(os.path.dirname(os.path.abspath(a.output)),
                       f'.{os.path.basename(a.output)}.tmp-{os.getpid()}')
    try:
        with open(tmp, 'w') as f:
            f.write('\n'.join(out_lines) + '\n')
        os.replace(tmp, a.output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f'wrote {len(out_lines)} recommendation lists to {a.output}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
