"""Dropout whose random mask costs a quarter of the hashing of ``flax.linen.Dropout``'s.

``flax.linen.Dropout`` draws its mask with ``jax.random.bernoulli``: one uniform float per
element, and with JAX's partitionable Threefry (the default) each 32-bit draw is a whole
Threefry-2x32 evaluation (20 rounds) whose two output words are xor-ed into one. Profiled on the
CPU at the ML-20M training size (benchmarks/op_profile.py, docs/benchmarks.md) that hashing was
8% of the seq2seq Transformer's step, more than any matrix product of its encoder.

Here one evaluation serves four elements: its two 32-bit output words are cut into 16-bit
halves, and an element is kept when its half is >= round(rate * 65536). The kept values are
scaled by 1 / keep, keep = 1 - round(rate * 65536) / 65536 (the exact keep probability of the
16-bit test, so the layer is unbiased: E[output] = input); for rate 0.1 an element is dropped
with probability 6554 / 65536 = 0.1000061 (kept with 0.8999939). The counter of element i is (0, i // 4) over the row-major index of the [..., ceil(n / 4)]
word array, so the mask is a pure function of (key, shape): the same under any sharding or
device count, and ``fold_in``-derived keys give independent masks, as with ``jax.random``.

Same interface as ``flax.linen.Dropout`` for this codebase's uses: ``Dropout(rate)(x,
deterministic=...)``, key from ``make_rng('dropout')``. Keys: a typed Threefry key
(``jax.random.key``) or a raw uint32[2] one (``jax.random.PRNGKey``); any other key (another
``jax_default_prng_impl``) falls back to ``jax.random.bits`` at two elements a 32-bit draw.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np

try:                                   # the Threefry primitive itself (public since jax 0.4.3x)
    from jax.extend.random import threefry2x32_p as _threefry2x32_p
except ImportError:                    # pragma: no cover - an older or newer jax without it
    _threefry2x32_p = None

RESOLUTION = 1 << 16                   # 16-bit uniforms


def threshold(rate: float) -> int:
    """The 16-bit value below which an element is dropped: round(rate * 65536)."""
    return int(round(float(rate) * RESOLUTION))


def keep_probability(rate: float) -> float:
    """The exact probability that an element is kept (1 - threshold / 65536)."""
    return 1.0 - threshold(rate) / RESOLUTION


def _raw_threefry_key(key: jax.Array) -> Optional[jax.Array]:
    """uint32[2] data of a Threefry key, or None for a key of another implementation."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if 'threefry' not in str(jax.random.key_impl(key)):
            return None
        key = jax.random.key_data(key)
    if key.shape != (2,) or key.dtype != jnp.uint32:
        return None
    return key


def uniform16(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """uint32 array of `shape` holding independent uniform 16-bit integers in [0, 65536)."""
    shape = tuple(int(s) for s in shape)
    if not shape:
        return uniform16(key, (1,))[0]
    lead, n = shape[:-1], shape[-1]
    raw = _raw_threefry_key(key)
    last = jax.lax.broadcasted_iota(jnp.uint32, shape, len(shape) - 1)
    if raw is not None and _threefry2x32_p is not None:
        m = -(-n // 4)                                 # 64 hashed bits serve 4 elements
        wshape = lead + (m,)
        size = int(np.prod(wshape))
        if size >= 2 ** 32:                            # pragma: no cover - counters would wrap
            raise ValueError(f'dropout mask of shape {shape} is too large')
        counter = jax.lax.iota(jnp.uint32, size).reshape(wshape)
        w0, w1 = _threefry2x32_p.bind(raw[0], raw[1], jnp.zeros_like(counter), counter)
        # element j reads word j // 4: halves w0 >> 16, w0 & 0xFFFF, w1 >> 16, w1 & 0xFFFF in turn
        # (repeat + select fuse into the consumer; a stack of the four halves was written out)
        part = last % 4
        src = jnp.where(part < 2, jnp.repeat(w0, 4, axis=-1)[..., :n],
                        jnp.repeat(w1, 4, axis=-1)[..., :n])
    else:
        m = -(-n // 2)                                 # jax.random.bits: 32 bits, 2 elements
        w = jax.random.bits(key, lead + (m,), jnp.uint32)
        part = last % 2
        src = jnp.repeat(w, 2, axis=-1)[..., :n]
    return jnp.where(part % 2 == 0, src >> 16, src & 0xFFFF)


def keep_mask(key: jax.Array, shape: tuple[int, ...], rate: float) -> jax.Array:
    """bool `shape`, True with probability ``keep_probability(rate)``, independently."""
    return uniform16(key, shape) >= jnp.uint32(threshold(rate))


class Dropout(nn.Module):
    """Inverted dropout with the mask of ``keep_mask`` (module docstring).

    Attributes:
      rate: the probability of dropping an element (rounded to a multiple of 1 / 65536).
      rng_collection: the rng stream the key comes from.
    """
    rate: float
    rng_collection: str = 'dropout'

    @nn.compact
    def __call__(self, inputs: jax.Array, deterministic: bool) -> jax.Array:
        if deterministic or threshold(self.rate) == 0:
            return inputs
        if threshold(self.rate) >= RESOLUTION:
            return jnp.zeros_like(inputs)
        keep = keep_mask(self.make_rng(self.rng_collection), inputs.shape, self.rate)
        scale = jnp.asarray(1.0 / keep_probability(self.rate), inputs.dtype)
        return jnp.where(keep, inputs * scale, jnp.zeros((), inputs.dtype))
