"""AOS4Rec (IJCAI-20): seq2seq + oracular learning (Sec. 4.1), then SSRGAN (Sec. 4.2-4.3).

python main.py --config=experiments/configs/aos4rec.py --workdir=/tmp/aos \
    --config.data_dir=PREPARED_DIR

Transformer by default; the GRU with --config.model=gru. The schedule (aos4rec_jax/ssrgan.py):
train_steps seq2seq steps with the oracle, aos4rec.critic_pretrain_steps critic updates, then
aos4rec.gan_steps rounds of g_steps generator and d_steps critic updates. Every part is a switch:

  ablation row (paper Table 4)  variant     switches
  base (seq2seq, MLE)           :base       aos4rec.oracle=False aos4rec.adversarial=False
  +Oracle                       :oracle     aos4rec.oracle=True  aos4rec.adversarial=False
  +Adver.                       :adver      aos4rec.oracle=False aos4rec.adversarial=True
  +both (AOS4Rec, the default)  :both       aos4rec.oracle=True  aos4rec.adversarial=True
  +both, beam 1 at evaluation   python -m aos4rec_jax.evaluate --workdir RUN --tag beam1 --strategy greedy

Other knobs (documented in aos4rec_jax/config.py): aos4rec.beam_size (b), aos4rec.mu,
aos4rec.num_next (c), aos4rec.successor_sampler (inverse_cdf here | gumbel), aos4rec.list_sampler
(inverse_cdf here | gumbel), aos4rec.successors_from_decode (True here), aos4rec.critic_encode_once (True here), aos4rec.g_steps, aos4rec.d_steps, aos4rec.gamma, aos4rec.lipschitz
(gp | clip | none), aos4rec.g_learning_rate, aos4rec.d_learning_rate, aos4rec.critic_dropout,
aos4rec.critic_eval_users (held-out users the critic's separation is measured on),
aos4rec.critic_patience / critic_min_delta / critic_eval_every (the stopping rule of critic
pretraining; critic_pretrain_steps is its cap), aos4rec.critic_auc (pooled | paired: the AUC the rule,
keep-best and the bar read), aos4rec.critic_auc_bar / critic_below_bar (warn |
stop: the critic the SSRGAN phase asks for), aos4rec.critic_keep_best (the phase starts from
the critic of the best measurement; True here), aos4rec.critic_init (random | generator: the critic
starts as a copy of the generator), aos4rec.critic_frozen (critic parameters its updates
leave unchanged, e.g. 'backbone': a trained head), aos4rec.critic_width, aos4rec.gan_start_competes (the
generator that starts the SSRGAN phase competes in model selection; True here), aos4rec.init_from
(start the SSRGAN phase from a finished run's generator, with train_steps=0: this is how
experiments/ablation.sh shares one seq2seq run between a row and its adversarial row).
Variants combine with commas: ':tiny' (every phase in about a minute on a CPU, for tests),
':quick', e.g. --config=experiments/configs/aos4rec.py:tiny,adver.
"""
from experiments.configs import base


def _row(oracle: bool, adversarial: bool):
    def apply(c):
        c.aos4rec.oracle = oracle
        c.aos4rec.adversarial = adversarial
        return c
    return apply


def tiny(c):
    c = base.tiny(c)
    c.train_steps = 30
    c.eval_every = 15
    c.checkpoint_every = 15
    c.log_every = 5
    c.aos4rec.beam_size = 3
    c.aos4rec.critic_pretrain_steps = 6
    c.aos4rec.critic_patience = 0          # tests: the fixed critic phase (the rule's own tests
                                           # turn it on: tests/test_critic_stop.py)
    c.aos4rec.gan_steps = 6
    c.aos4rec.d_steps = 2
    c.max_eval_users = 64
    return c


VARIANTS = {'base': _row(False, False), 'oracle': _row(True, False), 'adver': _row(False, True),
            'both': _row(True, True), 'tiny': tiny}


def get_config(variant=''):
    c = base.get_config()
    c.model = 'transformer'
    c.train_steps = 5000
    c.aos4rec.oracle = True
    c.aos4rec.adversarial = True
    # critic pretraining until its paired AUC plateaus (measured every 25 steps; 4 measurements
    # without a gain of 0.005 stop it), at most 500 steps; the bar 0.7 warns (docs/aos4rec.md,
    # "Critic pretraining: the stopping rule"; docs/results/critic_sweep.md)
    c.aos4rec.critic_pretrain_steps = 500
    c.aos4rec.critic_eval_every = 25
    c.aos4rec.critic_patience = 4
    c.aos4rec.gan_steps = 1000
    # SSRGAN for as many rounds as keep validation improving: the generator that starts the
    # phase is validated first and kept if no round beats it (docs/aos4rec.md, "Model selection
    # in the SSRGAN phase"; config.py's default False is what runs before this option did)
    c.aos4rec.gan_start_competes = True
    # the plateau rule keeps the critic of its best measurement (as early stopping keeps the best
    # generator); config.py's default False is the last critic, what runs before it did
    c.aos4rec.critic_keep_best = True
    # the rule, keep-best and the bar read the paired AUC (each user's real list against that
    # user's own generated list): Eqs. 4, 7 and 8 compare only those two, so a part of D that
    # depends on the history alone moves the pooled AUC without changing the critic's loss or the
    # generator's advantages (docs/results/aos4rec_paper_regime.md, section 7); config.py's
    # default 'pooled' is what every run before 2026-12-05 read
    c.aos4rec.critic_auc = 'paired'
    # Eq. 8's successors by inverse CDF, the same distribution as Gumbel-max at about an eighth of
    # its cost on a CPU (aos4rec.sample_next_items); config.py's default 'gumbel' is what every
    # run before 2026-12-06 drew with
    c.aos4rec.successor_sampler = 'inverse_cdf'
    # a critic update encodes the history once for its real, fake and penalty passes: the same
    # function, 18-22% faster critic updates on the CPU (docs/benchmarks.md); config.py's default
    # False is what every run before 2026-12-06 (night) computed
    c.aos4rec.critic_encode_once = True
    # the generated lists by inverse CDF (one uniform a step) instead of Gumbel-max (V Gumbel
    # numbers a step), and Eq. 8's successors drawn in the same decoding pass instead of from a
    # teacher-forced pass of G over the lists: the same distributions, a critic update 30% faster
    # on the CPU (docs/benchmarks.md); config.py's defaults (gumbel, False) are what every run
    # before 2026-12-06 (morning) drew with
    c.aos4rec.list_sampler = 'inverse_cdf'
    c.aos4rec.successors_from_decode = True
    # the critic's optimizer: the critic sweep's best (docs/results/critic_sweep.md); at the
    # config.py defaults (1e-4, penalty 10) the critic does not move in hundreds of steps
    c.aos4rec.d_learning_rate = 3e-4
    c.aos4rec.gp_weight = 1.0
    return base.apply_variant(c, variant, 'aos4rec.py', VARIANTS)
