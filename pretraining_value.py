"""Does pretraining pay? Score against pretraining tokens, beside the random-init twin.

    python pretraining_value.py --steps 0,100,300,500 --seeds 1,2,3
    python pretraining_value.py --steps 0,300,1000,3000 --glue --glue-dir ../shared/glue_data
    python pretraining_value.py --set model.position=learned --name learned-positions   # an ablation
    python pretraining_value.py --name lr1e-4 --snapshots-from runs/value/demo --set finetune.lr=1e-4

One command pretrains the preset (``params.py`` plus ``--set`` overrides) and keeps a model
folder at each requested step count, then at each snapshot:

* fine-tunes on the demo task (and with ``--glue`` on RTE, MRPC, STS-B, CoLA and SST-2, the last
  two on a fixed subsample) with every seed, through ``glue_utils.run_glue``. Step 0 is the
  control: the same config with fresh random weights per seed (``random_init``);
* fits a linear probe (logistic regression) on the frozen encoder's pooled features, which
  tells "the features are better" apart from "fine-tuning makes use of them"; with ``--glue``
  also scores STS-B by the cosine of the frozen encoder's two pooled texts (``zero-shot-cosine``);
* asks the demo task (and with ``--glue`` SST-2) as a cloze, "<text> It was [MASK].", and reads
  " great" or " terrible" from the snapshot's own MLM head, with no training (``zero-shot-prompt``);
* measures the MLM perplexity against the unigram figure, and the norm, spread and mutual
  cosine similarity of the hidden states per layer (a collapsed or anisotropic encoder shows
  up as cosine near 1).

Writes under ``--out`` (default ``runs/value/<name>``): ``step-<k>/`` model folders,
``results.csv`` (one row per step, task, method and seed), ``summary.csv`` (mean, std, n),
``diagnostics.csv`` (per step and layer) and ``curve.png``. With ``--snapshots-from`` the snapshots of
an earlier experiment are fine-tuned and probed again, under other fine-tuning settings, and
nothing is pretrained. Fine-tuning runs go to
``<out>/glue-outputs/<name>-step<k>-seed<s>/`` (``<name>-random-init-seed<s>/`` for step 0) unless
``finetune.output_dir`` is set.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

import checkpoints
import corpus
import fileio
import glue_models
import glue_results
import glue_runs
import glue_tasks
import glue_utils
import model_defs
import pretrain_data
import runtime
import tokenization
import train_model
from params import (END_ID, MASK_ID, PAD_ID, POOLINGS, START_ID, Params, apply_override, env_overrides, get_params,
                    notebook_input, parse_overrides)

RESULT_COLUMNS = ["experiment", "step", "tokens_seen", "pretrain_s", "val_ppl", "unigram_ppl",
                  "task", "method", "init", "seed", "score"]
SMALL_GLUE = ("rte", "mrpc", "stsb", "cola", "sst2")
SUBSAMPLED = ("cola", "sst2")  # the two large training sets, cut to a fixed subsample
PROBE_L2 = (1e-3, 1e-2, 1e-1)


# --------------------------------------------------------------------------- pretraining snapshots


def parse_steps(text: str) -> list[int]:
    """'0, 100,300' -> [0, 100, 300]: sorted, unique, non-negative."""
    steps = sorted({int(s) for s in str(text).replace(";", ",").split(",") if s.strip()})
    if not steps or steps[0] < 0:
        raise ValueError(f"snapshot steps must be non-negative integers, got {text!r}")
    return steps


def snapshot_dir(out_dir: str | Path, step: int) -> Path:
    return Path(out_dir) / f"step-{step:06d}"


def pretrain_snapshots(params: Params, steps: list[int], out_dir: str | Path, show_progress: bool = False) -> list[dict]:
    """Pretrain once up to max(steps), keeping a model folder at each step count.

    The run goes through ``train_model.train`` with ``stop_at`` and ``resume``, so the
    snapshots lie on one learning-rate schedule (the preset's ``train.steps``, raised to the
    last snapshot if shorter) and a snapshot is the same model a single uninterrupted run
    passes through. Step 0 is the initialisation ``train`` starts from. Existing snapshot
    folders are reused if they were made with this model config and tokenizer. Returns one
    dict per step: step, model_dir, tokens_seen, pretrain_s.
    """
    params = copy.deepcopy(params)
    params.train.steps = max(params.train.steps, max(steps))
    params.train.out_dir = str(Path(out_dir) / "pretrain")
    seq_tokens = params.train.batch_size * params.model.max_positions
    snapshots = []
    for step in steps:
        folder = snapshot_dir(out_dir, step)
        if (folder / "model.safetensors").is_file():
            check_snapshot(folder, params)
        else:
            if step == 0:
                torch.manual_seed(params.train.seed)  # the initialisation train() draws
                model, elapsed = model_defs.DitBertForMLM(params.model), 0.0
            else:
                model, elapsed = pretrained_model(params, step, show_progress)
            extra = {"preset": params.preset, "steps": step, "tokens_seen": step * seq_tokens,
                     "pretrain_s": elapsed, "params": params.to_dict(),
                     "tokenizer_fingerprint": tokenization.tokenizer_fingerprint(params.tokenizer_path)}
            model_defs.save_model(model, folder, extra)
        snapshots.append(snapshot_info(folder, step))
    return snapshots


def pretrained_model(params: Params, step: int, show_progress: bool = False) -> tuple[model_defs.DitBertForMLM, float]:
    """The model the run in ``params.train.out_dir`` reaches at `step`, and its pretraining seconds.

    A checkpoint already at `step` (the run stopped after it, before the snapshot was written) is
    the model itself and is read once; otherwise pretraining resumes from the checkpoint, or starts
    over when the checkpoint lies beyond `step`, and stops there. A checkpoint of another model
    config is an error, not something to train over."""
    ckpt = Path(params.train.out_dir) / "checkpoint.pt"
    state = checkpoints.load_checkpoint(ckpt, params) if ckpt.is_file() else {}
    if state.get("step") != step:
        resume = state.get("step", step) < step  # otherwise start over: no checkpoint, or one past `step`
        summary = train_model.train(params, resume=resume, overwrite=not resume, stop_at=step,
                                    show_progress=show_progress)
        if summary["step"] != step:
            raise RuntimeError(f"pretraining stopped at step {summary['step']}, not {step}: {summary}")
        state = checkpoints.load_checkpoint(ckpt, params)
    return model_from_state(state, params), round(state["elapsed_s"], 1)


def snapshot_info(folder: Path, step: int) -> dict:
    """What run_experiment needs of a saved snapshot: step, model_dir, tokens_seen, pretrain_s."""
    info = json.loads((folder / "config.json").read_text())
    return {"step": step, "model_dir": str(folder), "tokens_seen": info["tokens_seen"], "pretrain_s": info["pretrain_s"]}


def existing_snapshots(source_dir: str | Path, steps: list[int], params: Params) -> list[dict]:
    """The snapshots another experiment pretrained (its output folder), for trying a fine-tuning
    setting on the very same models without pretraining again. Each must exist and have been
    made with this model config and tokenizer; otherwise the error names what differs."""
    if not params.tokenizer_path.is_file():
        raise FileNotFoundError(f"tokenizer {params.tokenizer_path} does not exist; the snapshots need the one "
                                "they were pretrained with (set train.tokenizer)")
    snapshots = []
    for step in steps:
        folder = snapshot_dir(source_dir, step)
        if not (folder / "model.safetensors").is_file():
            raise FileNotFoundError(f"{source_dir} holds no snapshot of step {step} ({folder}); "
                                    "run the experiment that pretrains it first")
        check_snapshot(folder, params)
        snapshots.append(snapshot_info(folder, step))
    return snapshots


def check_snapshot(folder: Path, params: Params) -> None:
    """Refuse a saved snapshot made with another model config or tokenizer than `params` name: its
    scores would be put beside the wrong settings. The error names the settings that differ."""
    made_with = json.loads((folder / "config.json").read_text()).get("params", {})
    differ = sorted(f"model.{k}" for k, v in dataclasses.asdict(params.model).items()
                    if made_with.get("model", {}).get(k) != v)
    if Path(made_with.get("train", {}).get("tokenizer", "")).resolve() != params.tokenizer_path.resolve():
        differ.append("train.tokenizer")
    if differ:
        raise ValueError(f"the snapshot {folder} was made with other settings ({', '.join(differ)}); "
                         "pass the --set values of the experiment that made it")


def model_from_state(state: dict, params: Params) -> model_defs.DitBertForMLM:
    """The model of a training checkpoint read by ``checkpoints.load_checkpoint`` (which checks the config)."""
    model = model_defs.DitBertForMLM(params.model)
    model.load_state_dict(state["model"])
    return model


def mlm_perplexity(model: model_defs.DitBertForMLM, params: Params) -> tuple[float, float]:
    """(validation perplexity, unigram perplexity) on pretraining's fixed validation masks: how far
    the model's predictions are from guessing each masked token by its frequency alone."""
    _, val_batch, counts = pretrain_data.prepare_data(params)
    ppl = train_model.validate(model, val_batch, params, runtime.Precision.choose("cpu", "fp32"))
    return ppl, train_model.unigram_perplexity(counts, val_batch[1])


