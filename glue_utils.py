"""GLUE fine-tuning for DitBERT and Hugging Face models: one training loop, run over tasks and seeds.

Read top to bottom: batching (sort-by-length buckets, shuffled with a seed, padded per batch); the
fine-tuning loop (`finetune_task`), run over tasks x seeds by `run_glue`; and what it writes in a
run folder.

Where a model comes from and how it is loaded for a task, and the baselines' fine-tuning recipes,
are in glue_models; tasks, their files and metrics in glue_tasks; DitBERT's heads and their saving
in glue_heads; the device, mixed precision, optimizer and schedule in runtime (as pretraining uses
them).

What a run writes, under ``<finetune.output_dir>/<model label>-seed<seed>/``:

* ``results_<task>.csv`` -- one row per epoch: ``epoch``, ``train_<metric>``,
  ``validation_<metric>`` (MNLI: ``validation_matched_<metric>`` and
  ``validation_mismatched_<metric>``). Metric names: ``accuracy``, ``f1``, ``mcc``,
  ``pearson``, ``spearman``, as fractions (not percent). Train metrics come from
  the predictions made while training that epoch (dropout on).
* ``run_info.json`` -- the run's label and seed and, per task: its status (``running``,
  ``interrupted``, ``complete``: only a complete task is aggregated), the model it started from
  (init, source, tokenizer, pretraining tokens seen) and that model's fingerprint, the fine-tuning
  settings and the recipe they came from, device and dtype, data sizes, bad rows, the best epoch,
  when it finished and the prediction files; the top level repeats the model facts the tasks share.
* ``best_<task>/`` -- the fine-tuned model of the best epoch (mean of the task's
  validation metrics), as safetensors: DitBERT as ``model.safetensors`` +
  ``config.json`` + ``tokenizer.json``, Hugging Face models via ``save_pretrained``.
* ``predictions/<task>_<split>_<final|best>.tsv`` -- columns ``index``, ``prediction`` (the
  class's name, or the score for a regression), ``label`` (empty on a test split): the
  validation splits at the final and at the best epoch, and every test split whose file is
  present, predicted by the final model and by the best epoch's (the diagnostic set, ``ax_test``,
  by the MNLI model). glue_results re-scores runs from them; glue_submission turns the test
  files into a GLUE server submission.

A folder that already holds a task's results is not fine-tuned into again unless asked
(``overwrite=True``; the notebooks' ``DITBERT_OVERWRITE=1``), which replaces that task's files;
``resume=True`` (``GLUE_RESUME=1``) keeps what finished from the same model with the same settings
and fine-tunes the rest, so a command stopped part-way goes on where it stopped. The
folder's names and paths, run_info.json, the fingerprints and the lock that keeps a second fine-tuning
out of a folder being written are glue_runs'.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import fileio
import glue_runs
import runtime
from glue_models import (PRESET, Loaded, ModelSource, apply_recipe, check_source, load_for_task, logits_of,
                         model_fingerprint, recipe_for)
from glue_heads import fit_similarity_head, similarity_head_of
from glue_tasks import (EXTRA_TEST_TASKS, TASKS, Task, compute_metrics, get_task, label_name, load_task, load_test_splits,
                        main_score, parse_tasks, subsample)
from params import PAIR_ENCODINGS, FinetuneConfig

# --------------------------------------------------------------------------- batching


def encode_split(loaded: Loaded, ds) -> dict:
    """Token ids (and token types) per example, plus labels (0 where the split has none) and the
    examples' ids, as Python lists."""
    cols = ds.to_dict()
    enc = loaded.encode(cols["text_a"], cols.get("text_b"))
    enc["labels"] = cols.get("label", [0] * len(cols["text_a"]))
    enc["idx"] = cols.get("idx", list(range(len(cols["text_a"]))))
    return enc


