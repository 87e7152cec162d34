"""The SSRGAN critic D(x, y_1:t) (AOS4Rec Sec. 4.2): one score per prefix, in one pass.

The critic is a network of the generator's family with a scalar head instead of the output layer:
``TransformerCritic`` wraps a ``TransformerRec`` backbone, ``GRUCritic`` a ``GRURec`` backbone
(their item tables, encoders and decoders; the output layer's logits are never computed). Its
decoder reads [BOS, y_1, ..., y_T]; the output at input position t has seen y_1:t, so

    scores[:, t] = D(x, y_1:t),  t = 0..T   (t = 0: the empty prefix)      [B, T + 1]

Successors (Eq. 8): for the TD(0) target the critic must also score D(x, {y_1:t-1, y'}) for c
items y' per step t = 1..T. Both critics do this in the same pass, without re-running prefixes:
* Transformer: the T * c successor tokens are appended to the decoder input; successor (t, k) sits
  at position t, attends to the prefix tokens 0..t-1 and to itself only, and no prefix token
  attends to it (a tree attention mask). Its output equals that of the plain sequence
  [BOS, y_1..y_t-1, y'_k] at position t (tested).
* GRU: one more decoder step from the state after y_1:t-1 for each y' (vectorised).
Output: ``(scores [B, T + 1], successor_scores [B, T, c])``; row t-1 of the successor scores
holds the c continuations of y_1:t-1.

Lipschitz constraint (WGAN). The paper uses a WGAN critic without saying how its Lipschitz
constraint is kept. Choice here (``lipschitz='gp'``, default): the gradient penalty of WGAN-GP
(Gulrajani et al., 2017) on the EMBEDDED decoder inputs: e^ = a e(y*) + (1 - a) e(y^),
a ~ U(0, 1) per user, penalty lambda * (||grad_e^ mean_t D(x, e^_1:t)|| - 1)^2 (the mean over the
user's valid prefixes, the quantity Eq. 7 compares). The interpolates are DATA, as in WGAN-GP:
``stop_gradient`` on the embedded points, so the penalty's gradient reaches the critic's layers
but not, through e^, its own item table (else the critic could meet the penalty by moving the
embeddings of the items it is scored on instead of by becoming smoother). Why: items are discrete, so the only
continuous input of D is its embedded sequence; a penalty keeps the critic's own layers free
(LayerNorm and attention behave badly under weight clipping, which also needs a tuned clip value
per width), and it leaves the TD(0) head unconstrained beyond that. ``lipschitz='clip'`` (WGAN's
weight clipping to [-clip, clip] after every critic update) and ``'none'`` are available for
comparison.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import flax.linen as nn

from aos4rec_jax import models
from aos4rec_jax.models.gru import GRURec
from aos4rec_jax.models.transformer import TransformerRec

Array = jax.Array


def tree_mask(length: int, num_next: int) -> tuple[Array, Array]:
    """(positions [S], self-attention mask [S, S]) for T + 1 prefix tokens and T * c successors.

    length = T, num_next = c; S = T + 1 + T * c. Prefix token i attends to prefix tokens <= i;
    successor (t, k) (index T + 1 + (t - 1) c + k, position t) to prefix tokens < t and itself.
    """
    t1 = length + 1
    n = length * num_next
    succ_pos = jnp.repeat(jnp.arange(1, length + 1), num_next)                  # [T * c]
    positions = jnp.concatenate([jnp.arange(t1), succ_pos])
    prefix = jnp.arange(t1)
    top = jnp.concatenate([prefix[:, None] >= prefix[None, :], jnp.zeros((t1, n), bool)], axis=1)
    bottom = jnp.concatenate([prefix[None, :] < succ_pos[:, None], jnp.eye(n, dtype=bool)], axis=1)
    return positions, jnp.concatenate([top, bottom], axis=0)


class _Inputs:
    """What both critics read the same way through their ``backbone``: the embedded decoder
    input of a list and the encoding of a history."""

    def embed(self, sequence: Array) -> Array:
        """[B, T] items -> decoder input embeddings of [BOS, y_1..y_T], [B, T + 1, E]."""
        bos = jnp.full((sequence.shape[0], 1), self.cfg.bos_id, jnp.int32)
        return self.backbone.embed_items(jnp.concatenate([bos, sequence.astype(jnp.int32)], 1))

    def encode(self, history: Array, train: bool = False):
        """The backbone's encoding of the history, for `encoded=` (one encoding, several lists)."""
        return self.backbone.encode(history, train)


