"""The LSTM oracle of PROTOCOL 7: determinism, NLL against a numpy LSTM, padding, save/load."""
import dataclasses
import os

import jax
import numpy as np
import pytest

from aos4rec_jax import synthetic
from aos4rec_jax.synthetic import OracleConfig

SMALL = OracleConfig(vocab_size=40, hidden_size=8, embed_size=6, seed=3)


@pytest.fixture(scope="module")
def small_params():
    return synthetic.init_oracle(SMALL)


def _np_params(params):
    return {k: np.asarray(v, np.float64) for k, v in params.items()}


def _np_nll(p, prefix, continuation):
    """Step-by-step numpy LSTM: start token, then prefix tokens, then score the continuation."""
    sigmoid = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    hidden = p["w_h"].shape[0]

    def cell(x, h, c):
        z = x @ p["w_x"] + h @ p["w_h"] + p["b"]
        i, f, g, o = z[:hidden], z[hidden:2 * hidden], z[2 * hidden:3 * hidden], z[3 * hidden:]
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        return sigmoid(o) * np.tanh(c), c

    h, c = cell(p["start"], np.zeros(hidden), np.zeros(hidden))
    for tok in prefix:
        if tok != 0:
            h, c = cell(p["embed"][tok - 1], h, c)
    total = 0.0
    for tok in continuation:
        if tok == 0:
            break
        logits = h @ p["w_out"] + p["b_out"]
        logits = logits - logits.max()
        log_probs = logits - np.log(np.exp(logits).sum())
        total -= log_probs[tok - 1]
        h, c = cell(p["embed"][tok - 1], h, c)
    return total


def test_config_defaults_and_shapes():
    cfg = OracleConfig()
    assert (cfg.vocab_size, cfg.hidden_size, cfg.embed_size, cfg.seed) == (5000, 32, 32, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1  # frozen
    params = synthetic.init_oracle(cfg)
    assert params["embed"].shape == (5000, 32)
    assert params["w_out"].shape == (32, 5000)
    assert params["w_x"].shape == (32, 128) and params["w_h"].shape == (32, 128)
    # N(0, 1) parameters.
    flat = np.concatenate([np.asarray(v).ravel() for v in params.values()])
    assert abs(flat.mean()) < 0.02 and abs(flat.std() - 1.0) < 0.02


def test_same_seed_same_params_and_sequences(small_params):
    again = synthetic.init_oracle(SMALL)
    other = synthetic.init_oracle(dataclasses.replace(SMALL, seed=4))
    for k in small_params:
        np.testing.assert_array_equal(np.asarray(small_params[k]), np.asarray(again[k]))
        assert not np.array_equal(np.asarray(small_params[k]), np.asarray(other[k]))

    key = jax.random.PRNGKey(7)
    a = synthetic.generate(small_params, key, 20, 12, SMALL)
    b = synthetic.generate(again, key, 20, 12, SMALL)
    assert a.dtype == np.int32 and a.shape == (20, 12)
    assert a.min() >= 1 and a.max() <= SMALL.vocab_size
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, synthetic.generate(small_params, jax.random.PRNGKey(8), 20, 12))
    assert not np.array_equal(a, synthetic.generate(other, key, 20, 12))
    # A sequence depends only on its index: chunking and num_sequences do not change it.
    c = synthetic.generate(small_params, key, 7, 12, SMALL, batch_size=3)
    np.testing.assert_array_equal(c, a[:7])


def test_nll_matches_numpy_lstm(small_params):
    p = _np_params(small_params)
    rng = np.random.default_rng(0)
    prefix = rng.integers(1, SMALL.vocab_size + 1, (5, 6)).astype(np.int32)
    prefix[1, :3] = 0  # left padding
    prefix[2, :] = 0  # empty prefix
    cont = rng.integers(1, SMALL.vocab_size + 1, (5, 4)).astype(np.int32)
    cont[3, 2:] = 0  # end padding
    got = np.asarray(synthetic.nll(small_params, prefix, cont))
    assert got.shape == (5,) and got.dtype == np.float32
    want = [_np_nll(p, prefix[i], cont[i]) for i in range(5)]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # No prefix at all (P = 0).
    got0 = np.asarray(synthetic.nll(small_params, np.zeros((5, 0), np.int32), cont))
    np.testing.assert_allclose(got0, [_np_nll(p, [], cont[i]) for i in range(5)],
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got0[2], got[2], rtol=1e-6)


def test_left_padding_does_not_change_nll(small_params):
    rng = np.random.default_rng(1)
    prefix = rng.integers(1, SMALL.vocab_size + 1, (4, 5)).astype(np.int32)
    cont = rng.integers(1, SMALL.vocab_size + 1, (4, 6)).astype(np.int32)
    padded = np.concatenate([np.zeros((4, 3), np.int32), prefix], axis=1)
    a = np.asarray(synthetic.nll(small_params, prefix, cont))
    b = np.asarray(synthetic.nll(small_params, padded, cont))
    np.testing.assert_allclose(a, b, rtol=1e-6)
    # End padding of the continuation drops exactly those terms.
    cut = cont.copy()
    cut[:, 4:] = 0
    partial = np.asarray(synthetic.nll(small_params, prefix, cut))
    np.testing.assert_allclose(partial, np.asarray(synthetic.nll(small_params, prefix, cont[:, :4])),
                               rtol=1e-6)
    assert np.all(partial < a)


def test_oracle_samples_more_likely_than_uniform():
    cfg = OracleConfig(vocab_size=500, seed=0)  # hidden = embed = 32, as in SeqGAN
    params = synthetic.init_oracle(cfg)
    samples = synthetic.generate(params, jax.random.PRNGKey(0), 64, 20, cfg)
    uniform = np.random.default_rng(0).integers(1, cfg.vocab_size + 1, (64, 20)).astype(np.int32)
    no_prefix = np.zeros((64, 0), np.int32)
    nll_samples = float(np.mean(synthetic.nll(params, no_prefix, samples)))
    nll_uniform = float(np.mean(synthetic.nll(params, no_prefix, uniform)))
    assert nll_samples < nll_uniform
    # With a prefix (the user's history) too.
    nll_s = np.mean(synthetic.nll(params, samples[:, :10], samples[:, 10:]))
    nll_u = np.mean(synthetic.nll(params, samples[:, :10], uniform[:, 10:]))
    assert nll_s < nll_u


def test_save_load_round_trip(tmp_path, small_params):
    path = tmp_path / "oracle" / "oracle.npz"
    synthetic.save_oracle(small_params, SMALL, path)
    assert sorted(os.listdir(path.parent)) == ["oracle.json", "oracle.npz"]  # no temp files left
    params, cfg = synthetic.load_oracle(path)
    assert cfg == SMALL
    for k in small_params:
        np.testing.assert_array_equal(np.asarray(params[k]), np.asarray(small_params[k]))
    # The stem without suffix names the same pair of files.
    params2, cfg2 = synthetic.load_oracle(tmp_path / "oracle" / "oracle")
    assert cfg2 == SMALL
    key = jax.random.PRNGKey(1)
    np.testing.assert_array_equal(synthetic.generate(params2, key, 5, 6),
                                  synthetic.generate(small_params, key, 5, 6))