def train_batches(lengths, batch_size: int, rng: np.random.Generator, bucket: int = 50) -> list[np.ndarray]:
    """Shuffle, sort by length inside windows of `bucket` batches, cut into batches, shuffle the
    batches: each batch holds similar lengths (little padding) and each epoch a new order."""
    lengths = np.asarray(lengths)
    order = rng.permutation(len(lengths))
    window = batch_size * bucket
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def eval_batches(lengths, batch_size: int) -> list[np.ndarray]:
    """Batches in order of length (no randomness is needed to evaluate)."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def collate(enc: dict, idx, pad_id: int, regression: bool) -> dict:
    """Pad the examples `idx` to the longest among them: input_ids with pad_id, token types with 0."""
    lengths = [len(enc["input_ids"][i]) for i in idx]
    T = max(lengths)
    batch = {}
    for key in ("input_ids", "token_type_ids"):
        if key in enc:
            fill = pad_id if key == "input_ids" else 0
            batch[key] = torch.tensor([enc[key][i] + [fill] * (T - len(enc[key][i])) for i in idx])
    batch["attention_mask"] = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()
    labels = [enc["labels"][i] for i in idx]
    batch["labels"] = torch.tensor(labels, dtype=torch.float32 if regression else torch.long)
    return batch


# --------------------------------------------------------------------------- the fine-tuning loop

CPU_FP32 = runtime.Precision(torch.device("cpu"), torch.float32)


def task_loss(task: Task, logits, labels):
    """Mean squared error for a regression task, cross-entropy for classes (in fp32 either way)."""
    if task.is_regression:
        return F.mse_loss(logits.squeeze(-1).float(), labels)
    return F.cross_entropy(logits.float(), labels)


def _predictions(task: Task, logits):
    return logits.squeeze(-1).float() if task.is_regression else logits.argmax(-1)


@dataclass
class Updates:
    """The loop's AdamW (runtime.adamw), its warmup-then-decay schedule and the fp16 loss scaler,
    stepped together once per batch."""

    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    grad_clip: float
    done: int = 0  # optimizer steps taken

    @classmethod
    def build(cls, model: nn.Module, ft: FinetuneConfig, steps_per_epoch: int, precision: runtime.Precision) -> "Updates":
        """Linear warmup over `warmup_epochs`, then linear decay to 0 at the end of the last epoch."""
        optimizer = runtime.adamw(model, ft.lr, ft.weight_decay)
        total = max(1, steps_per_epoch * ft.epochs)
        warmup = min(total - 1, int(round(ft.warmup_epochs * steps_per_epoch)))
        return cls(optimizer, runtime.warmup_decay(optimizer, warmup, total), precision.grad_scaler(), ft.grad_clip)

    def step(self, model: nn.Module, loss: torch.Tensor) -> None:
        """Backward, clip, update: in fp16 the loss is scaled so small gradients survive, and the
        gradients unscaled before clipping; in bf16 and fp32 the scaler does nothing."""
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        self.done += 1


@torch.no_grad()
def predict(loaded: Loaded, enc: dict, batch_size: int, regression: bool, precision: runtime.Precision = CPU_FP32):
    """Model outputs for every example of an encoded split, in the split's order: (N, num_labels)."""
    loaded.model.eval()
    out = [None] * len(enc["input_ids"])
    for idx in eval_batches([len(x) for x in enc["input_ids"]], batch_size):
        batch = {k: v.to(precision.device) for k, v in collate(enc, idx, loaded.pad_id, regression).items() if k != "labels"}
        with precision.autocast():
            logits = logits_of(loaded.model(**batch)).float().cpu()
        for row, i in enumerate(idx):
            out[i] = logits[row]
    return torch.stack(out)


def fit_similarity(loaded: Loaded, enc: dict, batch_size: int, precision: runtime.Precision = CPU_FP32):
    """Fit the similarity head's scale and bias to the training pairs under the frozen model
    (glue_heads.fit_similarity_head); returns (scale, bias)."""
    head = similarity_head_of(loaded.model)
    with torch.no_grad():  # scale 1, bias 0: the model then outputs the cosine itself
        head.scale.fill_(1.0)
        head.bias.fill_(0.0)
    cosine = predict(loaded, enc, batch_size, True, precision).squeeze(-1)
    return fit_similarity_head(head, cosine, enc["labels"])


