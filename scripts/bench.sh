#!/usr/bin/env bash
# The CPU benchmark suite (figures in BENCHMARKS.md). Each script prints a table, writes
# bench/results/<name>.csv/.json and ends with a RESULT line.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
if [ -z "${GLUE_DIR:-}" ] && [ -d ../shared/glue_data ]; then export GLUE_DIR="$(cd ../shared/glue_data && pwd)"; fi
$PY bench/pretrain_step.py --preset tiny --device cpu
$PY bench/pretrain_step.py --preset base --device cpu --no-compile --rounds 8
$PY bench/data.py
if [ -n "${GLUE_DIR:-}" ]; then
    $PY bench/finetune.py --task rte    # long premises: the hardest pair task for padding savings
    $PY bench/finetune.py --task mrpc
else
    echo "bench/finetune.py skipped: set GLUE_DIR to a GLUE download (it needs a sentence-pair task)"
fi
$PY bench/scaling.py
