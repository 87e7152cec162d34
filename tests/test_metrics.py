"""Metrics of PROTOCOL 5: hand-computed cases, JAX vs the plain-Python reference, jit, CLI."""
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aos4rec_jax import metrics, metrics_ref

NAMES = ("prec", "ndcg", "bleu", "hr", "mrr")
L2 = math.log2


def _jax_one(g, t):
    out = metrics.compute_metrics(jnp.asarray([g], jnp.int32), jnp.asarray([t], jnp.int32))
    return {k: float(v[0]) for k, v in out.items()}


def _check(g, t, expected):
    """Checks the JAX metrics and the reference against hand-computed values."""
    got = _jax_one(g, t)
    ref = metrics_ref.compute(list(g), list(t), pad=0)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-5, abs=1e-7), (name, got[name], value)
        assert ref[name] == pytest.approx(value, rel=1e-9, abs=1e-12), (name, ref[name], value)
    return got


# ----------------------------------------------------------------------------- hand cases


def test_repeats_in_generated():
    # g = [3, 3, 5, 7], y* = [3, 5, 9]: K = 4, m = 3.
    # Prec: {3,5,7} ∩ {3,5,9} = {3,5} -> 2 / min(4, 3) = 2/3.
    # NDCG: rel = [1, 0 (3 repeated), 1, 0] -> DCG = 1/log2(2) + 1/log2(4) = 1.5;
    #       IDCG = 1 + 1/log2(3) + 1/log2(4).
    # BLEU (BP = 1 since K >= m):
    #   p1: g counts {3:2, 5:1, 7:1}, ref {3:1, 5:1, 9:1} -> clipped 1 + 1 + 0 = 2 -> 2/4
    #   p2: g (3,3),(3,5),(5,7); ref (3,5),(5,9) -> clipped 1 -> 1/3
    #   p3: g (3,3,5),(3,5,7); ref (3,5,9) -> 0 -> smoothed 0.1/2
    #   p4: g (3,3,5,7); ref has none (m = 3) -> 0.1/1
    _check([3, 3, 5, 7], [3, 5, 9], {
        "prec": 2 / 3,
        "ndcg": 1.5 / (1 + 1 / L2(3) + 0.5),
        "bleu": (0.5 * (1 / 3) * 0.05 * 0.1) ** 0.25,
        "hr": 1.0,
        "mrr": 1.0,
    })


def test_repeated_misses_before_first_hit():
    # g = [1, 1, 2, 2], y* = [2]: K = 4, m = 1.
    # Prec: {2} -> 1 / min(4, 1) = 1.  NDCG: only position 3 is relevant (position 4 repeats 2):
    # DCG = 1/log2(4) = 0.5, IDCG = 1/log2(2) = 1 -> 0.5.  MRR = 1/3.
    # BLEU: p1: g {1:2, 2:2}, ref {2:1} -> clipped min(2, 1) = 1 -> 1/4; p2, p3, p4 have no
    # reference n-grams -> 0.1/3, 0.1/2, 0.1/1. BP = 1 (K >= m).
    _check([1, 1, 2, 2], [2, 0, 0, 0], {
        "prec": 1.0,
        "ndcg": 0.5,
        "bleu": (0.25 * (0.1 / 3) * 0.05 * 0.1) ** 0.25,
        "hr": 1.0,
        "mrr": 1 / 3,
    })


def test_target_shorter_than_k():
    # g = [1, 2, 3, 4, 5], y* = [2, 9] (padded to M = 5): K = 5, m = 2.
    # Prec: {2} -> 1 / min(5, 2) = 1/2.  NDCG: hit at rank 2 -> (1/log2(3)) / (1 + 1/log2(3)).
    # MRR = 1/2.  BLEU (BP = 1): p1 = 1/5; p2: ref bigram (2,9) not in g -> 0.1/4;
    # p3, p4: the reference has no trigrams/4-grams (padding n-grams do not exist) -> 0.1/3, 0.1/2.
    _check([1, 2, 3, 4, 5], [2, 9, 0, 0, 0], {
        "prec": 0.5,
        "ndcg": (1 / L2(3)) / (1 + 1 / L2(3)),
        "bleu": (0.2 * 0.025 * (0.1 / 3) * 0.05) ** 0.25,
        "hr": 1.0,
        "mrr": 0.5,
    })


