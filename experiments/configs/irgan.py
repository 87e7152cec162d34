"""IRGAN (Wang et al. 2017), item recommendation: MF generator and discriminator, BPR-pretrained.
Network: aos4rec_jax/models/bpr.py (both players); method: aos4rec_jax/methods/irgan.py;
docs/irgan.md.

python main.py --config=experiments/configs/irgan.py --workdir=/tmp/irgan \
    --config.data_dir=PREPARED_DIR

Phase 'pretrain': irgan.pretrain_steps BPR steps (-1, the default: config.train_steps; the loss,
sampling and network of bpr.py: d 64, Adam 1e-3, batch 128); phase 'gan': irgan.gan_steps rounds
of d_steps discriminator and g_steps generator updates, both players starting from the kept BPR
parameters, which compete in model selection (irgan.start_competes, True here). The K-list is
the top-K of the generator's scores (irgan.evaluate='discriminator': the discriminator's).
Variants: ':paper' (embedding size 128), ':tiny' (60 BPR steps + 20 rounds), ':quick'.
"""
from aos4rec_jax.methods.irgan import IRGAN
from experiments.configs import _next_item
from experiments.configs import base


def tiny(c):
    c = base.tiny(c)
    c.irgan.gan_steps = 20
    return c


VARIANTS = {'paper': _next_item.paper, 'tiny': tiny}


def get_config(variant=''):
    c = _next_item.get_config('irgan', IRGAN.OPTIONS)
    c.model_kwargs.embed_dim = 64
    c.model_kwargs.dropout_rate = 0.0
    c.train_steps = 20000
    c.irgan.gan_steps = 2000
    # the BPR players that start the game compete in model selection: they are kept unless a
    # round validates better (docs/irgan.md; methods/irgan.py's default False restarts selection)
    c.irgan.start_competes = True
    return base.apply_variant(c, variant, 'irgan.py', VARIANTS)
