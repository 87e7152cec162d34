"""Base configuration shared by every model. Model configs derive from `get_config()` here.

Every field has one comment. Values of -1 mean "take it from the prepared dataset's protocol.json"
(the protocol settings travel with the data).
"""
import ml_collections

from aos4rec_jax import config as config_lib


def get_config():
    c = ml_collections.ConfigDict()
    c.model = 'poprec'                  # poprec | transformer | gru
    c.seed = 0                          # one seed drives init, batches, dropout and sampling
    c.data_dir = ''                     # prepared dataset folder (python -m data_prep); '' = synthetic
    c.history_len = -1                  # L: history items fed to the model (-1: dataset's)
    c.target_len = -1                   # T: items per training target (-1: dataset's)

    # Built-in synthetic dataset (PROTOCOL section 7), used when data_dir is empty.
    c.synthetic = ml_collections.ConfigDict()
    c.synthetic.num_users = 2000        # sequences drawn from the oracle
    c.synthetic.seq_len = 50            # items per sequence
    c.synthetic.vocab_size = 5000       # oracle tokens (items)
    c.synthetic.hidden_size = 32        # oracle LSTM width (SeqGAN: 32)
    c.synthetic.oracle_seed = 0         # oracle parameters ~ N(0, 1) from this seed
    c.synthetic.data_seed = 0           # sampling of the sequences and the candidates
    c.synthetic.profile = 'default'     # data_prep profile (cap, K, L, filters)
    c.synthetic.cache_dir = ''          # where to keep the generated dataset ('' = WORKDIR/data)

    # Training (ignored by models that do not train, e.g. PopRec).
    c.train_steps = 2000                # optimizer steps
    c.batch_size = 128                  # examples per step, over all devices (paper: 128)
    c.learning_rate = 1e-3              # Adam peak learning rate (paper: 1e-3)
    c.warmup_steps = 100                # linear warm-up steps, then constant
    c.grad_clip = 1.0                   # global-norm clipping (0 = off)
    c.weight_decay = 0.0                # decoupled weight decay (AdamW) when > 0
    c.loss_chunk = 0                    # seq2seq MLE loss over blocks of N items without the
                                        # [batch, T, items] logits (aos4rec_jax/chunked_softmax.py);
                                        # 0 = through the logits
    c.pack_positions = True             # next-item losses over many items (SASRec+, GRU4Rec+) run
                                        # on the counted positions only, not the padding
                                        # (docs/DESIGN.md, "Packed positions"); same loss
    c.pack_sequences = True             # SASRec's, BERT4Rec's and GCSAN's networks run on the
                                        # batch's real items only, end to end (SASRec, BERT4Rec:
                                        # in rows of L with a banded mask; docs/DESIGN.md,
                                        # "Packed sequences"); same function
    c.log_every = 50                    # console + metrics.jsonl every N steps
    c.eval_every = 500                  # validation every N steps (0 = only at the end)
    c.checkpoint_every = 500            # save the train state every N steps (0 = only at the end)
    c.keep_checkpoints = 2              # keep the last N periodic checkpoints
    c.max_eval_users = 0                # evaluate at most N users during training (0 = all)
    c.select_by = 'ndcg'                # parameters kept for the final evaluation: best validation
                                        # ndcg (sampled NDCG@K) | full_ndcg (NDCG@K over all items,
                                        # the S3-Rec repository's rule) | nll_oracle (synthetic) | last
    c.early_stop_patience = 0           # end the run after N validations in a row without a better
                                        # one (by select_by) in its last phase; 0 = run every step

    # AOS4Rec (paper Sec. 4; aos4rec_jax/ssrgan.py). Off by default: plain MLE seq2seq training.
    # Schedule: train_steps seq2seq steps (MLE, or oracular with `oracle`), then with
    # `adversarial`: critic_pretrain_steps critic updates, then gan_steps SSRGAN rounds.
    c.aos4rec = ml_collections.ConfigDict(config_lib.aos4rec_defaults())  # fields: aos4rec_jax/config.py

    # Evaluation.
    c.eval_batch_size = 256             # users per evaluation batch
    c.decode = ml_collections.ConfigDict()
    c.decode.strategy = 'beam'          # beam | greedy | sample | gumbel | multi_rra | multi_ra
    c.decode.beam_size = 5              # beams (paper: 5); 1 = greedy
    c.decode.temperature = 1.0          # for sampling strategies
    c.decode.num_sequences = 20         # sequences aggregated by multi_rra / multi_ra
    c.decode.ban_generated = True       # no item twice in a list

    # Model hyper-parameters (the model picks the ones it knows; embedding size 128 as the paper).
    c.model_kwargs = ml_collections.ConfigDict()
    c.model_kwargs.embed_dim = 128      # item embedding size
    c.model_kwargs.num_layers = 2       # Transformer blocks per stack
    c.model_kwargs.num_heads = 4        # attention heads
    c.model_kwargs.mlp_dim = 512        # Transformer feed-forward width
    c.model_kwargs.hidden_dim = 128     # GRU hidden size
    c.model_kwargs.dropout_rate = 0.1   # dropout in training
    c.model_kwargs.tie_output = True    # output layer tied to the item embeddings

    # Scale.
    c.mesh = ml_collections.ConfigDict()
    c.mesh.shard_items = False          # shard item embedding/output tables along the item axis
    c.mesh.num_devices = 0              # devices of the data-parallel mesh (0 = every device)
    c.compute_dtype = 'float32'         # float32 | bfloat16 (activations; params stay float32)
    return c


