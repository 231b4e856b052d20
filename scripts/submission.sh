#!/usr/bin/env bash
# Fine-tune DitBERT on the six small GLUE tasks whose test files come with a GLUE download (CoLA,
# SST-2, MRPC, STS-B, RTE, WNLI) and write <GLUE_OUTPUT_DIR>/glue_submission.zip (by default
# GLUE-Outputs/glue_submission.zip): the GLUE server's files, checked against their official row
# counts by glue_submission.py (the server scores a submission only when the other tasks' files
# are there too).
#
# Needs GLUE_DIR (a folder in the original GLUE layout, test.tsv files included) and a pretrained
# model at <train.out_dir>/final (or DITBERT_MODEL). Settings come from DITBERT_PRESET and
# DITBERT_SET as for every step; run folders go to GLUE_OUTPUT_DIR (finetune.output_dir). A run
# folder that already holds one of these tasks' results is an error unless DITBERT_OVERWRITE=1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export DITBERT_PRESET=${DITBERT_PRESET:-tiny}
TASKS=cola,sst2,mrpc,stsb,rte,wnli
FOLDERS="CoLA SST-2 MRPC STS-B RTE WNLI"

fail() { echo "error: $*" >&2; exit 1; }

[ -n "${GLUE_DIR:-}" ] || fail "set GLUE_DIR to a folder in the original GLUE layout that holds the test files, e.g. GLUE_DIR=../shared/glue_data make submission"
[ -d "$GLUE_DIR" ] || fail "GLUE_DIR=$GLUE_DIR does not exist"
for folder in $FOLDERS; do
    [ -f "$GLUE_DIR/$folder/test.tsv" ] || fail "$GLUE_DIR/$folder/test.tsv does not exist: a submission needs the test file of every task ($FOLDERS)"
done

settings=$($PY -c '
import os
from pathlib import Path

from params import params_from_env

p = params_from_env()
print(os.environ.get("DITBERT_MODEL") or Path(p.train.out_dir) / "final")
print(p.finetune.output_dir)
print(os.environ.get("MODEL_LABEL") or f"ditbert-{p.preset}")
')
MODEL=$(sed -n 1p <<<"$settings")
OUTPUTS=$(sed -n 2p <<<"$settings")
LABEL=$(sed -n 3p <<<"$settings")
[ -f "$MODEL/config.json" ] && [ -f "$MODEL/model.safetensors" ] || fail "no pretrained model at $MODEL (train.out_dir=$(dirname "$MODEL")): pretrain one first (python train_model.py, or make demo), or set DITBERT_MODEL to a model folder"

echo "=== fine-tuning $LABEL ($MODEL) on $TASKS from $GLUE_DIR into $OUTPUTS/"
GLUE_TASKS=$TASKS DITBERT_MODEL=$MODEL MODEL_LABEL=$LABEL RANDOM_INIT=0 $PY GLUE-Finetune.py
echo "=== the submission"
$PY glue_submission.py --model "$LABEL" --outputs "$OUTPUTS" --out "$OUTPUTS/glue_submission.zip"