def test_padding_in_target_and_empty_slots():
    # g = [2, 9, 0, 0] (two empty slots), y* = [2, 9]: K = 4, m = 2.
    # Prec = 2 / min(4, 2) = 1; NDCG: DCG = 1 + 1/log2(3) = IDCG -> 1; HR = MRR = 1.
    # BLEU (BP = 1): empty slots never match, padding n-grams of y* do not exist:
    #   p1: 2 of 4 unigrams -> 1/2;  p2: (2,9) matches, (9,0), (0,0) do not -> 1/3;
    #   p3: (2,9,0), (9,0,0) -> 0.1/2;  p4: (2,9,0,0) -> 0.1/1.
    # (Counting padding as a token would have matched (9,0), (0,0), (2,9,0), ... instead.)
    expected = {
        "prec": 1.0,
        "ndcg": 1.0,
        "bleu": (0.5 * (1 / 3) * 0.05 * 0.1) ** 0.25,
        "hr": 1.0,
        "mrr": 1.0,
    }
    for target in ([2, 9], [2, 9, 0, 0], [2, 9, 0, 0, 0, 0, 0]):  # the padding width is irrelevant
        _check([2, 9, 0, 0], target, expected)


def test_target_longer_than_k_brevity_penalty():
    # g = [1, 2], y* = [1, 2, 3, 4]: K = 2, m = 4.
    # Prec = 2 / min(2, 4) = 1; NDCG = (1 + 1/log2(3)) / (1 + 1/log2(3)) = 1; HR = MRR = 1.
    # BLEU: orders n = 1, 2 only (K = 2), p1 = 2/2, p2 = 1/1; BP = exp(1 - 4/2) = e^-1.
    _check([1, 2], [1, 2, 3, 4], {
        "prec": 1.0, "ndcg": 1.0, "bleu": math.exp(-1.0), "hr": 1.0, "mrr": 1.0})


def test_bleu_k1():
    # K = 1, g = [5], y* = [5, 6]: only n = 1: p1 = 1/1; BP = exp(1 - 2/1) = e^-1.
    # Prec = 1 / min(1, 2) = 1; NDCG = 1; MRR = 1.
    _check([5], [5, 6], {"prec": 1.0, "ndcg": 1.0, "bleu": math.exp(-1.0), "hr": 1.0, "mrr": 1.0})
    # K = 1, g = [7], y* = [5]: p1 smoothed to 0.1/1, BP = 1 -> BLEU = 0.1; the rest 0.
    _check([7], [5], {"prec": 0.0, "ndcg": 0.0, "bleu": 0.1, "hr": 0.0, "mrr": 0.0})


def test_bleu_k2_no_bigram_match():
    # K = 2, g = [2, 1], y* = [1, 2]: p1 = 2/2; p2: (2,1) vs (1,2) -> 0.1/1; BP = 1.
    # BLEU = (1 * 0.1)^(1/2). Prec = 1; NDCG = 1 (both relevant); MRR = 1.
    _check([2, 1], [1, 2], {"prec": 1.0, "ndcg": 1.0, "bleu": 0.1 ** 0.5, "hr": 1.0, "mrr": 1.0})


def test_bleu_k3():
    # K = 3, g = [1, 2, 4], y* = [1, 2, 3]: p1 = 2/3; p2: (1,2) yes, (2,4) no -> 1/2;
    # p3: (1,2,4) vs (1,2,3) -> 0.1/1; BP = 1; BLEU = (2/3 * 1/2 * 0.1)^(1/3) = (1/30)^(1/3).
    # Prec = 2/3; NDCG = (1 + 1/log2(3)) / (1 + 1/log2(3) + 1/2).
    _check([1, 2, 4], [1, 2, 3], {
        "prec": 2 / 3,
        "ndcg": (1 + 1 / L2(3)) / (1 + 1 / L2(3) + 0.5),
        "bleu": (1 / 30) ** (1 / 3),
        "hr": 1.0,
        "mrr": 1.0,
    })


