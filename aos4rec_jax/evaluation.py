"""The evaluation protocol (PROTOCOL sections 4-6), independent of any model.

A model is seen through `generate_fn(params, batch, rng) -> (sampled [B, K], full [B, K])`: the
lists it generates under the sampled protocol (only the user's candidates) and the full protocol
(every item). `Evaluator` runs it over an EvalSet in fixed-shape batches, scores the lists with
`metrics.compute_metrics`, and returns the summary in the workdir format

    {"sampled": {"prec@K": .., "ndcg@K": .., "bleu@K": .., "hr@K": .., "mrr@K": ..},
     "full": {...}, "users": N}

plus the lists themselves (for predictions files).
"""
from __future__ import annotations

import json
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aos4rec_jax import data as data_lib
from aos4rec_jax import metrics as metrics_lib

METRIC_NAMES = ('prec', 'ndcg', 'bleu', 'hr', 'mrr')
NEG_INF = -1e30  # a finite "minus infinity": top_k of rows that are all banned stays well defined


def topk_lists(scores: jax.Array, k: int, candidates: jax.Array | None = None,
               banned: jax.Array | None = None) -> jax.Array:
    """The k best-scored allowed items, best first, for next-item scorers. Jit-compatible.

    Args:
      scores: [B, V] (or [V], broadcast) item scores; index 0 (padding) is never returned.
      k: list length K.
      candidates: [B, C] item ids or None (full protocol); 0 entries are padding.
      banned: bool [B, V] or None.
    Returns:
      int32 [B, K]; slots with no allowed item left hold 0. Ties go to the lower index
      (candidate position in candidate mode, item id in full mode).
    """
    if scores.ndim == 1:
        B = candidates.shape[0] if candidates is not None else banned.shape[0]
        scores = jnp.broadcast_to(scores, (B, scores.shape[0]))
    scores = scores.astype(jnp.float32)
    allowed = jnp.ones(scores.shape, bool).at[:, 0].set(False)
    if banned is not None:
        allowed = allowed & ~banned
    if candidates is not None:
        s = jnp.take_along_axis(scores, candidates, axis=1)
        ok = jnp.take_along_axis(allowed, candidates, axis=1) & (candidates > 0)
        vals, pos = jax.lax.top_k(jnp.where(ok, s, NEG_INF), k)
        ids = jnp.take_along_axis(candidates, pos, axis=1)
    else:
        vals, ids = jax.lax.top_k(jnp.where(allowed, scores, NEG_INF), k)
    return jnp.where(vals > NEG_INF / 2, ids, 0).astype(jnp.int32)


def topk_sampled_and_full(scores: jax.Array, batch: dict, k: int):
    """The two lists of an evaluation batch from next-item scores [B, V] (or [V]): (sampled
    [B, k] among batch['candidates'] with batch['banned_sampled'] (else batch['banned']) out, or
    None when the batch has no candidates; full [B, k] over all items with batch['banned'] out)."""
    sampled = None if batch.get('candidates') is None else topk_lists(
        scores, k, candidates=batch['candidates'],
        banned=batch.get('banned_sampled', batch['banned']))
    return sampled, topk_lists(scores, k, banned=batch['banned'])


