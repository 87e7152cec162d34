"""Device mesh and shardings: data parallel over all devices, optional item-axis table sharding.

One mesh axis, 'data', spans every device of every host. Batches are split along it; parameters
are replicated, except (with `shard_items`) the item embedding table and the untied output layer,
whose item axis is split along the same axis (their row count is padded to a multiple of 128 by
the models, so any device count dividing 128 divides it). Optimizer moments follow their
parameters because the rule looks at the parameter path, which optax states repeat.
"""
from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = 'data'
ITEM_TABLES = ('item_embed', 'output_proj')


def use_fake_cpu_devices(n: int) -> None:
    """Splits the host CPU into `n` XLA devices (tests, sharding checks on a laptop).

    Call it before anything touches a JAX backend. It also sizes XLA:CPU's thread pool (the env
    var PJRT_NPROC, unless already set) to at least 2 threads per device: that pool runs every
    device's launch and every device's program; at its default size (the larger of the core
    count and `n`) a step whose collectives block some workers while other devices' launches
    wait for a free one can deadlock, which XLA reports after 40 s as an aborted rendezvous
    ("only 7 of them arrived"). It did, reproducibly with synchronous dispatch, for GRU4Rec's
    in-batch-negative step on 8 devices of a 2-core machine (docs/testing.md).
    """
    os.environ.setdefault('PJRT_NPROC', str(max(os.cpu_count() or 1, 2 * n)))
    jax.config.update('jax_num_cpu_devices', n)


def make_mesh(devices=None) -> Mesh:
    devices = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devices.reshape(-1), (DATA,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA))


def _path_str(path) -> str:
    return '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path)


def _leaf_spec(path, leaf, n_dev: int, shard_items: bool) -> P:
    shape = getattr(leaf, 'shape', ())
    if not shard_items or len(shape) != 2:
        return P()
    p = _path_str(path)
    if 'item_embed' in p and shape[0] % n_dev == 0:      # [rows, D]
        return P(DATA, None)
    if 'output_proj' in p and shape[1] % n_dev == 0:     # kernel [D, V]
        return P(None, DATA)
    return P()


def state_shardings(abstract_tree, mesh: Mesh, shard_items: bool = False):
    """A NamedSharding for every leaf of `abstract_tree` (shapes only), by the rule above."""
    n = mesh.devices.size
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: NamedSharding(mesh, _leaf_spec(path, leaf, n, shard_items)), abstract_tree)


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(f'config.batch_size={batch_size} must be divisible by the {n} devices of the mesh')
