#!/usr/bin/env bash
# MLE seq2seq recommenders vs PopRec on the ml-1m-subset (paper protocol, K = 10), then the same
# trained models decoded with greedy search, and a Markdown table of everything.
#   bash experiments/mle_ml1m.sh [STEPS] [OUT]      (defaults: 1500 steps, runs/mle_ml1m)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-1500}
OUT=${2:-runs/mle_ml1m}
DATA=data/ml-1m-subset
if [ ! -f "$DATA/stats.json" ]; then
  python -m data_prep --format movielens --profile movielens \
    --input ../shared/data/ml-1m-subset/ratings.dat.gz --output "$DATA"
fi
python main.py --config=experiments/configs/poprec.py --workdir="$OUT/poprec" --config.data_dir="$DATA"
for m in transformer gru; do
  python main.py --config=experiments/configs/$m.py --workdir="$OUT/$m" --config.data_dir="$DATA" \
    --config.train_steps="$STEPS" --config.eval_every=500 --config.checkpoint_every=500 \
    --config.max_eval_users=500 --config.log_every=100
  python -m aos4rec_jax.evaluate --workdir="$OUT/$m" --tag greedy --strategy greedy --splits test
done
python experiments/collect.py "$OUT" --out docs/results/mle_ml1m.md
