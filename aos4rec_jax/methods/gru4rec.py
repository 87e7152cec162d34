"""GRU4Rec+ (Hidasi & Karatzoglou, CIKM 2018): a GRU over the sequence trained with BPR-max
(default) or TOP1-max over sampled negatives plus in-batch items.

The network is models/gru4rec.py. Batches: B users' last L + 1 train items (inputs [B, L],
next items [B, L], as SASRec's). Negatives of position t of row b: the next items of the other
rows at the same position (GRU4Rec's session-parallel mini-batch: the targets of the other
sessions at this step), plus `num_extra_negatives` items shared by the batch, drawn in
proportion to popularity^`sample_alpha` (GRU4Rec+'s additional samples; alpha 0 = uniform). A
negative equal to the position's own target, or padding, gets no weight. `sampler` says how
they are drawn, the same distribution either way: 'inverse_cdf' (one uniform a sample, found in
the cumulative probabilities: `jax.random.choice` with p) or 'gumbel' (`jax.random.categorical`,
Gumbel-max over every item for every sample: 2048 x V noise a step, about half of a training
step on Toys on a CPU; what runs before 2026-12-06 drew with, so their folders resume with it).

Losses (`gru4rec.loss`): 'bpr_max' (with the score regularisation `bpreg`), 'top1_max',
'ce' (softmax cross-entropy over the target and the same negatives), 'softmax' (cross-entropy
over all items, no sampling: how later toolkits, e.g. RecBole, train GRU4Rec), or 'bce' (binary
cross-entropy with one negative a position drawn uniformly among the items not in the user's
sequence: SASRec's objective and the one of the S3-Rec authors' fine-tuning code; no in-batch or
additional negatives).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from aos4rec_jax import config as config_lib
from aos4rec_jax import sampling
from aos4rec_jax.methods import losses
from aos4rec_jax.methods.next_item import NextItemMethod
from aos4rec_jax.models.gru4rec import GRU4Rec as GRU4RecNet, GRU4RecConfig


class GRU4Rec(NextItemMethod):
    NETWORK = GRU4RecNet
    NETWORK_CONFIG = GRU4RecConfig
    OPTIONS = {
        'loss': 'bpr_max',              # bpr_max | top1_max | ce | softmax | bce
        'bpreg': 1.0,                   # BPR-max score regularisation (the paper's lambda)
        'num_extra_negatives': 2048,    # shared additional samples (GRU4Rec+: 2048)
        'sample_alpha': 0.75,           # popularity exponent of the additional samples
        'sampler': 'inverse_cdf',       # inverse_cdf | gumbel: how the additional samples are drawn
    }
    # runs written before `sampler` existed drew with Gumbel-max
    OPTIONS_ADDED_LATER = {'sampler': 'gumbel'}
    LOSSES = ('bpr_max', 'top1_max', 'ce', 'softmax', 'bce')

    @classmethod
    def validate_options(cls, opts, config):
        m = config.model
        if opts.loss not in cls.LOSSES:
            raise config_lib.ConfigError(f'config.{m}.loss: {opts.loss!r} is not one of {cls.LOSSES}')
        if int(opts.num_extra_negatives) < 0:
            raise config_lib.ConfigError(f'config.{m}.num_extra_negatives: must be >= 0')
        if opts.sampler not in sampling.SAMPLERS:
            raise config_lib.ConfigError(f'config.{m}.sampler: {opts.sampler!r} is not one of {sampling.SAMPLERS}')
        if opts.bpreg < 0 or opts.sample_alpha < 0:
            raise config_lib.ConfigError(f'config.{m}.bpreg and sample_alpha must be >= 0')

    def __init__(self, config, ds):
        super().__init__(config, ds)
        counts = ds.item_counts().astype('float64')
        w = counts ** float(self.opts.sample_alpha)
        w[0] = 0.0
        self.sample_probs = jnp.asarray(w / w.sum(), jnp.float32)
        self.sample_logits = jnp.log(self.sample_probs)
        # the cumulative probabilities of the inverse-CDF draw, summed once here: inside the step
        # XLA constant-folds the sum at every compilation (2-3 s and a "slow constant folding"
        # alarm in the run log at 20,000 items); XLA's sum is the same either way, so are the draws
        self.sample_cdf = jax.jit(jnp.cumsum)(self.sample_probs)

    def packable_rows(self):
        """Every loss but 'bce' ([rows, items] or [rows, B + 2,048] scores) packs its counted
        positions."""
        return None if self.opts.loss == 'bce' else self.sequence_rows()

    def loss(self, params, data, key, packed=False):
        (k_neg, k_drop), users, inputs, pos = self.sequence_batch(data, key)
        mask = pos > 0
        h = self.encode(params, inputs, users, key=k_drop, train=True).astype(jnp.float32)  # [B, L, D]
        if self.opts.loss == 'softmax':
            rows, (h_rows, pos_rows) = self.positions(packed, mask, h, pos)
            s, n = losses.softmax_ce(self.score_all(params, h_rows), pos_rows, rows)
            return s, n, {}
        if self.opts.loss == 'bce':
            s, n = self.sampled_bce(params, h, inputs, pos, mask, k_neg)
            return s, n, {}
        # scores of every row's target at every position against row b's state: [B, L, B]
        tv = self.item_vectors(params, pos).astype(jnp.float32)                 # [B, L, D]
        tb = self.item_bias(params, pos).astype(jnp.float32)                    # [B, L]
        s_batch = jnp.einsum('bld,cld->blc', h, tv) + tb.T[None, :, :]
        s_pos = jnp.einsum('bld,bld->bl', h, tv) + tb                           # [B, L]: the diagonal
        valid_batch = (pos.T[None, :, :] > 0) & (pos.T[None, :, :] != pos[:, :, None])
        # the rows of the loss: [B, L, ...], or the counted positions only ([R, ...], packed)
        mask, (h, pos, s_pos, s_batch, valid_batch) = self.positions(
            packed, mask, h, pos, s_pos, s_batch, valid_batch)
        negs, valid = [s_batch], [valid_batch]
        n_extra = int(self.opts.num_extra_negatives)
        if n_extra:
            extra = self.draw_extra(k_neg, n_extra)
            s_extra = (jnp.einsum('...d,nd->...n', h, self.item_vectors(params, extra).astype(jnp.float32))
                       + self.item_bias(params, extra).astype(jnp.float32))
            negs.append(s_extra)
            valid.append(extra != pos[..., None])
        # the two groups of negatives stay apart: the losses take them as a tuple (a copy of
        # [rows, B + n_extra] scores and masks saved)
        if self.opts.loss == 'bpr_max':
            s, n = losses.bpr_max(s_pos, tuple(negs), mask, tuple(valid), reg=float(self.opts.bpreg))
        elif self.opts.loss == 'top1_max':
            s, n = losses.top1_max(s_pos, tuple(negs), mask, tuple(valid))
        else:
            neg, neg_valid = jnp.concatenate(negs, -1), jnp.concatenate(valid, -1)
            logits = jnp.concatenate([s_pos[..., None], jnp.where(neg_valid, neg, losses.NEG_INF)], -1)
            nll = -jax.nn.log_softmax(logits, axis=-1)[..., 0]
            s, n = jnp.sum(nll * mask), jnp.sum(mask.astype(jnp.float32))
        return s, n, {}

    def draw_extra(self, key, n: int):
        """The batch's n additional negatives, int32 [n], drawn with `sampler` from the
        popularity^alpha distribution (item 0, padding, has probability 0)."""
        if self.opts.sampler == 'gumbel':
            return jax.random.categorical(key, self.sample_logits, shape=(n,)).astype(jnp.int32)
        # = jax.random.choice(key, V, (n,), p=sample_probs), with the cumulative sum precomputed
        cdf = self.sample_cdf
        r = cdf[-1] * (1 - jax.random.uniform(key, (n,), dtype=cdf.dtype))
        return jnp.searchsorted(cdf, r).astype(jnp.int32)


METHODS = {'gru4rec': GRU4Rec}