def test_no_hit_smoothing():
    # K = m = 5, disjoint: every p_n smoothed: p1 = 0.1/5, p2 = 0.1/4, p3 = 0.1/3, p4 = 0.1/2.
    # BLEU = (0.02 * 0.025 * 0.0333.. * 0.05)^(1/4) ~= 0.0302 (not 0 as NLTK would return).
    got = _check([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], {
        "prec": 0.0,
        "ndcg": 0.0,
        "bleu": (0.02 * 0.025 * (0.1 / 3) * 0.05) ** 0.25,
        "hr": 0.0,
        "mrr": 0.0,
    })
    assert got["bleu"] == pytest.approx(0.030214, rel=1e-4)


def test_perfect_match():
    # g = y*: every clipped precision is 1, BP = 1, so every metric is 1.
    _check([4, 8, 15, 16, 23], [4, 8, 15, 16, 23], {n: 1.0 for n in NAMES})
    # Same with a target longer than needed for the padding: still 1.
    _check([4, 8, 15], [4, 8, 15, 0, 0], {n: 1.0 for n in NAMES})


def test_empty_target_is_zero_and_invalid():
    got = _jax_one([1, 2, 3], [0, 0, 0, 0])
    assert got["valid"] == 0.0
    for name in NAMES:
        assert got[name] == 0.0
    assert all(v == 0.0 for v in metrics_ref.compute([1, 2, 3], []).values())


# Two hand cases of the tests above, as one batch (targets padded to width 4), plus a user with
# an empty target: the expected values come from the arithmetic in those tests' comments.
HAND_G = [[3, 3, 5, 7], [1, 1, 2, 2], [1, 2, 3, 4]]
HAND_T = [[3, 5, 9, 0], [2, 0, 0, 0], [0, 0, 0, 0]]
HAND = {
    "prec": [2 / 3, 1.0, 0.0],
    "ndcg": [1.5 / (1 + 1 / L2(3) + 0.5), 0.5, 0.0],
    "bleu": [(0.5 * (1 / 3) * 0.05 * 0.1) ** 0.25, (0.25 * (0.1 / 3) * 0.05 * 0.1) ** 0.25, 0.0],
    "hr": [1.0, 1.0, 0.0],
    "mrr": [1.0, 1 / 3, 0.0],
}


def test_individual_functions_on_hand_values():
    """Each public metric function, and compute_metrics, on a batch of hand-computed users
    (independent expectations; the functions used to be checked against compute_metrics, which
    calls them)."""
    g, t = jnp.asarray(HAND_G, jnp.int32), jnp.asarray(HAND_T, jnp.int32)
    out = metrics.compute_metrics(g, t)
    for name, fn in (("prec", metrics.precision), ("ndcg", metrics.ndcg), ("bleu", metrics.bleu),
                     ("hr", metrics.hit_rate), ("mrr", metrics.mrr)):
        val = fn(g, t)
        assert val.shape == (3,) and val.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(val), HAND[name], rtol=1e-5, atol=1e-7, err_msg=name)
        np.testing.assert_allclose(np.asarray(out[name]), HAND[name], rtol=1e-5, atol=1e-7,
                                   err_msg=name)
    np.testing.assert_array_equal(np.asarray(out["valid"]), [True, True, False])


# ----------------------------------------------------------------------------- vs reference


