"""Choosing the run's dataset: a prepared folder, or the built-in synthetic oracle dataset.

The synthetic dataset (PROTOCOL section 7) is drawn from a fixed random LSTM oracle
(`synthetic.py`) and then goes through exactly the same pipeline as real logs
(`data_prep.build_dataset`: k-core, filters, remapping, split, candidates). Its folder also holds
`oracle.npz`/`oracle.json`, so the oracle's NLL of generated lists can be measured later.
It is generated once into a cache folder keyed by its settings and reused.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os

import jax
import numpy as np

import data_prep
from aos4rec_jax import data as data_lib
from aos4rec_jax import synthetic
from aos4rec_jax.methods.base import RunError

ORACLE_FILE = 'oracle'


def synthetic_key(sc) -> str:
    d = {k: sc[k] for k in ('num_users', 'seq_len', 'vocab_size', 'hidden_size', 'oracle_seed',
                            'data_seed', 'profile')}
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


def make_synthetic(sc, out_dir: str, log=print) -> str:
    """Generates the synthetic dataset described by config section `sc` into `out_dir`."""
    cfg = synthetic.OracleConfig(vocab_size=int(sc.vocab_size), hidden_size=int(sc.hidden_size),
                                 embed_size=int(sc.hidden_size), seed=int(sc.oracle_seed))
    params = synthetic.init_oracle(cfg)
    seqs = synthetic.generate(params, jax.random.PRNGKey(int(sc.data_seed)), int(sc.num_users),
                              int(sc.seq_len), cfg)
    U, n = seqs.shape
    users = np.repeat(np.arange(U), n)
    times = np.tile(np.arange(n), U)
    settings = data_prep.settings_for(sc.profile, seed=int(sc.data_seed))
    prepared = data_prep.build_dataset(users, seqs.reshape(-1), times, settings,
                                       source={'format': 'synthetic-oracle', 'inputs': [],
                                               'oracle': dict(cfg.__dict__)})
    data_prep.write_dataset(prepared, out_dir, overwrite=True)
    synthetic.save_oracle(params, cfg, os.path.join(out_dir, ORACLE_FILE))
    _load_oracle.cache_clear()          # a cached oracle at this path is now stale
    log(f'synthetic dataset: {prepared.stats["users"]} users, {prepared.stats["items"]} items, '
        f'{prepared.stats["interactions"]} interactions -> {out_dir}')
    return out_dir


def get_dataset(config, workdir: str, log=print) -> data_lib.Dataset:
    """The run's Dataset: `config.data_dir` if set, else the (cached) synthetic dataset."""
    if config.data_dir:
        if not os.path.isdir(config.data_dir):
            raise FileNotFoundError(f'config.data_dir={config.data_dir!r} is not a folder '
                                    '(prepare one with: python -m data_prep --help)')
        return data_lib.Dataset.load(config.data_dir, config.history_len, config.target_len)
    sc = config.synthetic
    root = sc.cache_dir or os.path.join(workdir, 'data')
    out = os.path.join(root, f'synthetic-{synthetic_key(sc)}')
    if not os.path.exists(os.path.join(out, 'stats.json')) or not os.path.exists(
            os.path.join(out, ORACLE_FILE + '.npz')):
        os.makedirs(root, exist_ok=True)
        make_synthetic(sc, out, log=log)
    return data_lib.Dataset.load(out, config.history_len, config.target_len)


FINGERPRINT_FILES = data_prep.storage.FILES + (ORACLE_FILE + '.npz', ORACLE_FILE + '.json')


def fingerprint(data_dir: str) -> dict:
    """{file name: sha256 (16 hex digits)} of the files of a prepared folder a run reads."""
    out = {}
    for name in FINGERPRINT_FILES:
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            h = hashlib.sha256()
            with open(path, 'rb') as f:
                for chunk in iter(lambda: f.read(1 << 20), b''):
                    h.update(chunk)
            out[name] = h.hexdigest()[:16]
    return out


def check_fingerprint(ds: data_lib.Dataset, recorded: dict | None) -> dict:
    """The data folder's fingerprint; RunError if the run recorded another one (`recorded`: the
    `fingerprint` of its dataset.json; the folder was re-prepared or edited since the run was
    trained on it). Runs from before the fingerprint existed (None) are accepted."""
    fp = fingerprint(ds.data_dir)
    if recorded is None:
        return fp
    old = recorded
    changed = sorted(n for n in set(old) | set(fp) if old.get(n) != fp.get(n))
    if changed:
        raise RunError(f'the data in {ds.data_dir} is not the data this run was trained on '
                       f'({", ".join(changed)} changed since; the folder was prepared again or '
                       'edited): use the original data, or train in a new --workdir')
    return fp


def oracle_for(ds: data_lib.Dataset):
    """(params, cfg) of the oracle that generated `ds`, or None for real data."""
    path = os.path.join(ds.data_dir, ORACLE_FILE)
    if ds.data_dir and os.path.exists(path + '.npz'):
        return _load_oracle(os.path.abspath(path))
    return None


@functools.lru_cache(maxsize=4)
def _load_oracle(path: str):
    """Read once per process: every validation and every split asks for it again."""
    try:
        return synthetic.load_oracle(path)
    except (OSError, ValueError, KeyError) as e:      # npz (zip) or json damaged or truncated
        raise RunError(f'{path}.npz/.json: cannot read the synthetic oracle ({type(e).__name__}: '
                       f'{str(e)[:120]}); delete the dataset folder to generate it again') from None


def oracle_prefix(ds: data_lib.Dataset, es: data_lib.EvalSet):
    """(oracle params, item id -> oracle token [N + 1], each user's whole history as oracle tokens
    [U', P], left-padded with 0): what the oracle reads before a user's list."""
    params, _ = oracle_for(ds)
    to_token = np.array([0] + [int(x) for x in ds.prepared.item_raw[1:]], np.int32)
    items = ds.prepared.items_flat
    P = int(es.hist_len.max())
    pos = np.arange(P)[None, :] - (P - es.hist_len[:, None])          # left-padded
    prefix = np.where(pos >= 0, items[np.clip(es.hist_start[:, None] + pos, 0, len(items) - 1)], 0)
    return params, to_token, to_token[prefix]


def oracle_nll(ds: data_lib.Dataset, es: data_lib.EvalSet, lists: np.ndarray) -> float:
    """Mean NLL_oracle of generated lists [U', K] given each user's whole history (PROTOCOL 7)."""
    params, to_token, prefix = oracle_prefix(ds, es)
    cont = to_token[lists]
    out = []
    for lo in range(0, len(prefix), 1024):
        out.append(np.asarray(synthetic.nll(params, prefix[lo:lo + 1024], cont[lo:lo + 1024])))
    return float(np.concatenate(out).mean())
