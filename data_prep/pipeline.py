"""Interactions -> prepared dataset (PROTOCOL sections 1, 2 and 4), in numpy only.

Everything that turns (user, item, time) triples into the arrays of a prepared dataset lives
here, so the CLI (``python -m data_prep``) and any other producer (the synthetic generator)
go through exactly the same code: ``build_dataset``.
"""
from __future__ import annotations

import re
import time as _time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional

import numpy as np

from .errors import DataPrepError
from .settings import Settings

_INT_RE = re.compile(r"[+-]?[0-9]+\Z")


class Factorized(NamedTuple):
    """Keys already factorized: ``uniques[codes]`` are the raw keys (strings or ints).

    Readers hand string columns over like this (from pyarrow dictionary arrays) so that no
    Python object per row is ever made. ``build_dataset`` accepts it wherever it accepts a
    key array.
    """

    codes: np.ndarray
    uniques: np.ndarray


@dataclass
class PreparedData:
    """A prepared dataset, all numpy (see docs/DESIGN.md, "Prepared dataset folder").

    ``items_flat[offsets[u]:offsets[u + 1]]`` is user ``u``'s whole sequence (new item ids,
    time order); train = its first ``n_train[u]`` items, validation = the next ``n_valid[u]``,
    test = the last ``n_test[u]``. ``item_raw[i]`` is the raw id of item ``i`` (``item_raw[0]``
    is ``''``, padding). ``cand_valid[u]`` / ``cand_test[u]`` are the candidate lists.
    ``ratings`` (float32, aligned with ``items_flat``: ``ratings[k]`` is the rating of the
    interaction ``items_flat[k]``) when the input had a rating column, else None.
    """

    raw_users: np.ndarray
    item_raw: np.ndarray
    items_flat: np.ndarray
    offsets: np.ndarray
    n_train: np.ndarray
    n_valid: np.ndarray
    n_test: np.ndarray
    cand_valid: np.ndarray
    cand_test: np.ndarray
    settings: Settings
    stats: dict
    source: dict = field(default_factory=dict)
    ratings: Optional[np.ndarray] = None

    @property
    def num_users(self) -> int:
        return int(self.raw_users.shape[0])

    @property
    def num_items(self) -> int:
        return int(self.item_raw.shape[0]) - 1

    def sequence(self, u: int) -> np.ndarray:
        return self.items_flat[self.offsets[u]:self.offsets[u + 1]]

    def parts(self, u: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(train, valid, test) item arrays of user ``u``."""
        s = self.sequence(u)
        a = int(self.n_train[u])
        b = a + int(self.n_valid[u])
        return s[:a], s[a:b], s[b:]

    def protocol_dict(self) -> dict:
        """The content of protocol.json."""
        d = self.settings.to_dict()
        d["num_items"] = self.num_items
        d["num_users"] = self.num_users
        src = dict(self.source)
        d["format"] = src.pop("format", None)
        d["inputs"] = list(src.pop("inputs", []) or [])
        src.pop("ratings", None)              # said by the data itself (below)
        for k, v in src.items():
            d.setdefault(k, v)
        if self.ratings is not None:          # absent: no ratings (every folder before them)
            d["ratings"] = True
        return d


# --------------------------------------------------------------------------------------------
# keys and times


def _all_integer_strings(values) -> bool:
    return len(values) > 0 and all(_INT_RE.match(v) is not None for v in values)


def _order_strings(uniques: np.ndarray) -> tuple[np.ndarray, bool]:
    """Permutation putting string ids in raw-id order: numerically if all are integers."""
    strs = [str(v) for v in uniques.tolist()]
    if _all_integer_strings(strs):
        perm = sorted(range(len(strs)), key=lambda j: (int(strs[j]), strs[j]))
        return np.asarray(perm, dtype=np.int64), True
    perm = sorted(range(len(strs)), key=strs.__getitem__)
    return np.asarray(perm, dtype=np.int64), False


def _factorize_ints(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-> (sorted unique values, int32 codes); O(n) through a presence table when ids are dense."""
    if arr.shape[0] == 0:
        return arr[:0], np.zeros(0, dtype=np.int32)
    lo, hi = int(arr.min()), int(arr.max())
    span = hi - lo + 1
    if span <= 4 * arr.shape[0] + (1 << 20):
        shifted = (arr - lo) if lo != 0 else arr
        present = np.zeros(span, dtype=bool)
        present[shifted] = True
        uniques = np.flatnonzero(present).astype(arr.dtype) + lo
        rank = np.cumsum(present, dtype=np.int32)
        rank -= 1
        return uniques, rank[shifted]
    uniques, codes = np.unique(arr, return_inverse=True)
    return uniques, codes.astype(np.int32, copy=False)


def _ordered_keys(keys, what: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """-> (codes int32 with code order == raw-id order, raw id strings per code, numeric?)."""
    if isinstance(keys, Factorized):
        codes = np.asarray(keys.codes)
        uniques = np.asarray(keys.uniques)
        if uniques.dtype.kind in "iu":
            perm = np.argsort(uniques, kind="stable")
            numeric = True
        else:
            perm, numeric = _order_strings(uniques)
        rank = np.empty(len(uniques), dtype=np.int32)
        rank[perm] = np.arange(len(uniques), dtype=np.int32)
        raw = np.asarray([str(v) for v in uniques[perm].tolist()], dtype=object)
        return rank[codes], raw, numeric
    arr = np.asarray(keys)
    if arr.ndim != 1:
        raise DataPrepError(f"{what} keys must be a 1-D array, got shape {arr.shape}")
    kind = arr.dtype.kind
    if kind == "f":
        if not (np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
            raise DataPrepError(f"{what} keys must be integers or strings "
                                f"(got non-integral floats)")
        arr = arr.astype(np.int64)
        kind = "i"
    if kind == "b":
        raise DataPrepError(f"{what} keys must be integers or strings, got booleans")
    if kind in "iu":
        uniques, codes = _factorize_ints(arr)
        raw = np.asarray([str(v) for v in uniques.tolist()], dtype=object)
        return codes, raw, True
    if kind in "USO":
        if kind == "S":
            arr = np.char.decode(arr, "utf-8")
        elif kind == "O":
            arr = arr.astype(str)
        uniques, codes = np.unique(arr, return_inverse=True)
        return _ordered_keys(Factorized(codes, uniques), what)
    raise DataPrepError(f"{what} keys must be integers or strings, got dtype {arr.dtype}")


def _as_times(times, n: int) -> np.ndarray:
    t = np.asarray(times)
    if t.ndim != 1 or t.shape[0] != n:
        raise DataPrepError(f"times must be a 1-D array of the same length as the keys ({n}), "
                            f"got shape {t.shape}")
    kind = t.dtype.kind
    if kind == "M":
        if np.isnat(t).any():
            raise DataPrepError("times contain NaT")
        return t.astype("datetime64[ns]").astype(np.int64)
    if kind in "iu":
        return t.astype(np.int64, copy=False)
    if kind == "f":
        if not np.all(np.isfinite(t)):
            raise DataPrepError("times contain NaN or infinity")
        return t.astype(np.float64, copy=False)
    if kind == "O":
        try:
            return _as_times(t.astype(np.float64), n)
        except (TypeError, ValueError):
            pass
    raise DataPrepError(f"times must be numeric or datetime64, got dtype {t.dtype}")


def _as_ratings(ratings, n: int) -> np.ndarray:
    """The ratings as float32 [n]; DataPrepError for a bad shape or type, or a NaN/infinity
    (naming the first such entry)."""
    r = np.asarray(ratings)
    if r.ndim != 1 or r.shape[0] != n:
        raise DataPrepError(f"ratings must be a 1-D array of the same length as the keys ({n}), "
                            f"got shape {r.shape}")
    if r.dtype.kind not in "iuf":
        raise DataPrepError(f"ratings must be numbers, got dtype {r.dtype}")
    with np.errstate(over="ignore"):                    # beyond float32 -> inf, refused below
        r32 = r.astype(np.float32, copy=False)
    bad = ~np.isfinite(r32)
    if bad.any():
        k = int(np.argmax(bad))
        raise DataPrepError(f"ratings must be finite float32 numbers: {int(bad.sum()):,} are not "
                            f"(NaN, infinity or out of range; the first is entry {k}: "
                            f"{r[k].item()!r})")
    return r32


# --------------------------------------------------------------------------------------------
# the pipeline


def _user_time_order(u: np.ndarray, t: np.ndarray, nu: int) -> np.ndarray:
    """Stable order by (user code, time): ties keep the given (file) order."""
    if t.dtype.kind == "i" and t.shape[0] > 0:
        lo, hi = int(t.min()), int(t.max())
        span = hi - lo + 1
        if nu * span < 2 ** 62:  # one stable sort of a combined integer key
            key = u.astype(np.int64) * span
            key += t - lo
            return np.argsort(key, kind="stable")
    order = np.argsort(t, kind="stable")
    return order[np.argsort(u[order], kind="stable")]


def _kcore(u: np.ndarray, i: np.ndarray, nu: int, ni: int, k: int):
    """Iterative k-core: drop users and items with < k interactions until both hold.

    Returns the kept positions (ascending) and the number of rounds. The k-core is unique
    (the largest sub-log where every user and item has >= k interactions), so the order of
    removals does not matter; each round removes every violator at once.
    """
    idx = np.arange(u.shape[0], dtype=np.int64)
    rounds = 0
    while True:
        rounds += 1
        uc = np.bincount(u, minlength=nu)
        ic = np.bincount(i, minlength=ni)
        ok = (uc[u] >= k) & (ic[i] >= k)
        if ok.all():
            return idx, rounds
        idx, u, i = idx[ok], u[ok], i[ok]
        if idx.shape[0] == 0:
            return idx, rounds


def _first_appearance_order(codes: np.ndarray, n_codes: int, chunk: int = 1 << 20) -> np.ndarray:
    """The distinct values of ``codes`` in order of first appearance (chunked, O(n))."""
    seen = np.zeros(n_codes, dtype=bool)
    out = []
    for start in range(0, codes.shape[0], chunk):
        part = codes[start:start + chunk]
        fresh = part[~seen[part]]
        if fresh.shape[0] == 0:
            continue
        uniq, first = np.unique(fresh, return_index=True)
        uniq = uniq[np.argsort(first, kind="stable")]
        seen[uniq] = True
        out.append(uniq)
    return np.concatenate(out) if out else np.zeros(0, dtype=codes.dtype)


def split_sizes(lengths: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PROTOCOL 2: h = min(ceil(0.2 n), cap); test = last h, valid = the h before, train = rest."""
    n = np.asarray(lengths, dtype=np.int64)
    h = np.minimum((n + 4) // 5, cap)  # ceil(n / 5) in exact integer arithmetic
    return (n - 2 * h).astype(np.int32), h.astype(np.int32), h.astype(np.int32)


def make_candidates(items_flat, offsets, n_train, n_valid, n_test, num_items: int,
                    settings: Settings):
    """PROTOCOL 4: per user and evaluated part, the distinct items of y* plus uniform
    negatives without replacement from the items the user never interacted with, in a seeded
    random order; zeros at the end only when too few never-seen items exist.

    User ``u``'s draw for part ``p`` (0 = validation, 1 = test) uses only
    ``np.random.default_rng([seed, u, p])``, so it does not depend on other users.
    Returns (cand_valid, cand_test, short) with ``short[u]`` True when a list of ``u`` is padded.
    """
    U = int(n_train.shape[0])
    C = settings.num_candidates
    T = settings.target_len
    N = int(num_items)
    cand = [np.zeros((U, C), dtype=np.int32), np.zeros((U, C), dtype=np.int32)]
    short = np.zeros(U, dtype=bool)
    seen = np.zeros(N + 1, dtype=bool)
    seen[0] = True                        # padding is never a candidate
    seed = int(settings.seed)
    for u in range(U):
        seq = items_flat[offsets[u]:offsets[u + 1]]
        seen[seq] = True
        never = np.flatnonzero(~seen)     # the user's never-seen items, ascending
        seen[seq] = False
        seen[0] = True
        free = never.shape[0]
        start = int(n_train[u])
        for part, h in ((0, int(n_valid[u])), (1, int(n_test[u]))):
            tgt = list(dict.fromkeys(seq[start:start + min(T, h)].tolist()))
            start += h
            need = C - len(tgt)
            rng = np.random.default_rng([seed, u, part])
            if need <= free:
                negs = never[rng.choice(free, size=need, replace=False, shuffle=False)]
            else:
                negs = never
                short[u] = True
            row = np.concatenate([np.asarray(tgt, dtype=never.dtype), negs])
            rng.shuffle(row)
            cand[part][u, :row.shape[0]] = row
    return cand[0], cand[1], short


def build_dataset(user_keys, item_keys, times, settings: Settings, source: Optional[dict] = None,
                  *, log: Optional[Callable[[str], None]] = None,
                  ratings=None) -> PreparedData:
    """(user, item, time) triples in file order -> PreparedData (PROTOCOL sections 1, 2, 4).

    ``user_keys`` / ``item_keys``: 1-D int or str arrays (or ``Factorized``); ``times``: 1-D
    int, float or datetime64. Ties in time keep the given order. ``source`` (e.g.
    ``{"format": ..., "inputs": [...]}``) is recorded in protocol.json. ``log`` receives
    progress lines. ``ratings``: None, or a 1-D numeric array aligned with the triples (the
    rating of each interaction, finite); it follows every reordering and filter, so
    ``PreparedData.ratings[k]`` is the rating of ``items_flat[k]``. Raises DataPrepError on bad
    arrays or when nothing is left after filtering.
    """
    if not isinstance(settings, Settings):
        raise DataPrepError(f"settings must be a data_prep.Settings, got {type(settings).__name__}")
    t_start = _time.perf_counter()
    stage = {}

    def say(msg: str):
        if log is not None:
            log(msg)

    def tick(name: str, t0: float) -> float:
        t1 = _time.perf_counter()
        stage[name] = round(t1 - t0, 3)
        return t1

    n = int(np.shape(times)[0]) if np.ndim(times) == 1 else -1
    u_len = (user_keys.codes if isinstance(user_keys, Factorized) else np.asarray(user_keys)).shape
    i_len = (item_keys.codes if isinstance(item_keys, Factorized) else np.asarray(item_keys)).shape
    if n < 0 or u_len != (n,) or i_len != (n,):
        raise DataPrepError(f"user keys, item keys and times must be 1-D arrays of one length, "
                            f"got shapes {u_len}, {i_len}, {np.shape(times)}")
    if n == 0:
        raise DataPrepError("no interactions (empty input)")
    t0 = _time.perf_counter()
    t = _as_times(times, n)
    r = None if ratings is None else _as_ratings(ratings, n)
    u, user_raw, users_numeric = _ordered_keys(user_keys, "user")
    i, item_raw_all, _ = _ordered_keys(item_keys, "item")
    nu, ni = user_raw.shape[0], item_raw_all.shape[0]
    t0 = tick("factorize", t0)
    say(f"factorized {n:,} interactions: {nu:,} users, {ni:,} items "
        f"({'numeric' if users_numeric else 'string'} user order) [{stage['factorize']:.1f} s]")

    # 1. sequences: stable sort by time, then by user (ties keep the given order).
    order = _user_time_order(u, t, nu)
    del t
    u = u[order]
    i = i[order]
    if r is not None:
        r = r[order]
    del order
    t0 = tick("sort", t0)
    say(f"sorted by (user, time), stable [{stage['sort']:.1f} s]")

    # 1. iterative k-core, then the length filter once.
    kept, rounds = _kcore(u, i, nu, ni, settings.k_core)
    u, i = u[kept], i[kept]
    if r is not None:
        r = r[kept]
    del kept
    kc_users = int(np.count_nonzero(np.bincount(u, minlength=nu))) if u.size else 0
    kc_items = int(np.count_nonzero(np.bincount(i, minlength=ni))) if i.size else 0
    kc_inter = int(u.shape[0])
    t0 = tick("kcore", t0)
    say(f"{settings.k_core}-core ({rounds} rounds): {kc_users:,} users, {kc_items:,} items, "
        f"{kc_inter:,} interactions [{stage['kcore']:.1f} s]")
    lens = np.bincount(u, minlength=nu)
    kc_lens = lens[lens > 0]
    ok_user = lens >= settings.min_len
    if settings.max_len is not None:
        ok_user &= lens <= settings.max_len
    ok_user &= lens > 0
    row_ok = ok_user[u]
    u, i = u[row_ok], i[row_ok]
    if r is not None:
        r = r[row_ok]
    del row_ok
    if kc_inter == 0:
        raise DataPrepError(f"nothing left after filtering: the {settings.k_core}-core removed "
                            f"all {n:,} interactions")
    if u.shape[0] == 0:
        hi = settings.max_len if settings.max_len is not None else "inf"
        raise DataPrepError(
            f"nothing left after filtering: the {settings.k_core}-core kept {kc_users:,} users / "
            f"{kc_items:,} items / {kc_inter:,} interactions, and no user's length is in "
            f"[{settings.min_len}, {hi}] (lengths {int(lens[lens > 0].min())}.."
            f"{int(lens.max())})")
    t0 = tick("length_filter", t0)
    say(f"length filter [{settings.min_len}, {settings.max_len or 'inf'}]: "
        f"{int(ok_user.sum()):,} users, {u.shape[0]:,} interactions "
        f"[{stage['length_filter']:.1f} s]")

    # 1. users in raw-id order (codes already are); items 1..N by first appearance.
    kept_users = np.flatnonzero(ok_user)
    U = int(kept_users.shape[0])
    lengths = lens[kept_users].astype(np.int64)
    offsets = np.zeros(U + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    raw_users = user_raw[kept_users].astype(str)
    by_first = _first_appearance_order(i, ni)
    N = int(by_first.shape[0])
    new_id = np.zeros(ni, dtype=np.int32)
    new_id[by_first] = np.arange(1, N + 1, dtype=np.int32)
    items_flat = new_id[i]
    del u, i, new_id
    item_raw = np.concatenate([np.asarray([""], dtype=object), item_raw_all[by_first]]).astype(str)

    # 2. split.
    n_train, n_valid, n_test = split_sizes(lengths, settings.cap)
    t0 = tick("remap_split", t0)
    say(f"users in raw-id order, items remapped to 1..{N:,} by first appearance, split "
        f"(cap {settings.cap}) [{stage['remap_split']:.1f} s]")

    # 4. candidates.
    cand_valid, cand_test, short = make_candidates(items_flat, offsets, n_train, n_valid, n_test,
                                                   N, settings)
    t0 = tick("candidates", t0)
    say(f"candidates: 2 x {U:,} lists of {settings.num_candidates:,} "
        f"({int(short.sum()):,} users short of never-seen items) [{stage['candidates']:.1f} s]")

    inter = int(items_flat.shape[0])
    stats = {
        "users": U,
        "items": N,
        "interactions": inter,
        "min_len": int(lengths.min()),
        "max_len": int(lengths.max()),
        "avg_len": inter / U,
        "train_items": int(n_train.sum(dtype=np.int64)),
        "valid_items": int(n_valid.sum(dtype=np.int64)),
        "test_items": int(n_test.sum(dtype=np.int64)),
        "raw_users": int(nu),
        "raw_items": int(ni),
        "raw_interactions": int(n),
        "kcore_users": kc_users,
        "kcore_items": kc_items,
        "kcore_interactions": kc_inter,
        "kcore_rounds": int(rounds),
        "kcore_min_len": int(kc_lens.min()),
        "kcore_max_len": int(kc_lens.max()),
        "kcore_avg_len": kc_inter / kc_users,
        "length_filtered_users": int(kc_users - U),
        "users_short_candidates": int(short.sum()),
        "numeric_user_ids": bool(users_numeric),
    }
    if r is not None:       # only with ratings: a folder without them is written as before
        stats.update({"ratings": True, "rating_min": float(r.min()),
                      "rating_max": float(r.max()), "rating_mean": float(r.mean(dtype=np.float64))})
    stats.update({
        "stage_seconds": stage,
        "elapsed_seconds": round(_time.perf_counter() - t_start, 3),
    })
    return PreparedData(
        raw_users=raw_users, item_raw=item_raw, items_flat=items_flat, offsets=offsets,
        n_train=n_train, n_valid=n_valid, n_test=n_test, cand_valid=cand_valid,
        cand_test=cand_test, settings=settings, stats=stats, source=dict(source or {}),
        ratings=r)


def table1_line(name: str, stats: dict) -> str:
    """The AOS4Rec paper's Table 1 columns: # User, # Item, Min., Max., Avg. (length)."""
    return (f"{'Dataset':<20} {'# User':>10} {'# Item':>9} {'Min.':>6} {'Max.':>7} {'Avg.':>8}\n"
            f"{name:<20} {stats['users']:>10,} {stats['items']:>9,} {stats['min_len']:>6,} "
            f"{stats['max_len']:>7,} {stats['avg_len']:>8.2f}")
