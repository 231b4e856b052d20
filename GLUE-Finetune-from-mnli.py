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
# # 4. Fine-tune DitBERT on RTE, MRPC, STS-B and WNLI starting from its MNLI model
#
# RoBERTa reports these four small tasks starting from the model fine-tuned on MNLI rather
# than from the pretrained one. Here each seed starts from the MNLI model that
# `GLUE-Finetune.py` kept for the same seed (`<output>/<label>-seed<seed>/best_mnli/`):
# the encoder is reused as it is, and the head is replaced by a fresh one wherever the
# label count differs from MNLI's three. Runs are labelled `<label>-from-mnli`.
#
# Settings (environment; the full table is `ENVIRONMENT` in `params.py`): `DITBERT_PRESET`,
# `DITBERT_SET`, `GLUE_DIR`, `GLUE_SEEDS`, `GLUE_OUTPUT_DIR`, `DITBERT_OVERWRITE`, `GLUE_RESUME` as in `GLUE-Finetune.py`, and
#
# | variable | meaning | default |
# |---|---|---|
# | `GLUE_TASKS` | tasks to fine-tune | `rte,mrpc,stsb,wnli` (`glue_tasks.MNLI_INIT_TASKS`) |
# | `MODEL_LABEL` | label of the MNLI runs to start from | `ditbert-<preset>` |
# | `MNLI_MODEL_DIR` | an MNLI model folder instead (`{seed}` is replaced by the seed) | the MNLI run's `best_mnli/` |

# %%
import cli
import glue_tasks
import glue_models
import glue_utils
import runtime
from params import notebook_input, params_from_env

cli.notebook_arguments("GLUE-Finetune-from-mnli.py", settings="finetune.*, train.device, train.dtype")
params = params_from_env()
finetune = params.finetune
TASKS = notebook_input("GLUE_TASKS", ",".join(glue_tasks.MNLI_INIT_TASKS))
GLUE_DIR = notebook_input("GLUE_DIR")
LABEL = notebook_input("MODEL_LABEL", f"ditbert-{params.preset}")
MNLI_MODEL_DIR = notebook_input("MNLI_MODEL_DIR")
OVERWRITE = cli.overwrite_allowed()
RESUME = cli.resume_asked()
precision = runtime.Precision.choose(params.train.device, params.train.dtype)

base = glue_models.ModelSource("ditbert", "", LABEL)
source = glue_models.from_mnli_source(base, finetune.output_dir, MNLI_MODEL_DIR)
print(f"{source.label}: starting from {source.path}, tasks {TASKS}, seeds {finetune.seeds}")

# %%
runs = glue_utils.run_glue(source, TASKS, finetune, glue_dir=GLUE_DIR or None, precision=precision,
                          overwrite=OVERWRITE, resume=RESUME)

# %%
print(glue_utils.summarize(runs).to_string(index=False))
