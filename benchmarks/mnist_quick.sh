#!/usr/bin/env bash
# MNIST on a reduced budget that fits in about an hour on 2 CPU cores, the same for every method:
#   the first 10000 training examples, 4 epochs, batch 50, Adam 1e-3, LeNet at width 16 (16/32
#   filters, 512 features), training adversary PGD-10 with step 0.04 at epsilon 0.3, ramped up
#   from 0 over the first 1.5 epochs (without the ramp, Madry training at this budget sat at
#   chance accuracy for 3 epochs); evaluation on the first 2000 test images with the paper's
#   attacks (step 0.01, epsilon 0.3).
# usage, from the repository top: bash benchmarks/mnist_quick.sh ../shared/datasets/mnist
# Runs and exports go to bench_runs/mnist_quick/ (ignored by git); the table is printed at the end.
set -euo pipefail
SRC=${1:?usage: benchmarks/mnist_quick.sh MNIST_SOURCE_DIR}
OUT=${OUT:-bench_runs/mnist_quick}
METHODS=${METHODS:-natural madry alp trades aalp}
ATTACKS=${ATTACKS:-clean,fgsm,pgd40,cw40}
BUDGET=(--train_examples=10000 --epochs=4 --batch_size=50 --learning_rate=1e-3 --width=16
        --attack_steps=10 --step_size=0.04 --epsilon_warmup_epochs=1.5 --val_examples=1000
        --val_attack_steps=10)
for method in $METHODS; do
  python -m aalp_tf.train --dataset=mnist --method="$method" --source_dir="$SRC" "${BUDGET[@]}" \
      --model_dir="$OUT/runs/$method" --export_dir="$OUT/saved_models" --export_name="$method"
  model=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['path'])" \
      "$OUT/runs/$method/export.json")
  python -m aalp_tf.evaluate --model="$model" --dataset=mnist --source_dir="$SRC" \
      --test_examples=2000 --attacks="$ATTACKS" --output="$OUT/eval/$method.json"
done
python -m benchmarks.accuracy_table "$OUT"/eval/*.json
