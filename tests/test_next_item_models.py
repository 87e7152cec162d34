"""Tests of the next-item networks (models/{sasrec,gru4rec,caser,bert4rec,gcsan,bpr}.py):
the contract of docs/DESIGN.md ("Next-item network contract"), causality, padding, the session
graph of GC-SAN, Caser's window and users, BPR's fold-in, bf16.

Compilations dominate the time (CPU): each model compiles one bundle (init, eval and train
encode, the output functions) on the shared batch, an eval encode per input shape, and a bf16
encode; every test reuses them.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from aos4rec_jax import sharding
from aos4rec_jax.models import layers
from aos4rec_jax.models.bert4rec import BERT4Rec, BERT4RecConfig
from aos4rec_jax.models.bpr import BPRMF, BPRMFConfig
from aos4rec_jax.models.caser import Caser, CaserConfig
from aos4rec_jax.models.gcsan import GCSAN, GCSANConfig, session_graph
from aos4rec_jax.models.gru4rec import GRU4Rec, GRU4RecConfig
from aos4rec_jax.models.sasrec import SASRec, SASRecConfig

N = 30                      # items 1..N
U = 5                       # users 0..U-1
L = 6
CASER_L = 3
D = 16
SPECS = {   # name: (module, config, tiny overrides, h feature size, untied output table or None)
    'sasrec': (SASRec, SASRecConfig, dict(max_len=L, embed_dim=D, num_heads=2), D, None),
    'sasrec_bert': (SASRec, SASRecConfig, dict(max_len=L, embed_dim=D, num_heads=2, style='bert'),
                    D, None),
    'gru4rec': (GRU4Rec, GRU4RecConfig, dict(max_len=L, embed_dim=D), D, 'output_item_embed'),
    'caser': (Caser, CaserConfig, dict(num_users=U, max_len=CASER_L, embed_dim=8, num_vertical=2,
                                       num_horizontal=3), 16, 'output_item_embed'),
    'bert4rec': (BERT4Rec, BERT4RecConfig, dict(max_len=L, embed_dim=D, num_heads=2, mlp_dim=32),
                 D, None),
    'gcsan': (GCSAN, GCSANConfig, dict(max_len=L, embed_dim=D), D, None),
    'bpr': (BPRMF, BPRMFConfig, dict(num_users=U, embed_dim=D), D, None),
}
NAMES = tuple(SPECS)
PER_POSITION = ('sasrec', 'sasrec_bert', 'gru4rec', 'bert4rec')

# Left-padded rows: full, padded with repeats, a single item, no item (as the methods' init).
SEQ = jnp.array([[3, 5, 7, 9, 11, 13],
                 [0, 0, 4, 4, 8, 4],
                 [0, 0, 0, 0, 0, 2],
                 [0, 0, 0, 0, 0, 0]], jnp.int32)
USERS = jnp.array([0, 4, -1, 1], jnp.int32)
MASK = np.asarray(SEQ) > 0
REAL_ROWS = MASK.any(axis=1)
UNKNOWN = jnp.full((4,), -1, jnp.int32)


# Tiny programs: XLA's LLVM optimisation takes most of the compile time and buys nothing here
# (every bit-for-bit comparison below compares two runs of one compiled function).
jit = functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0})


def key(seed):
    """'rbg' keys compile faster on CPU than threefry; the models do not depend on the kind."""
    return jax.random.key(seed, impl='rbg')


@functools.lru_cache(maxsize=None)
def make(name, **overrides):
    module, config, tiny, _, _ = SPECS[name]
    return module(config(num_items=N, **{**tiny, **overrides}))


@functools.lru_cache(maxsize=None)
def _jitted(name):
    model = make(name)

    @jit
    def encode(params, seq, users):
        return model.apply({'params': params}, seq, users, train=False, method='encode')

    @jit
    def init_and_run(rng, seq, users, dropout_rng):
        """init + everything on one batch in one compilation (init's forward pass is dead code)."""
        params = model.init(rng, seq, users, train=False)['params']
        v = {'params': params}
        h = model.apply(v, seq, users, train=False, method='encode')
        ids = jnp.arange(N + 1)
        return params, dict(
            h=h,
            h_train=model.apply(v, seq, users, train=True, rngs={'dropout': dropout_rng},
                                method='encode'),
            scores=model.apply(v, h, method='score_all'),
            vectors=model.apply(v, ids, method='item_vectors'),
            bias=model.apply(v, ids, method='item_bias'),
            vectors_2d=model.apply(v, jnp.ones((2, 3), jnp.int32), method='item_vectors'),
            bias_2d=model.apply(v, jnp.ones((2, 3), jnp.int32), method='item_bias'))

    return dict(encode=encode, init_and_run=init_and_run)


@functools.lru_cache(maxsize=None)
def _init_and_run(name, seed=0):
    params, out = _jitted(name)['init_and_run'](key(seed), SEQ, USERS, key(1))
    return params, {k: np.asarray(v) for k, v in out.items()}


def params_of(name, seed=0):
    return _init_and_run(name, seed)[0]


def bundle(name):
    return _init_and_run(name)[1]


def encode(name, seq, users=USERS, params=None):
    params = params_of(name) if params is None else params
    return np.asarray(_jitted(name)['encode'](params, jnp.asarray(seq, jnp.int32), users))


def with_padding_row(name, rows):
    """Params with row 0 (padding) of every item table replaced by `rows` (large values)."""
    params = jax.tree_util.tree_map(lambda x: x, params_of(name))       # shallow copy of dicts
    for table in ('item_embed', 'output_item_embed'):
        if table in params:
            emb = params[table]['embedding']
            params[table] = {'embedding': emb.at[0].set(rows[:emb.shape[1]])}
    return params


# ---------------------------------------------------------------------------------------------
# The contract: shapes, init, outputs

@pytest.mark.parametrize('name', NAMES)
def test_contract_shapes_and_outputs(name):
    model = make(name)
    _, _, _, dim, out_table = SPECS[name]
    out = bundle(name)
    b = SEQ.shape[0]
    lead = (b, L) if model.per_position else (b,)
    assert type(model).per_position == (name in PER_POSITION)
    assert out['h'].shape == lead + (dim,)
    assert out['scores'].shape == lead + (N + 1,) and out['scores'].dtype == np.float32
    assert out['vectors'].shape == (N + 1, dim) and out['bias'].shape == (N + 1,)
    assert out['vectors_2d'].shape == (2, 3, dim) and out['bias_2d'].shape == (2, 3)
    for k, v in out.items():
        assert np.isfinite(v).all(), k
    called = jax.eval_shape(lambda p: model.apply({'params': p}, SEQ, USERS), params_of(name))
    assert called.shape == out['h'].shape                               # __call__ = encode
    # score_all = h @ item_vectors(all).T + item_bias(all)
    ref = np.einsum('...d,vd->...v', out['h'], out['vectors']) + out['bias']
    np.testing.assert_allclose(out['scores'], ref, rtol=1e-5, atol=1e-5)
    # dropout acts in training only (BPR's default rate is 0)
    assert np.array_equal(out['h_train'], out['h']) == (model.cfg.dropout_rate == 0)

    params = params_of(name)
    rows = layers.num_embedding_rows(N)
    assert params['item_embed']['embedding'].shape[0] == rows >= N + 2
    if out_table is not None:
        assert params[out_table]['embedding'].shape == (rows, dim)
    if 'output_item_bias' in params:
        assert params['output_item_bias'].shape == (rows,)
    else:
        assert not out['bias'].any()
    for leaf in jax.tree_util.tree_leaves(params):
        assert leaf.dtype == jnp.float32


@pytest.mark.parametrize('name', NAMES)
def test_init_deterministic(name):
    a, c = params_of(name), params_of(name, 1)
    b = _jitted(name)['init_and_run'](key(0), SEQ, USERS, key(1))[0]   # again, same seed
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
    assert not np.array_equal(a['item_embed']['embedding'], c['item_embed']['embedding'])


def test_item_tables_shard_along_items():
    """Every item table (input and untied output) is an 'item_embed' path: sharded by rows."""
    mesh = Mesh(np.asarray(jax.devices()[:8]).reshape(-1), (sharding.DATA,))
    for name in NAMES:
        specs = sharding.state_shardings(params_of(name), mesh, shard_items=True)
        assert specs['item_embed']['embedding'].spec == P(sharding.DATA, None)
        out_table = SPECS[name][4]
        if out_table:
            assert specs[out_table]['embedding'].spec == P(sharding.DATA, None)


# ---------------------------------------------------------------------------------------------
# Causality and padding

@pytest.mark.parametrize('name', ('sasrec', 'sasrec_bert', 'gru4rec'))
def test_causal(name):
    h = encode(name, SEQ)
    j = 3
    seq2 = np.asarray(SEQ).copy()
    seq2[:, j] = np.where(seq2[:, j] > 0, 17, 0)                       # rows 0, 1 change
    h2 = encode(name, seq2)
    np.testing.assert_array_equal(h2[:, :j], h[:, :j])                   # bit for bit
    assert not np.allclose(h2[:2, j], h[:2, j])
    np.testing.assert_array_equal(h2[2:], h[2:])                         # rows 2, 3 unchanged


def test_bert4rec_bidirectional():
    h = encode('bert4rec', SEQ)
    seq2 = np.asarray(SEQ).copy()
    seq2[0, -1] = 17
    h2 = encode('bert4rec', seq2)
    assert not np.allclose(h2[0, 0], h[0, 0])                            # a later item matters
    np.testing.assert_array_equal(h2[1:], h[1:])
    # a [MASK] (N + 1) input is a valid token
    seq3 = np.asarray(SEQ).copy()
    seq3[:, -1] = make('bert4rec').cfg.mask_id
    assert np.isfinite(encode('bert4rec', seq3)).all()


@pytest.mark.parametrize('name', NAMES)
def test_padding_row_has_no_influence(name):
    """The padding row of the item tables never reaches h at a real position / of a real row
    (attention keys at padding get zero weight; RNN state, convolutions, graph, mean masked)."""
    rows = 1e3 * jax.random.normal(jax.random.PRNGKey(3), (64,))
    h = encode(name, SEQ)
    h2 = encode(name, SEQ, params=with_padding_row(name, rows))
    if make(name).per_position:
        np.testing.assert_array_equal(h2[MASK], h[MASK])
    else:
        np.testing.assert_array_equal(h2[REAL_ROWS], h[REAL_ROWS])


@pytest.mark.parametrize('name', NAMES)
def test_extra_left_padding_changes_nothing(name):
    """[0, 0, a, b, c] gives, at its real positions, the h of [a, b, c] (positions of SASRec /
    BERT4Rec count from the right end; GRU state kept at padding; GC-SAN's graph and keys)."""
    short = np.array([[3, 5, 7, 9], [0, 4, 4, 8], [0, 0, 0, 2], [0, 0, 0, 0]], np.int32)
    long = np.pad(short, ((0, 0), (2, 0)))
    h_short, h_long = encode(name, short), encode(name, long)
    if make(name).per_position:
        h_long = h_long[:, 2:]
        m = short > 0
        np.testing.assert_allclose(h_long[m], h_short[m], rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_allclose(h_long, h_short, rtol=1e-5, atol=1e-5)


def test_gru4rec_padding_exact():
    """GRU4Rec: the state stays 0 over padding, so [0, 0, a, b, c] gives the h of [a, b, c]
    (to 1e-6; also at L = 3, a shape of its own), and h at padding positions is 0."""
    assert not bundle('gru4rec')['h'][~MASK].any()
    short = np.array([[3, 5, 7], [4, 8, 4], [0, 0, 2], [0, 0, 0]], np.int32)
    h3 = encode('gru4rec', short)
    h6 = encode('gru4rec', np.pad(short, ((0, 0), (3, 0))))
    np.testing.assert_allclose(h6[:, 3:], h3, rtol=0, atol=1e-6)
    assert not h6[:, :3].any() and not h3[2, :2].any()


# ---------------------------------------------------------------------------------------------
# GC-SAN's session graph

def _graph_reference(row):
    """SR-GNN's construction in plain numpy, with edge counts (the paper's weighting)."""
    length = len(row)
    items = sorted({int(x) for x in row if x > 0})
    nodes = np.zeros(length, np.int32)
    nodes[:len(items)] = items
    alias = np.array([items.index(x) if x > 0 else 0 for x in row], np.int32)
    c = np.zeros((length, length))
    for i in range(length - 1):
        if row[i] > 0 and row[i + 1] > 0:
            c[alias[i], alias[i + 1]] += 1
    out_deg = np.maximum(c.sum(1), 1)
    in_deg = np.maximum(c.sum(0), 1)
    return nodes, alias, c.T / in_deg[:, None], c / out_deg[:, None]


def test_session_graph_hand_made():
    nodes, alias, a_in, a_out = jax.jit(session_graph)(jnp.array([[0, 0, 5, 7, 5, 9]]))
    # nodes {5, 7, 9} = 0, 1, 2; edges 5 -> 7, 7 -> 5, 5 -> 9
    np.testing.assert_array_equal(nodes[0], [5, 7, 9, 0, 0, 0])
    np.testing.assert_array_equal(alias[0], [0, 0, 0, 1, 0, 2])
    want_out = np.zeros((6, 6))
    want_out[0, 1] = want_out[0, 2] = 0.5      # 5 has two outgoing edges
    want_out[1, 0] = 1.0                       # 7 -> 5
    want_in = np.zeros((6, 6))
    want_in[1, 0] = 1.0                        # 7 comes from 5
    want_in[0, 1] = 1.0                        # 5 comes from 7
    want_in[2, 0] = 1.0                        # 9 comes from 5
    np.testing.assert_array_equal(a_out[0], want_out)
    np.testing.assert_array_equal(a_in[0], want_in)


def test_session_graph_matches_reference():
    rng = np.random.default_rng(0)
    seq = rng.integers(1, 5, (16, 7)).astype(np.int32)                  # many repeats
    for b in range(16):
        seq[b, :rng.integers(0, 8)] = 0                                  # 0..7 pads (7: empty)
    seq[0] = [0, 0, 3, 3, 3, 1, 3]                                       # self-loop counted twice
    got = [np.asarray(x) for x in jax.jit(session_graph)(jnp.asarray(seq))]
    for b in range(16):
        for g, w in zip(got, _graph_reference(seq[b])):
            np.testing.assert_allclose(g[b], w, rtol=0, atol=1e-7)
    # row 0: nodes (1, 3); edges 3 -> 3 twice, 3 -> 1, 1 -> 3
    np.testing.assert_allclose(got[3][0, :2, :2], [[0, 1], [1 / 3, 2 / 3]], atol=1e-7)   # a_out
    np.testing.assert_allclose(got[2][0, :2, :2], [[0, 1], [1 / 3, 2 / 3]], atol=1e-7)   # a_in


# ---------------------------------------------------------------------------------------------
# Caser, BPR

def test_caser_window_and_users():
    h = encode('caser', SEQ)
    d = make('caser').cfg.embed_dim
    seq2 = np.asarray(SEQ).copy()
    seq2[:, :L - CASER_L] = np.where(seq2[:, :L - CASER_L] > 0, 29, 0)  # before the window
    np.testing.assert_array_equal(encode('caser', seq2), h)
    seq3 = np.asarray(SEQ).copy()
    seq3[:, -1] = 29
    assert not np.allclose(encode('caser', seq3)[:, :d], h[:, :d])
    user_table = np.asarray(params_of('caser')['user_embed'])
    np.testing.assert_array_equal(h[[0, 1, 3], d:], user_table[[0, 4, 1]])
    np.testing.assert_array_equal(h[2, d:], 0.0)                          # unknown user
    h_unknown = encode('caser', SEQ, UNKNOWN)
    np.testing.assert_array_equal(h_unknown[:, :d], h[:, :d])
    assert not h_unknown[:, d:].any()
    # a window shorter than L is left-padded
    np.testing.assert_array_equal(encode('caser', SEQ[:, -CASER_L:]), h)


def test_bpr_user_rows_and_fold_in():
    params = params_of('bpr')
    h = encode('bpr', SEQ)
    users = np.asarray(params['user_embed'])
    items = np.asarray(params['item_embed']['embedding'])
    np.testing.assert_array_equal(h[[0, 1, 3]], users[[0, 4, 1]])
    np.testing.assert_allclose(h[2], items[2], rtol=1e-6)
    h_unknown = encode('bpr', SEQ, UNKNOWN)
    for b in range(3):
        want = items[np.asarray(SEQ[b])[MASK[b]]].mean(axis=0)
        np.testing.assert_allclose(h_unknown[b], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(h_unknown[3], 0.0)                      # nothing to fold in
    # order and padding of the history do not matter to the fold-in
    np.testing.assert_allclose(encode('bpr', np.asarray(SEQ)[:, ::-1], UNKNOWN),
                               h_unknown, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# bf16

@pytest.mark.parametrize('name', NAMES)
def test_bfloat16_compute_float32_params(name):
    """bf16 computation: params stay float32 (init traced, not run: the same tree as float32),
    h is bf16, scores float32 and finite, and close to the float32 model's."""
    model = make(name, dtype=jnp.bfloat16)
    shapes = jax.eval_shape(model.init, key(0), SEQ, USERS)['params']
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(shapes))
    params = params_of(name)
    assert jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(params)

    @jit
    def run(params):
        h = model.apply({'params': params}, SEQ, USERS, train=False, method='encode')
        return h, model.apply({'params': params}, h, method='score_all')

    h, scores = run(params)
    assert h.dtype == jnp.bfloat16 and scores.dtype == jnp.float32
    assert np.isfinite(np.asarray(scores)).all()
    want = bundle(name)['scores']
    assert np.abs(np.asarray(scores) - want).max() < 0.1 * np.abs(want).max() + 0.1


def test_sasrec_bert_style_is_the_s3rec_layer():
    """style='bert' (the S3-Rec code's SASRec, experiments/configs/sasrec.py:s3rec_net): a norm
    on the input embeddings instead of one on the last block's output, an output projection after
    attention and a 4d feed-forward in each block; the paper's style has none of these. An
    unknown style is refused."""
    params = make('sasrec_bert').init(key(0), SEQ)['params']
    assert 'input_norm' in params and 'final_norm' not in params
    b = params['block_0']
    assert b['ffn_1']['kernel'].shape == (D, 4 * D) and b['attn_out']['kernel'].shape == (D, D)
    plain = make('sasrec').init(key(0), SEQ)['params']
    assert 'final_norm' in plain and 'input_norm' not in plain
    assert 'attn_out' not in plain['block_0'] and plain['block_0']['ffn_1']['kernel'].shape == (D, D)
    with pytest.raises(ValueError, match='style'):
        SASRecConfig(num_items=N, style='gpt')
