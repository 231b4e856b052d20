#!/usr/bin/env bash
# The full-size rows of the README's GLUE table: a pretrained DitBERT, its random-init twin and the
# packaged MiniLM fine-tuned on the whole training sets of the small GLUE tasks (CoLA, SST-2, MRPC,
# STS-B, RTE, WNLI), seeds 1, 2 and 3, then aggregated.
#
#   GLUE_DIR=../shared/glue_data bash scripts/full_size_glue.sh runs/value/ditbert-tiny-two-hour/step-013000 \
#       ditbert-tiny-two-hour-full
#
# Arguments: the pretrained model folder and the label of its run folders (the twin's is
# <label>-random-init, which is what aggregation pairs it with). GLUE_RESUME=1 is set, so the
# command run again after a stop keeps every task and seed that finished and goes on with the rest.
# MINILM_LABEL (default minilm-l6-full; empty = no MiniLM) and MINILM_MAX_TRAIN (default 0 = all;
# a cap shows in the table's train examples column) shape the baseline's rows; its seeds take hours
# each on 2 CPU cores (the README's "MiniLM at full training size" has the measured time). Settings:
# DITBERT_PRESET and DITBERT_SET as for every step; the runs keep no best-epoch models
# (finetune.save_best=false).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
MODEL_DIR=${1:?usage: scripts/full_size_glue.sh MODEL_DIR LABEL}
LABEL=${2:?usage: scripts/full_size_glue.sh MODEL_DIR LABEL}
[ -n "${GLUE_DIR:-}" ] || { echo "error: set GLUE_DIR to a folder in the original GLUE layout" >&2; exit 1; }
export DITBERT_PRESET=${DITBERT_PRESET:-tiny} HF_HUB_OFFLINE=1 GLUE_RESUME=1
export GLUE_TASKS=${GLUE_TASKS:-rte,mrpc,stsb,cola,wnli,sst2} GLUE_SEEDS=${GLUE_SEEDS:-1,2,3}  # the longest last
SETTINGS="finetune.max_train_examples=0;finetune.save_best=false${DITBERT_SET:+;$DITBERT_SET}"
MINILM_LABEL=${MINILM_LABEL-minilm-l6-full}

step() { echo; echo "=== $* ($(date +%H:%M:%S))"; }

step "$LABEL: $GLUE_TASKS, seeds $GLUE_SEEDS"
DITBERT_SET=$SETTINGS DITBERT_MODEL=$MODEL_DIR MODEL_LABEL=$LABEL $PY GLUE-Finetune.py
step "$LABEL-random-init"
DITBERT_SET=$SETTINGS DITBERT_MODEL=$MODEL_DIR MODEL_LABEL=$LABEL RANDOM_INIT=1 $PY GLUE-Finetune.py
if [ -n "$MINILM_LABEL" ]; then
    step "$MINILM_LABEL (training examples per task: ${MINILM_MAX_TRAIN:-0}, 0 = all)"
    DITBERT_SET="$SETTINGS;finetune.max_train_examples=${MINILM_MAX_TRAIN:-0}" HF_MODELS=$MINILM_LABEL=minilm-l6 \
        $PY GLUE-Finetune-huggingface.py
fi
step "aggregation"
$PY Aggregate-GLUE-results.py
