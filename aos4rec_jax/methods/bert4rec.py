"""BERT4Rec (Sun et al., CIKM 2019): a bidirectional Transformer trained by the cloze task.

The network is models/bert4rec.py ([MASK] = item id N + 1). Training sequences
(`window_step`): 0 = B users drawn uniformly, each one's last L train items; > 0 = the authors'
sliding windows (gen_data_fin.py: a user with more than L train items gives the windows of L
items ending at n, n - step, ... plus the first L items), B windows drawn uniformly among all.
Cloze masking (the authors' data generation, with [MASK] always, their mask_prob = 1.0):
round(`mask_prob` x length) of the row's real positions, at least 1 and at most
`max_predictions`, chosen uniformly, are replaced by [MASK] (padding is never masked); with
probability `mask_last_prob` a row instead masks only its last item (the authors' mask_last
instances, one per window beside dupe_factor = 10 cloze copies: 1/11). A fresh mask is drawn
every time a sequence is drawn (the authors write dupe_factor fixed copies). The loss is the
softmax cross-entropy over all items of the original item, averaged over the masked positions
of the batch. Prediction (evaluation and `recommend`): [MASK] is appended to the history (its
oldest item drops out of the window) and the K-list ranks the scores at that position.
Optimizer: `make_optimizer` (the shared one unless `lr_decay` or config.weight_decay > 0).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aos4rec_jax import config as config_lib
from aos4rec_jax import data as data_lib
from aos4rec_jax import optim
from aos4rec_jax.methods import losses
from aos4rec_jax.methods.next_item import NextItemMethod, shift_in
from aos4rec_jax.models.bert4rec import BERT4Rec as BERT4RecNet, BERT4RecConfig


def cloze_mask(key, seq, mask_prob: float, max_predictions: int):
    """(positions [B, M], weights [B, M]) of the positions to mask: round(mask_prob * len) real
    positions a row (at least 1, at most M = max_predictions), chosen uniformly; weight 1 for a
    chosen position, 0 for the unused slots (their position is arbitrary)."""
    real = seq > 0
    n_real = jnp.sum(real, axis=1)
    n_mask = jnp.clip(jnp.round(mask_prob * n_real), 1, max_predictions).astype(jnp.int32)
    n_mask = jnp.minimum(n_mask, n_real)
    u = jax.random.uniform(key, seq.shape)
    score = jnp.where(real, u, -1.0)
    _, pos = jax.lax.top_k(score, max_predictions)                               # [B, M]
    weights = (jnp.arange(max_predictions)[None, :] < n_mask[:, None]).astype(jnp.float32)
    return pos.astype(jnp.int32), weights


def decays(path) -> bool:
    """Weight decay applies to a parameter: the authors' AdamWeightDecayOptimizer (BERT's) leaves
    out LayerNorm parameters and biases, so only Dense kernels and embedding tables decay."""
    return getattr(path[-1], 'key', str(path[-1])) in ('kernel', 'embedding')


def make_optimizer(config, lr_decay: bool) -> optax.GradientTransformation:
    """The shared optimizer (optim.make_optimizer: Adam, linear warm-up, constant rate) unless
    `lr_decay` or config.weight_decay > 0; then the authors' (FeiSun/BERT4Rec optimization.py):
    the same linear warm-up over config.warmup_steps, then (with `lr_decay`) linear decay to 0 at
    config.train_steps, Adam eps 1e-6, decoupled weight decay config.weight_decay on kernels and
    embeddings only (`decays`)."""
    if not lr_decay and float(config.weight_decay) <= 0:
        return optim.make_optimizer(config)
    return optim.make_optimizer(config, decay_steps=int(config.train_steps) if lr_decay else None,
                                eps=1e-6, decays=decays)


def mask_batch(key, seq, mask_prob: float, max_predictions: int, mask_last_prob: float,
               mask_id: int):
    """The cloze inputs of a batch of left-padded sequences [B, L]: (masked [B, L] with [MASK] =
    `mask_id` at the chosen positions, positions [B, M], weights [B, M]). A row is a
    `cloze_mask` row, or, with probability `mask_last_prob`, a row whose only masked item is its
    last one (position L - 1; the authors' mask_last instances, what prediction looks like)."""
    where, w = cloze_mask(key, seq, mask_prob, max_predictions)
    if mask_last_prob > 0:
        last = jax.random.bernoulli(jax.random.fold_in(key, 1), mask_last_prob, (seq.shape[0], 1))
        where = jnp.where(last, seq.shape[1] - 1, where)
        w = jnp.where(last, (jnp.arange(w.shape[1]) == 0).astype(w.dtype)[None], w)
    b = jnp.arange(seq.shape[0])[:, None]
    chosen = jnp.zeros(seq.shape, bool).at[b, where].max(w > 0)
    return jnp.where(chosen, mask_id, seq), where, w


def sample_windows(data, key, batch_size: int, seq_len: int, step: int):
    """The authors' training sequences (gen_data_fin.py, prop_sliding_window): a user with n <=
    L train items gives one sequence, all of them; a longer user gives the windows of L
    consecutive train items ending at n, n - step, n - 2 step, ... (while the window starts
    after item 0) plus the first L items. `batch_size` windows are drawn uniformly among all of
    them (a long user is drawn more often, as in the authors' instance files). Jit-compatible.

    Returns (users [B] int32, seq [B, L] int32 left-padded)."""
    n = data.n_train
    count = jnp.where(n > seq_len, (n - seq_len + step - 1) // step + 1, 1)
    count = jnp.where(n >= 2, count, 0)                     # as sample_user_sequences: n >= 2
    cum = jnp.concatenate([jnp.zeros((1,), jnp.int32), jnp.cumsum(count).astype(jnp.int32)])
    w = jax.random.randint(key, (batch_size,), 0, cum[-1], dtype=jnp.int32)
    user = (jnp.searchsorted(cum, w, side='right') - 1).astype(jnp.int32)
    k = w - cum[user]                                        # 0 = the window ending at n
    nu = n[user]
    end = jnp.where(k < count[user] - 1, nu - k * step, jnp.minimum(nu, seq_len))
    pos = end[:, None] - seq_len + jnp.arange(seq_len)[None, :]
    seq = jnp.where(pos >= 0, data.items[data.offsets[user][:, None] + jnp.maximum(pos, 0)], 0)
    return user, seq.astype(jnp.int32)


def sample_prefixes(data, key, batch_size: int, seq_len: int):
    """Every prefix of a user's train sequence of at least 2 items is a training sequence (its
    last L items, left-padded): the windows SASRec's causal training sees (not the authors'):
    `batch_size` of them drawn uniformly among all. Jit-compatible.

    Returns (users [B] int32, seq [B, L] int32 left-padded)."""
    count = jnp.maximum(data.n_train - 1, 0)
    cum = jnp.concatenate([jnp.zeros((1,), jnp.int32), jnp.cumsum(count).astype(jnp.int32)])
    w = jax.random.randint(key, (batch_size,), 0, cum[-1], dtype=jnp.int32)
    user = (jnp.searchsorted(cum, w, side='right') - 1).astype(jnp.int32)
    end = 2 + w - cum[user]                                  # prefix length, 2..n
    pos = end[:, None] - seq_len + jnp.arange(seq_len)[None, :]
    seq = jnp.where(pos >= 0, data.items[data.offsets[user][:, None] + jnp.maximum(pos, 0)], 0)
    return user, seq.astype(jnp.int32)


class BERT4Rec(NextItemMethod):
    NETWORK = BERT4RecNet
    NETWORK_CONFIG = BERT4RecConfig
    OPTIONS = {
        'mask_prob': 0.2,           # rho, the masked proportion (paper: 0.2 on ML-1M)
        'max_predictions': 0,       # masked positions a row at most (0: ceil(rho * L) + 1)
        'window_step': 0,           # > 0: sliding windows of L train items, this step apart
                                    # (the authors: prop_sliding_window x L); 0: each user's
                                    # last L train items, users drawn uniformly
        'prefixes': False,          # True: every train prefix (>= 2 items) is a sequence, drawn
                                    # uniformly (overrides window_step; not the authors')
        'mask_last_prob': 0.0,      # share of rows whose only masked item is the last one (the
                                    # authors' mask_last instances: 1 / (dupe_factor + 1))
        'include_valid': False,     # True: training sequences end with the validation item
                                    # (the authors' protocol, gen_data_fin.py "put validate into
                                    # train"); validation is then no held-out measure, so it
                                    # needs select_by='last'. A diagnostic, not a default
        'lr_decay': False,          # True: linear decay of the rate to 0 at train_steps (the
                                    # authors'); with config.weight_decay > 0 see make_optimizer
    }

    @classmethod
    def validate_options(cls, opts, config):
        if not 0 < opts.mask_prob <= 1:
            raise config_lib.ConfigError(f'config.{config.model}.mask_prob: must be in (0, 1], '
                                         f'got {opts.mask_prob}')
        if int(opts.max_predictions) < 0:
            raise config_lib.ConfigError(f'config.{config.model}.max_predictions: must be >= 0')
        if int(opts.window_step) < 0:
            raise config_lib.ConfigError(f'config.{config.model}.window_step: must be >= 0')
        if opts.include_valid and config.select_by != 'last':
            raise config_lib.ConfigError(
                f'config.{config.model}.include_valid trains on the validation items: it needs '
                f"config.select_by='last' (got {config.select_by!r})")
        if not 0 <= opts.mask_last_prob <= 1:
            raise config_lib.ConfigError(f'config.{config.model}.mask_last_prob: must be in '
                                         f'[0, 1], got {opts.mask_last_prob}')

    def __init__(self, config, ds):
        super().__init__(config, ds)
        m = int(self.opts.max_predictions)
        self.M = min(self.L, m if m > 0 else math.ceil(float(self.opts.mask_prob) * self.L) + 1)
        self.mask_id = self.N + 1
        self.tx = make_optimizer(config, bool(self.opts.lr_decay))
        self.n_valid = jnp.asarray(np.asarray(ds.prepared.n_valid), jnp.int32)
        self.pack_sequences = bool(config.get('pack_sequences', False))
        self.stream_cap = None      # real tokens a device group of the packed network; None = not

    def epoch_examples(self) -> int:
        """Training sequences in one epoch: users, or the windows (`window_step`), or the
        prefixes (`prefixes`)."""
        if self.opts.prefixes or int(self.opts.window_step) > 0:
            return len(self.sequence_lengths())
        return super().epoch_examples()

    def training_sequences(self, data, key):
        """(users [B], seq [B, L]) left-padded train sequences of the batch."""
        if self.opts.include_valid:          # the validation item follows the train items
            data = data.replace(n_train=data.n_train + self.n_valid)
        if self.opts.prefixes:
            return sample_prefixes(data, key, self.batch_size, self.L)
        step = int(self.opts.window_step)
        if step > 0:
            return sample_windows(data, key, self.batch_size, self.L, step)
        users, inputs, pos = data_lib.sample_user_sequences(data, key, self.batch_size, self.L)
        return users, jnp.concatenate([inputs, pos[:, -1:]], axis=1)[:, 1:]   # last L items

    def _batch(self, data, key):
        """(k_drop, users, seq [B, L], masked [B, L], where [B, M], w [B, M]) for a step's key."""
        k_batch, k_mask, k_drop = jax.random.split(key, 3)
        users, seq = self.training_sequences(data, k_batch)
        seq = self.constrain(seq)
        masked, where, w = mask_batch(k_mask, seq, float(self.opts.mask_prob), self.M,
                                      float(self.opts.mask_last_prob), self.mask_id)
        return k_drop, users, seq, masked, where, w

    def sequence_lengths(self) -> np.ndarray:
        """int [S]: the number of real items of every training sequence the batches draw from,
        one entry per sequence (a user drawn twice as often appears twice)."""
        n = np.asarray(self.ds.prepared.n_train, np.int64)
        if self.opts.include_valid:
            n = n + np.asarray(self.ds.prepared.n_valid, np.int64)
        n = n[n >= 2]
        if self.opts.prefixes:                       # every prefix of 2..n items
            count = n - 1
            first = np.repeat(np.cumsum(count) - count, count)   # index of each user's 2-item prefix
            return np.minimum(np.arange(int(count.sum())) - first + 2, self.L)
        step = int(self.opts.window_step)
        if step > 0:                                 # windows of L items, or the whole of a short user
            count = np.where(n > self.L, (n - self.L + step - 1) // step + 1, 1)
            return np.repeat(np.minimum(n, self.L), count)
        return np.minimum(n, self.L)

    def cloze_count(self, n) -> np.ndarray:
        """`cloze_mask`'s masked positions of a sequence of n real items (a mask_last row has
        one, never more): min(clip(round(mask_prob x n), 1, M), n)."""
        n = np.asarray(n, np.int64)
        k = np.clip(np.round(float(self.opts.mask_prob) * n), 1, self.M)
        return np.minimum(k, n).astype(np.int64)

    def packing(self) -> bool:
        return self.pack_sequences or super().packing()

    def packable_rows(self):
        """The masked positions of each training sequence: the softmax over all items runs on
        those rows only."""
        return self.cloze_count(self.sequence_lengths())

    def phases(self, mesh):
        """With `config.pack_sequences` (and the masked rows packed) the network runs on the
        real tokens only (`encode_stream_at`), at most `stream_cap` a device group."""
        phases = super().phases(mesh)
        self.stream_cap = (self.group_cap(self.sequence_lengths(), self.L)
                           if self.pack_sequences and self.pack_cap is not None else None)
        return phases

    def fits(self, data, key):
        """Both caps, on one draw of the batch: the masked rows and (`stream_cap`) the tokens."""
        _, _, seq, _, _, w = self._batch(data, key)
        ok = self.within(w > 0, self.pack_cap)
        return ok if self.stream_cap is None else ok & self.within(seq > 0, self.stream_cap)

    def encode_stream_at(self, params, masked, where, key):
        """h [B, M, D] at the positions `where` [B, M] of the rows `masked` [B, L], computed on
        the real tokens only: each device group's, end to end in chunks of L
        (`models.bert4rec.encode_packed`, docs/DESIGN.md "Packed sequences"); equal to
        `encode`'s h there (dropout's draws apart). Slots of `where` at padding read some
        other token (their weight is 0)."""
        L, G = self.L, self.groups
        B = masked.shape[0]
        real = masked > 0
        rows, items, col, segment, per_group, _ = self.stream(real, masked, self.stream_cap)
        h = self.model.apply({'params': params}, items, col, segment, per_group, True,
                             method=self.model.encode_packed, rngs={'dropout': key})
        # a real token's place in its group's stream: the real tokens before it (row-major)
        rank = jnp.cumsum(real.reshape(G, -1).astype(jnp.int32), axis=1) - 1
        at = jnp.take_along_axis(rank.reshape(G, B // G, L), where.reshape(G, B // G, -1), axis=2)
        h_m = jax.vmap(lambda x, i: x[i])(h.reshape(G, per_group * L, -1), at.reshape(G, -1))
        return self.constrain(h_m.reshape(B, where.shape[1], -1))

    def packed_width(self) -> int:
        return self.M

    def counted(self, data, key):
        return self._batch(data, key)[5] > 0

    def loss(self, params, data, key, packed=False):
        k_drop, users, seq, masked, where, w = self._batch(data, key)
        if packed and self.stream_cap is not None:
            h_m = self.encode_stream_at(params, masked, where, k_drop)              # [B, M, D]
        else:
            h = self.encode(params, masked, users, key=k_drop, train=True)           # [B, L, D]
            h_m = jnp.take_along_axis(h, where[..., None], axis=1)                 # [B, M, D]
        labels = jnp.take_along_axis(seq, where, axis=1)
        rows, (h_m, labels) = self.positions(packed, w > 0, h_m, labels)
        s, n = losses.softmax_ce(self.score_all(params, h_m), labels, rows)
        return s, n, {}

    def scores(self, params, history, users):
        seq = shift_in(history, jnp.full((history.shape[0],), self.mask_id, history.dtype))
        h = self.encode(params, seq, users)[:, -1]
        return self.score_all(params, h).astype(jnp.float32)


METHODS = {'bert4rec': BERT4Rec}