@pytest.mark.parametrize("k,m_max", [(1, 3), (2, 2), (3, 5), (4, 4), (5, 2), (6, 9), (10, 10)])
def test_jax_equals_reference_random(k, m_max):
    rng = np.random.default_rng(100 * k + m_max)
    b = 60  # 7 shapes x 60 = 420 random users
    g = rng.integers(0, 6, (b, k)).astype(np.int32)  # vocab 1..5 plus empty slots: many repeats
    m = rng.integers(0, m_max + 1, b)
    t = rng.integers(1, 6, (b, m_max)).astype(np.int32)
    t[np.arange(m_max)[None, :] >= m[:, None]] = 0
    out = jax.jit(metrics.compute_metrics)(g, t)
    for i in range(b):
        # The reference sees raw-like ids: strings, None for empty slots, no padding.
        gen = [None if x == 0 else f"i{x}" for x in g[i]]
        tgt = [f"i{x}" for x in t[i] if x != 0]
        ref = metrics_ref.compute(gen, tgt)
        for name in NAMES:
            assert float(out[name][i]) == pytest.approx(ref[name], rel=1e-5, abs=1e-6), (
                name, g[i], t[i])
        assert bool(out["valid"][i]) == (len(tgt) > 0)


# ----------------------------------------------------------------------------- jit, vmap, beams


def test_jit_and_vmap():
    rng = np.random.default_rng(2)
    g = jnp.asarray(rng.integers(0, 5, (4, 8, 6)), jnp.int32)
    t = jnp.asarray(rng.integers(0, 5, (4, 8, 3)), jnp.int32)
    # jit against the hand values (not against the same function run eagerly)
    jitted = jax.jit(metrics.compute_metrics)(jnp.asarray(HAND_G, jnp.int32),
                                              jnp.asarray(HAND_T, jnp.int32))
    for name in NAMES:
        np.testing.assert_allclose(np.asarray(jitted[name]), HAND[name], rtol=1e-5, atol=1e-7)
    vmapped = jax.vmap(metrics.compute_metrics)(g, t)
    batched = metrics.compute_metrics(g, t)  # leading dims [4, 8] directly
    for name in NAMES + ("valid",):
        assert vmapped[name].shape == (4, 8)
        np.testing.assert_allclose(np.asarray(vmapped[name]), np.asarray(batched[name]), rtol=1e-6)


def test_bleu_on_beam_axis():
    rng = np.random.default_rng(3)
    B, b, T = 3, 5, 4
    target = rng.integers(1, 7, (B, T)).astype(np.int32)
    target[1, 2:] = 0
    cands = rng.integers(1, 7, (B, b, T)).astype(np.int32)
    cands[:, 2] = target  # beam 2 reproduces the target (padding slots become empty slots)
    per_beam = np.stack([np.asarray(metrics.bleu(cands[:, j], target)) for j in range(b)], 1)
    broadcast = jax.jit(metrics.bleu)(cands, target[:, None, :])
    beams = jax.jit(metrics.bleu_beams)(cands, target)
    assert broadcast.shape == beams.shape == (B, b)
    np.testing.assert_allclose(np.asarray(broadcast), per_beam, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(beams), per_beam, rtol=1e-6)
    np.testing.assert_array_equal(np.argmax(np.asarray(beams), -1), [2, 2, 2])
    assert float(beams[0, 2]) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- CLI


def _write_predictions(path):
    rows = {
        "user": ["u1", "u2", "u3", "u4"],
        "target": [["a", "b", "c"], ["x"], [], ["a", "b"]],
        "generated": [["a", "z", "b"], ["y", "y", "x"], ["a", "b", "c"], ["q", "r", "s"]],
        "generated_full": [["a", "b", "c"], ["x", "a", "b"], ["a", "b", "c"], ["b", "a", "q"]],
    }
    schema = pa.schema([("user", pa.string())] + [
        (c, pa.list_(pa.string())) for c in ("target", "generated", "generated_full")])
    pq.write_table(pa.table(rows, schema=schema), path)
    return rows