def train_epoch(loaded: Loaded, task: Task, enc: dict, batches, updates: Updates, precision: runtime.Precision,
                desc: str, curves: runtime.Curves | None = None) -> dict:
    """One pass over the training batches; returns the metrics of the predictions made on the way.
    `curves` (finetune.tensorboard) gets each step's loss and learning rate."""
    loaded.model.train()
    preds, labels = [], []
    bar = tqdm(batches, desc=desc, leave=False, mininterval=2.0)
    for idx in bar:
        batch = {k: v.to(precision.device) for k, v in collate(enc, idx, loaded.pad_id, task.is_regression).items()}
        y = batch.pop("labels")
        with precision.autocast():
            logits = logits_of(loaded.model(**batch))
        loss = task_loss(task, logits, y)
        lr = updates.optimizer.param_groups[0]["lr"]
        updates.step(loaded.model, loss)
        preds.append(_predictions(task, logits.detach()).cpu())
        labels.append(y.cpu())
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        if curves is not None:
            curves.add(updates.done, {"train/loss": loss.item(), "train/lr": lr})
    return compute_metrics(task, torch.cat(preds), torch.cat(labels))


def evaluate(loaded: Loaded, task: Task, encoded: dict, ft: FinetuneConfig, precision: runtime.Precision):
    """(``{<split>_<metric>: value}`` over every evaluation split of the task, {split: predictions})."""
    row, outputs = {}, {}
    for split in task.eval_splits:
        out = predict(loaded, encoded[split], ft.batch_size * 2, task.is_regression, precision)
        outputs[split] = _predictions(task, out)
        metrics = compute_metrics(task, outputs[split], encoded[split]["labels"])
        row.update({f"{split}_{k}": v for k, v in metrics.items()})
    return row, outputs


def check_finetune_settings(ft: FinetuneConfig) -> None:
    """Reject fine-tuning settings that would fail, or silently do nothing, after data and
    model are loaded: the counts and rates the loop divides by or iterates over."""
    problems = [f"finetune.{name}={getattr(ft, name)!r} must be {rule}" for name, ok, rule in [
        ("epochs", ft.epochs >= 1, "at least 1"),
        ("batch_size", ft.batch_size >= 1, "at least 1"),
        ("lr", ft.lr > 0, "positive"),
        ("seeds", len(ft.seeds) >= 1, "at least one seed"),
        ("pair_encoding", ft.pair_encoding in PAIR_ENCODINGS, " or ".join(map(repr, PAIR_ENCODINGS))),
    ] if not ok]  # pooling is checked where the head is described (glue_heads.HeadConfig)
    if problems:
        raise ValueError("bad fine-tuning settings: " + "; ".join(problems))


def uses_similarity_head(model: nn.Module) -> bool:
    """Whether `model` scores pairs by their cosine, with a scale and bias to fit before fine-tuning: the
    repository's classifier or the transformers one (an exported DitBERT) with the similarity head."""
    return similarity_head_of(model) is not None


# --------------------------------------------------------------------------- run folders
# The folder's layout, run_info.json, fingerprints and the lock are glue_runs'; what the loop records is here.


def check_no_results(pairs) -> None:
    """Refuse to fine-tune into run folders that hold results of the same task: `pairs` are (run
    folder, task); every one is checked before any work, and the error names what is there."""
    found = [(run_dir, task, glue_runs.task_outputs(run_dir, task)) for run_dir, task in pairs]
    found = [(run_dir, task, paths) for run_dir, task, paths in found if paths]
    if found:
        listed = "; ".join(f"{paths[0]} ({task.name})" for _, task, paths in found[:5])
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
        raise FileExistsError(
            f"fine-tuning would replace earlier results: {listed}{more}. Set DITBERT_OVERWRITE=1 "
            "(run_glue(..., overwrite=True)) to replace them, or choose another GLUE_OUTPUT_DIR or MODEL_LABEL")


def _model_facts(source: ModelSource, info: dict, precision: runtime.Precision) -> dict:
    """The facts of the model a task starts from, as its run_info.json entry keeps them."""
    facts = {"init": source.init, "kind": source.kind, "model_source": info["source"], "tokenizer": info["tokenizer"],
             "pretrain_tokens_seen": info.get("pretrain_tokens_seen"), "max_len": info["max_len"],
             "device": precision.device.type, "dtype": str(precision.dtype).removeprefix("torch."),
             "torch": torch.__version__}
    return facts | ({"model_config": info["model_config"]} if "model_config" in info else {})


