#!/usr/bin/env bash
# Fine-tune DitBERT on GLUE tasks whose test files come with a GLUE download and write
# <GLUE_OUTPUT_DIR>/glue_submission.zip (by default GLUE-Outputs/glue_submission.zip) from those runs:
# the GLUE server's files, checked against their official row counts by glue_submission.py (the server
# scores a submission only when the other tasks' files are there too), with
# glue_submission.manifest.tsv beside it saying which run folder and epoch each file came from.
#
#   GLUE_DIR=<glue_data> make submission                                # CoLA, SST-2, MRPC, STS-B, RTE, WNLI
#   GLUE_DIR=<glue_data> make submission GLUE_TASKS=rte,mrpc MODEL=ditbert-mine
#
# GLUE_TASKS: the tasks to fine-tune and submit (default the six small ones; mnli brings the diagnostic
# set AX). MODEL: the label of the run folders (<MODEL>-seed<k>), default MODEL_LABEL or ditbert-<preset>.
# The zip holds the runs of the model fine-tuned here only: glue_submission.py takes the model of the
# newest finished run, so seeds of an earlier model under the same label are left out (and named).
#
# Needs GLUE_DIR (a folder in the original GLUE layout, test files included) and a pretrained
# model at <train.out_dir>/final (or DITBERT_MODEL). Settings come from DITBERT_PRESET and
# DITBERT_SET as for every step; run folders go to GLUE_OUTPUT_DIR (finetune.output_dir). A run
# folder that already holds one of these tasks' results is an error unless DITBERT_OVERWRITE=1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export DITBERT_PRESET=${DITBERT_PRESET:-tiny}
TASKS=${GLUE_TASKS:-cola,sst2,mrpc,stsb,rte,wnli}

fail() { echo "error: $*" >&2; exit 1; }

[ -n "${GLUE_DIR:-}" ] || fail "set GLUE_DIR to a folder in the original GLUE layout that holds the test files, e.g. GLUE_DIR=../shared/glue_data make submission"
[ -d "$GLUE_DIR" ] || fail "GLUE_DIR=$GLUE_DIR does not exist"

# The tasks checked, their test files found, and the settings the steps below need, before any work.
settings=$($PY - "$TASKS" <<'PY'
import os
import sys
from pathlib import Path

from glue_submission import server_files
from glue_tasks import GLUE_TASKS, TASKS, parse_tasks
from params import params_from_env

names = [t.lower() for t in parse_tasks(sys.argv[1])]
unknown = [t for t in names if t not in GLUE_TASKS]
if unknown or not names:
    sys.exit(f"error: GLUE_TASKS={sys.argv[1]}: a submission fine-tunes GLUE tasks, of {','.join(GLUE_TASKS)}"
             + (" (ax is predicted by the mnli model: give mnli)" if "ax" in unknown else ""))
files = server_files(names)
paths = [Path(os.environ["GLUE_DIR"]) / TASKS[f.task].folder / TASKS[f.task].split_file(f.split) for f in files]
folders = " ".join(dict.fromkeys(TASKS[f.task].folder for f in files))
for path in paths:
    if not path.is_file():
        sys.exit(f"error: {path} does not exist: a submission needs the test file of every task ({folders})")
p = params_from_env()
print(os.environ.get("DITBERT_MODEL") or Path(p.train.out_dir) / "final")
print(p.finetune.output_dir)
print(os.environ.get("MODEL") or os.environ.get("MODEL_LABEL") or f"ditbert-{p.preset}")
print(",".join(names))
PY
)
MODEL_DIR=$(sed -n 1p <<<"$settings")
OUTPUTS=$(sed -n 2p <<<"$settings")
LABEL=$(sed -n 3p <<<"$settings")
TASKS=$(sed -n 4p <<<"$settings")
[ -f "$MODEL_DIR/config.json" ] && [ -f "$MODEL_DIR/model.safetensors" ] || fail "no pretrained model at $MODEL_DIR (train.out_dir=$(dirname "$MODEL_DIR")): pretrain one first (python train_model.py, or make demo), or set DITBERT_MODEL to a model folder"

echo "=== fine-tuning $LABEL ($MODEL_DIR) on $TASKS from $GLUE_DIR into $OUTPUTS/"
GLUE_TASKS=$TASKS DITBERT_MODEL=$MODEL_DIR MODEL_LABEL=$LABEL RANDOM_INIT=0 $PY GLUE-Finetune.py
echo "=== the submission"
$PY glue_submission.py --model "$LABEL" --tasks "$TASKS" --outputs "$OUTPUTS" --out "$OUTPUTS/glue_submission.zip"
