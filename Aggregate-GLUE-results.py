# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
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
# # Aggregate GLUE results
#
# Reads every `results_<task>.csv` that the fine-tuning notebooks wrote under `GLUE-Outputs/`
# (one folder per run, `<model>-seed<seed>/`, with a `run_info.json`), and builds the table that
# compares DitBERT with the baselines: `GLUE-aggregated-results.csv` (models as rows, and the trivial
# baseline's row), the same table in markdown beside it, the significance of the differences between each
# model and its random-init twin (`GLUE-significance.csv` and `.md` beside it) and two plots in
# `GLUE-Outputs/plots/`.
#
# Settings come from the environment (the full table is `ENVIRONMENT` in `params.py`), with the
# defaults below:
#
# - `GLUE_OUTPUT_DIR` (`finetune.output_dir`): the folder of run folders (`GLUE-Outputs`);
# - `GLUE_AGGREGATED_CSV`: the table to write (`GLUE-aggregated-results.csv`; the markdown goes
#   beside it as `.md`, the significance as `GLUE-significance.csv` and `.md`);
# - `GLUE_PLOTS_DIR`: where the plots go (`<GLUE_OUTPUT_DIR>/plots`);
# - `GLUE_DIR`: a GLUE download, for the training labels of the trivial baseline (without it, the label
#   counts the runs recorded in `run_info.json`);
# - `GLUE_COMPARE`: more pairs of rows to compare, `a:b;c:d` (none by default).

# %%
from pathlib import Path

from IPython.display import Image, display

import cli
import glue_results
from params import notebook_input, params_from_env

cli.notebook_arguments("Aggregate-GLUE-results.py")
OUTPUT_DIR = Path(params_from_env().finetune.output_dir)
AGGREGATED_CSV = Path(notebook_input("GLUE_AGGREGATED_CSV", "GLUE-aggregated-results.csv"))
PLOTS_DIR = Path(notebook_input("GLUE_PLOTS_DIR", str(OUTPUT_DIR / "plots")))
GLUE_DIR = notebook_input("GLUE_DIR", "").strip() or None
COMPARE = notebook_input("GLUE_COMPARE", "")

# %% [markdown]
# ## Conventions
#
# Published GLUE numbers are not all computed the same way, so the table carries two conventions
# side by side and every column says which one it holds:
#
# - **`<task>_best`, the original DitBERT convention**: in each run the epoch whose mean of the
#   task's validation metrics is highest among those that did not collapse, then the best of the
#   seeds. Optimistic, like most single-number dev-set results in papers.
# - **`<task>_final_mean` ± `<task>_final_std`**: the last epoch of each run, mean and sample
#   standard deviation over the `<task>_seeds` seeds. No selection on the validation set.
#
# Scores are percentages. CoLA: Matthews correlation; STS-B: mean of Pearson and Spearman; MRPC
# and QQP: mean of accuracy and F1; MNLI: matched (`mnli_m`) and mismatched (`mnli_mm`)
# accuracy; the rest accuracy. **GLUE** is the mean of the eight task scores without WNLI, MNLI
# counted once as the mean of matched and mismatched. A model missing one of the eight has no GLUE
# score; `GLUE_partial_*` averages the tasks it has and `GLUE_tasks` says how many. Missing tasks
# are empty, never zero. Custom tasks such as `demo` get their own columns and are not in GLUE.
#
# Runs initialised from the MNLI model (`init` = `mnli` in `run_info.json`) form their own row,
# `<model>-from-mnli`; the row `<model>+mnli-init` takes RTE, MRPC, STS-B and WNLI from those
# runs and every other task from the model's own runs, as RoBERTa reports those tasks.
#
# Seeds are averaged only when they come from one model with the same settings (the fingerprint each
# task's entry in `run_info.json` records): a label whose run folders hold runs of several models (a
# new model fine-tuned beside the seeds of an earlier one) gets a row per model, `<label>@<fingerprint>`,
# and a warning and a note under the table name each row's run folders. Runs recorded before
# fingerprints are told apart by the model facts and settings they recorded.
#
# Only finished runs are aggregated: a task that `run_info.json` marks `running` or `interrupted`
# is left out, and named under the table. The `recipe` column says which fine-tuning settings
# each model's runs used (`preset`, or the authors' `bert` / `roberta` recipe); `collapsed` names
# the seeds whose final score is NaN (not in the mean, still counted in `<task>_seeds`) or whose
# final predictions are all one class or value (or all but fewer than 1 % of them). The best convention
# skips collapsed epochs, and `best_skipped` names the ones it skipped. `train_examples` is the cap on
# training examples per task (`finetune.max_train_examples`) and `dtype` the fine-tuning precision.
#
# **The trivial baseline.** The row `trivial-majority` (recipe `baseline`) answers the majority class of
# each task's training labels for every dev example, scored with the task's metrics (STS-B: a constant,
# whose correlation is undefined, scored 0). In the markdown table a score whose mean minus its std is not
# above that row's is marked `≈`, and `↓` where even the mean plus the std is below it.
#
# **Significance.** Each model beside its random-init twin (`<name>` or `<name>-step<k>` against
# `<name>-random-init`), and the pairs of `GLUE_COMPARE`: the difference of the final-epoch means per
# task and on the GLUE tasks' mean, with Welch's 95 % t interval over seeds and its p.

# %%
results = glue_results.collect(OUTPUT_DIR, glue_dir=GLUE_DIR, compare=COMPARE)
written = glue_results.write_report(results, AGGREGATED_CSV, PLOTS_DIR)
print(glue_results.markdown_table(results.table, results.unfinished, results.apart))
print(glue_results.significance_markdown(results.significance))
for name, path in written.items():
    print(f"wrote {name}: {path}")

# %% [markdown]
# Every score re-computed from the runs' prediction files
# (`predictions/<task>_<split>_<final|best>.tsv`), against the results files: the largest
# difference should be rounding only.

# %%
rescored = glue_results.rescore(OUTPUT_DIR)
print(f"re-scored {len(rescored)} scores of {rescored['run'].nunique()} runs from their predictions; "
      f"largest difference {rescored['difference'].max() if len(rescored) else 0:.2g}")

# %% [markdown]
# The full table as written to the CSV (rounded there to two decimals):

# %%
display(results.table)

# %% [markdown]
# ## Plots
#
# Per-task scores at the final epoch (bars: mean over seeds, whiskers: standard deviation), and
# the fine-tuning curves: validation task score after each epoch, mean over seeds with a band of
# one standard deviation. The curves show whether the best epoch is a peak or where training
# settles.

# %%
display(Image(filename=str(written["task_scores"])))

# %%
display(Image(filename=str(written["curves"])))