def _task_entry(task: Task, ft: FinetuneConfig, recipe: dict | None, facts: dict, fingerprint: glue_runs.Fingerprint,
                encoded: dict, reports: dict) -> dict:
    """A task's entry in run_info.json as its fine-tuning starts (status ``running``)."""
    return {"status": "running", "epochs_done": 0, "finetune": dataclasses.asdict(ft),
            "recipe": recipe or {"name": PRESET, "label": PRESET},
            "task": {"num_labels": task.num_labels, "label_names": list(task.label_names), "metrics": list(task.metrics)},
            **facts, "model_id": fingerprint.model_id, "fingerprint": fingerprint.record(),
            "train_examples": len(encoded["train"]["input_ids"]),
            **{f"{s}_examples": len(encoded[s]["input_ids"]) for s in task.eval_splits},
            "data": {s: dataclasses.asdict(r) for s, r in reports.items()}}


# --------------------------------------------------------------------------- predictions


def prediction_frame(task: Task, idx, predictions, labels=None) -> pd.DataFrame:
    """``index``, ``prediction`` and ``label`` (empty when unlabelled), written as `label_name` writes them."""
    values = predictions.tolist() if hasattr(predictions, "tolist") else list(predictions)
    frame = pd.DataFrame({"index": list(idx), "prediction": [label_name(task, v) for v in values]})
    frame["label"] = [label_name(task, v) for v in labels] if labels is not None else ""
    return frame


def write_predictions(path: Path, frame: pd.DataFrame) -> Path:
    fileio.atomic_write_bytes(path, frame.to_csv(sep="\t", index=False).encode())
    return path


def load_test_sets(task: Task, glue_dir, max_bad_fraction: float) -> list[tuple[Task, str, object]]:
    """(task, split, dataset) of every test set present that `task`'s model predicts."""
    tasks = [task, *(TASKS[name] for name in EXTRA_TEST_TASKS.get(task.name, ()))]
    return [(t, split, ds) for t in tasks for split, ds in load_test_splits(t, glue_dir, max_bad_fraction).items()]


def predict_test_sets(loaded: Loaded, tests, ft: FinetuneConfig, precision: runtime.Precision) -> dict:
    """{(task name, split): (task, prediction table)} of the model as it is now, on each test set."""
    tables = {}
    for task, split, ds in tests:
        enc = encode_split(loaded, ds)
        out = predict(loaded, enc, ft.batch_size * 2, task.is_regression, precision)
        tables[(task.name, split)] = (task, prediction_frame(task, enc["idx"], _predictions(task, out)))
    return tables


# --------------------------------------------------------------------------- fine-tuning a task


class FinetuneInterrupted(KeyboardInterrupt):
    """Ctrl-C while fine-tuning, after the run folder recorded the task as interrupted."""


@dataclass
class Progress:
    """What the loop keeps across epochs: the results rows, and the best epoch's number, score,
    weights and validation predictions, and the last epoch's."""

    rows: list = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = -math.inf
    best_state: dict | None = None
    best_outputs: dict | None = None
    last_outputs: dict | None = None


def _train_epochs(task: Task, loaded: Loaded, encoded: dict, ft: FinetuneConfig, seed: int,
                  precision: runtime.Precision, run_dir: Path, run_name: str, progress: Progress) -> pd.DataFrame:
    """Every epoch: train, evaluate, write the results so far, keep (and save) the best epoch's model."""
    lengths = [len(x) for x in encoded["train"]["input_ids"]]
    rng = np.random.default_rng(seed)  # batch order of every epoch
    if uses_similarity_head(loaded.model):
        scale, bias = fit_similarity(loaded, encoded["train"], ft.batch_size * 2, precision)
        print(f"{run_name} similarity head fitted: score = {scale:.3f} * cosine + {bias:.3f}")
    updates = Updates.build(loaded.model, ft, math.ceil(len(lengths) / ft.batch_size), precision)
    curves = runtime.Curves(glue_runs.curves_dir(run_dir, task.name), "finetune.tensorboard") if ft.tensorboard else None
    try:
        for epoch in range(1, ft.epochs + 1):
            desc = f"{run_name} epoch {epoch}/{ft.epochs}"
            train = train_epoch(loaded, task, encoded["train"], train_batches(lengths, ft.batch_size, rng), updates,
                                precision, desc, curves)
            scores, outputs = evaluate(loaded, task, encoded, ft, precision)
            row = {"epoch": epoch, **{f"train_{k}": v for k, v in train.items()}, **scores}
            if curves is not None:
                curves.add(updates.done, {f"epoch/{k}": v for k, v in row.items() if k != "epoch"})
            progress.rows.append(row)
            progress.last_outputs = outputs
            print(f"{desc}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch"))
            frame = pd.DataFrame(progress.rows, columns=task.column_names())
            fileio.atomic_write_bytes(glue_runs.results_path(run_dir, task.name), frame.to_csv(index=False).encode())
            if progress.best_state is None or main_score(row, task) > progress.best_score:
                progress.best_epoch, progress.best_score, progress.best_outputs = epoch, main_score(row, task), outputs
                progress.best_state = {k: v.detach().cpu().clone() for k, v in loaded.model.state_dict().items()}
                if ft.save_best:
                    loaded.save(glue_runs.best_model_dir(run_dir, task.name))
    finally:
        if curves is not None:
            curves.close()
    return frame


