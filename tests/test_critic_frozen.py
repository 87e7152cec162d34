"""aos4rec.critic_frozen: critic parameters that the critic's updates leave unchanged (critic.py,
``frozen_mask``; ssrgan.make_critic_optimizer). With critic_init=generator and 'backbone' the
critic is a trained head on the generator's frozen features: far fewer free parameters for the
few thousand windows a critic trains on (docs/aos4rec.md, "A critic with frozen parts")."""
import jax
import numpy as np
import pytest
from flax import traverse_util

from aos4rec_jax import config as config_lib
from aos4rec_jax import critic as critic_lib
from aos4rec_jax import ssrgan
from tests.test_guard_ssrgan import INFO as GUARD_INFO
from tests.test_guard_ssrgan import init_state, make_config, make_steps, walks
from tests.test_ssrgan import make_critic


def _frozen_paths(params, patterns):
    flat = traverse_util.flatten_dict(critic_lib.frozen_mask(params, patterns))
    return sorted('/'.join(k) for k, v in flat.items() if v)


def test_frozen_mask_names_a_leaf_a_subtree_or_a_glob():
    _, cp = make_critic('transformer')
    assert _frozen_paths(cp, ()) == []
    assert _frozen_paths(cp, ('backbone/item_embed',)) == ['backbone/item_embed/embedding']
    assert _frozen_paths(cp, ('backbone/item_embed/embedding',)) == ['backbone/item_embed/embedding']
    every = sorted('/'.join(k) for k in traverse_util.flatten_dict(cp))
    assert _frozen_paths(cp, ('backbone',)) == [p for p in every if not p.startswith('head/')]
    # a glob: '*' crosses '/'; a prefix is whole components ('backbone/encoder' is not encoder_0)
    dec = _frozen_paths(cp, ('backbone/decoder*',))
    assert dec and all(p.startswith('backbone/decoder') for p in dec)
    assert 'backbone/decoder_pos_embed/embedding' in dec and 'backbone/decoder_norm/scale' in dec
    assert critic_lib.check_frozen(cp, ('backbone/encoder',)).startswith("'backbone/encoder' names no")
    assert critic_lib.check_frozen(cp, ('backbone', 'head')) .startswith('every critic parameter')
    assert critic_lib.check_frozen(cp, ('backbone',)) == ''
    c = make_config(critic_frozen=' backbone/item_embed, head/ ,')
    assert critic_lib.frozen_patterns(c) == ('backbone/item_embed', 'head')


@pytest.mark.parametrize('lipschitz', ['gp', 'clip'])
def test_a_critic_update_leaves_the_frozen_parameters_bit_identical(lipschitz):
    """One critic step from the same start: with critic_frozen='backbone' every backbone leaf is
    unchanged (even under weight clipping, which would clip it) and the head moves; without it the
    backbone moves too."""
    data = walks(range(20))
    out = {}
    for frozen in ('', 'backbone'):
        cfg = make_config(critic_frozen=frozen, lipschitz=lipschitz, clip_value=0.01,
                          d_learning_rate=1e-2)
        critic = critic_lib.build_critic(cfg, GUARD_INFO)
        cp = critic_lib.init_critic(critic, GUARD_INFO, jax.random.PRNGKey(5))
        model, steps = make_steps(cfg, critic)
        state = init_state(model, steps, cp)
        new, m = jax.jit(steps.critic_step)(state, data)
        new, m = jax.jit(steps.critic_step)(new, data)
        assert np.isfinite(float(m['critic_loss']))
        out[frozen] = (traverse_util.flatten_dict(jax.device_get(cp)),
                       traverse_util.flatten_dict(jax.device_get(new['critic'])))
    for frozen, (before, after) in out.items():
        for path in before:
            same = np.array_equal(np.asarray(before[path]), np.asarray(after[path]))
            if path[0] == 'head':
                assert not same, (frozen, path)
            elif frozen:
                assert same, path
    moved = [p for p in out[''][0] if p[0] == 'backbone'
             and not np.array_equal(np.asarray(out[''][0][p]), np.asarray(out[''][1][p]))]
    assert len(moved) > 3


def test_the_optimizer_without_the_option_is_plain_adam():
    """Runs written before the option resume with the optimizer state they saved."""
    _, cp = make_critic('gru')
    plain = jax.tree_util.tree_structure(ssrgan.make_critic_optimizer(make_config()).init(cp))
    adam = jax.tree_util.tree_structure(
        __import__('optax').adam(1e-4, b1=0.5, b2=0.9).init(cp))
    assert plain == adam
    frozen = ssrgan.make_critic_optimizer(make_config(critic_frozen='backbone')).init(cp)
    assert jax.tree_util.tree_structure(frozen) != adam


def test_a_pattern_that_names_nothing_is_one_config_error(tmp_path):
    from aos4rec_jax import datasets, methods
    from experiments.configs import aos4rec as aos_cfg
    c = aos_cfg.get_config('tiny,adver')
    c.aos4rec.critic_frozen = 'backbone/encoder'          # the transformer's is encoder_0
    config_lib.validate(c)
    ds = datasets.get_dataset(c, str(tmp_path), log=lambda *_: None)
    with pytest.raises(config_lib.ConfigError,
                       match=r"config.aos4rec.critic_frozen='backbone/encoder': 'backbone/encoder' "
                             r"names no critic parameter \(they lie under backbone/"):
        methods.build(c, ds)
    c.aos4rec.critic_frozen = 'backbone'
    methods.build(c, ds)
