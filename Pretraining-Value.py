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
# | `VALUE_NAME` | experiment name: `runs/value/<name>/`, run labels `value-<name>-step<k>` | `notebook` |
# | `VALUE_GLUE` | `1` = also RTE, MRPC, STS-B, CoLA, SST-2 from `GLUE_DIR` | `0` |
# | `VALUE_FINETUNE` | `0` = probes and diagnostics only (fast) | `1` |
#
# With the defaults the snapshots lie on `tiny`'s own 2800-step schedule (about 25 minutes on two
# cores, fine-tuning included). Measured so far on the demo task (README, "Does pretraining pay?"):
# the pretrained 2 x 256 encoder beats its twin (70.7 %) by 1.4, 1.8 and 3.6 points after 4, 8
# and 17M pretraining tokens (vocabulary 8192); with the 4096 vocabulary, 1.5x faster per token,
# 11M tokens in 16 minutes lead it by 1.7-2.2 points. On the small GLUE tasks (2000 training examples
# each) an 8000-step schedule (33M tokens, about 95 minutes with all fine-tuning) leads the twin
# on four of five tasks and by 2.3 points on their mean; with the 4096 vocabulary 10000 and 13000 steps
# (42M and 54M tokens, 73 and 96 minutes in all) lead by 2.7 and 2.8, STS-B the one task behind.
# Since the head reads a pair as two pooled texts (`finetune.pair_features`) STS-B rose from 14 to 36,
# and the twin's from 17 to 62: with a head that can compare them, similarity on 2000 pairs is mostly
# lexical overlap, which random token vectors keep and this pretraining blurs (mean of the five -2.2).
# Scored by the texts' cosine instead (`finetune.similarity_head`: the cosine of the final and the
# embedding layer, its scale fitted before fine-tuning) STS-B reaches 72 and the twin's 75, and the
# 13000-step model leads on CoLA, SST-2, RTE and the demo and on the mean of the five by 2.4. With `--glue`
# the `zero-shot-cosine` rows score STS-B by that cosine with no training. Asked as a cloze, the 13000-step
# model sorts 65 % of the demo's sentences by sentiment before any fine-tuning (its twin 51 %), but fine-tuning
# through the MLM head (`finetune.prompt`) ends 1 point below the pooled head, and ELECTRA
# (`model.generator_layers=1`) in the same two hours ends level with the twin. Pretrained with bf16 autocast
# (`train.dtype=bf16`, 52 minutes) and fine-tuned with the texts of a similarity pair encoded apart and
# those of an inference pair together (`finetune.pair_encoding=by_task`), the 13000-step model leads its twin
# on the mean of the five by 3.1 points on three seeds and 3.0 on five (the same recipe pretrained in fp32:
# 2.8 and 2.9). The commands are in docs/pretraining-value.md; the README gives the two-hour one.
#
# `DITBERT_SET=model.position=learned` swaps `tiny`'s ALiBi for BERT's position table: its MLM
# perplexity then stalls near 600 for about 2000 steps.

# %%
import os

import pandas as pd
import torch

import pretraining_value as pv
from params import apply_override, params_from_env

params = params_from_env()
apply_override(params, "finetune.seeds", os.environ.get("VALUE_SEEDS", "1,2,3"))
if params.train.threads:
    torch.set_num_threads(params.train.threads)
glue = os.environ.get("VALUE_GLUE", "0") == "1"
exp = pv.Experiment(
    name=os.environ.get("VALUE_NAME", "notebook"),
    steps=pv.parse_steps(os.environ.get("VALUE_STEPS", "0,700,1400,2800")),
    tasks=["demo"] + (list(pv.SMALL_GLUE) if glue else []),
    finetune=os.environ.get("VALUE_FINETUNE", "1") == "1",
    glue_dir=os.environ.get("GLUE_DIR", "../shared/glue_data") if glue else None,
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
    label = f"value-{exp.name}-step{step}"
    source = pv.glue_utils.ditbert_source(str(pv.snapshot_dir(exp.folder, step)), str(params.tokenizer_path), label,
                                          random_init=step == 0)
    seed = params.finetune.seeds[0]
    per_layer[f"grad norm, step {step}"] = pv.initial_gradient_norms(source, "demo", params.finetune, seed)
    if exp.finetune:
        per_layer[f"moved, step {step}"] = pv.finetune_movement(source, "demo", params.finetune, seed)
print(pd.DataFrame(per_layer).round(4).to_string())