def _write_all_predictions(task: Task, loaded: Loaded, encoded: dict, tests, ft: FinetuneConfig,
                           precision: runtime.Precision, run_dir: Path, progress: Progress) -> list[str]:
    """The validation predictions of the final and the best epoch, and the test predictions of the
    final model and of the best epoch's (loaded back into `loaded`); returns the files written."""
    written = []
    for which, outputs in (("final", progress.last_outputs), ("best", progress.best_outputs)):
        for split, predictions in outputs.items():
            frame = prediction_frame(task, encoded[split]["idx"], predictions, encoded[split]["labels"])
            written.append(write_predictions(glue_runs.prediction_path(run_dir, task.name, split, which), frame))
    final = predict_test_sets(loaded, tests, ft, precision)
    loaded.model.load_state_dict(progress.best_state)
    best = final if progress.best_epoch == len(progress.rows) else predict_test_sets(loaded, tests, ft, precision)
    for which, tables in (("final", final), ("best", best)):
        for (_, split), (test_task, frame) in tables.items():
            written.append(write_predictions(glue_runs.prediction_path(run_dir, test_task.name, split, which), frame))
    return [p.relative_to(run_dir).as_posix() for p in written]


def _check_trainable(task: Task) -> None:
    if task.label_column is None or "train" not in task.splits:
        raise ValueError(f"task {task.name} has no labels to train on; it is predicted by the MNLI model (run mnli)")


def finetune_task(task: Task, source: ModelSource, ft: FinetuneConfig, seed: int, glue_dir=None, data=None,
                  precision: runtime.Precision | None = None, overwrite: bool = False, recipe: dict | None = None,
                  tests=None) -> pd.DataFrame:
    """Fine-tune `source` on `task` with one seed; write results, predictions, run info and the best model.

    Returns the per-epoch results table (also written as ``results_<task>.csv`` after every
    epoch). `data` may hold the output of `load_task`, and `tests` that of `load_test_sets`, to
    read the files once for many seeds. `precision` is the device and autocast dtype (default:
    runtime.Precision.choose(), "auto"). A run folder holding this task's results is an error
    unless `overwrite`, which replaces them. `recipe` is the record of `apply_recipe`, kept in
    run_info.json with the model's facts and fingerprint. The run folder is locked while the task
    writes it (glue_runs.lock): a run folder another process is fine-tuning into stops this one with
    fileio.FolderBusy, before any work. Ctrl-C records the task as interrupted and raises
    `FinetuneInterrupted`.
    """
    _check_trainable(task)
    check_finetune_settings(ft)
    precision = precision or runtime.Precision.choose()
    source = source.resolved(seed)
    run_dir = glue_runs.run_dir(ft.output_dir, source.label, seed)
    glue_runs.check_not_busy([run_dir])
    if not overwrite:
        check_no_results([(run_dir, task)])
    splits, reports = data or load_task(task, glue_dir, ft.max_bad_fraction)
    tests = load_test_sets(task, glue_dir, ft.max_bad_fraction) if tests is None else tests
    splits = {s: subsample(ds, ft.max_train_examples if s == "train" else ft.max_eval_examples) for s, ds in splits.items()}
    loaded = load_for_task(source, task, ft, seed)
    loaded.model.to(precision.device)
    encoded = {s: encode_split(loaded, ds) for s, ds in splits.items()}
    with glue_runs.lock(run_dir):
        if not overwrite:
            check_no_results([(run_dir, task)])  # again, now that no other run can write the folder
        return _finetune_locked(task, source, ft, seed, precision, recipe, tests, run_dir, loaded, encoded, reports)