class TransformerCritic(_Inputs, nn.Module):
    cfg: models.TransformerConfig           # max_target_len must be >= T + 1

    def setup(self):
        self.backbone = TransformerRec(self.cfg, name='backbone')
        self.head = nn.Dense(1, dtype=jnp.float32, param_dtype=jnp.float32, name='head')

    def score_embeds(self, history: Array, embeds: Array, train: bool = False,
                     encoded=None) -> Array:
        """Scores of embedded prefixes [B, T + 1, E] -> [B, T + 1]."""
        h = self.backbone.features(history, embeds, train=train, encoded=encoded)
        return self.head(h.astype(jnp.float32))[..., 0]

    def __call__(self, history: Array, sequence: Array, successors: Array | None = None,
                 train: bool = False, encoded=None):
        embeds = self.embed(sequence)
        if successors is None:
            return self.score_embeds(history, embeds, train, encoded), None
        b, t, c = successors.shape
        positions, mask = tree_mask(t, c)
        succ = self.backbone.embed_items(successors.reshape(b, t * c).astype(jnp.int32))
        h = self.backbone.features(history, jnp.concatenate([embeds, succ], axis=1), positions,
                                   mask, train=train, encoded=encoded)
        s = self.head(h.astype(jnp.float32))[..., 0]
        return s[:, :t + 1], s[:, t + 1:].reshape(b, t, c)


class GRUCritic(_Inputs, nn.Module):
    cfg: models.GRUConfig

    def setup(self):
        self.backbone = GRURec(self.cfg, name='backbone')
        self.head = nn.Dense(1, dtype=jnp.float32, param_dtype=jnp.float32, name='head')

    def _scores(self, history, embeds, train, encoded=None):
        hs, keys, values, mask = self.backbone.decoder_states(history, embeds, train, encoded)
        out = self.backbone.attend(hs, keys, values, mask, train)
        return self.head(out.astype(jnp.float32))[..., 0], (hs, keys, values, mask)

    def score_embeds(self, history: Array, embeds: Array, train: bool = False,
                     encoded=None) -> Array:
        return self._scores(history, embeds, train, encoded)[0]

    def __call__(self, history: Array, sequence: Array, successors: Array | None = None,
                 train: bool = False, encoded=None):
        scores, (hs, keys, values, mask) = self._scores(history, self.embed(sequence), train, encoded)
        if successors is None:
            return scores, None
        b, t, c = successors.shape
        nxt = self.backbone.decoder_next_states(
            hs[:, :t], self.backbone.embed_items(successors.astype(jnp.int32)))   # [B, T, c, H]
        out = self.backbone.attend(nxt.reshape(b, t * c, -1), keys, values, mask, train)
        return scores, self.head(out.astype(jnp.float32))[..., 0].reshape(b, t, c)


def build_critic(config, info):
    """The critic for `config.model` sized for the dataset: the generator's hyper-parameters
    (``config.model_kwargs``) with ``config.aos4rec.critic_dropout`` and room for T + 1 prefixes;
    ``config.aos4rec.critic_width`` > 0 replaces embed_dim and hidden_dim (mlp_dim scaled with
    them).
    The dropout acts where the critic is applied with ``train=True`` and a 'dropout' key: its own
    updates (``ssrgan.Steps.critic_update``); Eq. 4's advantages and the measurement use it
    deterministically."""
    cls = models.config_class(config.model)
    fields = {f.name for f in dataclasses.fields(cls)}
    kw = {k: v for k, v in config.model_kwargs.to_dict().items() if k in fields}
    kw['num_items'] = info.num_items
    kw['dropout_rate'] = float(config.aos4rec.critic_dropout)
    width = int(config.aos4rec.get('critic_width', 0))
    if width > 0:           # a critic of its own width: the feed-forward keeps its ratio
        base = int(kw.get('embed_dim', kw.get('hidden_dim', width)))
        for f in ('embed_dim', 'hidden_dim'):
            if f in kw:
                kw[f] = width
        if 'mlp_dim' in kw:
            kw['mlp_dim'] = max(1, int(round(kw['mlp_dim'] * width / max(base, 1))))
    if 'max_history_len' in fields:
        kw['max_history_len'] = info.history_len
    if 'max_target_len' in fields:
        kw['max_target_len'] = info.target_len + 1
    if 'dtype' in fields:
        kw['dtype'] = jnp.bfloat16 if config.compute_dtype == 'bfloat16' else jnp.float32
    cfg = models.make_config(config.model, kw)
    return {'transformer': TransformerCritic, 'gru': GRUCritic}[config.model](cfg)


def init_critic(critic, info, rng):
    hist = jnp.zeros((2, info.history_len), jnp.int32)
    seq = jnp.ones((2, info.target_len), jnp.int32)
    succ = jnp.ones((2, info.target_len, 1), jnp.int32)
    return critic.init({'params': rng, 'dropout': rng}, hist, seq, succ)['params']


