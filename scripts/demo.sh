#!/usr/bin/env bash
# The whole DitBERT pipeline on the embedded data, offline, on CPU:
# tokenizer -> pretraining -> fine-tuning on the demo task (DitBERT, its random-init twin,
# the packaged MiniLM baseline; real GLUE tasks too when GLUE_DIR is set) -> aggregation.
# Ends with the headline figures as RESULT lines.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export DITBERT_PRESET=${DITBERT_PRESET:-tiny}
export GLUE_SEEDS=${GLUE_SEEDS:-1,2,3}
TASKS=demo
if [ -n "${GLUE_DIR:-}" ]; then TASKS="demo,${GLUE_DEMO_TASKS:-rte,mrpc,stsb,cola,wnli}"; fi

step() { echo; echo "=== $* ($(date +%H:%M:%S))"; }

step "1. tokenizer"
$PY Train-Tokenizer.py

step "2. pretraining"
$PY train_model.py | tee runs/pretrain-demo.log
grep '^RESULT' runs/pretrain-demo.log > runs/pretrain-results.txt

step "3. fine-tuning on $TASKS: pretrained DitBERT"
GLUE_TASKS=$TASKS $PY GLUE-Finetune.py
step "3. fine-tuning on $TASKS: random-init twin"
GLUE_TASKS=$TASKS RANDOM_INIT=1 $PY GLUE-Finetune.py
step "3. fine-tuning on $TASKS: MiniLM baseline"
GLUE_TASKS=$TASKS HF_MODELS=minilm-l6 HF_HUB_OFFLINE=1 $PY GLUE-Finetune-huggingface.py

step "4. aggregation"
$PY Aggregate-GLUE-results.py

echo
cat runs/pretrain-results.txt
$PY - <<'PY'
import pandas as pd
table = pd.read_csv("GLUE-aggregated-results.csv").set_index("model")
for name, label in [("ditbert", "ditbert-tiny"), ("random_init", "ditbert-tiny-random-init"), ("minilm", "minilm-l6")]:
    print(f"RESULT demo_acc_{name} {table.loc[label, 'demo_final_mean']:.2f}")
PY
