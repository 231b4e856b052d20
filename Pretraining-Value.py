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
# # 5. Does pretraining pay?
#
# The point of pretraining your own encoder is that it beats the same encoder trained from
# scratch on the task. This notebook measures that at small scale: it pretrains the preset,
# keeps a model at growing step counts, and at each one
#
# * fine-tunes on the demo task (movie-review sentiment) with several seeds -- step 0 is the
#   **control**, the same architecture from fresh random weights;
# * fits a **linear probe** on the frozen encoder's pooled features: if the probe improves but
#   fine-tuning does not, the features are there and fine-tuning fails to use them;
# * asks the demo task as a **cloze**, "<text> It was [MASK].", and reads " great" or " terrible"
#   from the snapshot's own MLM head with no training (`zero-shot-prompt`; a random model is at chance);
# * measures the MLM perplexity against the unigram figure, and the hidden states' norm, spread
#   and mutual cosine similarity per layer (collapse / anisotropy).
#
# Everything runs through `pretraining_value.py`, which is also the command-line version
# (`python pretraining_value.py --help`). Settings come from the environment:
#
# | variable | meaning | default |
# |---|---|---|
# | `DITBERT_PRESET`, `DITBERT_SET` | preset and overrides, e.g. `train.threads=1` | `tiny`, none |
# | `VALUE_STEPS` | snapshot step counts (0 = the random-init control) | `0,700,1400,2800` |
# | `VALUE_SEEDS` | fine-tuning seeds | `1,2,3` |
# | `VALUE_NAME` | experiment name: `runs/value/<name>/`, run labels `<name>-step<k>`, `<name>-random-init` | `notebook` |
# | `VALUE_GLUE` | `1` = also RTE, MRPC, STS-B, CoLA, SST-2 from `GLUE_DIR` | `0` |
# | `VALUE_FINETUNE` | `0` = probes and diagnostics only (fast) | `1` |
#
# With the defaults the snapshots lie on `tiny`'s own 2800-step schedule (about 25 minutes on two
# cores, fine-tuning included). What it measured, on the demo task and on the small GLUE tasks, up to
# the two-hour recipe that leads its twin on the mean of the five, is in docs/pretraining-value.md,
# with the command of every run; the README gives the two-hour one. Fine-tuning runs on
# `train.device` in `train.dtype`, as pretraining does.
#
# `DITBERT_SET=model.position=learned` swaps `tiny`'s ALiBi for BERT's position table: its MLM
# perplexity then stalls for a long plateau (docs/pretraining-value.md, "Why the perplexity stalled").

# %%
import pandas as pd
import torch

import cli
import glue_models
import pretraining_value as pv
from params import apply_override, notebook_input, params_from_env

cli.notebook_arguments("Pretraining-Value.py", settings="every section: the preset is pretrained, probed and fine-tuned")
params = params_from_env()
apply_override(params, "finetune.seeds", notebook_input("VALUE_SEEDS", "1,2,3"))
if params.train.threads:
    torch.set_num_threads(params.train.threads)
glue = notebook_input("VALUE_GLUE", "0") == "1"
exp = pv.Experiment(
    name=notebook_input("VALUE_NAME", "notebook"),
    steps=pv.parse_steps(notebook_input("VALUE_STEPS", "0,700,1400,2800")),
    tasks=["demo"] + (list(pv.SMALL_GLUE) if glue else []),
    finetune=notebook_input("VALUE_FINETUNE", "1") == "1",
    glue_dir=notebook_input("GLUE_DIR", "../shared/glue_data") if glue else None,
)
print(f"preset {params.preset}: {params.model.n_layers} x {params.model.d_model}, vocab {params.model.vocab_size}, "
      f"seq_len {params.model.seq_len}, pretraining lr {params.train.lr}, mask {params.train.mask_prob}")
print(f"fine-tuning: pooling {params.finetune.pooling}, lr {params.finetune.lr}, {params.finetune.epochs} epochs, "
      f"seeds {params.finetune.seeds}; snapshots at steps {exp.steps}; outputs in {exp.folder}/")

# %% [markdown]
# ## The curve
#
# Pretraining, probing and fine-tuning every snapshot. Snapshots and finished fine-tuning runs
# already on disk are reused, so re-running this cell after a change of plot costs nothing.

# %%
results = pv.run_experiment(params, exp)
summary = pv.summarize(results)
pv.plot_curve(summary);

# %% [markdown]
# Mean and standard deviation over seeds (probes are deterministic: one row, std empty).
# `val_ppl` is the masked-LM perplexity on held-out Wikipedia, `unigram_ppl` what guessing
# each masked token by its frequency alone scores: a model that does not beat it clearly
# has not learned to use context yet.

# %%
main = summary[summary["method"].isin(["finetune", "probe-mean", "probe-cls", "zero-shot-prompt"])]
print(main.round(2).to_string(index=False))

# %% [markdown]
# ## Where the features are: a probe on every layer
#
# The same linear probe on the mean-pooled output of each layer. Pretraining that helps shows up
# as probe accuracy rising with the step count, most in the upper layers.

# %%
layers = summary[summary["method"].str.startswith("probe-") & ~summary["method"].isin(["probe-cls"])]
print(layers.pivot_table(index="method", columns="step", values="mean").round(1).to_string())

# %% [markdown]
# ## Hidden states per layer
#
# `norm_mean` / `norm_std`: the size of token vectors and how much it varies; `dim_std`: the
# width of the cloud of token vectors; `mean_cosine`: the average cosine similarity between two
# tokens' vectors. A value near 1 means every token looks alike (collapse, or one common
# direction dominating), which leaves a classifier little to work with.

# %%
diagnostics = pd.read_csv(exp.folder / "diagnostics.csv")
print(diagnostics.pivot_table(index="layer", columns="step", values=["norm_mean", "mean_cosine"], sort=False)
      .round(3).to_string())

# %% [markdown]
# ## Fine-tuning per layer
#
# How strongly the task's gradient reaches each layer at the start of fine-tuning (a fresh head,
# averaged over a few batches), and how far fine-tuning moved each layer by its best epoch,
# relative to the layer's size: the effective per-layer learning rate. Control (step 0) beside
# the last snapshot.

# %%
first, last = exp.steps[0], exp.steps[-1]
per_layer = {}
for step in (first, last):
    source = glue_models.ditbert_source(str(pv.snapshot_dir(exp.folder, step)), str(params.tokenizer_path),
                                       pv.run_label(exp.name, step),
                                       random_init=step == 0)
    seed = params.finetune.seeds[0]
    per_layer[f"grad norm, step {step}"] = pv.initial_gradient_norms(source, "demo", params.finetune, seed)
    if exp.finetune:
        per_layer[f"moved, step {step}"] = pv.finetune_movement(source, "demo", params.finetune, seed)
print(pd.DataFrame(per_layer).round(4).to_string())
