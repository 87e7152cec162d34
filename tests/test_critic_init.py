"""aos4rec.critic_init='generator': the critic starts as a copy of the generator (critic.py,
``from_generator``; methods/aos4rec.py copies it on entering the SSRGAN phase)."""
import jax
import numpy as np
import pytest
from flax import traverse_util

from aos4rec_jax import config as config_lib
from aos4rec_jax import critic as critic_lib
from aos4rec_jax import seq2seq
from tests.test_ssrgan import INFO, T, random_inputs, tiny_config


@pytest.mark.parametrize('model', ['transformer', 'gru'])
def test_from_generator_copies_the_backbone_and_keeps_the_head(model):
    c = tiny_config(model)
    gen = seq2seq.build_model(c, INFO)
    g = seq2seq.init_params(gen, INFO, jax.random.PRNGKey(3))
    critic = critic_lib.build_critic(c, INFO)
    cp = critic_lib.init_critic(critic, INFO, jax.random.PRNGKey(4))
    out = critic_lib.from_generator(cp, g)
    flat_g = traverse_util.flatten_dict(g)
    flat_in = traverse_util.flatten_dict(cp['backbone'])
    flat_out = traverse_util.flatten_dict(out['backbone'])
    assert flat_out.keys() == flat_in.keys()
    for path, leaf in flat_out.items():
        src = np.asarray(flat_g[path])
        n = min(src.shape[0], leaf.shape[0])
        np.testing.assert_array_equal(np.asarray(leaf)[:n], src[:n], err_msg='/'.join(path))
        # rows the generator lacks (the critic's decoder position T: T + 1 tokens) stay its own
        np.testing.assert_array_equal(np.asarray(leaf)[n:], np.asarray(flat_in[path])[n:])
    jax.tree_util.tree_map(np.testing.assert_array_equal, out['head'], cp['head'])
    # the copied backbone computes the generator's decoder states for the same prefix
    hist, seq, _ = random_inputs()
    dec_in = seq2seq.decoder_inputs(seq, INFO.bos_id)             # [BOS, y_1..y_T-1]
    if model == 'transformer':
        def feats(m, h, ids):
            return m.features(h, m.embed_items(ids))
        want = gen.apply({'params': g}, hist, dec_in, method=feats)
        got = critic.apply({'params': out}, hist, dec_in,
                           method=lambda m, h, ids: m.backbone.features(h, m.backbone.embed_items(ids)))
    else:
        def states(m, h, ids):
            return m.decoder_states(h, m.embed_items(ids))[0]
        want = gen.apply({'params': g}, hist, dec_in, method=states)
        got = critic.apply({'params': out}, hist, dec_in,
                           method=lambda m, h, ids: states(m.backbone, h, ids))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    before = critic.apply({'params': cp}, hist, seq)[0]
    after = critic.apply({'params': out}, hist, seq)[0]
    assert after.shape == (3, T + 1) and not np.allclose(np.asarray(before), np.asarray(after))


def test_from_generator_refuses_another_width():
    c = tiny_config('transformer')
    gen = seq2seq.build_model(c, INFO)
    g = seq2seq.init_params(gen, INFO, jax.random.PRNGKey(3))
    c.aos4rec.critic_width = 2 * int(c.model_kwargs.embed_dim)
    critic = critic_lib.build_critic(c, INFO)
    cp = critic_lib.init_critic(critic, INFO, jax.random.PRNGKey(4))
    with pytest.raises(ValueError, match='has shape'):
        critic_lib.from_generator(cp, g)


def test_config_refuses_generator_init_with_a_width_and_unknown_values():
    c = tiny_config('transformer')
    c.aos4rec.adversarial = True
    c.aos4rec.critic_init = 'generator'
    c.aos4rec.critic_width = 64
    with pytest.raises(config_lib.ConfigError, match='aos4rec.critic_init'):
        config_lib.validate(c)
    c.aos4rec.critic_width = 0
    c.aos4rec.critic_init = 'copy'
    with pytest.raises(config_lib.ConfigError, match="'copy' is not one of"):
        config_lib.validate(c)
