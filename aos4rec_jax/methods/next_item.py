"""The shared base of next-item methods (SASRec, GRU4Rec+, Caser, BERT4Rec, GCSAN, BPR-MF).

A next-item method trains a network of models/ (the "next-item network contract" of
docs/DESIGN.md) to score the next item, ``scores(params, history, users) -> [B, V]``, in one phase
'train' of ``config.train_steps`` steps; the subclass supplies the batch and the loss:

    def loss(self, params, data, key) -> (loss_sum, count, extra metrics)

Its K-list (``config.decode.strategy``):
  'topk'  the K best scores among the allowed items (what the AOS4Rec paper does for its
          baselines);
  any decoder of decoding.py ('greedy', 'beam', 'sample', ...): the model is fed its own
          predictions: the decoding state is the history window, and every step shifts the
          previous item in and scores again.

Method options live in the config block named after the model (``config.sasrec`` ...), filled
with the class's ``OPTIONS`` defaults; unknown fields are refused.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from aos4rec_jax import data as data_lib
from aos4rec_jax import decoding
from aos4rec_jax import evaluation
from aos4rec_jax import optim
from aos4rec_jax import sharding as shard_lib
from aos4rec_jax.methods import losses
from aos4rec_jax.methods.base import Method, Phase, checked_options, options_block


def sample_negatives(key, shape, num_items: int, exclude=None, rounds: int = 3):
    """Uniform item ids in 1..N of `shape` [B, ...]; with `exclude` [B, E] a draw equal to one of
    its row's excluded items is redrawn (up to `rounds` times: SASRec's random_neq)."""
    keys = jax.random.split(key, rounds + 1)
    neg = jax.random.randint(keys[0], shape, 1, num_items + 1, dtype=jnp.int32)
    if exclude is None:
        return neg
    ex = exclude.reshape(exclude.shape[0], *([1] * (len(shape) - 1)), exclude.shape[-1])
    for r in range(rounds):
        hit = jnp.any(neg[..., None] == ex, axis=-1)
        redraw = jax.random.randint(keys[r + 1], shape, 1, num_items + 1, dtype=jnp.int32)
        neg = jnp.where(hit, redraw, neg)
    return neg


PACK_SIGMAS = 6.0     # the cap of packed positions: the batch's mean count + 6 standard deviations


def position_cap(rows_per_example, batch: int, sigmas: float = PACK_SIGMAS) -> int:
    """A static number of rows for the counted positions of `batch` examples drawn uniformly with
    replacement among examples whose counts are `rows_per_example` (int [U], >= 0): the mean of
    the batch's total plus `sigmas` standard deviations, rounded up to a multiple of 8, never
    above batch x the largest count. A batch above it is possible (the caller must handle it)."""
    c = np.asarray(rows_per_example, np.float64)
    if c.size == 0:
        return 0
    cap = int(np.ceil(batch * c.mean() + sigmas * c.std() * np.sqrt(batch)))
    cap = -(-cap // 8) * 8
    return int(min(cap, batch * int(c.max())))


def shift_in(seq, items):
    """[B, L] left-padded window with `items` [B] appended at the end (oldest item dropped)."""
    return jnp.concatenate([seq[:, 1:], items[:, None].astype(seq.dtype)], axis=1)


class NextItemMethod(Method):
    """Subclasses set NETWORK (module class), NETWORK_CONFIG (its config dataclass), OPTIONS
    (method options with defaults) and define `loss`; they may override `scores`."""

    NETWORK = None
    NETWORK_CONFIG = None
    OPTIONS: dict = {}
    ALIASES = {'num_blocks': 'num_layers'}     # network field -> config.model_kwargs field

    def __init__(self, config, ds):
        super().__init__(config, ds)
        self.opts = options_block(config, config.model, self.OPTIONS)
        self.L = self.info.history_len
        self.N = self.info.num_items
        self.model = self.build_network()
        self.tx = optim.make_optimizer(config)
        self.batch_size = int(config.batch_size)
        self.bsharding = None
        self.groups = 1            # devices of the data axis (set by `phases`)
        self.pack_cap = None       # rows per group of the packed loss; None = not packed

    # -- config --------------------------------------------------------------------------------
    @classmethod
    def validate_config(cls, config):
        cls.validate_options(checked_options(config, config.model, cls.OPTIONS), config)

    @classmethod
    def validate_options(cls, opts, config):
        """Raises ConfigError naming a bad option (subclasses)."""

    def network_kwargs(self) -> dict:
        """Fields of the network config: config.model_kwargs entries the network knows, plus the
        dataset's sizes and the compute dtype."""
        fields = {f.name for f in dataclasses.fields(self.NETWORK_CONFIG)}
        given = self.config.model_kwargs.to_dict()
        for field, shared in self.ALIASES.items():     # the shared block's name for a field
            if field in fields and field not in given and shared in given:
                given[field] = given[shared]
        kw = {k: v for k, v in given.items() if k in fields}
        sizes = dict(num_items=self.N, max_len=self.L, num_users=self.info.num_users,
                     dtype=jnp.bfloat16 if self.config.compute_dtype == 'bfloat16' else jnp.float32)
        kw.update({k: v for k, v in sizes.items() if k in fields})
        return kw

    def build_network(self):
        return self.NETWORK(self.NETWORK_CONFIG(**self.network_kwargs()))

    # -- state and phases ------------------------------------------------------------------------
    def init_params(self, rng):
        seq = jnp.zeros((2, self.L), jnp.int32)
        users = jnp.zeros((2,), jnp.int32)
        return self.model.init({'params': rng, 'dropout': rng}, seq, users, train=False)['params']

    def init_state(self, rng):
        p_rng, s_rng = jax.random.split(rng)
        params = self.init_params(p_rng)
        return dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=self.tx.init(params),
                    rng=s_rng)

    def epoch_examples(self) -> int:
        """Training examples in one epoch (users for sequence batches)."""
        return self.info.num_users

    def phases(self, mesh):
        shard_lib.check_batch_size(self.batch_size, mesh)
        self.bsharding = shard_lib.batch_sharding(mesh)
        self.groups = int(mesh.devices.size)
        rows = self.packable_rows() if self.packing() else None
        self.pack_cap = None if rows is None else self.group_cap(rows, self.packed_width())
        return [Phase('train', int(self.config.train_steps), self.train_step,
                      examples_per_step=self.batch_size, epoch_examples=self.epoch_examples())]

    def constrain(self, x):
        """Shards a batch array along the data axis (no-op outside a mesh)."""
        return x if self.bsharding is None else jax.lax.with_sharding_constraint(x, self.bsharding)

    def loss(self, params, data, key):
        raise NotImplementedError

    # -- packed positions (docs/DESIGN.md, "Packed positions") ---------------------------------
    def packing(self) -> bool:
        """Whether the config asks for packing (`config.pack_positions`; a method packing more
        than its loss adds its own flag)."""
        return bool(self.config.get('pack_positions', False))

    def packable_rows(self):
        """int [U]: how many positions of each eligible user's training row the loss counts, for
        a method whose loss can run on the counted rows only (`loss(..., packed)`); None = the
        loss is never packed (the default)."""
        return None

    def packed_width(self) -> int:
        """Positions a batch row has for the loss (the mask's second axis): L."""
        return self.L

    def counted(self, data, key):
        """bool [B, L]: the positions the loss counts in the batch it draws with `key` (a
        packing method): the targets of `sequence_batch`; a method drawing other batches
        overrides it."""
        return self.sequence_batch(data, key)[3] > 0

    def sequence_batch(self, data, key):
        """The batch of SASRec-style methods for a step's key: ((k_neg, k_drop), users [B],
        inputs [B, L], next items [B, L]), `sample_user_sequences` of B users."""
        k_batch, k_neg, k_drop = jax.random.split(key, 3)
        users, inputs, pos = data_lib.sample_user_sequences(data, k_batch, self.batch_size, self.L)
        return (k_neg, k_drop), users, self.constrain(inputs), self.constrain(pos)

    def sequence_rows(self):
        """`packable_rows` of `sequence_batch`: min(n_train - 1, L) for every user with >= 2
        train items (the targets of the row `sample_user_sequences` draws for it)."""
        n = np.asarray(self.ds.prepared.n_train, np.int64)
        return np.minimum(n[n >= 2] - 1, self.L)

    def positions(self, packed: bool, mask, *arrays, cap=None):
        """(mask, arrays) of the loss's rows. packed=False: as given ([B, L, ...]). packed=True:
        the counted positions (mask [B, L] True) of each device group gathered, in row-major
        order, into `cap` rows (default `pack_cap`): mask [G x cap] (False on the filler rows)
        and each array [G x cap, ...]; the caller made sure (`train_step`) that no group counts
        more than `pack_cap` <= cap positions."""
        if not packed:
            return mask, arrays
        G, cap = self.groups, int(self.pack_cap if cap is None else cap)
        m = mask.reshape(G, -1)
        idx = jax.vmap(lambda r: jnp.nonzero(r, size=cap, fill_value=0)[0])(m)        # [G, cap]
        keep = jnp.arange(cap)[None, :] < jnp.sum(m, axis=1, keepdims=True)

        def take(a):
            a = a.reshape(G, m.shape[1], *a.shape[mask.ndim:])
            rows = jax.vmap(lambda x, i: x[i])(a, idx)                             # [G, cap, ...]
            return self.constrain(rows.reshape(G * cap, *rows.shape[2:]))

        return self.constrain(keep.reshape(G * cap)), tuple(take(a) for a in arrays)

    def stream(self, mask, items, cap, *arrays):
        """A packed stream for a network's `encode_packed` (docs/DESIGN.md, "Packed sequences"):
        each device group's real positions (mask [B, L]; row-major, so a row's tokens are
        consecutive) end to end in chunks of L. Returns (rows bool [G x C] (False at filler),
        items, column, segment int [n, L] (n = G x C / L; segment = the token's row of the
        batch, -1 at filler), chunks_per_group, arrays [B, L, ...] gathered alike [G x C, ...]),
        C = ceil(cap / L) x L."""
        L, G = self.L, self.groups
        per_group = -(-int(cap) // L)
        B = items.shape[0]
        row = jnp.broadcast_to(jnp.arange(B, dtype=jnp.int32)[:, None], (B, L))
        col = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32)[None, :], (B, L))
        rows, (items, col, row, *arrays) = self.positions(True, mask, items, col, row, *arrays,
                                                          cap=per_group * L)
        shape = (G * per_group, L)
        segment = jnp.where(rows, row, -1).reshape(shape)
        return rows, items.reshape(shape), col.reshape(shape), segment, per_group, tuple(arrays)

    def group_cap(self, rows, width: int):
        """`position_cap` of a device group's B / G examples with counts `rows`; None (nothing
        packed) when it is not below the group's B / G x `width` positions."""
        per_group = self.batch_size // self.groups
        cap = position_cap(rows, per_group)
        return cap if cap < per_group * width else None

    def within(self, mask, cap) -> jax.Array:
        """bool scalar: no device group of the batch's mask [B, ...] counts more than `cap`."""
        return jnp.all(jnp.sum(mask.reshape(self.groups, -1), axis=1) <= cap)

    def fits(self, data, key):
        """bool scalar: no device group of the step's batch counts more than `pack_cap` positions."""
        return self.within(self.counted(data, key), self.pack_cap)

    def train_step(self, state, data):
        key = jax.random.fold_in(state['rng'], state['step'])

        def value_and_grad(packed):
            def loss_fn(p):
                s, n, extra = (self.loss(p, data, key) if packed is None
                               else self.loss(p, data, key, packed=packed))
                return s / jnp.maximum(n, 1.0), (s, n, extra)
            return jax.value_and_grad(loss_fn, has_aux=True)

        if self.pack_cap is None:
            (_, (s, n, extra)), grads = value_and_grad(None)(state['params'])
        else:        # the cond outside autodiff: neither branch carries the other's residuals
            (_, (s, n, extra)), grads = jax.lax.cond(
                self.fits(data, key), value_and_grad(True), value_and_grad(False), state['params'])
        params, opt_state = optim.apply(self.tx, grads, state['opt_state'], state['params'])
        new = dict(state, step=state['step'] + 1, params=params, opt_state=opt_state)
        return new, dict(loss_sum=s, tokens=n, grad_norm=optim.global_norm(grads), **extra)

    def apply(self, params, *args, method=None, key=None, train=False):
        rngs = {'dropout': key} if train else None
        return self.model.apply({'params': params}, *args, method=method, rngs=rngs)

    def encode(self, params, seq, users, key=None, train=False):
        return self.model.apply({'params': params}, seq, users, train,
                                method=self.model.encode, rngs={'dropout': key} if train else None)

    def score_all(self, params, h):
        return self.model.apply({'params': params}, h, method=self.model.score_all)

    def item_vectors(self, params, ids):
        return self.model.apply({'params': params}, ids, method=self.model.item_vectors)

    def item_bias(self, params, ids):
        return self.model.apply({'params': params}, ids, method=self.model.item_bias)

    def score_items(self, params, h, ids):
        """h [..., D] with ids [..., n] -> scores [..., n] (output vectors and bias)."""
        return (jnp.einsum('...d,...nd->...n', h.astype(jnp.float32),
                           self.item_vectors(params, ids).astype(jnp.float32))
                + self.item_bias(params, ids).astype(jnp.float32))

    def sampled_bce(self, params, h, inputs, pos, mask, key, num_negatives: int = 1):
        """SASRec's objective over per-position states h [B, L, D]: -log sigma(s+) - sum_j
        log(1 - sigma(s-_j)), with `num_negatives` negatives a position drawn uniformly among
        the items not in the row's sequence (inputs [B, L] and the last target of pos [B, L]).
        Returns (sum over the counted positions, count)."""
        neg = self.sampled_negatives(inputs, pos, key, num_negatives)
        return self.bce_of(params, h, pos, neg, mask)

    def sampled_negatives(self, inputs, pos, key, num_negatives: int = 1):
        """int [B, L, num_negatives]: `sampled_bce`'s negatives, uniform among the items not
        in the row's sequence (inputs [B, L] and the last target of pos [B, L])."""
        seen = jnp.concatenate([inputs, pos[:, -1:]], axis=1)
        return sample_negatives(key, pos.shape + (int(num_negatives),), self.N, exclude=seen)

    def bce_of(self, params, h, pos, neg, mask):
        """`sampled_bce` given its negatives: h [..., D], pos [...], neg [..., n], mask [...]."""
        logits = self.score_items(params, h, jnp.concatenate([pos[..., None], neg], axis=-1))
        return losses.bce_sampled(logits[..., 0], logits[..., 1:], mask)

    # -- evaluation ----------------------------------------------------------------------------
    def scores(self, params, history, users):
        """[B, V] next-item scores given left-padded histories [B, L] (float32)."""
        h = self.encode(params, history, users)
        if h.ndim == 3:
            h = h[:, -1]
        return self.score_all(params, h).astype(jnp.float32)

    def generate_fn(self):
        d = self.config.decode
        info = self.info
        K = info.k

        def users_of(batch):
            u = batch.get('users')
            return jnp.full((batch['history'].shape[0],), -1, jnp.int32) if u is None else u

        if d.strategy == 'topk':
            def generate_fn(params, batch, rng):
                del rng
                s = self.scores(params, batch['history'], users_of(batch))
                return evaluation.topk_sampled_and_full(s, batch, K)
            return generate_fn

        def step_fn_for(params):
            def step_fn(state, prev, t):
                seq = jnp.where(t > 0, shift_in(state['seq'], prev), state['seq'])
                logits = self.scores(params, seq, state['users'])
                return logits, dict(seq=seq, users=state['users'])
            return step_fn

        def generate_fn(params, batch, rng):
            state = dict(seq=batch['history'], users=users_of(batch))
            return decoding.generate_sampled_and_full(
                step_fn_for(params), state, rng, batch, decode_cfg=d,
                vocab_size=info.vocab_size, bos_id=info.bos_id, k=K)
        return generate_fn

    def decode_description(self):
        d = self.config.decode.to_dict()
        if d['strategy'] == 'topk':
            return {'strategy': 'topk', 'ban_generated': True,
                    'note': 'the K best next-item scores'}
        return dict(d, note='the next-item model fed its own predictions')

    def console(self, phase, m):
        return ' '.join(f'{k} {v:.4f}' for k, v in m.items() if k in ('loss', 'grad_norm'))
