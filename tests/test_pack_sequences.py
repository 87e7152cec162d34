"""Packed sequences (docs/DESIGN.md, "Packed sequences"): SASRec's and BERT4Rec's networks run on
the batch's real items only, end to end in chunks of L with a banded (causal / two-sided) mask,
GCSAN's on its session graphs' real nodes end to end, and they compute what they compute on the
padded [B, L] rows: the same states, loss and gradient (without dropout, whose masks are drawn in
the packed layout), on one device and on four."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aos4rec_jax import sharding as shard_lib
from aos4rec_jax.models import gcsan as gcsan_model
from aos4rec_jax.models import layers
from tests.test_pack_positions import (_assert_over_the_cap_falls_back, _assert_packed_equals_padded,
                                       _loss_and_grads, _method as _method_of, _steps)

# GCSAN's session graphs need repeated items (a node per distinct item, edges counted): 40 users
# of 4 to 9 items drawn with replacement from 12
_RNG = np.random.default_rng(5)
REPEATS = [list(_RNG.integers(1, 13, size=int(_RNG.integers(4, 10)))) for _ in range(40)]


def _method(model, variant, **sets):
    return _method_of(model, variant, seqs=REPEATS if model == 'gcsan' else None, **sets)


def test_band_mask_by_hand():
    # one group of two chunks of W = 3: rows 0 (2 items), 1 (3 items), 2 (1 item), one filler
    segment = jnp.array([[0, 0, 1], [1, 1, 2]])
    column = jnp.array([[1, 2, 0], [1, 2, 2]])
    m = np.asarray(layers.band_mask(segment, column, chunks_per_group=2))[:, 0]
    assert m.shape == (2, 3, 6)
    # keys of chunk 0: [filler x 3, its own 3 tokens]; of chunk 1: [chunk 0's, its own]
    np.testing.assert_array_equal(m[0], [[0, 0, 0, 1, 0, 0],
                                         [0, 0, 0, 1, 1, 0],
                                         [0, 0, 0, 0, 0, 1]])
    np.testing.assert_array_equal(m[1], [[0, 0, 1, 1, 0, 0],      # row 1, column 1: its column 0, 1
                                         [0, 0, 1, 1, 1, 0],
                                         [0, 0, 0, 0, 0, 1]])
    # two groups of one chunk: nothing crosses the groups
    m2 = np.asarray(layers.band_mask(segment, column, chunks_per_group=1))[:, 0]
    assert not m2[:, :, :3].any()
    keys = layers.band_keys(jnp.arange(6).reshape(2, 3), 2, fill=-1)
    assert np.asarray(keys).tolist() == [[-1, -1, -1, 0, 1, 2], [0, 1, 2, 3, 4, 5]]
    keys = layers.band_keys(jnp.arange(6).reshape(2, 3), 2, fill=-1, both_sides=True)
    assert np.asarray(keys).tolist() == [[-1, -1, -1, 0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5, -1, -1, -1]]
    # two-sided (BERT4Rec): every key of the query's row, before or after it
    b = np.asarray(layers.band_mask(segment, column, chunks_per_group=2, causal=False))[:, 0]
    assert b.shape == (2, 3, 9)
    np.testing.assert_array_equal(b[0], [[0, 0, 0, 1, 1, 0, 0, 0, 0],
                                         [0, 0, 0, 1, 1, 0, 0, 0, 0],
                                         [0, 0, 0, 0, 0, 1, 1, 1, 0]])     # row 1: 3 tokens
    np.testing.assert_array_equal(b[1], [[0, 0, 1, 1, 1, 0, 0, 0, 0],
                                         [0, 0, 1, 1, 1, 0, 0, 0, 0],
                                         [0, 0, 0, 0, 0, 1, 0, 0, 0]])


@pytest.mark.parametrize('style', ['sasrec', 'bert'])
def test_encode_packed_equals_encode_at_the_real_items(style):
    m, ds = _method('sasrec', '', pack_sequences=True)
    m.config.model_kwargs.dropout_rate = 0.0
    m.config.model_kwargs.style = style
    m.model = m.build_network()
    m.phases(shard_lib.make_mesh(jax.devices()[:1]))
    params = m.init_state(jax.random.PRNGKey(0))['params']
    data = ds.device_data()
    _, users, inputs, pos = m.sequence_batch(data, jax.random.PRNGKey(4))
    mask = pos > 0
    h = m.encode(params, inputs, users, key=jax.random.PRNGKey(1), train=True)
    rows, h_rows, (r_inputs,) = m.encode_stream(params, inputs, mask, jax.random.PRNGKey(1), inputs)
    n = int(np.sum(np.asarray(mask)))
    assert n < m.batch_size * m.L and int(np.sum(np.asarray(rows))) == n
    want = np.asarray(h)[np.asarray(mask)]                  # row-major, as the stream
    np.testing.assert_allclose(np.asarray(h_rows)[:n], want, rtol=2e-5, atol=2e-6)
    assert np.asarray(r_inputs)[:n].tolist() == np.asarray(inputs)[np.asarray(mask)].tolist()


def _no_dropout(m):
    m.config.model_kwargs.dropout_rate = 0.0
    if 'attention_dropout_rate' in m.config.model_kwargs:
        m.config.model_kwargs.attention_dropout_rate = 0.0
    m.model = m.build_network()


def test_gcsan_packed_nodes_by_hand():
    # two groups of two rows, cap 4: group 0 = rows 0 (2 nodes) and 1 (1 node), group 1 = rows
    # 2 (3 nodes) and 3 (1 node)
    nodes = jnp.array([[3, 5, 0, 0], [7, 0, 0, 0], [2, 4, 6, 0], [1, 0, 0, 0]])
    g = gcsan_model.PackedNodes.of(nodes, groups=2, cap=4)
    assert np.asarray(g.items).tolist() == [3, 5, 7, 0, 2, 4, 6, 1]
    assert np.asarray(g.base).tolist() == [0, 2, 4, 7]
    vals = jnp.arange(8.0)[:, None] * jnp.ones((1, 2))
    rows = np.asarray(g.spread(vals))[..., 0]
    assert rows.tolist() == [[0, 1, 0, 0], [2, 0, 0, 0], [4, 5, 6, 0], [7, 0, 0, 0]]
    back = np.asarray(g.gather(g.spread(vals)))[:, 0]
    assert back.tolist() == [0, 1, 2, 0, 4, 5, 6, 7]          # slot 3 is no row's node
    # the tests' windows repeat items (fewer nodes than items) and pack
    m, ds = _method('gcsan', '', pack_sequences=True)
    m.phases(shard_lib.make_mesh(jax.devices()[:1]))
    _, _, hist, _ = m.window_batch(ds.device_data(), jax.random.PRNGKey(10))
    nodes = np.asarray(gcsan_model.session_graph(hist)[0])
    lengths = np.sum(np.asarray(hist) > 0, axis=1)
    assert (np.sum(nodes > 0, axis=1) < lengths).any()
    assert int(np.sum(lengths)) <= m.pack_cap < m.batch_size * m.L
    # the packed network refuses more than one block (h at the last position only)
    assert m.packing()
    m.config.model_kwargs.num_layers = 2
    assert not type(m)(m.config, m.ds).packing()


@pytest.mark.parametrize('model,variant', [('sasrec', ''), ('sasrec', 'plus'), ('bert4rec', ''),
                                           ('bert4rec', 'untuned'), ('gcsan', '')])
def test_packed_network_loss_and_gradient_equal_the_padded_ones(model, variant):
    m, ds = _method(model, variant, pack_sequences=True)
    _no_dropout(m)
    m.phases(shard_lib.make_mesh(jax.devices()[:1]))
    assert m.pack_cap is not None and getattr(m, 'stream_cap', 0) is not None
    data = ds.device_data()
    params = m.init_state(jax.random.PRNGKey(0))['params']
    _assert_packed_equals_padded(m, data, params,
                                 examples=m.batch_size if model == 'gcsan' else None)
    # with dropout the masks differ, the loss stays finite and near the padded one's
    m.config.model_kwargs.dropout_rate = 0.2
    if model == 'bert4rec':
        m.config.model_kwargs.attention_dropout_rate = 0.2
    m.model = m.build_network()
    s1, n1, _ = _loss_and_grads(m, data, True)(params, jax.random.PRNGKey(3))
    s0, n0, _ = _loss_and_grads(m, data, False)(params, jax.random.PRNGKey(3))
    assert np.isfinite(float(s1)) and abs(float(s1) / float(n1) - float(s0) / float(n0)) < 0.5


@pytest.mark.parametrize('model,devices', [('sasrec', 1), ('sasrec', 4), ('bert4rec', 4),
                                           ('gcsan', 4)])
def test_train_steps_on_the_packed_network_equal_unpacked_and_over_the_cap_fall_back(model, devices):
    mesh = shard_lib.make_mesh(jax.devices()[:devices])

    def method(pack_sequences=True):
        m, ds = _method(model, '', pack_sequences=pack_sequences)
        _no_dropout(m)
        return m, ds

    m_off, ds = method(pack_sequences=False)
    ref_state, ref = _steps(m_off, ds, mesh)
    assert getattr(m_off, 'stream_cap', m_off.pack_cap) is None       # the network unpacked
    m_on, _ = method()
    state, got = _steps(m_on, ds, mesh)
    assert getattr(m_on, 'stream_cap', m_on.pack_cap) is not None and m_on.groups == devices
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(state['params']),
                            jax.tree.leaves(ref_state['params'])):
        if 'key' in jax.tree_util.keystr(path) and 'bias' in jax.tree_util.keystr(path):
            # softmax ignores a bias added to every key: its gradient is 0 but for rounding,
            # which Adam scales up to at most the rate a step (3 steps of 1e-3)
            assert float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) < 3e-3
        else:
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    _assert_over_the_cap_falls_back(method()[0], ds, mesh, ref)


@pytest.mark.slow
def test_a_packed_run_resumed_from_its_checkpoint_ends_where_an_uninterrupted_one_ends(tmp_path):
    """Same seed, same result with the packed network (dropout on): 6 steps in one go, and 3
    steps then the same run extended to 6 from its step-3 checkpoint, end with bit-identical
    parameters and the same logged losses."""
    import importlib
    import json
    import contextlib
    import io
    from aos4rec_jax import checkpoint as ckpt_lib
    from aos4rec_jax import datasets
    from aos4rec_jax import methods
    from aos4rec_jax import trainer

    def config(steps):
        c = importlib.import_module('experiments.configs.sasrec').get_config('tiny')
        c.synthetic.cache_dir = str(tmp_path / 'data')
        c.synthetic.seq_len, c.history_len = 8, 24          # short rows in a long window: it packs
        c.train_steps, c.log_every, c.eval_every, c.checkpoint_every = steps, 1, 6, 3
        c.max_eval_users = 16
        c.pack_sequences = True
        assert c.model_kwargs.dropout_rate > 0
        return c

    def run(c, wd):
        with contextlib.redirect_stdout(io.StringIO()):
            trainer.train_and_evaluate(c, str(wd))

    ds = datasets.get_dataset(config(6), str(tmp_path), log=lambda m: None)
    m = methods.build(config(6), ds)
    m.phases(shard_lib.make_mesh(jax.devices()[:1]))
    assert m.pack_cap is not None                                  # the packed branch is taken
    run(config(6), tmp_path / 'one')
    run(config(3), tmp_path / 'two')
    run(config(6), tmp_path / 'two')

    def final(wd):
        ck = ckpt_lib.Checkpointer(str(wd), create=False)
        try:
            state, _ = ck.restore(6, None)
        finally:
            ck.close()
        with open(wd / 'metrics' / 'train.jsonl') as f:
            losses = [json.loads(line)['loss'] for line in f]
        return jax.tree.leaves(state['params']), losses

    (p1, l1), (p2, l2) = final(tmp_path / 'one'), final(tmp_path / 'two')
    assert l1 == l2 and len(l1) == 6
    for a, b in zip(p1, p2):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