def tiny(c):
    """Shrinks a config so a run finishes in seconds on a laptop CPU (tests, quick looks)."""
    c.synthetic.num_users = 200
    c.synthetic.seq_len = 30
    c.synthetic.vocab_size = 300
    c.train_steps = 60
    c.batch_size = 32
    c.warmup_steps = 10
    c.log_every = 10
    c.eval_every = 30
    c.checkpoint_every = 30
    c.eval_batch_size = 64
    c.model_kwargs.embed_dim = 32
    c.model_kwargs.num_layers = 1
    c.model_kwargs.num_heads = 2
    c.model_kwargs.mlp_dim = 64
    c.model_kwargs.hidden_dim = 32
    return c


def quick(c):
    """About ten minutes on a 2-core CPU: the README's first command.

    The synthetic oracle gets 500 tokens and 5,000 users (instead of SeqGAN's 5,000 tokens and
    our 2,000 users) so that a short run has enough data per item to learn the oracle's
    transitions: with 5,000 tokens, 1,000 steps stay at PopRec's level.
    The kept parameters are those whose generated lists the oracle finds most likely (lowest
    validation NLL_oracle): on the oracle's data that is what measures learning, while NDCG
    against one sampled continuation falls as the model learns the oracle's likely continuation
    (docs/results/mle.md). On a prepared dataset add --config.select_by=ndcg.
    2,000 steps: after 1,000 the model gave 72% of the 5,000 test users the same list (12
    different lists); after 2,000, 192 different lists, the most common one to 18%.
    """
    c.select_by = 'nll_oracle'
    c.synthetic.vocab_size = 500
    c.synthetic.num_users = 5000
    c.train_steps = 2000
    c.warmup_steps = 50
    c.log_every = 50
    c.eval_every = 250
    c.checkpoint_every = 250
    c.max_eval_users = 500
    c.model_kwargs.embed_dim = 64
    c.model_kwargs.mlp_dim = 256
    c.model_kwargs.hidden_dim = 64
    return c


VARIANTS = {'tiny': tiny, 'quick': quick}


def apply_variant(c, variant: str, file: str, extra: dict | None = None):
    """Applies named variants, comma-separated ('' = none; e.g. 'tiny,oracle'); an unknown name
    fails with the known ones. `extra`: the config file's own variants."""
    known = {**VARIANTS, **(extra or {})}
    for name in [v.strip() for v in variant.split(',') if v.strip()]:
        if name not in known:
            raise ValueError(f'unknown variant {name!r} of {file} (known: {", ".join(sorted(known))})')
        c = known[name](c)
    return c
