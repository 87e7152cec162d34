"""Settings shared by the next-item baselines' configs (not a config file itself)."""
import ml_collections

from experiments.configs import base


def get_config(model: str, options: dict):
    """base.get_config() for a next-item method: its option block, Adam 1e-3 without warm-up or
    clipping, batch 128, the top-K of the scores as the K-list."""
    c = base.get_config()
    c.model = model
    c[model] = ml_collections.ConfigDict(dict(options))   # the method's options (methods/MODEL.py)
    c.train_steps = 20000
    c.batch_size = 128
    c.learning_rate = 1e-3
    c.warmup_steps = 0
    c.grad_clip = 0.0
    c.eval_every = 1000
    c.checkpoint_every = 1000
    c.log_every = 100
    c.decode.strategy = 'topk'
    return c


def paper(c):
    """Embedding size 128: the AOS4Rec paper's rule for its Table 3 runs."""
    c.model_kwargs.embed_dim = 128
    c.model_kwargs.hidden_dim = 128
    return c
