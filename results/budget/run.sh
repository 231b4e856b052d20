#!/usr/bin/env bash
# The measurements of docs/pretraining.md, "By the clock" and "From a trained model", on 2 CPU cores.
# Runs side by side take one core each (train.threads=1), so that both see the same machine.
# Needs the tokenizer and the final model of `make demo` (runs/tiny/), and writes under runs/budget/,
# runs/adapt/ and results/budget/. The row linear-from-start-20min of schedule.csv was made with
# step 1's first command at commit 15486ec, where a linear decay by the clock ran from the start of the
# budget instead of from the end of the warmup.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
export HF_HUB_OFFLINE=1
ONE_CORE="train.threads=1"

# 1. 20 minutes by the clock: the linear schedule beside Cramming's triangle
$PY train_model.py --out runs/budget/linear-20min --budget-minutes 20 --set $ONE_CORE &
$PY train_model.py --out runs/budget/triangle-20min --budget-minutes 20 --set $ONE_CORE train.schedule=triangle &
wait

# 2. the same number of steps counted in steps: the run a user who guessed the step count exactly would get
STEPS=$($PY -c "import json; print(json.load(open('runs/budget/linear-20min/summary.json'))['step'])")
$PY train_model.py --out runs/budget/steps-$STEPS --steps $STEPS --set $ONE_CORE &

# 3. the make-demo model continued for 10 minutes on three corpora
mkdir -p runs/adapt
$PY - <<'PY'
import csv
rows = csv.DictReader(open("data/demo-movie-reviews/train.csv", encoding="utf-8"))
open("runs/adapt/demo-train-sentences.txt", "w", encoding="utf-8").write("".join(r["sentence"].strip() + "\n" for r in rows))
PY
continue_on() {  # name corpus...
    local name=$1; shift
    $PY train_model.py --init-from runs/tiny/pretrain/final --out runs/adapt/$name-10min --budget-minutes 10 \
        ${1:+--corpus "$@"} --set $ONE_CORE
}
continue_on task runs/adapt/demo-train-sentences.txt
wait
continue_on general &
continue_on imdb data/imdb-reviews-en.txt &
wait

# 4. each continued model fine-tuned on the demo task, as make demo fine-tunes (2000 examples, 3 seeds)
for name in task general imdb; do
    DITBERT_SET="finetune.max_train_examples=2000;finetune.output_dir=runs/adapt/GLUE-Outputs" \
        GLUE_TASKS=demo GLUE_SEEDS=1,2,3 DITBERT_MODEL=runs/adapt/$name-10min/final MODEL_LABEL=ditbert-tiny-$name-10min \
        $PY GLUE-Finetune.py
done
# 5. the 20-minute models and the steps run fine-tuned on the demo task the same way
for run in linear-20min triangle-20min steps-$STEPS; do
    DITBERT_SET="finetune.max_train_examples=2000;finetune.output_dir=runs/budget/GLUE-Outputs" \
        GLUE_TASKS=demo GLUE_SEEDS=1,2,3 DITBERT_MODEL=runs/budget/$run/final MODEL_LABEL=ditbert-tiny-$run \
        $PY GLUE-Finetune.py
done
$PY results/budget/summarize.py
