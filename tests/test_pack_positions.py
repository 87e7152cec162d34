"""Packed positions (docs/DESIGN.md, "Packed positions"): the per-position losses of SASRec+ and
GRU4Rec+ run on the counted positions only, with the same loss and gradient as over the padded
[B, L] rows, and a batch above the cap takes the unpacked branch."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aos4rec_jax import data as data_lib
from aos4rec_jax import methods
from aos4rec_jax import sharding as shard_lib
from aos4rec_jax import trainer
from aos4rec_jax.methods import next_item
from experiments.configs import bert4rec as bert4rec_config
from experiments.configs import gcsan as gcsan_config
from experiments.configs import gru4rec as gru4rec_config
from experiments.configs import sasrec as sasrec_config
from tests.helpers import tiny_prepared

# 40 users of 4 to 9 items (train parts of 2 to 7 items: 1 to 6 counted positions of L = 12)
RNG = np.random.default_rng(3)
SEQS = [list(RNG.choice(np.arange(1, 60), size=int(RNG.integers(4, 10)), replace=False))
        for _ in range(40)]

CASES = [('sasrec', 'plus'), ('gru4rec', ''), ('gru4rec', 'top1'), ('gru4rec', 'ce'),
         ('gru4rec', 'softmax'), ('bert4rec', ''), ('bert4rec', 'untuned')]


def test_position_cap_by_hand():
    # every example counts 1: mean 4, sd 0 -> 4, rounded up to 8, but never above 4 x 1
    assert next_item.position_cap([1, 1, 1, 1], 4) == 4
    # counts 0 and 2: mean 1, sd 1; batch 16: 16 + 6 x 1 x 4 = 40, but never above 16 x 2 = 32
    assert next_item.position_cap([0, 2], 16) == 32
    # counts 1 and 3: mean 2, sd 1; batch 100: 200 + 6 x 10 = 260 -> 264 (multiple of 8) <= 300
    assert next_item.position_cap([1, 3], 100) == 264
    assert next_item.position_cap([], 8) == 0


def _method(model, variant, batch=16, seqs=None, **sets):
    module = {'sasrec': sasrec_config, 'gru4rec': gru4rec_config, 'bert4rec': bert4rec_config,
              'gcsan': gcsan_config}[model]
    c = module.get_config(','.join(v for v in (variant, 'tiny') if v))
    c.batch_size = batch
    c.pack_positions = True
    c.pack_sequences = False          # the packed network: tests/test_pack_sequences.py
    if model == 'gru4rec':
        c.gru4rec.num_extra_negatives = 16
    for k, v in sets.items():
        c[k] = v
    ds = data_lib.Dataset(tiny_prepared(SEQS if seqs is None else seqs, cap=2, history_len=12,
                                        target_len=1, k=2,
                                        num_candidates=5))
    m = methods.build(c, ds)
    return m, ds


def _loss_and_grads(m, data, packed):
    """jitted (params, key) -> (loss sum, count, gradient of the mean loss)."""
    def f(p, key):
        s, n, _ = m.loss(p, data, key, packed=packed)
        return s / n, (s, n)

    def run(params, key):
        (_, (s, n)), g = jax.value_and_grad(f, has_aux=True)(params, key)
        return s, n, g
    return jax.jit(run)


@pytest.mark.parametrize('model,variant', CASES)
def test_packed_loss_and_gradient_equal_the_padded_ones(model, variant):
    m, ds = _method(model, variant)
    mesh = shard_lib.make_mesh(jax.devices()[:1])
    m.phases(mesh)
    assert m.pack_cap is not None and m.pack_cap < m.batch_size * m.packed_width()   # it packs
    _assert_packed_equals_padded(m, ds.device_data(), m.init_state(jax.random.PRNGKey(0))['params'])


def _assert_packed_equals_padded(m, data, params, examples=None):
    """Two steps' keys: the batch fits the cap, and the packed loss sum, count and gradient are
    the padded ones (the count that of `counted`, or `examples` for a loss counting one target
    an example whatever its items, GCSAN's)."""
    padded, packed = _loss_and_grads(m, data, False), _loss_and_grads(m, data, True)
    for step in range(2):
        key = jax.random.PRNGKey(10 + step)
        assert bool(m.fits(data, key))
        s0, n0, g0 = padded(params, key)
        s1, n1, g1 = packed(params, key)
        want = np.sum(np.asarray(m.counted(data, key))) if examples is None else examples
        assert float(n1) == float(n0) == float(want)
        np.testing.assert_allclose(float(s1), float(s0), rtol=1e-5)
        for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize('variant,sets', [('', {}), ('untuned', {}), ('untuned', {'window_step': 2}),
                                          ('', {'M': 1})])
def test_bert4rec_rows_per_sequence_are_the_cloze_counts(variant, sets):
    """packable_rows is the count of cloze_mask for each training sequence: every drawn row's
    count is `cloze_count` at its real length (M = 1: where the cap of M binds), and the lengths
    drawn are those `sequence_lengths` lists."""
    m, ds = _method('bert4rec', variant)
    for k, v in sets.items():
        if k == 'M':
            m.M = v
        else:
            m.opts[k] = v
    lengths = set(m.sequence_lengths().tolist())
    data = ds.device_data()
    for step in range(4):
        key = jax.random.PRNGKey(step)
        _, _, seq, _, _, w = jax.jit(m._batch)(data, key)
        n = np.sum(np.asarray(seq) > 0, axis=1)
        assert set(n.tolist()) <= lengths
        want = m.cloze_count(n)
        got = np.sum(np.asarray(w) > 0, axis=1)
        last = got == 1                                 # mask_last rows hold one, any length
        assert np.all(got[~last] == want[~last])
    if 'M' in sets:                                     # the cap binds on some sequences
        assert np.any(np.round(float(m.opts.mask_prob) * m.sequence_lengths()) > m.M)
    rows = m.packable_rows()
    assert rows.tolist() == m.cloze_count(m.sequence_lengths()).tolist() and rows.max() <= m.M


def test_positions_gathers_the_counted_rows_of_each_group_in_order():
    m, _ = _method('gru4rec', '', batch=4)
    m.groups, m.pack_cap = 2, 3
    mask = jnp.array([[0, 1, 1], [0, 0, 1], [1, 1, 1], [0, 0, 0]], bool)
    vals = jnp.arange(12).reshape(4, 3) + 100
    rows, (got,) = m.positions(True, mask, vals)
    # group 0 = rows 0-1: positions (0,1) (0,2) (1,2); group 1 = rows 2-3: (2,0) (2,1) (2,2)
    assert np.asarray(rows).tolist() == [True] * 6
    assert np.asarray(got).tolist() == [101, 102, 105, 106, 107, 108]
    mask2 = mask.at[2].set(False)
    rows, (got,) = m.positions(True, mask2, vals)
    assert np.asarray(rows).tolist() == [True, True, True, False, False, False]
    assert np.asarray(got)[:3].tolist() == [101, 102, 105]
    same_mask, same = m.positions(False, mask, vals)
    assert same_mask is mask and same[0] is vals


def _steps(m, ds, mesh, n=3):
    repl = shard_lib.replicated(mesh)
    phase = m.phases(mesh)[0]
    init_fn, _, shardings, rng = trainer.sharded_init(m.init_state, m.config, mesh)
    step = jax.jit(phase.step_fn, in_shardings=(shardings, repl), out_shardings=(shardings, repl))
    state, data, losses = init_fn(rng), ds.device_data(repl), []
    for _ in range(n):
        state, metrics = step(state, data)
        losses.append(float(metrics['loss_sum']))
    return state, losses


@pytest.mark.parametrize('devices', [1, 4])
def test_train_steps_packed_equal_unpacked_and_over_the_cap_fall_back(devices):
    mesh = shard_lib.make_mesh(jax.devices()[:devices])
    m_off, ds = _method('gru4rec', '', pack_positions=False)
    ref_state, ref = _steps(m_off, ds, mesh)
    assert m_off.pack_cap is None
    m_on, _ = _method('gru4rec', '')
    state, got = _steps(m_on, ds, mesh)
    assert m_on.pack_cap is not None and m_on.groups == devices
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(state['params']), jax.tree.leaves(ref_state['params'])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    # a cap every batch exceeds: the unpacked branch runs (the same steps again)
    _assert_over_the_cap_falls_back(_method('gru4rec', '')[0], ds, mesh, ref)


def _assert_over_the_cap_falls_back(m, ds, mesh, ref):
    """With a cap of 1 every batch is over it: the steps of `m` are the unpacked ones, `ref`."""
    orig = next_item.position_cap
    try:
        next_item.position_cap = lambda rows, batch, sigmas=6.0: 1
        _, got = _steps(m, ds, mesh)
    finally:
        next_item.position_cap = orig
    assert m.pack_cap == 1
    np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_old_runs_and_sampled_bce_do_not_pack():
    mesh = shard_lib.make_mesh(jax.devices()[:1])
    assert trainer.FIELDS_ADDED_LATER['pack_positions'] is False     # folders written before
    assert trainer.FIELDS_ADDED_LATER['pack_sequences'] is False
    for model, variant in [('sasrec', ''), ('gru4rec', 'bce')]:
        m, _ = _method(model, variant)
        m.phases(mesh)
        assert m.packable_rows() is None and m.pack_cap is None
