#!/usr/bin/env bash
# What was tried for the SSRGAN phase before concluding on it: variants of the adversarial row,
# each started from the same finished seq2seq run (one dataset, model and seed of the ablation).
#   bash experiments/gan_sweep.sh BASE_RUN OUT C G [WORKERS]
# e.g. bash experiments/gan_sweep.sh runs/ablation/yoochoose-100k/transformer/seed0/base \
#        runs/gan_sweep 30 30 2
# Variants of the ablation's settings (g lr 1e-4, gradient penalty, d-steps 5, G rounds): a 10x
# and a 0.1x generator learning rate, weight clipping instead of the penalty, d-steps 1, 4x more
# rounds, the MLE loss added to the generator's (gan_mle_weight 1; not in the paper), and its
# control: the MLE loss alone, the critic's signal off (gan_adv_weight 0).
# Writes OUT/sweep.md (test metrics of each variant, with the base run for reference).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=$1; OUT=$2; C=$3; G=$4; WORKERS=${5:-2}
DATA=$(python -c "import json; print(json.load(open('$BASE/dataset.json'))['data_dir'])")
MODEL=$(python -c "import json; print(json.load(open('$BASE/config.json'))['model'])")
SEED=$(python -c "import json; print(json.load(open('$BASE/config.json'))['seed'])")
COMMON=(--config.data_dir="$DATA" --config.model="$MODEL" --config.seed="$SEED" --config.train_steps=0
        --config.aos4rec.init_from="$BASE" --config.aos4rec.critic_pretrain_steps="$C"
        --config.model_kwargs.embed_dim=64 --config.model_kwargs.mlp_dim=256
        --config.model_kwargs.hidden_dim=64 --config.model_kwargs.num_layers=1
        --config.max_eval_users=300 --config.eval_every=100 --config.log_every=20
        --config.checkpoint_every=100)
declare -A VARIANTS=(
  [g_lr_1e-3]="--config.aos4rec.gan_steps=$G --config.aos4rec.g_learning_rate=1e-3"
  [clip]="--config.aos4rec.gan_steps=$G --config.aos4rec.lipschitz=clip"
  [d_steps_1]="--config.aos4rec.gan_steps=$G --config.aos4rec.d_steps=1"
  [rounds_x4]="--config.aos4rec.gan_steps=$((4 * G))"
  [g_lr_1e-5]="--config.aos4rec.gan_steps=$G --config.aos4rec.g_learning_rate=1e-5"
  [mle_mix_1]="--config.aos4rec.gan_steps=$G --config.aos4rec.gan_mle_weight=1.0"
  [mle_only]="--config.aos4rec.gan_steps=$G --config.aos4rec.gan_mle_weight=1.0 --config.aos4rec.gan_adv_weight=0"
)
mkdir -p "$OUT"
run() {
  local name=$1
  [ -f "$OUT/$name/metrics/test.json" ] && return 0
  python main.py --config=experiments/configs/aos4rec.py:adver --workdir="$OUT/$name" "${COMMON[@]}" \
    ${VARIANTS[$name]} > "$OUT/$name.log" 2>&1 && echo "done $name" || echo "FAILED $name (see $OUT/$name.log)"
}
if [ "$WORKERS" -gt 1 ]; then
  export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
fi
names=(g_lr_1e-3 g_lr_1e-5 clip d_steps_1 rounds_x4 mle_mix_1 mle_only)
i=0
for n in "${names[@]}"; do
  run "$n" &
  i=$((i + 1))
  if [ $((i % WORKERS)) -eq 0 ]; then wait; fi
done
wait
python - "$BASE" "$OUT" "${names[@]}" <<'PY'
import json, os, sys
base, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = [('seq2seq run (start point)', base)] + [(n, os.path.join(out, n)) for n in names]
lines = ['| variant | sampled Prec | sampled NDCG | sampled BLEU | full Prec | full NDCG |', '|---|---|---|---|---|---|']
for name, wd in rows:
    try:
        t = json.load(open(os.path.join(wd, 'metrics', 'test.json')))
    except FileNotFoundError:
        lines.append(f'| {name} | n/a | n/a | n/a | n/a | n/a |')
        continue
    k = next(x.split('@')[1] for x in t['sampled'] if x.startswith('prec@'))
    s, f = t['sampled'], t['full']
    lines.append(f"| {name} | {s['prec@'+k]:.4f} | {s['ndcg@'+k]:.4f} | {s['bleu@'+k]:.4f} | {f['prec@'+k]:.4f} | {f['ndcg@'+k]:.4f} |")
open(os.path.join(out, 'sweep.md'), 'w').write('\n'.join(lines) + '\n')
print('\n'.join(lines))
PY
