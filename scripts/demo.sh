#!/usr/bin/env bash
# The whole DitBERT pipeline on the embedded data, offline, on CPU:
# tokenizer -> pretraining -> fine-tuning on the demo task (DitBERT, its random-init twin and
# the packaged MiniLM baseline; also the real small GLUE tasks when GLUE_DIR is set) ->
# aggregation. Ends with the headline figures as RESULT lines.
# The demo rebuilds its own outputs (runs/<preset>/, the demo's run folders in GLUE-Outputs/ and the
# aggregated tables), so it replaces what an earlier demo wrote: DITBERT_OVERWRITE=1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export DITBERT_PRESET=${DITBERT_PRESET:-tiny} HF_HUB_OFFLINE=1 DITBERT_OVERWRITE=${DITBERT_OVERWRITE:-1}
# Fine-tuning on 2000 labelled examples per task keeps the demo within 30 minutes on 2 cores.
export DITBERT_SET=${DITBERT_SET:-finetune.max_train_examples=2000}
DEMO_SEEDS=${DEMO_SEEDS:-1,2,3}
GLUE_SMALL_TASKS=${GLUE_SMALL_TASKS:-rte,mrpc,stsb,cola,sst2,wnli}
GLUE_SMALL_SEEDS=${GLUE_SMALL_SEEDS:-1,2,3}
LABEL=ditbert-$DITBERT_PRESET

step() { echo; echo "=== $* ($(date +%H:%M:%S))"; }

finetune_three() {  # tasks seeds: pretrained DitBERT, its random-init twin, the MiniLM baseline
    GLUE_TASKS=$1 GLUE_SEEDS=$2 $PY GLUE-Finetune.py
    GLUE_TASKS=$1 GLUE_SEEDS=$2 RANDOM_INIT=1 $PY GLUE-Finetune.py
    GLUE_TASKS=$1 GLUE_SEEDS=$2 HF_MODELS=minilm-l6 $PY GLUE-Finetune-huggingface.py
}

step "1. tokenizer"
$PY Train-Tokenizer.py

step "2. pretraining"
mkdir -p runs
$PY train_model.py | tee runs/pretrain-$DITBERT_PRESET.log
grep '^RESULT' runs/pretrain-$DITBERT_PRESET.log > runs/pretrain-$DITBERT_PRESET.results

step "3. fine-tuning on the demo task, seeds $DEMO_SEEDS"
finetune_three demo "$DEMO_SEEDS"
if [ -n "${GLUE_DIR:-}" ]; then
    step "3. fine-tuning on $GLUE_SMALL_TASKS from $GLUE_DIR, seeds $GLUE_SMALL_SEEDS"
    finetune_three "$GLUE_SMALL_TASKS" "$GLUE_SMALL_SEEDS"
fi

step "4. aggregation"
$PY Aggregate-GLUE-results.py

echo
cat runs/pretrain-$DITBERT_PRESET.results
LABEL=$LABEL $PY - <<'PY'
import os
import warnings

import glue_results
from params import params_from_env

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the aggregation above printed them
    result = glue_results.collect(params_from_env().finetune.output_dir)
table = result.table.set_index("model")
label = os.environ["LABEL"]
# the rows of the models fine-tuned here: where a label also holds runs of an earlier model, its own row
for name, row in [("ditbert", label), ("random_init", f"{label}-random-init"), ("minilm", "minilm-l6")]:
    print(f"RESULT demo_acc_{name} {table.loc[result.newest_row(row, 'demo'), 'demo_final_mean']:.2f}")
PY
