"""Synthetic data oracle (PROTOCOL section 7): a fixed random LSTM, as in SeqGAN.

Tokens are ``1..V`` (V = ``vocab_size``); ``0`` is padding. Every parameter is drawn from
N(0, 1) with ``seed``:

* ``embed``   [V, E]   embedding of token t is ``embed[t - 1]``
* ``start``   [E]      start-token embedding
* ``w_x``     [E, 4H], ``w_h`` [H, 4H], ``b`` [4H]  LSTM, gates in the order (i, f, g, o)
* ``w_out``   [H, V], ``b_out`` [V]                output logits over tokens 1..V

One LSTM step with input embedding x and state (h, c)::

    z = x @ w_x + h @ w_h + b;  i, f, g, o = split(z, 4)
    c' = sigmoid(f) * c + sigmoid(i) * tanh(g);  h' = sigmoid(o) * tanh(c')

The sequence starts from h = c = 0; the oracle first consumes the start token, and the
distribution of the next token after any state is ``softmax(h @ w_out + b_out)`` over 1..V.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "OracleConfig",
    "init_oracle",
    "save_oracle",
    "load_oracle",
    "generate",
    "nll",
    "greedy_continuation",
]

_PARAM_NAMES = ("embed", "start", "w_x", "w_h", "b", "w_out", "b_out")


@dataclasses.dataclass(frozen=True)
class OracleConfig:
    vocab_size: int = 5000
    hidden_size: int = 32
    embed_size: int = 32
    seed: int = 0


def init_oracle(cfg: OracleConfig) -> dict:
    """All parameters ~ N(0, 1), deterministic in ``cfg.seed``. Returns a dict of float32 arrays."""
    return _init(jax.random.PRNGKey(cfg.seed), cfg.vocab_size, cfg.hidden_size, cfg.embed_size)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _init(key, v: int, h: int, e: int) -> dict:
    shapes = {
        "embed": (v, e),
        "start": (e,),
        "w_x": (e, 4 * h),
        "w_h": (h, 4 * h),
        "b": (4 * h,),
        "w_out": (h, v),
        "b_out": (v,),
    }
    # One draw of every parameter at once (one random-bits kernel keeps compilation cheap), cut
    # into the parameters in the order of _PARAM_NAMES.
    sizes = [int(np.prod(shapes[name])) for name in _PARAM_NAMES]
    flat = jax.random.normal(key, (sum(sizes),), jnp.float32)
    out, start = {}, 0
    for name, size in zip(_PARAM_NAMES, sizes):
        out[name] = flat[start:start + size].reshape(shapes[name])
        start += size
    return out


# ----------------------------------------------------------------------------- save / load


def _paths(path):
    path = os.fspath(path)
    base = path[:-4] if path.endswith(".npz") else path
    return base + ".npz", base + ".json"


def save_oracle(params: dict, cfg: OracleConfig, path) -> None:
    """Writes ``<path>.npz`` (parameters) and ``<path>.json`` (config).

    ``path`` may end in ``.npz`` or not; the json lies beside it with the same stem. Each file is
    written under a temporary name and renamed into place.
    """
    npz_path, json_path = _paths(path)
    directory = os.path.dirname(npz_path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    suffix = f".tmp-{os.getpid()}"
    try:
        with open(npz_path + suffix, "wb") as f:
            np.savez(f, **{k: np.asarray(params[k]) for k in _PARAM_NAMES})
        with open(json_path + suffix, "w") as f:
            json.dump(dataclasses.asdict(cfg), f, indent=2)
            f.write("\n")
        os.replace(npz_path + suffix, npz_path)
        os.replace(json_path + suffix, json_path)
    finally:                        # a failed write leaves no temporary file behind
        for tmp in (npz_path + suffix, json_path + suffix):
            if os.path.exists(tmp):
                os.remove(tmp)


def load_oracle(path):
    """Reads what :func:`save_oracle` wrote. Returns ``(params, cfg)``."""
    npz_path, json_path = _paths(path)
    with open(json_path) as f:
        cfg = OracleConfig(**json.load(f))
    with np.load(npz_path) as data:
        params = {k: jnp.asarray(data[k]) for k in _PARAM_NAMES}
    return params, cfg


# ----------------------------------------------------------------------------- the LSTM


def _cell(params, x, state):
    """One LSTM step. x [B, E] (or [E]), state (h, c) [B, H] -> new (h, c)."""
    h, c = state
    z = x @ params["w_x"] + h @ params["w_h"] + params["b"]
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return h, c


def _start_state(params, batch: int):
    hidden = params["w_h"].shape[0]
    zeros = jnp.zeros((batch, hidden), jnp.float32)
    x = jnp.broadcast_to(params["start"], (batch, params["start"].shape[0]))
    return _cell(params, x, (zeros, zeros))


def _log_probs(params, h):
    """[B, H] -> [B, V] log-probabilities of tokens 1..V (column j = token j + 1)."""
    return jax.nn.log_softmax(h @ params["w_out"] + params["b_out"], axis=-1)


def _consume(params, state, tokens):
    """Feed tokens [B] (0 = padding: state unchanged)."""
    x = params["embed"][jnp.maximum(tokens - 1, 0)]
    new = _cell(params, x, state)
    keep = (tokens != 0)[:, None]
    return tuple(jnp.where(keep, n, o) for n, o in zip(new, state))


# ----------------------------------------------------------------------------- sampling


@functools.partial(jax.jit, static_argnames=("num_sequences", "length"))
def _generate(params, rng, offset, num_sequences: int, length: int):
    # Sequence s uses the key fold_in(rng, s), step t the key fold_in(that, t): a sequence does
    # not depend on how many others are drawn with it, nor on the chunking.
    ids = offset + jnp.arange(num_sequences)
    seq_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, ids)
    state = _start_state(params, num_sequences)

    def step(state, t):
        logits = state[0] @ params["w_out"] + params["b_out"]
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(seq_keys, t)
        tokens = jax.vmap(jax.random.categorical)(keys, logits).astype(jnp.int32) + 1
        return _consume(params, state, tokens), tokens

    _, tokens = jax.lax.scan(step, state, jnp.arange(length))
    return tokens.T  # [num_sequences, length]


def generate(params, rng, num_sequences: int, length: int, cfg: OracleConfig | None = None,
             batch_size: int = 4096) -> np.ndarray:
    """Ancestral sampling from the oracle.

    Args:
      params: from :func:`init_oracle` / :func:`load_oracle`.
      rng: a ``jax.random.PRNGKey``.
      num_sequences, length: output shape.
      cfg: the oracle's config (checked against the parameter shapes when given).
      batch_size: sequences sampled per jitted call (memory: batch_size * V floats per step).
        The result does not depend on it: sequence s is drawn with the key
        ``fold_in(rng, s)``, so the first n sequences are the same for any num_sequences >= n.
    Returns:
      np.ndarray int32 [num_sequences, length] of tokens in 1..V.
    """
    if cfg is not None and params["w_out"].shape[1] != cfg.vocab_size:
        raise ValueError("params do not match cfg.vocab_size")
    if num_sequences == 0 or length == 0:
        return np.zeros((num_sequences, length), np.int32)
    # Every chunk has the same size (one compilation); the tail of the last one is dropped.
    size = min(batch_size, num_sequences)
    chunks = [np.asarray(_generate(params, rng, jnp.int32(start), size, length))
              for start in range(0, num_sequences, size)]
    return np.concatenate(chunks, axis=0)[:num_sequences].astype(np.int32)


# ----------------------------------------------------------------------------- scoring


@jax.jit
def nll(params, prefix, continuation) -> jnp.ndarray:
    """Oracle negative log-likelihood of a continuation given a prefix.

    NLL = -sum_t log P_oracle(g_t | prefix, g_<t) over the non-padding continuation positions.
    The oracle first consumes the start token, then the prefix tokens; padding steps (0) leave
    the LSTM state unchanged, so left padding of the prefix changes nothing.

    Args:
      params: oracle parameters.
      prefix: int32 [B, P] oracle tokens, LEFT-padded with 0 (P may be 0).
      continuation: int32 [B, T] oracle tokens, 0 = padding at the end (ignored).
    Returns:
      float32 [B].
    """
    prefix = jnp.asarray(prefix, jnp.int32)
    continuation = jnp.asarray(continuation, jnp.int32)
    batch = continuation.shape[0]
    state = _start_state(params, batch)

    def eat(state, tokens):
        return _consume(params, state, tokens), None

    state, _ = jax.lax.scan(eat, state, prefix.T)

    def score(state, tokens):
        logp = _log_probs(params, state[0])
        picked = jnp.take_along_axis(logp, jnp.maximum(tokens - 1, 0)[:, None], axis=-1)[:, 0]
        picked = jnp.where(tokens != 0, picked, 0.0)
        return _consume(params, state, tokens), picked

    _, picked = jax.lax.scan(score, state, continuation.T)
    return -jnp.sum(picked, axis=0).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("length",))
def greedy_continuation(params, prefix, length: int) -> jnp.ndarray:
    """The oracle's own greedy list after each prefix: at every step its most likely token among
    those not yet in the list (no repeats, as the generated lists). A reference for generated
    lists: what a model that had learned the oracle exactly would give with greedy decoding.

    Args:
      params: oracle parameters.
      prefix: int32 [B, P] oracle tokens, LEFT-padded with 0 (as in :func:`nll`).
      length: tokens to generate (<= V).
    Returns:
      int32 [B, length] tokens in 1..V.
    """
    prefix = jnp.asarray(prefix, jnp.int32)
    batch = prefix.shape[0]
    state = _start_state(params, batch)
    state, _ = jax.lax.scan(lambda s, tokens: (_consume(params, s, tokens), None), state, prefix.T)
    used = jnp.zeros((batch, params["w_out"].shape[1]), bool)

    def step(carry, _):
        state, used = carry
        logp = jnp.where(used, -jnp.inf, _log_probs(params, state[0]))
        col = jnp.argmax(logp, axis=-1)
        used = used.at[jnp.arange(batch), col].set(True)
        tokens = (col + 1).astype(jnp.int32)
        return (_consume(params, state, tokens), used), tokens

    _, tokens = jax.lax.scan(step, (state, used), None, length=length)
    return tokens.T
