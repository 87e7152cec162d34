"""The registry of methods: `config.model` -> the Method class that trains and evaluates it.

Every module of this package that defines ``METHODS = {model_name: MethodClass}`` is registered
the first time the registry is asked (see docs/DESIGN.md, "Method contract"): adding a
recommender adds a file here (and its network in `models/`, its config in `experiments/configs/`)
and edits nothing else.
"""
from __future__ import annotations

import importlib
import pkgutil

from aos4rec_jax.methods.base import Method, Phase, PhaseContext

_REGISTRY: dict[str, type] = {}


def _discover() -> dict[str, type]:
    if not _REGISTRY:
        found = {}
        for mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
            module = importlib.import_module(f'{__name__}.{mod}')
            for name, cls in getattr(module, 'METHODS', {}).items():
                if name in found:
                    raise RuntimeError(f'model {name!r} is registered twice ({found[name].__module__} '
                                       f'and {cls.__module__})')
                found[name] = cls
        _REGISTRY.update(found)
    return _REGISTRY


def names() -> tuple[str, ...]:
    """Every `config.model` value a run may use."""
    return tuple(sorted(_discover()))


def get(model: str) -> type:
    """The Method class of `config.model`; ValueError naming the known ones otherwise."""
    reg = _discover()
    if model not in reg:
        raise ValueError(f'unknown model {model!r}; known: {", ".join(sorted(reg))}')
    return reg[model]


def build(config, ds) -> Method:
    """The method object of one run (`ds`: a data.Dataset)."""
    return get(config.model)(config, ds)


__all__ = ['Method', 'Phase', 'PhaseContext', 'build', 'get', 'names']