def _finetune_locked(task: Task, source: ModelSource, ft: FinetuneConfig, seed: int, precision: runtime.Precision,
                     recipe: dict | None, tests, run_dir: Path, loaded: Loaded, encoded: dict, reports: dict) -> pd.DataFrame:
    """`finetune_task`'s writing part, under the run folder's lock."""
    glue_runs.clear_task_outputs(run_dir, task)
    fingerprint = glue_runs.new_fingerprint(loaded.info["fingerprint"], dataclasses.asdict(ft),
                                            str(precision.dtype).removeprefix("torch."))
    entry = _task_entry(task, ft, recipe, _model_facts(source, loaded.info, precision), fingerprint, encoded, reports)
    glue_runs.record_task(run_dir, source.label, seed, task.name, entry)
    progress, started = Progress(), time.time()
    try:
        frame = _train_epochs(task, loaded, encoded, ft, seed, precision, run_dir,
                              f"{source.label} seed {seed} {task.name}", progress)
        predictions = _write_all_predictions(task, loaded, encoded, tests, ft, precision, run_dir, progress)
    except KeyboardInterrupt:
        entry.update(status="interrupted", epochs_done=len(progress.rows), seconds=round(time.time() - started, 1))
        glue_runs.record_task(run_dir, source.label, seed, task.name, entry)
        raise FinetuneInterrupted(
            f"fine-tuning interrupted: {source.label} seed {seed} on {task.name} stopped after {len(progress.rows)} of "
            f"{ft.epochs} epochs. {glue_runs.info_path(run_dir)} marks {task.name} 'interrupted', and aggregation "
            f"leaves it out; fine-tune it again with DITBERT_OVERWRITE=1 (run_glue(..., overwrite=True))") from None
    entry.update(status="complete", epochs_done=len(progress.rows), best_epoch=progress.best_epoch,
                 seconds=round(time.time() - started, 1), finished_at=glue_runs.now(), predictions=predictions)
    glue_runs.record_task(run_dir, source.label, seed, task.name, entry)
    return frame


def run_glue(source: ModelSource, tasks, ft: FinetuneConfig, glue_dir=None, data_dir="data",
             precision: runtime.Precision | None = None, overwrite: bool = False, recipe: str = PRESET,
             explicit=(), resume: bool = False) -> list[Path]:
    """Fine-tune `source` on each task with each seed of ``ft.seeds``; return the run folders.

    Every (task, seed) starts from the same source model; each seed is its own run folder.
    `precision`: the device and autocast dtype, as pretraining picks them from ``train.device`` and
    ``train.dtype`` (``runtime.Precision.choose(params.train.device, params.train.dtype)``); default "auto".
    Before any work: the task names, the settings and the model are checked, and every run folder
    that already holds one of the tasks' results is an error unless `overwrite` (which replaces
    them). `resume` (the notebooks' ``GLUE_RESUME=1``) picks up a command that stopped: a (task, seed)
    its run folder already holds finished from the same model with the same settings is kept
    (`finished_run`), one that did not finish is fine-tuned again, and a finished one of another model
    or other settings is still an error. `recipe`: ``preset`` (`ft` as given), ``auto`` (the model's
    own: `recipe_for`) or a name of `RECIPES`, whose values yield to the `explicit` settings. Ctrl-C
    stops with a message and exit status 130 (SystemExit), the task marked interrupted in its
    run_info.json.
    """
    names = list(dict.fromkeys(parse_tasks(tasks)))
    if not names:
        raise ValueError("no tasks given")
    resolved = [get_task(n, data_dir) for n in names]  # every name checked before any training
    for task in resolved:
        _check_trainable(task)
    check_finetune_settings(ft)
    check_source(source, ft.seeds)
    ft, record = apply_recipe(ft, recipe_for(source.resolved(ft.seeds[0])) if recipe == "auto" else recipe, explicit)
    folders = {seed: glue_runs.run_dir(ft.output_dir, source.resolved(seed).label, seed) for seed in ft.seeds}
    glue_runs.check_not_busy(folders.values())  # another fine-tuning writing one of them stops this one at once
    precision = precision or runtime.Precision.choose()
    plan, unfinished = {task.name: list(ft.seeds) for task in resolved}, set()
    if resume:
        plan = {task.name: [seed for seed in ft.seeds if not finished_run(source, task.name, ft, seed, precision)]
                for task in resolved}
        kept = [f"{task.name} seed {seed}" for task in resolved for seed in ft.seeds if seed not in plan[task.name]]
        if kept:
            print(f"{source.label}: kept, finished before with the same model and settings: {', '.join(kept)}")
        # fine-tuned again: the tasks a stopped command left unfinished, whose partial files are replaced
        unfinished = {(task.name, seed) for task in resolved for seed in plan[task.name]
                      if glue_runs.task_status(glue_runs.read_info(folders[seed]), task.name) in glue_runs.UNFINISHED}
    if not overwrite:
        check_no_results([(folders[seed], task) for task in resolved for seed in plan[task.name]
                          if (task.name, seed) not in unfinished])
    try:
        _run_tasks(source, resolved, ft, glue_dir, precision, overwrite, record, plan, unfinished)
        return list(folders.values())
    except KeyboardInterrupt as stop:
        message = str(stop) if isinstance(stop, FinetuneInterrupted) else "fine-tuning interrupted before a task began training"
        print(f"\n{message}", file=sys.stderr)
        raise SystemExit(130) from None