# The summary of the _write_predictions file by hand (K = 3; u3 has an empty target and is left
# out, so every mean is over u1, u2, u4). BLEU@3: orders 1..3, smoothing 0.1 / count, BP = 1
# throughout (K = 3 >= m).
#   sampled  u1 [a z b] vs [a b c]: Prec {a,b} / 3; NDCG hits at ranks 1, 3 over IDCG of
#            min(3, 3) = 3 positions; BLEU p1 2/3, p2 (a,z),(z,b) none -> 0.1/2, p3 0.1/1; MRR 1.
#            u2 [y y x] vs [x]: Prec 1 / min(3, 1); NDCG x at rank 3 over IDCG of 1 position
#            (1/log2 4) / 1 = 0.5 (an IDCG over K = 3 positions would give 0.5 / 2.13);
#            BLEU p1 1/3, p2 0.1/2, p3 0.1/1; MRR 1/3.
#            u4 [q r s] vs [a b]: 0 everywhere but BLEU: p1 0.1/3, p2 0.1/2, p3 0.1/1.
#   full     u1 [a b c] = y*: 1 everywhere.
#            u2 [x a b] vs [x]: Prec, NDCG, HR, MRR 1; BLEU p1 1/3, p2 0.1/2, p3 0.1/1.
#            u4 [b a q] vs [a b]: Prec 2 / min(3, 2) = 1; NDCG (1 + 1/log2 3) / same = 1; MRR 1;
#            BLEU p1 2/3, p2 (b,a),(a,q) vs (a,b) -> 0.1/2, p3 0.1/1.
_IDCG3 = 1 + 1 / L2(3) + 1 / L2(4)
_B_ONE_THIRD = (1 / 3 * 0.05 * 0.1) ** (1 / 3)   # p1 = 1/3, p2, p3 smoothed
_B_TWO_THIRDS = (2 / 3 * 0.05 * 0.1) ** (1 / 3)  # p1 = 2/3, p2, p3 smoothed
_B_NONE = (0.1 / 3 * 0.05 * 0.1) ** (1 / 3)      # nothing matches
SUMMARY_BY_HAND = {
    "sampled": {
        "prec@3": (2 / 3 + 1 + 0) / 3,
        "ndcg@3": ((1 + 1 / L2(4)) / _IDCG3 + 0.5 + 0) / 3,
        "bleu@3": (_B_TWO_THIRDS + _B_ONE_THIRD + _B_NONE) / 3,
        "hr@3": (1 + 1 + 0) / 3,
        "mrr@3": (1 + 1 / 3 + 0) / 3,
    },
    "full": {
        "prec@3": 1.0,
        "ndcg@3": 1.0,
        "bleu@3": (1 + _B_ONE_THIRD + _B_TWO_THIRDS) / 3,
        "hr@3": 1.0,
        "mrr@3": 1.0,
    },
    "users": 3,
}


def _assert_summary_by_hand(summary):
    assert set(summary) == {"sampled", "full", "users"}
    assert summary["users"] == SUMMARY_BY_HAND["users"]
    for section in ("sampled", "full"):
        assert set(summary[section]) == set(SUMMARY_BY_HAND[section])
        for name, want in SUMMARY_BY_HAND[section].items():
            assert summary[section][name] == pytest.approx(want, rel=1e-9, abs=1e-12), (
                section, name, summary[section][name], want)


def test_summarize_predictions_and_cli(tmp_path, capsys):
    path = tmp_path / "predictions" / "test.parquet"
    path.parent.mkdir()
    _write_predictions(path)
    summary = metrics_ref.summarize_predictions(path)
    _assert_summary_by_hand(summary)

    out_json = tmp_path / "summary.json"
    assert metrics_ref.main([str(path), "--json", str(out_json)]) == 0
    printed = json.loads(capsys.readouterr().out)
    _assert_summary_by_hand(printed)
    assert json.loads(out_json.read_text()) == printed


def test_cli_module_entry_point(tmp_path):
    path = tmp_path / "test.parquet"
    _write_predictions(path)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(metrics_ref.__file__)))]
        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    proc = subprocess.run([sys.executable, "-m", "aos4rec_jax.metrics_ref", str(path)],
                          capture_output=True, text=True, env=env, timeout=60, check=True)
    _assert_summary_by_hand(json.loads(proc.stdout))
