"""SeqGAN's discriminator (Yu et al., AAAI-17, Appendix "The Discriminative Model for Sequences"),
conditioned on the user's history: the probability that a finished item list is real.

    logit = SeqGANDiscriminator(cfg).apply({'params': p}, history [B, L], seq [B, T], train)
    P(real) = sigmoid(logit)                                                      -> [B]

The network (paper Eqs. 21-25):
- item embeddings E (its own table, `embed_dim`), E[0] = 0 for padding;
- the history is encoded as h = tanh(W_h mean_{valid i} E[x_i] + b_h) and ADDED to every
  position's embedding (the conditioning: each convolution window sees the items and the user);
- one 1-D convolution per (window size l, kernel number k) of `filters` over the T positions
  (VALID, ReLU; windows wider than T are dropped), max-over-time pooling;
- the pooled features, concatenated with h, go through one highway layer
  (tau = sigmoid(W_T c + b_T), C = tau * relu(W_H c + b_H) + (1 - tau) * c), dropout, and a
  linear layer to one logit.

Padding (item 0) contributes a zero embedding (plus h). Real and generated lists of a user are
scored with the same padding, so the padding carries no signal.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from aos4rec_jax.models.dropout import Dropout

# SeqGAN's Table 5, sequence length 20: (window size, kernel number)
SEQGAN_FILTERS = '1:100,2:200,3:200,4:200,5:200,6:100,7:100,8:100,9:100,10:100,15:160,20:160'


def parse_filters(spec: str) -> tuple[tuple[int, int], ...]:
    """'1:100,2:200' -> ((1, 100), (2, 200)); ValueError on a malformed or non-positive entry."""
    out = []
    for part in [p.strip() for p in str(spec).split(',') if p.strip()]:
        try:
            w, k = (int(x) for x in part.split(':'))
        except ValueError:
            raise ValueError(f'{part!r} is not WINDOW:KERNELS') from None
        if w < 1 or k < 1:
            raise ValueError(f'{part!r}: window size and kernel number must be >= 1')
        out.append((w, k))
    if not out:
        raise ValueError('no (window, kernels) entry')
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class DiscConfig:
    num_items: int                                   # N; items 1..N, 0 = padding
    seq_len: int                                     # T: length of the scored lists
    embed_dim: int = 64
    filters: tuple = parse_filters(SEQGAN_FILTERS)   # ((window, kernels), ...)
    dropout_rate: float = 0.25                       # before the output layer (train only)

    @property
    def used_filters(self) -> tuple:
        """The (window, kernels) whose window fits in T."""
        return tuple((w, k) for w, k in self.filters if w <= self.seq_len)


class SeqGANDiscriminator(nn.Module):
    cfg: DiscConfig

    def setup(self):
        c = self.cfg
        if not c.used_filters:
            raise ValueError(f'no convolution window fits in T = {c.seq_len}: {c.filters}')
        self.embed = nn.Embed(c.num_items + 2, c.embed_dim,
                              embedding_init=nn.initializers.normal(0.1))
        self.hist_proj = nn.Dense(c.embed_dim)
        self.convs = [nn.Conv(k, kernel_size=(w,), padding='VALID') for w, k in c.used_filters]
        n = sum(k for _, k in c.used_filters) + c.embed_dim
        self.gate = nn.Dense(n)
        self.transform = nn.Dense(n)
        self.drop = Dropout(c.dropout_rate)
        self.out = nn.Dense(1)

    def encode_history(self, history):
        """[B, L] -> h [B, D]: tanh of a projection of the mean embedding of the valid items."""
        m = (history > 0).astype(jnp.float32)[..., None]
        mean = jnp.sum(self.embed(history) * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
        return jnp.tanh(self.hist_proj(mean))

    def score(self, h, seq, train: bool = False):
        """h [B, D] (encode_history), seq [B, T] -> logits [B]."""
        e = self.embed(seq) * (seq > 0).astype(jnp.float32)[..., None] + h[:, None, :]
        pooled = [jnp.max(nn.relu(conv(e)), axis=1) for conv in self.convs]
        c = jnp.concatenate(pooled + [h], axis=-1)
        tau = jax.nn.sigmoid(self.gate(c))
        c = tau * nn.relu(self.transform(c)) + (1.0 - tau) * c
        c = self.drop(c, deterministic=not train)
        return self.out(c)[:, 0]

    def __call__(self, history, seq, train: bool = False):
        return self.score(self.encode_history(history), seq, train)
