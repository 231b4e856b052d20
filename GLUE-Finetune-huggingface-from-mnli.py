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
# # 6. Hugging Face baselines on RTE, MRPC, STS-B and WNLI from their MNLI models
#
# As `GLUE-Finetune-from-mnli.py`, for the models of `GLUE-Finetune-huggingface.py`: each
# seed starts from the MNLI model kept for that model and seed
# (`<output>/<label>-seed<seed>/best_mnli/`); the classification head is replaced where the
# label count differs. Runs are labelled `<label>-from-mnli`.
#
# Settings (environment; the full table is `ENVIRONMENT` in `params.py`): `DITBERT_PRESET`,
# `DITBERT_SET`, `GLUE_DIR`, `GLUE_SEEDS`, `GLUE_OUTPUT_DIR`, `DITBERT_OVERWRITE`, `GLUE_RESUME` as before, `HF_MODELS` as in
# `GLUE-Finetune-huggingface.py` (only the labels matter here), and
#
# | variable | meaning | default |
# |---|---|---|
# | `GLUE_TASKS` | tasks to fine-tune | `rte,mrpc,stsb,wnli` (`glue_tasks.MNLI_INIT_TASKS`) |
# | `MNLI_MODEL_DIR` | an MNLI model folder instead, for a single model (`{seed}` is replaced by the seed) | each model's `best_mnli/` |
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

cli.notebook_arguments("GLUE-Finetune-huggingface-from-mnli.py", settings="finetune.*, train.device, train.dtype")
params = params_from_env()
finetune = params.finetune
TASKS = notebook_input("GLUE_TASKS", ",".join(glue_tasks.MNLI_INIT_TASKS))
GLUE_DIR = notebook_input("GLUE_DIR")
MODELS = notebook_input("HF_MODELS", "bert-base-uncased,roberta-base")
OVERWRITE = cli.overwrite_allowed()
RESUME = cli.resume_asked()
EXPLICIT = [key for key in env_overrides() if key.startswith("finetune.")]  # kept over the recipe
MNLI_MODEL_DIR = notebook_input("MNLI_MODEL_DIR")
precision = runtime.Precision.choose(params.train.device, params.train.dtype)

bases = [glue_models.hf_source(spec) for spec in MODELS.split(",") if spec.strip()]
if MNLI_MODEL_DIR and len(bases) != 1:
    raise ValueError(f"MNLI_MODEL_DIR names one model's MNLI folder, but HF_MODELS lists {len(bases)} models")
sources = [glue_models.from_mnli_source(base, finetune.output_dir, MNLI_MODEL_DIR) for base in bases]
for source in sources:
    print(f"{source.label}: starting from {source.path}")

# %%
runs = []
for source in sources:
    runs += glue_utils.run_glue(source, TASKS, finetune, glue_dir=GLUE_DIR or None, precision=precision,
                                overwrite=OVERWRITE, resume=RESUME, recipe="auto", explicit=EXPLICIT)

# %%
print(glue_utils.summarize(runs).to_string(index=False))