def from_generator(critic_params: dict, generator_params: dict) -> dict:
    """The critic with its backbone copied from the generator (``aos4rec.critic_init='generator'``).

    The backbone is a network of the generator's class and width, so every backbone parameter has
    a generator parameter of the same name: it is copied. A position table the critic has more
    rows of (the decoder reads T + 1 tokens, the generator max(T, K)) gets the generator's rows
    and keeps its own for the extra positions. The head (a scalar score) is the critic's own.
    A name the generator lacks or a shape that differs elsewhere is a ValueError (a critic of
    another width: ``aos4rec.critic_width``)."""
    from flax import traverse_util
    gen = traverse_util.flatten_dict(generator_params)
    out = {}
    for path, leaf in traverse_util.flatten_dict(critic_params['backbone']).items():
        g = gen.get(path)
        name = '/'.join(path)
        if g is None:
            raise ValueError(f'critic parameter backbone/{name} has no counterpart in the generator')
        if g.shape == leaf.shape:
            out[path] = jnp.asarray(g, leaf.dtype)
        elif g.ndim == leaf.ndim and g.shape[1:] == leaf.shape[1:]:
            n = min(g.shape[0], leaf.shape[0])
            out[path] = leaf.at[:n].set(jnp.asarray(g[:n], leaf.dtype))
        else:
            raise ValueError(f'critic parameter backbone/{name} has shape {leaf.shape}, the '
                             f"generator's {g.shape}")
    return dict(critic_params, backbone=traverse_util.unflatten_dict(out))


def frozen_patterns(config) -> tuple[str, ...]:
    """The patterns of ``aos4rec.critic_frozen`` (a comma list; empty: nothing frozen)."""
    raw = str(config.aos4rec.get('critic_frozen', '') or '')
    return tuple(p.strip().strip('/') for p in raw.split(',') if p.strip().strip('/'))


def _frozen(path: str, patterns) -> bool:
    import fnmatch
    return any(fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(path, p + '/*')
               for p in patterns)


def frozen_mask(params, patterns):
    """A pytree of bools like `params`: True where the parameter's path ('backbone/item_embed/
    embedding') is a pattern, lies under one ('backbone' freezes every backbone parameter) or
    matches one as a glob (fnmatch; '*' crosses '/'). Only the paths decide: a pure, static
    function of the tree's structure, usable inside jit."""
    return jax.tree_util.tree_map_with_path(
        lambda kp, _: _frozen('/'.join(str(getattr(k, 'key', k)) for k in kp), patterns), params)


def check_frozen(params, patterns) -> str:
    """'' when every pattern names at least one critic parameter and at least one parameter
    still trains; else what is wrong (the parameter paths listed), for a one-line error."""
    from flax import traverse_util
    paths = ['/'.join(k) for k in traverse_util.flatten_dict(params)]
    for p in patterns:
        if not any(_frozen(q, (p,)) for q in paths):
            tops = sorted({'/'.join(q.split('/')[:2]) for q in paths})
            return f'{p!r} names no critic parameter (they lie under {", ".join(tops)})'
    if all(_frozen(q, patterns) for q in paths):
        return 'every critic parameter would be frozen: the critic could not learn'
    return ''


@jax.named_scope('gradient_penalty')    # a name in profiles (benchmarks/op_profile.py) only
def gradient_penalty(critic, params, history, real, fake, mask, rng, dropout_rng=None,
                     encoded=None) -> Array:
    """WGAN-GP on embedded inputs: mean over users of (||d mean_t D(x, e^_1:t) / d e^|| - 1)^2.

    real, fake: int32 [B, T]; mask [B, T] valid positions t = 1..T (users with none are skipped).
    The gradient is per user (each user's score depends only on its own inputs). The embedded
    points are constants of the penalty (``stop_gradient``): no gradient of it flows through e^
    into the item table. dropout_rng: None = the critic without dropout; a key = in training
    mode (the critic's dropout, ``aos4rec.critic_dropout``). encoded: the critic's encoding of
    the history (``critic.encode``) when the caller shares one between its passes.
    """
    e_real = jax.lax.stop_gradient(critic.apply({'params': params}, real, method=critic.embed))
    e_fake = jax.lax.stop_gradient(critic.apply({'params': params}, fake, method=critic.embed))
    a = jax.random.uniform(rng, (real.shape[0], 1, 1), jnp.float32)
    e_hat = (a * e_real + (1.0 - a) * e_fake).astype(e_real.dtype)
    m = jnp.asarray(mask, jnp.float32)
    n = jnp.sum(m, axis=-1)
    train = dropout_rng is not None
    rngs = {'dropout': dropout_rng} if train else None

    def total(e):
        d = critic.apply({'params': params}, history, e, train, encoded, method=critic.score_embeds,
                         rngs=rngs)[:, 1:]
        return jnp.sum(jnp.sum(d * m, axis=-1) / jnp.maximum(n, 1.0))

    g = jax.grad(total)(e_hat)
    norm = jnp.sqrt(jnp.sum(jnp.square(g.astype(jnp.float32)), axis=(1, 2)) + 1e-12)
    rows = (n > 0).astype(jnp.float32)
    return jnp.sum(jnp.square(norm - 1.0) * rows) / jnp.maximum(jnp.sum(rows), 1.0)