# --------------------------------------------------------------------------- features of the frozen encoder


def layer_names(n_layers: int) -> list[str]:
    return ["embeddings"] + [f"block{i}" for i in range(n_layers)] + ["final"]


@torch.no_grad()
def hidden_states(encoder: model_defs.DitBertEncoder, input_ids, attention_mask) -> list[torch.Tensor]:
    """The encoder's representation after the embedding LayerNorm, after each block and after the
    final LayerNorm (what a classifier head sees), captured with forward hooks: (B, T, D) each."""
    captured = []
    modules = [encoder.ln_emb, *encoder.blocks, encoder.ln_final]
    hooks = [m.register_forward_hook(lambda _m, _i, out: captured.append(out)) for m in modules]
    try:
        encoder.eval()
        encoder(input_ids, attention_mask)
    finally:
        for h in hooks:
            h.remove()
    return captured


@torch.no_grad()
def encode_task(model_dir: str | Path, tokenizer: str | Path, task_name: str, params: Params,
                max_examples: int = 0, data_dir: str | Path = "data", glue_dir=None):
    """Frozen-encoder features of a task's splits: {split: (pooled, labels, token_sample)}.

    pooled maps ``"<layer>/<pooling>"`` to an (N, D) array for every layer and both poolings;
    token_sample holds about 4096 token vectors per layer (pads excluded, spread over all
    sentence lengths) for the representation statistics. Texts are encoded as fine-tuning encodes them.
    """
    task = glue_tasks.get_task(task_name, data_dir)
    splits, _ = glue_tasks.load_task(task, glue_dir)
    source = glue_models.ditbert_source(str(model_dir), str(tokenizer), label="probe")
    loaded = glue_models.load_for_task(source, task, params.finetune, seed=0)
    encoder = loaded.model.encoder
    names = layer_names(encoder.cfg.n_layers)
    out = {}
    for split in ("train", task.eval_splits[0]):
        enc = glue_utils.encode_split(loaded, glue_tasks.subsample(splits[split], max_examples))
        lengths = [len(x) for x in enc["input_ids"]]
        stride = max(1, sum(lengths) // 4096)  # every stride-th token, so all lengths are sampled
        pooled = {f"{n}/{p}": np.zeros((len(lengths), encoder.cfg.d_model), np.float32)
                  for n in names for p in POOLINGS}
        tokens = [[] for _ in names]
        for idx in glue_utils.eval_batches(lengths, 64):
            batch = glue_utils.collate(enc, idx, loaded.pad_id, task.is_regression)
            states = hidden_states(encoder, batch["input_ids"], batch["attention_mask"])
            real = batch["attention_mask"].bool()
            for name, h, bucket in zip(names, states, tokens):
                for p in POOLINGS:
                    pooled[f"{name}/{p}"][idx] = model_defs.pool_hidden(h, batch["attention_mask"], p).numpy()
                bucket.append(h[real][::stride].clone())
        token_sample = {n: torch.cat(t)[:4096].numpy() for n, t in zip(names, tokens)}
        out[split] = (pooled, np.asarray(enc["labels"]), token_sample)
    return out


@torch.no_grad()
def zero_shot_similarity(model_dir: str | Path, tokenizer: str | Path, params: Params, glue_dir,
                         data_dir: str | Path = "data") -> float:
    """STS-B validation score (x100, mean of Pearson and Spearman) of the two sentences' cosine as
    the similarity head computes it (`glue_heads.SimilarityHead.features`), encoded as
    fine-tuning encodes the pair, with no training: what the frozen encoder already knows about
    how alike two texts are -- the pair tasks' counterpart of the linear probe, and where the
    similarity head starts. Lexical overlap alone scores well here."""
    task = glue_tasks.get_task("stsb", data_dir)
    splits, _ = glue_tasks.load_task(task, glue_dir)
    source = glue_models.ditbert_source(str(model_dir), str(tokenizer), label="probe")
    ft = dataclasses.replace(params.finetune, similarity_head=True)  # a fresh one outputs 1 * cosine + 0
    loaded = glue_models.load_for_task(source, task, ft, seed=0)
    enc = glue_utils.encode_split(loaded, splits[task.eval_splits[0]])
    cosine = glue_utils.predict(loaded, enc, ft.batch_size * 2, regression=True).squeeze(-1)
    metrics = glue_tasks.compute_metrics(task, cosine, enc["labels"])
    return 100 * (metrics["pearson"] + metrics["spearman"]) / 2


# The sentiment tasks asked as "<text> It was [MASK]." and their label words, in label order (after
# LM-BFF's, Gao et al., 2021), spelt with the space DitBERT's tokenizer gives a word inside a sentence.
CLOZE = (" It was", ".")  # the text before the [MASK] and after it
LABEL_WORDS = {"demo": (" terrible", " great"), "sst2": (" terrible", " great")}


@torch.no_grad()
def zero_shot_prompt(model_dir: str | Path, tokenizer: str | Path, task_name: str, params: Params, glue_dir=None,
                     data_dir: str | Path = "data") -> float | None:
    """Validation accuracy (x100) of a sentiment task asked as the cloze and read from the snapshot's
    own MLM logits for the label words at the [MASK], with no training: what pretraining taught the
    model to say about the task, where a random model is at chance. None when a label word is not
    one token of the tokenizer (a small one may not have it)."""
    tok = tokenization.load_tokenizer(tokenizer)
    words = [tok.encode(word, add_special_tokens=False).ids for word in LABEL_WORDS[task_name]]
    if any(len(w) != 1 for w in words):
        return None
    task = glue_tasks.get_task(task_name, data_dir)
    split = glue_tasks.load_task(task, glue_dir)[0][task.eval_splits[0]]
    model = model_defs.load_model(model_dir).eval()
    before = tok.encode(CLOZE[0], add_special_tokens=False).ids
    after = [tok.token_to_id(char) for char in CLOZE[1]]  # spelt: encoded, it would get a space before it
    budget = min(params.finetune.max_len, model.cfg.max_positions) - 3 - len(before) - len(after)
    texts = tok.encode_batch(list(split["text_a"]), add_special_tokens=False)
    enc = {"input_ids": [[START_ID, *t.ids[:budget], *before, MASK_ID, *after, END_ID] for t in texts],
           "labels": list(split["label"])}
    right = 0
    for idx in glue_utils.eval_batches([len(x) for x in enc["input_ids"]], params.finetune.batch_size * 2):
        batch = glue_utils.collate(enc, idx, PAD_ID, regression=False)
        ids = batch["input_ids"]
        scores = model.mlm_logits(ids, ids.eq(MASK_ID), batch["attention_mask"])[:, [w[0] for w in words]]
        right += int((scores.argmax(-1) == batch["labels"]).sum())
    return 100 * right / len(enc["input_ids"])


# --------------------------------------------------------------------------- linear probe


def fit_logistic(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float, max_iter: int = 100):
    """Multinomial logistic regression by full-batch L-BFGS: (weights, bias) as tensors."""
    x_t, y_t = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
    w = torch.zeros(x.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x_t @ w + b, y_t) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def probe_accuracy(train_x, train_y, eval_x, eval_y, l2_grid=PROBE_L2, seed: int = 0) -> dict:
    """Accuracy of a linear probe on frozen features.

    Features are standardised with the training statistics; the L2 strength is chosen on a
    fifth of the training set held out, then the probe is refitted on all of it. The grid
    keeps the comparison fair between checkpoints whose features differ in scale and rank.
    """
    train_x, eval_x = np.asarray(train_x, np.float64), np.asarray(eval_x, np.float64)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, eval_x = (train_x - mean) / std, (eval_x - mean) / std
    train_y, eval_y = np.asarray(train_y).astype(int), np.asarray(eval_y).astype(int)
    n_classes = int(max(train_y.max(), eval_y.max())) + 1
    order = np.random.default_rng(seed).permutation(len(train_y))
    cut = len(order) // 5
    held, fit = order[:cut], order[cut:]

    def accuracy(x, y, l2, fit_rows=None):
        rows = slice(None) if fit_rows is None else fit_rows
        w, b = fit_logistic(train_x[rows], train_y[rows], n_classes, l2)
        pred = (torch.as_tensor(x, dtype=torch.float32) @ w + b).argmax(-1).numpy()
        return float((pred == y).mean())

    scores = {l2: accuracy(train_x[held], train_y[held], l2, fit) for l2 in l2_grid}
    best_l2 = max(scores, key=lambda k: (scores[k], k))
    return {"accuracy": accuracy(eval_x, eval_y, best_l2), "l2": best_l2, "heldout_accuracy": scores[best_l2]}


# --------------------------------------------------------------------------- diagnostics


def representation_stats(tokens: np.ndarray, max_tokens: int = 4096) -> dict:
    """Norm and spread of token vectors (N, D), and their mean pairwise cosine similarity.

    mean_cosine near 1 means every token looks alike (collapse or a dominant common
    direction: anisotropy); near 0, directions are spread out. dim_std is the std across
    tokens averaged over dimensions: how wide the cloud is, independent of its offset.
    """
    x = np.asarray(tokens, np.float64)[:max_tokens]
    norms = np.linalg.norm(x, axis=1)
    unit = x / np.maximum(norms[:, None], 1e-12)
    n = len(unit)
    total = np.square(unit.sum(0)).sum()  # sum over all pairs i, j of cos(i, j), the diagonal included
    mean_cos = (total - n) / max(n * (n - 1), 1)
    return {"norm_mean": float(norms.mean()), "norm_std": float(norms.std()),
            "dim_std": float(x.std(0).mean()), "mean_cosine": float(mean_cos)}


def parameter_group(name: str) -> str:
    """A classifier parameter name -> its layer: embeddings, block<i>, final_ln or head."""
    parts = name.split(".")
    if parts[0] == "head":
        return "head"
    if parts[1] == "blocks":
        return f"block{parts[2]}"
    return "final_ln" if parts[1] == "ln_final" else "embeddings"


def update_ratios(before: dict, after: dict) -> dict:
    """Per layer, ||after - before|| / ||before|| over its parameters: how far fine-tuning moved
    each layer relative to its size (the effective per-layer learning rate)."""
    diff, size = {}, {}
    for name, w0 in before.items():
        if name not in after or not torch.is_floating_point(w0):
            continue
        group = parameter_group(name)
        diff[group] = diff.get(group, 0.0) + float((after[name].float() - w0.float()).pow(2).sum())
        size[group] = size.get(group, 0.0) + float(w0.float().pow(2).sum())
    return {g: math.sqrt(diff[g]) / max(math.sqrt(size[g]), 1e-12) for g in diff}


def initial_gradient_norms(source: glue_models.ModelSource, task_name: str, ft, seed: int = 1,
                           n_batches: int = 8, data_dir: str | Path = "data", glue_dir=None) -> dict:
    """Per layer, the gradient norm of the task loss at the start of fine-tuning (fresh head),
    averaged over `n_batches` training batches: where the first updates want to go."""
    task = glue_tasks.get_task(task_name, data_dir)
    splits, _ = glue_tasks.load_task(task, glue_dir)
    loaded = glue_models.load_for_task(source, task, ft, seed)
    enc = glue_utils.encode_split(loaded, glue_tasks.subsample(splits["train"], n_batches * ft.batch_size))
    batches = glue_utils.train_batches([len(x) for x in enc["input_ids"]], ft.batch_size, np.random.default_rng(seed))
    model = loaded.model
    model.train()
    sums: dict[str, float] = {}
    for idx in batches[:n_batches]:
        batch = glue_utils.collate(enc, idx, loaded.pad_id, task.is_regression)
        labels = batch.pop("labels")
        loss = glue_utils.task_loss(task, model(**batch), labels)
        model.zero_grad(set_to_none=True)
        loss.backward()
        squares: dict[str, float] = {}
        for name, p in model.named_parameters():
            if p.grad is not None:
                g = parameter_group(name)
                squares[g] = squares.get(g, 0.0) + float(p.grad.pow(2).sum())
        for g, s in squares.items():
            sums[g] = sums.get(g, 0.0) + math.sqrt(s) / min(n_batches, len(batches))
    return sums


def finetune_movement(source: glue_models.ModelSource, task_name: str, ft, seed: int, data_dir="data") -> dict:
    """`update_ratios` between a run's starting weights (rebuilt as the loop built them, same
    seed) and its saved best model, if that run kept one (``finetune.save_best``)."""
    task = glue_tasks.get_task(task_name, data_dir)
    best = glue_runs.best_model_dir(glue_runs.run_dir(ft.output_dir, source.label, seed), task.name)
    if not (best / "model.safetensors").is_file():
        return {}
    from safetensors.torch import load_file

    start = glue_models.load_for_task(source, task, ft, seed).model.state_dict()
    return update_ratios(start, load_file(str(best / "model.safetensors")))


# --------------------------------------------------------------------------- fine-tuning


def task_settings(ft, task: str, subsample_size: int):
    """Fine-tuning settings for one task: the large training sets cut to a fixed subsample
    (``glue_tasks.subsample`` draws the same rows for every model and seed)."""
    ft = copy.deepcopy(ft)
    if task in SUBSAMPLED and subsample_size:
        ft.max_train_examples = subsample_size
    return ft


def final_scores(run_dirs, task: str) -> dict[int, float]:
    """{seed: task score in % at the last epoch}, scored as the aggregated GLUE table scores it."""
    out = {}
    for run in map(Path, run_dirs):
        path = glue_runs.results_path(run, task)
        if not path.is_file():
            continue
        scores = glue_results.epoch_scores(task, glue_results.read_task_csv(path), path)
        task_rows = scores[scores["column"] == task].sort_values("epoch")
        out[glue_runs.run_identity(run)["seed"]] = float(task_rows["value"].iloc[-1])
    return out


def run_label(experiment: str, step: int) -> str:
    """The label of a snapshot's fine-tuning runs in GLUE-Outputs and the aggregated table:
    ``<experiment>-step<k>``, and ``<experiment>-random-init`` for step 0, the control."""
    return f"{experiment}-random-init" if step == 0 else f"{experiment}-step{step}"


def finetune_snapshot(snapshot: dict, experiment: str, tokenizer: str, tasks: list[str], ft,
                      subsample_size: int = 0, glue_dir=None, data_dir="data",
                      precision: runtime.Precision | None = None) -> list[dict]:
    """Fine-tune one snapshot on each task with every seed; step 0 is fine-tuned from fresh
    random weights per seed (the control). One result row per task and seed."""
    control = snapshot["step"] == 0
    label = run_label(experiment, snapshot["step"])
    source = glue_models.ditbert_source(snapshot["model_dir"], tokenizer, label, random_init=control)
    rows = []
    for task in tasks:
        task_ft = task_settings(ft, task, subsample_size)
        todo = [seed for seed in task_ft.seeds if not finished_run(source, task, task_ft, seed)]
        if todo:
            glue_utils.run_glue(source, [task], dataclasses.replace(task_ft, seeds=todo), glue_dir, data_dir, precision,
                                overwrite=True)  # an unfinished run, or one of other settings, is done again
        runs = [glue_runs.run_dir(task_ft.output_dir, source.label, seed) for seed in task_ft.seeds]
        for seed, score in sorted(final_scores(runs, task).items()):
            rows.append({"task": task, "method": "finetune", "init": "random" if control else "pretrained",
                         "seed": seed, "score": score})
    return rows


def finished_run(source: glue_models.ModelSource, task: str, ft, seed: int) -> bool:
    """Whether this run folder already holds every epoch of `task`, fine-tuned to the end with the
    same settings from the same model (`glue_utils.finished_run`): then it is reused, not repeated.
    The training subsample is also left out of the comparison (only CoLA and SST-2 are subsampled)."""
    return glue_utils.finished_run(source, task, ft, seed, ignore=FINISHED_RUN_IGNORES)


FINISHED_RUN_IGNORES = ("seeds", "output_dir", "save_best", "tensorboard", "max_train_examples")


# --------------------------------------------------------------------------- the experiment


@dataclasses.dataclass
class Experiment:
    """What one `run_experiment` call does (the model and training settings are in Params)."""

    name: str = "demo"
    steps: list[int] = dataclasses.field(default_factory=lambda: [0, 100, 300, 500])
    tasks: list[str] = dataclasses.field(default_factory=lambda: ["demo"])
    out_dir: str = ""  # default runs/value/<name>
    subsample: int = 4000  # training examples kept for CoLA and SST-2
    probe_examples: int = 0  # 0 = the whole demo training set
    finetune: bool = True
    glue_dir: str | None = None
    snapshots_from: str = ""  # another experiment's folder: reuse its snapshots instead of pretraining
    data_dir: str = "data"

    @property
    def folder(self) -> Path:
        return Path(self.out_dir or f"runs/value/{self.name}")


def ensure_tokenizer(params: Params, data_dir: str = "data") -> Path:
    """The preset's tokenizer, learned from the pretraining corpus first if it does not exist yet."""
    path = params.tokenizer_path
    if not path.is_file():
        files = corpus.corpus_files(params.data.corpus, params.data.embedded, data_dir)
        tokenization.train_tokenizer(files, params.tokenizer.vocab_size, path, params.tokenizer.min_frequency)
    return path


def probe_and_diagnose(snapshot: dict, params: Params, exp: Experiment) -> tuple[list[dict], list[dict]]:
    """Linear-probe rows (final layer, mean and cls pooling, plus every layer mean-pooled) and
    per-layer representation statistics of one snapshot on the demo task."""
    feats = encode_task(snapshot["model_dir"], params.tokenizer_path, "demo", params, exp.probe_examples,
                        exp.data_dir)
    (train_pooled, train_y, _), (eval_pooled, eval_y, eval_tokens) = feats["train"], feats["validation"]
    rows, diag = [], []
    for key in train_pooled:
        layer, pooling = key.split("/")
        if pooling == "cls" and layer != "final":
            continue
        result = probe_accuracy(train_pooled[key], train_y, eval_pooled[key], eval_y)
        method = f"probe-{pooling}" if layer == "final" else f"probe-{layer}-{pooling}"
        rows.append({"task": "demo", "method": method, "init": "frozen", "seed": 0, "score": 100 * result["accuracy"]})
    for layer, tokens in eval_tokens.items():
        diag.append({"step": snapshot["step"], "layer": layer, **representation_stats(tokens)})
    return rows, diag


def run_experiment(params: Params, exp: Experiment, show_progress: bool = False) -> pd.DataFrame:
    """Pretrain with snapshots, then probe, diagnose and fine-tune each; write results.csv,
    summary.csv, diagnostics.csv and curve.png under `exp.folder`. Returns the results."""
    folder = exp.folder
    folder.mkdir(parents=True, exist_ok=True)
    if exp.snapshots_from:  # checked before ensure_tokenizer, which would train a new, foreign tokenizer
        snapshots = existing_snapshots(exp.snapshots_from, exp.steps, params)
        tokenizer = params.tokenizer_path
    else:
        tokenizer = ensure_tokenizer(params, exp.data_dir)
        snapshots = pretrain_snapshots(params, exp.steps, folder, show_progress)
    precision = runtime.Precision.choose(params.train.device, params.train.dtype)  # fine-tuning's, as pretraining's
    rows, diag_rows = [], []
    for snap in snapshots:
        model = model_defs.load_model(snap["model_dir"])
        val_ppl, unigram_ppl = mlm_perplexity(model, params)
        common = {"experiment": exp.name, "step": snap["step"], "tokens_seen": snap["tokens_seen"],
                  "pretrain_s": snap["pretrain_s"], "val_ppl": val_ppl, "unigram_ppl": unigram_ppl}
        probe_rows, diag = probe_and_diagnose(snap, params, exp)
        task_rows = probe_rows
        for task in ("demo", "sst2") if exp.glue_dir else ("demo",):
            score = zero_shot_prompt(snap["model_dir"], tokenizer, task, params, exp.glue_dir, exp.data_dir)
            if score is None:
                print(f"no zero-shot prompt on {task}: the tokenizer has no single token for one of its label words")
                continue
            task_rows.append({"task": task, "method": "zero-shot-prompt", "init": "frozen", "seed": 0, "score": score})
        if exp.glue_dir:
            score = zero_shot_similarity(snap["model_dir"], tokenizer, params, exp.glue_dir, exp.data_dir)
            task_rows.append({"task": "stsb", "method": "zero-shot-cosine", "init": "frozen", "seed": 0, "score": score})
        if exp.finetune:
            task_rows += finetune_snapshot(snap, exp.name, str(tokenizer), exp.tasks, params.finetune,
                                           exp.subsample, exp.glue_dir, exp.data_dir, precision)
        rows += [{**common, **r} for r in task_rows]
        diag_rows += [{**common, **d} for d in diag]
        write_results(pd.DataFrame(rows, columns=RESULT_COLUMNS), pd.DataFrame(diag_rows), folder)
        print(f"step {snap['step']}: val ppl {val_ppl:.0f} (unigram {unigram_ppl:.0f}); "
              + ", ".join(f"{r['task']} {r['method']} {r['score']:.1f}" for r in task_rows if r["seed"] in (0, 1)))
    results = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    plot_curve(summarize(results), folder / "curve.png")
    return results


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std and count of the score per step, task and method; with two or more GLUE
    tasks also ``glue-small`` (per seed, the mean over those tasks, then over seeds)."""
    frame = results.copy()
    glue = frame[(frame["method"] == "finetune") & frame["task"].isin(SMALL_GLUE)]
    if glue["task"].nunique() >= 2:
        per_seed = glue.groupby([c for c in RESULT_COLUMNS if c not in ("task", "score")], as_index=False)["score"].mean()
        frame = pd.concat([frame, per_seed.assign(task="glue-small")], ignore_index=True)
    keys = ["experiment", "step", "tokens_seen", "pretrain_s", "val_ppl", "unigram_ppl", "task", "method", "init"]
    return (frame.groupby(keys, as_index=False)["score"].agg(mean="mean", std="std", n="count")
            .sort_values(["task", "method", "step"], ignore_index=True))


def write_results(results: pd.DataFrame, diagnostics: pd.DataFrame, folder: Path) -> None:
    fileio.atomic_write_bytes(folder / "results.csv", results.to_csv(index=False).encode())
    fileio.atomic_write_bytes(folder / "summary.csv", summarize(results).to_csv(index=False).encode())
    fileio.atomic_write_bytes(folder / "diagnostics.csv", diagnostics.to_csv(index=False).encode())


def plot_curve(summary: pd.DataFrame, path: str | Path | None = None):
    """Score against pretraining tokens, one panel per task: fine-tuning mean +- std with the
    random-init control as a band, and the frozen linear probes (final layer) as dashed lines."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    shown = summary[summary["method"].isin(["finetune", "probe-mean", "probe-cls"])]
    tasks = list(dict.fromkeys(shown["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        part = shown[shown["task"] == task]
        ft = part[part["method"] == "finetune"]
        control, pre = ft[ft["init"] == "random"], ft[ft["init"] == "pretrained"].sort_values("tokens_seen")
        if len(pre):
            ax.errorbar(pre["tokens_seen"] / 1e6, pre["mean"], yerr=pre["std"].fillna(0), marker="o", capsize=3,
                        label="fine-tuned, pretrained")
        if len(control):
            m, s = control["mean"].iloc[0], np.nan_to_num(control["std"].iloc[0])
            ax.axhspan(m - s, m + s, color="grey", alpha=0.3)
            ax.axhline(m, color="grey", label="fine-tuned, random init")
        for method, style in (("probe-mean", "--"), ("probe-cls", ":")):
            pr = part[part["method"] == method].sort_values("tokens_seen")
            if len(pr):
                ax.plot(pr["tokens_seen"] / 1e6, pr["mean"], style, marker=".", label=f"linear {method}")
        ax.set_title(task)
        ax.set_xlabel("pretraining tokens (millions)")
        ax.set_ylabel("validation score (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig


# --------------------------------------------------------------------------- command line


def parse_args(argv=None) -> tuple[Params, Experiment, argparse.Namespace]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default=None, help="tiny or base (default: $DITBERT_PRESET, else tiny)")
    ap.add_argument("--name", default="demo", help="experiment name: output folder and run labels")
    ap.add_argument("--steps", default="0,100,300,500", help="snapshot step counts; 0 = the random-init control")
    ap.add_argument("--seeds", default="1,2,3", help="fine-tuning seeds")
    ap.add_argument("--glue", action="store_true", help="also fine-tune on RTE, MRPC, STS-B, CoLA, SST-2")
    ap.add_argument("--glue-dir", default=notebook_input("GLUE_DIR", "../shared/glue_data"),
                    help="GLUE data in the original layout (default: $GLUE_DIR, else ../shared/glue_data)")
    ap.add_argument("--subsample", type=int, default=4000, help="CoLA and SST-2 training examples kept")
    ap.add_argument("--probe-only", action="store_true", help="skip fine-tuning: probes and diagnostics only")
    ap.add_argument("--out", default="", help="output folder (default runs/value/<name>)")
    ap.add_argument("--snapshots-from", default="", metavar="DIR",
                    help="fine-tune and probe the snapshots in another experiment's folder instead of "
                         "pretraining: a fine-tuning setting tried on the same models")
    ap.add_argument("--set", nargs="*", default=[], metavar="SECTION.NAME=VALUE", help="any setting of params.py")
    args = ap.parse_args(argv)
    params = get_params(args.preset, env_overrides() | parse_overrides(args.set))
    apply_override(params, "finetune.seeds", args.seeds)
    exp = Experiment(name=args.name, steps=parse_steps(args.steps), out_dir=args.out, subsample=args.subsample,
                     tasks=["demo"] + (list(SMALL_GLUE) if args.glue else []), finetune=not args.probe_only,
                     glue_dir=args.glue_dir if args.glue else None, snapshots_from=args.snapshots_from)
    if not any(pair.startswith("finetune.output_dir=") for pair in args.set):
        params.finetune.output_dir = str(exp.folder / "glue-outputs")  # kept out of the main GLUE table
    return params, exp, args


def main(argv=None) -> int:
    params, exp, _ = parse_args(argv)
    if params.train.threads:
        torch.set_num_threads(params.train.threads)
    started = time.time()
    try:
        run_experiment(params, exp, show_progress=True)
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = pd.read_csv(exp.folder / "summary.csv")
    print(summary.to_string(index=False))
    print(f"outputs in {exp.folder} ({(time.time() - started) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