class Evaluator:
    """Generates and scores lists for the users of an EvalSet; jit-compiled once per run.

    `generate_fn(params, batch, rng)` receives `batch` with keys history [B, L], target [B, T],
    candidates [B, C], banned bool [B, V] (all False when the profile allows history items),
    banned_sampled bool [B, V] (the ban of the sampled list: `banned`, except under the
    leave-one-out protocol, where the candidate list is ranked as it is), users [B] (the
    dataset's user rows).
    """

    def __init__(self, generate_fn: Callable, ds: data_lib.Dataset, batch_size: int,
                 device_data: data_lib.DeviceData | None = None):
        self.ds, self.batch_size = ds, batch_size
        info = ds.info
        device_data = ds.device_data() if device_data is None else device_data
        # The packed item array is an ARGUMENT of the compiled program, not a constant closed
        # over by it (at ML-20M size it is about 80 MB, which would be baked into the executable).
        self._items = device_data.items
        max_hist, ban = ds.max_history, info.ban_history
        loo = info.protocol == 'loo'

        @jax.jit
        def run(params, b, rng, items):
            if ban:
                banned = data_lib.history_ban_mask(items, b['hist_start'], b['hist_len'],
                                                   max_hist, info.vocab_size)
            else:
                banned = jnp.zeros((b['history'].shape[0], info.vocab_size), bool)
            # leave-one-out: the candidates are the target and items the user never interacted
            # with, ranked as they are (SASRec, S3-Rec); the history ban is the full scene's
            banned_sampled = jnp.zeros_like(banned) if loo else banned
            batch = dict(history=b['history'], target=b['target'], candidates=b['candidates'],
                         banned=banned, banned_sampled=banned_sampled, users=b['users'])
            sampled, full = generate_fn(params, batch, rng)
            return sampled, full, metrics_lib.compute_metrics(sampled, b['target']), \
                metrics_lib.compute_metrics(full, b['target'])

        self._run = run

    def __call__(self, params, es: data_lib.EvalSet, rng: jax.Array,
                 log: Callable[[str], None] | None = None):
        """Returns (summary dict, sampled lists [U', K] int32, full lists [U', K] int32)."""
        t0 = time.time()
        outs_s, outs_f = [], []
        sums = {'sampled': {m: 0.0 for m in METRIC_NAMES}, 'full': {m: 0.0 for m in METRIC_NAMES}}
        users = 0
        nb = (len(es) + self.batch_size - 1) // self.batch_size
        for bi, (b, real) in enumerate(data_lib.eval_batches(es, self.batch_size)):
            sampled, full, ms, mf = self._run(params, b, jax.random.fold_in(rng, bi), self._items)
            outs_s.append(np.asarray(sampled)[:real])
            outs_f.append(np.asarray(full)[:real])
            for proto, m in (('sampled', ms), ('full', mf)):
                valid = np.asarray(m['valid'])[:real].astype(bool)
                for name in METRIC_NAMES:
                    sums[proto][name] += float(np.asarray(m[name], np.float64)[:real][valid].sum())
            users += int(np.asarray(ms['valid'])[:real].sum())
            if log and nb >= 10 and (bi + 1) % (nb // 10) == 0 and time.time() - t0 > 5:
                log(f'  eval {es.name}: batch {bi + 1}/{nb} ({time.time() - t0:.1f}s)')
        K = self.ds.info.k
        summary = {proto: {f'{name}@{K}': (sums[proto][name] / max(users, 1)) for name in METRIC_NAMES}
                   for proto in ('sampled', 'full')}
        summary['users'] = users
        return summary, np.concatenate(outs_s), np.concatenate(outs_f)


def _atomic_write_bytes(path: str, write: Callable[[str], None]):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f'{path}.tmp-{os.getpid()}'
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:                  # a failed write (full disk, bad value) leaves nothing behind
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, obj) -> None:
    """Writes JSON atomically (temporary name, then rename)."""
    def w(tmp):
        with open(tmp, 'w') as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write('\n')
    _atomic_write_bytes(path, w)


def _raw_lists(rows: np.ndarray, item_raw: np.ndarray, keep_empty: bool) -> list[list]:
    """Raw ids; 0 entries are dropped (targets) or kept as null (empty slots of generated lists)."""
    if keep_empty:
        return [[str(item_raw[i]) if i > 0 else None for i in r] for r in rows]
    return [[str(item_raw[i]) for i in r if i > 0] for r in rows]


def write_predictions(path: str, ds: data_lib.Dataset, es: data_lib.EvalSet, sampled: np.ndarray,
                      full: np.ndarray) -> None:
    """predictions parquet: user (raw id), target, generated, generated_full (raw item ids, in order;
    an empty slot of a generated list, when too few items were allowed, is null)."""
    item_raw = ds.prepared.item_raw
    table = pa.table({
        'user': pa.array([str(u) for u in ds.prepared.raw_users[es.users]], pa.string()),
        'target': pa.array(_raw_lists(es.target, item_raw, False), pa.list_(pa.string())),
        'generated': pa.array(_raw_lists(sampled, item_raw, True), pa.list_(pa.string())),
        'generated_full': pa.array(_raw_lists(full, item_raw, True), pa.list_(pa.string())),
    })
    _atomic_write_bytes(path, lambda tmp: pq.write_table(table, tmp))
