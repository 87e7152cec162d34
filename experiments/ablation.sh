#!/usr/bin/env bash
# The AOS4Rec ablation (paper Table 4) as run for docs/results/ on a 2-core CPU, then its tables.
#   bash experiments/ablation.sh [OUT] [WORKERS]          (defaults: runs/ablation, 2)
# Sizes: width 64, 1 layer (Transformer) / hidden 64 (GRU), batch 128, 3 seeds. Steps (P seq2seq,
# C critic pretraining, G SSRGAN rounds): YOOCHOOSE 600, 60, 60 (12.8 epochs of seq2seq);
# ml-1m-subset 600, 40, 40 (0.26 epoch): what the CPU time of one session allowed (30 jobs each:
# YOOCHOOSE 34 min, ml-1m-subset 73 min on a 2-core CPU that other runs shared).
# On a GPU raise them (e.g. ML 20000, 500, 1000).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/ablation}
WORKERS=${2:-2}
[ -f data/ml-1m-subset/protocol.json ] || python -m data_prep --format movielens --profile movielens \
  --input ../shared/data/ml-1m-subset/ratings.dat.gz --output data/ml-1m-subset
[ -f data/yoochoose-100k/protocol.json ] || python -m data_prep --format session-tsv --profile yoochoose \
  --input ../shared/data/yoochoose/yoochoose-clicks-100k_train_full.txt.gz \
  ../shared/data/yoochoose/yoochoose-clicks-100k_test.txt.gz --output data/yoochoose-100k
SIZES=(--set model_kwargs.embed_dim=64 --set model_kwargs.mlp_dim=256 --set model_kwargs.hidden_dim=64
       --set model_kwargs.num_layers=1 --set max_eval_users=300 --set eval_every=100
       --set log_every=20 --set checkpoint_every=100)
python -m experiments.ablation --out "$OUT" --data yoochoose-100k=data/yoochoose-100k \
  --steps yoochoose-100k=600,60,60 --seeds 0,1,2 --workers "$WORKERS" "${SIZES[@]}"
python -m experiments.ablation --out "$OUT" --data ml-1m-subset=data/ml-1m-subset \
  --steps ml-1m-subset=600,40,40 --seeds 0,1,2 --workers "$WORKERS" "${SIZES[@]}"
python -m experiments.collect_ablation --root "$OUT" --out docs/results
