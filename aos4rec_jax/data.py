"""Prepared datasets on the device: packed items, a jit-compatible window sampler, eval batches.

A prepared dataset (see docs/DESIGN.md, written by `python -m data_prep` or `synthetic.py`) becomes

* `DeviceData`: the packed item array of all users plus offsets and split sizes, on device, and
  the cumulative count of training windows per user, so that `sample_windows(data, key, B)`
  draws a batch of (history, target) windows *on the device* from a PRNG key alone: no host
  pipeline in the training loop, same key -> same batch.
* `EvalSet`: per-user history / target / candidates for the validation or the test split
  (PROTOCOL section 3), host numpy arrays that `eval_batches` slices into fixed-shape batches.
* Ratings, when the folder has them (data_prep keeps the MovieLens ratings: the optional
  `ratings` column of sequences.parquet): `Dataset.ratings` (float32, aligned with the packed
  items) and `DeviceData.ratings` on device (None without them); `sample_user_sequences_rated`
  gathers them beside the items (CRR's rewards).

Training windows (PROTOCOL section 3): for a user with train part t_1..t_n and every position
i in 1..n-1, x = the up-to-L items before i (left-padded with 0), y = t_i..t_{i+T-1} cut at the end
of the train part and right-padded with 0 (a "tail" window, masked in the loss). Windows are drawn
uniformly over all (user, i) pairs, so an epoch is `num_windows / batch_size` steps.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np

import data_prep


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """Static facts of a dataset that shape the model and the jitted functions (hashable)."""
    num_items: int          # N; item ids are 1..N, 0 is padding
    num_users: int
    k: int                  # length of generated lists (K)
    target_len: int         # T
    history_len: int        # L
    ban_history: bool       # evaluation bans the user's history (MovieLens profile)
    num_candidates: int     # C
    num_windows: int        # training windows over all users
    profile: str
    protocol: str

    @property
    def vocab_size(self) -> int:
        """Logit entries: 0 (padding) and the N items."""
        return self.num_items + 1

    @property
    def bos_id(self) -> int:
        return self.num_items + 1


@flax.struct.dataclass
class DeviceData:
    """Packed sequences on device. Shapes: items [P], offsets [U+1], n_train [U], window_cum [U+1];
    ratings [P] float32 (the rating of each packed item) or None when the dataset has none."""
    items: jax.Array
    offsets: jax.Array
    n_train: jax.Array
    window_cum: jax.Array
    ratings: Optional[jax.Array] = None


@flax.struct.dataclass
class Batch:
    """A training batch: history [B, L] (left-padded), target [B, T] (right-padded), both int32."""
    history: jax.Array
    target: jax.Array


@dataclasses.dataclass
class EvalSet:
    """One evaluation split, host arrays with one row per evaluated user.

    users [U'] (row in the dataset), history [U', L] left-padded, target [U', T] right-padded,
    candidates [U', C], hist_start [U'] and hist_len [U'] locate the user's whole history (all
    items before the evaluated part) inside the packed item array (for banning it).
    """
    name: str
    users: np.ndarray
    history: np.ndarray
    target: np.ndarray
    candidates: np.ndarray
    hist_start: np.ndarray
    hist_len: np.ndarray

    def __len__(self):
        return len(self.users)


class Dataset:
    """A prepared dataset loaded from its folder, with host and device views."""

    def __init__(self, prepared: data_prep.PreparedData, history_len: int = -1, target_len: int = -1,
                 data_dir: str = ''):
        self.prepared = prepared
        self.data_dir = data_dir
        # the rating of every packed item (float32 [P]), or None: the folder has no ratings
        self.ratings = (None if prepared.ratings is None
                        else np.asarray(prepared.ratings, np.float32))
        s = prepared.settings
        L = s.history_len if history_len == -1 else history_len
        T = s.target_len if target_len == -1 else target_len
        n_train = prepared.n_train.astype(np.int64)
        windows = np.maximum(n_train - 1, 0)
        self.window_cum = np.concatenate([[0], np.cumsum(windows)]).astype(np.int64)
        num_windows = int(self.window_cum[-1])
        if num_windows == 0:
            raise ValueError(f'dataset {data_dir or "(in memory)"} has no training windows '
                             '(every train part has fewer than 2 items)')
        if num_windows >= 2**31 - 1:
            raise ValueError(f'{num_windows} training windows do not fit int32 indices')
        self.info = DataInfo(
            num_items=int(len(prepared.item_raw) - 1), num_users=int(len(prepared.n_train)),
            k=int(s.k), target_len=int(T), history_len=int(L), ban_history=bool(s.ban_history),
            num_candidates=int(prepared.cand_test.shape[1]), num_windows=num_windows,
            profile=str(s.profile), protocol=str(s.protocol))

    @classmethod
    def load(cls, data_dir: str, history_len: int = -1, target_len: int = -1) -> 'Dataset':
        return cls(data_prep.load_dataset(data_dir), history_len, target_len, data_dir=str(data_dir))

    @property
    def has_ratings(self) -> bool:
        return self.ratings is not None

    def rating_range(self) -> tuple[float, float] | None:
        """(lowest, highest) rating of the dataset (all its interactions), or None."""
        if self.ratings is None or len(self.ratings) == 0:
            return None
        return float(self.ratings.min()), float(self.ratings.max())

    # ---------------------------------------------------------------- device view
    def device_data(self, sharding=None) -> DeviceData:
        """Packed arrays on device (replicated over `sharding` when given); the ratings too when
        the dataset has them (4 bytes an interaction)."""
        p = self.prepared
        arrays = DeviceData(
            items=np.asarray(p.items_flat, np.int32),
            offsets=np.asarray(p.offsets, np.int32),
            n_train=np.asarray(p.n_train, np.int32),
            window_cum=np.asarray(self.window_cum, np.int32),
            ratings=self.ratings)
        return jax.device_put(arrays, sharding) if sharding is not None else jax.device_put(arrays)

    def item_counts(self) -> np.ndarray:
        """Interactions of every item in the train parts, [N + 1] (index 0 = padding = 0)."""
        p = self.prepared
        pos = np.arange(len(p.items_flat)) - np.repeat(p.offsets[:-1], np.diff(p.offsets))
        in_train = pos < np.repeat(p.n_train, np.diff(p.offsets))
        return np.bincount(p.items_flat[in_train], minlength=self.info.num_items + 1).astype(np.int64)

    # ---------------------------------------------------------------- evaluation
    def eval_set(self, split: str, max_users: int = 0, seed: int | None = None) -> EvalSet:
        """The validation ('valid') or test ('test') examples of every user with a non-empty part.

        `max_users` > 0 and fewer than the users with a non-empty part: a fixed random subset of
        that many of them (not the first N by raw id, which is a skewed slice: raw ids follow sign-up
        order), in ascending user order. The subset is `eval_subset(users, max_users, seed)`: the
        first `max_users` of one seeded permutation, so it is the same on every call and in every
        run of this data (seed None: the data's own `seed` from protocol.json, which travels with
        it), and a smaller N gives a subset of a larger one's.
        """
        if split not in ('valid', 'test'):
            raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
        p, info = self.prepared, self.info
        L, T = info.history_len, info.target_len
        T_eval = max(T, 1)
        start = p.offsets[:-1].astype(np.int64)
        if split == 'valid':
            end, h, cand = p.n_train.astype(np.int64), p.n_valid.astype(np.int64), p.cand_valid
        else:
            end, h, cand = (p.n_train + p.n_valid).astype(np.int64), p.n_test.astype(np.int64), p.cand_test
        users = np.nonzero(h > 0)[0]
        if max_users and len(users) > max_users:
            users = eval_subset(users, max_users, p.settings.seed if seed is None else seed)
        s, e, hh = start[users], end[users], h[users]
        items = p.items_flat
        # history: the L items before position e (left-padded)
        hidx = (s + e)[:, None] - L + np.arange(L)[None, :]
        hist = np.where(hidx >= s[:, None], items[np.clip(hidx, 0, len(items) - 1)], 0)
        # target: first min(T, h) items of the evaluated part
        m = np.minimum(hh, T_eval)
        tidx = (s + e)[:, None] + np.arange(T_eval)[None, :]
        tgt = np.where(np.arange(T_eval)[None, :] < m[:, None], items[np.clip(tidx, 0, len(items) - 1)], 0)
        return EvalSet(name=split, users=users.astype(np.int64), history=hist.astype(np.int32),
                       target=tgt.astype(np.int32), candidates=np.asarray(cand[users], np.int32),
                       hist_start=(s).astype(np.int32), hist_len=e.astype(np.int32))

    @property
    def max_history(self) -> int:
        """Longest whole history before a test part (static size for history banning)."""
        p = self.prepared
        return int(max(1, (p.n_train + p.n_valid).max()))


def eval_subset(users: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A fixed random subset of `n` of `users` (all of them when n is 0 or covers them), in
    ascending order: the first n of a permutation drawn from `np.random.default_rng([seed, 12])`
    (12: this draw's own stream, apart from the data's other uses of the seed)."""
    users = np.asarray(users)
    if not n or n >= len(users):
        return users
    order = np.random.default_rng([int(seed), 12]).permutation(len(users))
    return np.sort(users[order[:int(n)]])


def eval_batches(es: EvalSet, batch_size: int):
    """Yields (batch dict of numpy arrays with a fixed leading size, number of real rows).

    The last batch is padded by repeating row 0 so every batch has the same shape (one compile).
    """
    n = len(es)
    for lo in range(0, n, batch_size):
        idx = np.arange(lo, lo + batch_size)
        real = int(min(batch_size, n - lo))
        idx = np.where(idx < n, idx, 0)
        yield dict(history=es.history[idx], target=es.target[idx], candidates=es.candidates[idx],
                   hist_start=es.hist_start[idx], hist_len=es.hist_len[idx],
                   users=es.users[idx].astype(np.int32)), real


HOLDOUT_SEED = 20200711      # the fixed draw of critic_holdout users (not config.seed: a run and
                             # the run its SSRGAN phase starts from must hold out the same users)


def holdout_users(num_users: int, fraction: float) -> np.ndarray:
    """bool [U]: round(fraction * U) users drawn by a fixed seeded permutation (HOLDOUT_SEED).
    The same (U, fraction) gives the same users in every run; a larger fraction holds out a
    superset of a smaller one's users."""
    n = int(round(float(fraction) * num_users))
    order = np.random.default_rng(HOLDOUT_SEED).permutation(num_users)
    mask = np.zeros(num_users, bool)
    mask[order[:n]] = True
    return mask


def windows_of_users(window_cum: np.ndarray, users: np.ndarray) -> np.ndarray:
    """window_cum [U + 1] of only the users where `users` (bool [U]) holds: the others get no
    window, so ``sample_windows`` on data with this window_cum draws uniformly over those users'
    windows (searchsorted skips a user with none)."""
    counts = np.diff(np.asarray(window_cum, np.int64)) * np.asarray(users, bool)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def sample_windows(data: DeviceData, key: jax.Array, batch_size: int, history_len: int,
                   target_len: int) -> Batch:
    """Draws `batch_size` training windows uniformly from all users' train parts. Jit-compatible.

    Args:
      data: the packed dataset on device.
      key: PRNG key; the same key gives the same batch.
      batch_size, history_len, target_len: static sizes B, L, T.
    Returns:
      Batch(history [B, L], target [B, T]) int32, 0 = padding.
    """
    return sample_windows_of_users(data, key, batch_size, history_len, target_len)[1]


def sample_windows_of_users(data: DeviceData, key: jax.Array, batch_size: int, history_len: int,
                            target_len: int):
    """`sample_windows` that also returns each window's user row: (users [B] int32, Batch)."""
    total = data.window_cum[-1]
    w = jax.random.randint(key, (batch_size,), 0, total, dtype=jnp.int32)
    user = jnp.searchsorted(data.window_cum, w, side='right') - 1
    i = 1 + w - data.window_cum[user]                       # position in the train part, 1..n-1
    start = data.offsets[user]
    n = data.n_train[user]
    hpos = i[:, None] - history_len + jnp.arange(history_len)[None, :]
    history = jnp.where(hpos >= 0, data.items[start[:, None] + jnp.maximum(hpos, 0)], 0)
    tpos = i[:, None] + jnp.arange(target_len)[None, :]
    target = jnp.where(tpos < n[:, None], data.items[start[:, None] + jnp.minimum(tpos, n[:, None] - 1)], 0)
    return user.astype(jnp.int32), Batch(history=history.astype(jnp.int32), target=target.astype(jnp.int32))


def history_ban_mask(items: jax.Array, hist_start: jax.Array, hist_len: jax.Array,
                     max_history: int, vocab_size: int) -> jax.Array:
    """bool [B, V]: True for every item in each user's whole history (items[start:start+len]).

    `max_history` is a static bound on hist_len. Jit-compatible (one scatter per batch).
    """
    pos = jnp.arange(max_history)[None, :]
    idx = hist_start[:, None] + jnp.minimum(pos, jnp.maximum(hist_len[:, None] - 1, 0))
    vals = jnp.where(pos < hist_len[:, None], items[idx], 0)
    B = hist_start.shape[0]
    mask = jnp.zeros((B, vocab_size), bool)
    mask = mask.at[jnp.arange(B)[:, None], vals].set(True)
    return mask.at[:, 0].set(False)


def sample_user_sequences(data: DeviceData, key: jax.Array, batch_size: int, seq_len: int):
    """Draws `batch_size` users uniformly (with replacement) among those with >= 2 train items and
    returns each one's last `seq_len + 1` train items as next-item training sequences (SASRec's
    batches). Jit-compatible.

    Returns (users [B] int32, inputs [B, L] int32, targets [B, L] int32): inputs = train items
    t_{n-L-1}..t_{n-2} left-padded with 0, targets = the items one step later (t_{n-L}..t_{n-1});
    a position whose input is padding has target 0 (the first train item is never a target).
    """
    user, tidx, iidx, real = _user_sequence_index(data, key, batch_size, seq_len)
    targets = jnp.where(real, data.items[tidx], 0)
    inputs = jnp.where(real, data.items[iidx], 0)
    return user, inputs.astype(jnp.int32), targets.astype(jnp.int32)


def sample_user_sequences_rated(data: DeviceData, key: jax.Array, batch_size: int, seq_len: int):
    """`sample_user_sequences` (the same users and items for the same key) plus the rating of each
    target: (users [B], inputs [B, L], targets [B, L], target_ratings [B, L] float32, 0 where the
    target is padding). Needs `data.ratings` (a dataset with ratings). Jit-compatible."""
    if data.ratings is None:
        raise ValueError('sample_user_sequences_rated: the dataset has no ratings')
    user, tidx, iidx, real = _user_sequence_index(data, key, batch_size, seq_len)
    targets = jnp.where(real, data.items[tidx], 0)
    inputs = jnp.where(real, data.items[iidx], 0)
    ratings = jnp.where(real, data.ratings[tidx], 0.0)
    return (user, inputs.astype(jnp.int32), targets.astype(jnp.int32),
            ratings.astype(jnp.float32))


def _user_sequence_index(data: DeviceData, key: jax.Array, batch_size: int, seq_len: int):
    """The draw of `sample_user_sequences`: (users [B] int32, packed index of each target [B, L],
    of its input [B, L], real [B, L] bool: False where both are padding)."""
    windows = data.window_cum[1:] - data.window_cum[:-1]        # n_train - 1 (0: unusable user)
    eligible = (windows > 0).astype(jnp.float32)
    user = jax.random.choice(key, eligible.shape[0], (batch_size,), p=eligible / jnp.sum(eligible))
    user = user.astype(jnp.int32)
    n = data.n_train[user]
    start = data.offsets[user]
    # target position j of row b is train item n - L + j (0-based); its input is the item before
    tpos = n[:, None] - seq_len + jnp.arange(seq_len)[None, :]
    ipos = tpos - 1
    return (user, start[:, None] + jnp.maximum(tpos, 0), start[:, None] + jnp.maximum(ipos, 0),
            ipos >= 0)


def sample_interactions(data: DeviceData, key: jax.Array, batch_size: int):
    """Draws `batch_size` (user, item) train interactions uniformly (BPR's positives).
    Jit-compatible. Returns (users [B] int32, items [B] int32)."""
    n_total = jnp.sum(data.n_train)
    cum = jnp.concatenate([jnp.zeros((1,), jnp.int32), jnp.cumsum(data.n_train)])
    w = jax.random.randint(key, (batch_size,), 0, n_total, dtype=jnp.int32)
    user = jnp.searchsorted(cum, w, side='right') - 1
    item = data.items[data.offsets[user] + (w - cum[user])]
    return user.astype(jnp.int32), item.astype(jnp.int32)
