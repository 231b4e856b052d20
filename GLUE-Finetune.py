# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. Fine-tune DitBERT on GLUE
#
# Each task gets a fresh head on the pretrained encoder (the pooled hidden states -> dropout 0.1
# -> linear; `tiny` pools by the mean, and on two-text tasks pools each text on its own and gives
# the head `[u, v, |u - v|, u * v]`, or on STS-B scores the pair by the texts' cosine, scaled and
# shifted by two numbers fitted first; the texts of a similarity pair are encoded apart, those of an
# inference pair together), and every weight is fine-tuned with AdamW, linear warmup and
# linear decay (`finetune` in `params.py`). Each seed is its own run, written to
# `GLUE-Outputs/<model label>-seed<seed>/`: a `results_<task>.csv` per task (one row per
# epoch), `run_info.json` (settings and status per task), the best epoch's model per task, and
# `predictions/<task>_<split>_<final|best>.tsv`: the validation predictions of the final and the
# best epoch, and the test predictions of both models wherever the test file is present (what
# `glue_submission.py` zips for the GLUE server). `Aggregate-GLUE-results.py` turns those files
# into the comparison table. Ctrl-C stops cleanly and marks the task interrupted.
#
# Settings come from the environment so `make` and the tests can drive this notebook (the full
# table is `ENVIRONMENT` in `params.py`):
#
# | variable | meaning | default |
# |---|---|---|
# | `DITBERT_PRESET`, `DITBERT_SET` | preset and overrides, e.g. `finetune.epochs=3;finetune.lr=5e-5` | `tiny`, none |
# | `GLUE_TASKS` | comma-separated tasks: GLUE names, `demo`, or a folder with `train.csv`/`dev.csv` | all nine GLUE tasks |
# | `GLUE_DIR` | a folder in the original GLUE download layout; empty = the Hugging Face hub | empty |
# | `GLUE_SEEDS` | `finetune.seeds`: seeds, one run folder each, e.g. `1,2,3` | the preset's |
# | `GLUE_OUTPUT_DIR` | `finetune.output_dir`: where run folders go | the preset's |
# | `DITBERT_MODEL`, `DITBERT_TOKENIZER` | pretrained model folder and tokenizer | this preset's `pretrain/final` and `tokenizer.json` |
# | `RANDOM_INIT` | `1` = same config, random weights: the control for what pretraining gives | `0` |
# | `MODEL_LABEL` | the model's name in run folders and tables (`-random-init` is added for the control) | `ditbert-<preset>` |
# | `DITBERT_OVERWRITE` | `1` = replace the results of a task already fine-tuned in a run folder (else that is an error before any work) | `0` |
# | `GLUE_RESUME` | `1` = keep the tasks and seeds already finished from this model with these settings, fine-tune the rest: a stopped command goes on | `0` |
#
# Fine-tuning runs on `train.device` in `train.dtype`, as pretraining does (`auto`: the GPU when
# there is one, in bf16 where it has it; fp32 on the CPU).

# %%
from pathlib import Path

import cli
import glue_tasks
import glue_models
import glue_utils
import runtime
from params import notebook_input, params_from_env

cli.notebook_arguments("GLUE-Finetune.py", settings="finetune.*, train.device, train.dtype, train.out_dir, train.tokenizer")
params = params_from_env()
finetune = params.finetune
TASKS = notebook_input("GLUE_TASKS", ",".join(glue_tasks.GLUE_TASKS))
GLUE_DIR = notebook_input("GLUE_DIR")
MODEL_DIR = notebook_input("DITBERT_MODEL", str(Path(params.train.out_dir) / "final"))
TOKENIZER = notebook_input("DITBERT_TOKENIZER", str(params.tokenizer_path))
RANDOM_INIT = notebook_input("RANDOM_INIT", "0").lower() in ("1", "true", "yes")
LABEL = notebook_input("MODEL_LABEL", f"ditbert-{params.preset}")
OVERWRITE = cli.overwrite_allowed()
RESUME = cli.resume_asked()
precision = runtime.Precision.choose(params.train.device, params.train.dtype)

source = glue_models.ditbert_source(MODEL_DIR, TOKENIZER, label=LABEL, random_init=RANDOM_INIT)
print(f"{source.label}: {source.init} weights from {MODEL_DIR}, tasks {TASKS}, seeds {finetune.seeds}")
print(f"GLUE tasks read from {GLUE_DIR or 'the Hugging Face hub'}; outputs under {finetune.output_dir}/; "
      f"{precision.device.type}, {precision.dtype}")

# %%
runs = glue_utils.run_glue(source, TASKS, finetune, glue_dir=GLUE_DIR or None, precision=precision,
                          overwrite=OVERWRITE, resume=RESUME)

# %% [markdown]
# Validation metrics per run and task, at the best epoch (mean of the task's validation
# metrics) and at the last epoch:

# %%
print(glue_utils.summarize(runs).to_string(index=False))
