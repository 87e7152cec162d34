"""Seq2seq recommenders as a task: build from config, MLE loss, generation for evaluation.

Ties a model of `aos4rec_jax.models` (the model contract in docs/DESIGN.md) to the decoders of
`aos4rec_jax.decoding` and to the data layout of `aos4rec_jax.data`. Pure functions only.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from aos4rec_jax import chunked_softmax
from aos4rec_jax import decoding
from aos4rec_jax import models
from aos4rec_jax import softmax_xent


def build_model(config, info):
    """The Flax module for `config.model` sized for the dataset `info`."""
    cls = models.config_class(config.model)
    fields = {f.name for f in dataclasses.fields(cls)}
    kw = {k: v for k, v in config.model_kwargs.to_dict().items() if k in fields}
    kw['num_items'] = info.num_items
    if 'max_history_len' in fields:
        kw['max_history_len'] = info.history_len
    if 'max_target_len' in fields:
        kw['max_target_len'] = max(info.target_len, info.k)
    if 'dtype' in fields:
        kw['dtype'] = jnp.bfloat16 if config.compute_dtype == 'bfloat16' else jnp.float32
    return models.build(config.model, kw)


def decoder_inputs(target: jax.Array, bos_id: int) -> jax.Array:
    """[B, T] teacher-forcing inputs: BOS, then the target shifted right by one."""
    bos = jnp.full((target.shape[0], 1), bos_id, target.dtype)
    return jnp.concatenate([bos, target[:, :-1]], axis=1)


def init_params(model, info, rng):
    B = 2
    hist = jnp.zeros((B, info.history_len), jnp.int32)
    dec = jnp.zeros((B, info.target_len), jnp.int32)
    return model.init({'params': rng, 'dropout': rng}, hist, dec, train=False)['params']


def output_table(params, model):
    """(W [V, D], bias [V] or None): the output layer of a seq2seq model as a table, logits =
    h W^T + bias over the V = N + 1 scored entries (the item table itself when tied)."""
    cfg = model.cfg
    v = cfg.vocab_size
    if cfg.tie_output:
        return params['item_embed']['embedding'][:v], None
    proj = params['output_proj']
    return proj['kernel'][:, :v].T, proj['bias'][:v]


@jax.named_scope('mle_loss')    # a name in profiles (benchmarks/op_profile.py) only
def mle_loss(params, model, history, target, dec_inputs, rng, train: bool = True,
             chunk: int = 0):
    """Token-level cross entropy of `target` [B, T] (0 = padding, masked) given decoder inputs.

    chunk 0: through the logits [B, T, V]; chunk C > 0: ``chunked_softmax.nll`` over blocks of
    C items, without them (config.loss_chunk; the same value to float32 rounding).
    Returns (sum of token losses, number of target tokens) so that devices and steps average
    exactly.
    """
    rngs = {'dropout': rng} if train else None
    if chunk > 0:
        h = model.apply({'params': params}, history, dec_inputs, train=train, rngs=rngs,
                        method=model.decoder_hidden)
        w, bias = output_table(params, model)
        nll = chunked_softmax.nll(h.astype(model.cfg.dtype), w.astype(model.cfg.dtype), target,
                                  int(chunk), bias)
    else:
        logits = model.apply({'params': params}, history, dec_inputs, train=train, rngs=rngs)
        nll = softmax_xent.nll(logits.astype(jnp.float32), target)
    mask = (target > 0).astype(jnp.float32)
    return jnp.sum(nll * mask), jnp.sum(mask)


def make_step_fn(model, params):
    def step_fn(state, prev, t):
        return model.apply({'params': params}, state, prev, t, method=model.decode_step)
    return step_fn


def make_generate_fn(model, info, decode_cfg):
    """generate_fn(params, batch, rng) -> (sampled [B, K], full [B, K]) with the configured decoder.

    With batch['candidates'] None only the full-protocol list is made (sampled is None).
    """
    def generate_fn(params, batch, rng):
        state = model.apply({'params': params}, batch['history'], info.k,
                            method=model.init_decode_state)
        return decoding.generate_sampled_and_full(
            make_step_fn(model, params), state, rng, batch, decode_cfg=decode_cfg,
            vocab_size=info.vocab_size, bos_id=info.bos_id, k=info.k)
    return generate_fn
