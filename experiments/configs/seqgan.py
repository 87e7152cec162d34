"""SeqGAN / RecGAN: the seq2seq generator trained by REINFORCE against a CNN discriminator.

python main.py --config=experiments/configs/seqgan.py --workdir=/tmp/seqgan \
    --config.data_dir=PREPARED_DIR

The method: aos4rec_jax/methods/seqgan.py (docs/seqgan.md); the discriminator:
aos4rec_jax/models/seqgan_disc.py. The generator is AOS4Rec's network (config.model_kwargs;
config.seqgan.generator = transformer | gru), so REINFORCE with Monte Carlo roll-outs and SSRGAN's
actor-critic train the same networks. Schedule: train_steps MLE steps, seqgan.d_pretrain_steps
discriminator steps, seqgan.gan_steps rounds of g_steps REINFORCE and d_steps discriminator
updates. Options (config.seqgan.*, defaults in methods/seqgan.OPTIONS): num_rollouts (N = 16),
rollout_delay, baseline, temperature, g/d_learning_rate, d_filters, d_embed_dim, d_dropout,
mle_weight, start_competes (the generator that starts the rounds competes in model selection;
True here). Variants: ':gru' (the GRU generator), ':tiny' (every phase in seconds on a CPU).
"""
import ml_collections

from aos4rec_jax.methods import seqgan as seqgan_method
from experiments.configs import base


def tiny(c):
    c = base.tiny(c)
    c.train_steps = 20
    c.eval_every = 10
    c.checkpoint_every = 10
    c.log_every = 5
    c.max_eval_users = 64
    c.seqgan.d_pretrain_steps = 4
    c.seqgan.gan_steps = 4
    c.seqgan.d_steps = 2
    c.seqgan.num_rollouts = 4
    c.seqgan.d_embed_dim = 16
    c.seqgan.d_filters = '1:8,2:8,3:8,5:8'
    return c


def gru(c):
    c.seqgan.generator = 'gru'
    return c


VARIANTS = {'tiny': tiny, 'gru': gru}


def get_config(variant=''):
    c = base.get_config()
    c.model = 'seqgan'
    c.seqgan = ml_collections.ConfigDict(dict(seqgan_method.OPTIONS))
    c.train_steps = 5000
    # the generator that starts the rounds competes in model selection: it is kept unless a round
    # validates better (docs/seqgan.md; methods/seqgan.py's default False restarts selection)
    c.seqgan.start_competes = True
    return base.apply_variant(c, variant, 'seqgan.py', VARIANTS)
