"""The Q critic of CRR-Transformer (Xi et al., arXiv:2307.14450; seed 002): Q(s_i, a) for every
item a at once, over the same kind of causal encoder as the policy (models/gpt.py).

  h = GPT(cfg).encode(seq)                  [B, S, D]; h[:, i] sees seq[:, :i+1] only (the state
                                            s_i = the items up to position i)
  Q(s_i, .) = W_2 gelu(W_1 h_i + b_1) + b_2  [B, S, N + 1] float32 (index 0 = padding, never an
                                            action)

The encoder is a GPT of the policy's configuration, so the method (methods/crr.py) can start
the critic's encoder from the pretrained policy (`crr.critic_init = 'policy'`) and learn only the
head from scratch. The paper's value head is an LSTM + MLP over DistilGPT2's outputs; here the
causal Transformer already summarises the prefix, so the head is the MLP alone (docs/crr.md).
Head initialisation: W_1 ~ N(0, 0.02) as GPT-2, W_2 = 0 and b_2 = 0 (Q starts at 0 for every
item; the TD updates then grow it toward r / (1 - gamma)).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn

from aos4rec_jax.models.gpt import GPT, GPTConfig, INIT_STD

Array = jax.Array


class QCritic(nn.Module):
    """Q(s_i, .) for every position i of a left-padded item sequence (module docstring)."""
    cfg: GPTConfig

    def setup(self):
        cfg = self.cfg
        self.encoder = GPT(cfg, name='encoder')
        self.hidden = nn.Dense(cfg.embed_dim, kernel_init=nn.initializers.normal(INIT_STD),
                               dtype=cfg.dtype, param_dtype=jnp.float32, name='q_hidden')
        self.out = nn.Dense(cfg.vocab_size, kernel_init=nn.initializers.zeros, dtype=cfg.dtype,
                            param_dtype=jnp.float32, name='q_out')

    def __call__(self, seq: Array, train: bool = False) -> Array:
        """seq [B, S] left-padded -> Q [B, S, N + 1] float32; Q[:, i] depends on seq[:, :i+1]."""
        h = self.encoder.encode(seq, None, train)
        return self.out(nn.gelu(self.hidden(h), approximate=True)).astype(jnp.float32)
