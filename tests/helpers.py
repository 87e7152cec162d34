"""Small shared builders for tests."""
import numpy as np

import data_prep


def tiny_prepared(seqs, **overrides):
    """A PreparedData from explicit per-user raw item lists (user i gets seqs[i], time = position)."""
    users = np.concatenate([np.full(len(s), i) for i, s in enumerate(seqs)])
    items = np.concatenate([np.asarray(s) for s in seqs])
    times = np.concatenate([np.arange(len(s)) for s in seqs])
    kw = dict(k_core=1, min_len=3)
    kw.update(overrides)
    settings = data_prep.settings_for('default', **kw)
    return data_prep.build_dataset(users, items, times, settings)
