"""Seq2seq recommenders (Flax linen) and their registry.

    model = models.build('transformer', {'num_items': N, 'embed_dim': 128})
    params = model.init(rng, history, dec_inputs)['params']
    logits = model.apply({'params': params}, history, dec_inputs, train=True,
                         rngs={'dropout': key})
    state = model.apply({'params': params}, history, max_len, method='init_decode_state')
    logits_t, state = model.apply({'params': params}, state, prev_items, t,
                                  method='decode_step')

See docs/DESIGN.md ("Item ids", "Model contract").
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import flax.linen as nn

from aos4rec_jax.models.gru import GRUConfig, GRURec
from aos4rec_jax.models.layers import num_embedding_rows, round_up
from aos4rec_jax.models.transformer import TransformerConfig, TransformerRec

_REGISTRY = {
    'transformer': (TransformerConfig, TransformerRec),
    'gru': (GRUConfig, GRURec),
}

__all__ = ['GRUConfig', 'GRURec', 'TransformerConfig', 'TransformerRec', 'build',
           'config_class', 'make_config', 'model_names', 'num_embedding_rows', 'round_up']


def model_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def _entry(name: str):
    if name not in _REGISTRY:
        raise ValueError(f'unknown model {name!r}; valid names: {", ".join(model_names())}')
    return _REGISTRY[name]


def config_class(name: str) -> type:
    """The frozen config dataclass of model `name`."""
    return _entry(name)[0]


def make_config(name: str, cfg_kwargs: Optional[Mapping[str, Any]] = None, *,
                strict: bool = False):
    """Config of model `name` from a mapping (e.g. a ConfigDict's `to_dict()`).

    Keys that are not fields of the config are ignored unless `strict` (one shared
    `model_kwargs` block serves every model); with `strict` they raise ValueError.
    """
    cls = config_class(name)
    kwargs = dict(cfg_kwargs or {})
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(kwargs) - fields)
    if unknown and strict:
        raise ValueError(f'unknown {name} config fields {unknown}; valid: {sorted(fields)}')
    return cls(**{k: v for k, v in kwargs.items() if k in fields})


def build(name: str, cfg_kwargs: Optional[Mapping[str, Any]] = None, *,
          strict: bool = False) -> nn.Module:
    """The model `name` ('transformer' | 'gru') built from `cfg_kwargs` (see `make_config`)."""
    cfg = make_config(name, cfg_kwargs, strict=strict)
    return _entry(name)[1](cfg)