def _run_tasks(source: ModelSource, tasks: list[Task], ft: FinetuneConfig, glue_dir, precision, overwrite: bool,
               record: dict, plan: dict[str, list[int]], unfinished: set[tuple[str, int]]) -> None:
    """Fine-tune each task with the seeds `plan` names for it, replacing the files of an `unfinished` one."""
    for task in tasks:
        if not plan[task.name]:
            continue
        data = load_task(task, glue_dir, ft.max_bad_fraction)
        tests = load_test_sets(task, glue_dir, ft.max_bad_fraction)
        for seed in plan[task.name]:
            finetune_task(task, source, ft, seed, glue_dir, data=data, precision=precision,
                          overwrite=overwrite or (task.name, seed) in unfinished, recipe=record, tests=tests)


def finished_run(source: ModelSource, task: str, ft: FinetuneConfig, seed: int,
                 precision: runtime.Precision | None = None, ignore=glue_runs.IGNORED_SETTINGS) -> bool:
    """Whether the run folder of `seed` holds `task` fine-tuned to the end (every epoch) with the
    settings `ft` (those in `ignore` aside) and, where the run recorded them, from the same model
    (its fingerprint) in the same autocast dtype as `precision`'s: a result that doing the work
    again would only repeat."""
    resolved = source.resolved(seed)
    run = glue_runs.run_dir(ft.output_dir, resolved.label, seed)
    model = model_fingerprint(resolved)
    if not glue_runs.finished_with(run, task, dataclasses.asdict(ft), ft.epochs, ignore, model):
        return False
    recorded = glue_runs.task_fingerprint(glue_runs.read_info(run), task)
    dtype = recorded.settings.get("dtype")
    return precision is None or dtype is None or dtype == str(precision.dtype).removeprefix("torch.")


def summarize(run_dirs) -> pd.DataFrame:
    """One row per (run, task, validation metric): value at the best epoch and at the last."""
    rows = []
    for run in map(Path, run_dirs):
        for csv_path in glue_runs.run_results(run):
            frame = pd.read_csv(csv_path)
            name = glue_runs.results_task(csv_path)
            metric_cols = [c for c in frame.columns if c.startswith("validation")]
            best = frame.loc[frame[metric_cols].fillna(-np.inf).mean(axis=1).idxmax()]
            for col in metric_cols:
                rows.append({"run": run.name, "task": name, "metric": col, "best_epoch": int(best["epoch"]),
                             "best": best[col], "final": frame[col].iloc[-1]})
    return pd.DataFrame(rows, columns=["run", "task", "metric", "best_epoch", "best", "final"])
