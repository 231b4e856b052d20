"""Fine-tuning tasks: what each one reads, how it is scored, and reading its files. Torch-free, so
that the aggregation of results (glue_results) scores tasks from this same table.

Read top to bottom:

1. the task registry (`TASKS`, `get_task`): each GLUE task in one row -- its text columns in the
   original GLUE download and on the hub, its labels and metrics -- plus custom CSV/TSV tasks and
   the offline `demo` task;
2. reading a task's splits from a local folder or the Hugging Face hub (`load_task`; the unlabelled
   test sets with `load_test_splits`), with malformed rows -- too few or too many fields -- counted
   and reported, and the labels found printed;
3. the metrics (`compute_metrics`, `main_score`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import tarfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

HUB_DATASET = "nyu-mll/glue"

# --------------------------------------------------------------------------- task registry


@dataclass(frozen=True, kw_only=True)
class Task:
    """One fine-tuning task: where its text and labels are, and how it is scored.

    `splits` maps each split to its file: ``train`` plus one or more evaluation splits whose
    names are also the hub's split names and the results columns' prefixes (``validation``, or
    MNLI's ``validation_matched`` / ``validation_mismatched``). `text_columns` / `label_column`
    name columns of the local files (header names, or 0-based positions for files without a
    header); `hub_text_columns` the hub's.
    """

    name: str
    num_labels: int  # 1 = regression
    metrics: tuple[str, ...]
    text_columns: tuple  # one or two columns: (a,) or (a, b)
    label_column: str | int | None
    splits: dict = field(default_factory=lambda: {"train": "train.tsv", "validation": "dev.tsv"})
    label_names: tuple[str, ...] = ()  # index i <-> name; label strings in files map through it
    hub_text_columns: tuple[str, ...] = ()
    folder: str = ""  # GLUE: sub-folder of GLUE_DIR; custom: the folder holding the files
    header: bool = True
    source: str = "glue"  # glue | csv
    # Two-text tasks that ask how alike the texts are (paraphrase, semantic similarity), not whether
    # one follows from the other: finetune.pair_encoding=by_task encodes their texts separately.
    similarity: bool = False
    fields: int = 0
    test_splits: dict = field(default_factory=dict)
    test_text_columns: tuple = ()
    index_column: str = "index"

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1

    @property
    def eval_splits(self) -> list[str]:
        return [s for s in self.splits if s != "train"]

    def layout(self, split: str) -> tuple[tuple, str | int | None, bool]:
        """(text columns, label column or None, has a header) of the file of `split`."""
        if split in self.test_splits:
            return self.test_text_columns or self.text_columns, None, True
        return self.text_columns, self.label_column, self.header

    def split_file(self, split: str) -> str:
        return {**self.splits, **self.test_splits}[split]

    def column_names(self) -> list[str]:
        """The columns of this task's ``results_<task>.csv``, in order."""
        cols = ["epoch"] + [f"train_{m}" for m in self.metrics]
        return cols + [f"{s}_{m}" for s in self.eval_splits for m in self.metrics]

    def report_columns(self) -> dict[str, list[str]]:
        """Report column -> the validation columns averaged into it: the task's name, or one column
        per evaluation split when there are several (MNLI: ``mnli_m``, ``mnli_mm``)."""
        splits = self.eval_splits
        if len(splits) == 1:
            return {self.name: [f"{splits[0]}_{m}" for m in self.metrics]}
        return {f"{self.name}_{SPLIT_SHORT_NAMES[s]}": [f"{s}_{m}" for m in self.metrics] for s in splits}


SPLIT_SHORT_NAMES = {"validation_matched": "m", "validation_mismatched": "mm"}
NLI = ("entailment", "not_entailment")
MNLI_LABELS = ("entailment", "neutral", "contradiction")
PAIR = ("sentence1", "sentence2")
MNLI_SPLITS = {"train": "train.tsv", "validation_matched": "dev_matched.tsv", "validation_mismatched": "dev_mismatched.tsv"}
TEST = {"test": "test.tsv"}
MNLI_TEST = {"test_matched": "test_matched.tsv", "test_mismatched": "test_mismatched.tsv"}
TASKS: dict[str, Task] = {task.name: task for task in (
    # CoLA's train and dev files have no header: source, label, original label, sentence; its test file has one
    Task(name="cola", folder="CoLA", num_labels=2, metrics=("mcc",), text_columns=(3,), label_column=1, header=False,
         fields=4, hub_text_columns=("sentence",), label_names=("unacceptable", "acceptable"), test_splits=TEST,
         test_text_columns=("sentence",)),
    Task(name="sst2", folder="SST-2", num_labels=2, metrics=("accuracy",), text_columns=("sentence",),
         label_column="label", hub_text_columns=("sentence",), label_names=("negative", "positive"), test_splits=TEST),
    Task(name="mrpc", folder="MRPC", num_labels=2, metrics=("accuracy", "f1"), text_columns=("#1 String", "#2 String"),
         label_column="Quality", hub_text_columns=PAIR, label_names=("not_equivalent", "equivalent"), similarity=True,
         test_splits=TEST),
    Task(name="stsb", folder="STS-B", num_labels=1, metrics=("pearson", "spearman"), text_columns=PAIR,
         label_column="score", hub_text_columns=PAIR, similarity=True, test_splits=TEST),
    Task(name="qqp", folder="QQP", num_labels=2, metrics=("accuracy", "f1"), text_columns=("question1", "question2"),
         label_column="is_duplicate", hub_text_columns=("question1", "question2"),
         label_names=("not_duplicate", "duplicate"), similarity=True, test_splits=TEST, index_column="id"),
    Task(name="mnli", folder="MNLI", num_labels=3, metrics=("accuracy",), text_columns=PAIR, label_column="gold_label",
         hub_text_columns=("premise", "hypothesis"), label_names=MNLI_LABELS, splits=MNLI_SPLITS, test_splits=MNLI_TEST),
    Task(name="qnli", folder="QNLI", num_labels=2, metrics=("accuracy",), text_columns=("question", "sentence"),
         label_column="label", hub_text_columns=("question", "sentence"), label_names=NLI, test_splits=TEST),
    Task(name="rte", folder="RTE", num_labels=2, metrics=("accuracy",), text_columns=PAIR, label_column="label",
         hub_text_columns=PAIR, label_names=NLI, test_splits=TEST),
    Task(name="wnli", folder="WNLI", num_labels=2, metrics=("accuracy",), text_columns=PAIR, label_column="label",
         hub_text_columns=PAIR, label_names=("not_entailment", "entailment"), test_splits=TEST),
    # the diagnostic set: a test set only, predicted by the MNLI model (glue_utils writes predictions/ax_test_*.tsv)
    Task(name="ax", folder="diagnostic", num_labels=3, metrics=("accuracy",), text_columns=PAIR, label_column=None,
         hub_text_columns=("premise", "hypothesis"), label_names=MNLI_LABELS, splits={},
         test_splits={"test": "diagnostic.tsv"}),
)}
# Test sets predicted by the model of another task: the diagnostic set by MNLI's.
EXTRA_TEST_TASKS = {"mnli": ("ax",)}
GLUE_TASKS = tuple(t for t in TASKS if t != "ax")  # the nine trainable tasks
# The small tasks RoBERTa reports starting from the model fine-tuned on MNLI (the from-mnli notebooks).
MNLI_INIT_TASKS = ("rte", "mrpc", "stsb", "wnli")
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
        f"unknown task {name!r}: choose one of {[*GLUE_TASKS, 'ax', DEMO_TASK]}, "
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
    regression, strings classes in sorted order. A row with more or fewer fields than the header
    (an unquoted comma in a text) is malformed: counted and left out, never a label of its own.
    An optional ``test`` file (same text columns, ids in an ``index``/``idx``/``id`` column or
    numbered by row) gets test predictions.
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
    test = _find_file(folder, ("test",))
    return Task(name=name or spec.get("name") or folder.name, num_labels=int(num_labels), metrics=metrics,
                text_columns=text_columns, label_column=label_column, splits={"train": train.name, "validation": dev.name},
                label_names=label_names, folder=str(folder), source="csv",
                test_splits={"test": test.name} if test else {}, index_column=_index_column(test) if test else "")


def _index_column(path: Path) -> str:
    """The id column of a custom task's test file (``index``, ``idx`` or ``id``); "" = the row number."""
    header = _read_header(path)
    return next((c for c in ("index", "idx", "id") if c in header), "")


def _infer_labels(path: Path, label_column: str, label_names: tuple) -> tuple[int, tuple]:
    """(number of labels, label names) from the training file's label column (see `csv_task`);
    rows with too many or too few fields are left out (`read_split` counts them)."""
    if label_names:
        return len(label_names), tuple(label_names)
    values = {row[label_column].strip() for row in _dict_rows(path) if (row.get(label_column) or "").strip()}
    if not values:
        raise ValueError(f"{path}: the label column {label_column!r} is empty")
    if all(_is_number(v, int) for v in values):
        return max(2, max(int(v) for v in values) + 1), ()
    if all(_is_number(v, float) for v in values):
        return 1, ()
    print(f"{path}: labels found in column {label_column!r}: {sorted(values)}")
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
    """The rows of a file with a header as dicts, leaving out rows with more or fewer fields than
    the header (csv.DictReader files their surplus under None, or fills their gaps with None)."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        for row in csv.DictReader(fh, **_dialect(path)):
            if None not in row and None not in row.values():
                yield row


DEMO_ARCHIVE = "vaderSentiment-3.3.2.tar.gz"
DEMO_INNER = "additional_resources/hutto_ICWSM_2014.tar.gz"
DEMO_MEMBER = "movieReviewSnippets_GroundTruth.txt"


def prepare_demo_data(data_dir: str | Path = "data", n_validation: int = 1000, seed: int = 0) -> Path:
    """Write the offline demo task (movie-review sentiment) as a custom CSV task; return its folder.

    Source: `movieReviewSnippets_GroundTruth.txt` (Rotten Tomatoes sentences: id, mean human
    rating -4..+4, text) inside the sdist of ``vadersentiment==3.3.2`` at
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
    texts, labels, n_neutral = _demo_sentences(archive)
    if len(texts) <= n_validation:
        raise ValueError(f"{archive}: only {len(texts)} labelled sentences, not more than the {n_validation} to hold out")
    order = np.random.default_rng(seed).permutation(len(texts))
    frame = pd.DataFrame({"sentence": texts, "label": labels}).iloc[order]
    spec = {
        "name": DEMO_TASK, "text_columns": ["sentence"], "label_column": "label", "num_labels": 2,
        "label_names": ["negative", "positive"], "metrics": ["accuracy"],
        "source": f"{DEMO_ARCHIVE}/{DEMO_INNER}/{DEMO_MEMBER}", "neutral_dropped": n_neutral,
        "split_seed": seed,
    }
    from fileio import atomic_write_bytes  # brings torch: only when the files are written

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "dev.csv", frame.iloc[:n_validation].to_csv(index=False).encode())
    atomic_write_bytes(out / "train.csv", frame.iloc[n_validation:].to_csv(index=False).encode())
    atomic_write_bytes(out / "task.json", json.dumps(spec, indent=2).encode())
    return out


def _demo_sentences(archive: Path) -> tuple[list[str], list[int], int]:
    """(texts, labels, neutral sentences dropped) of the ground-truth file."""
    texts, labels, n_neutral = [], [], 0
    for line_no, line in enumerate(_read_demo_member(archive).decode("utf-8").splitlines(), 1):
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
    return texts, labels, n_neutral


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
    """How a split was read: from where, how many rows were kept and which were malformed, and the
    labels found (class -> count; a score's range as ``min`` and ``max``)."""

    source: str
    rows: int = 0
    bad_rows: int = 0
    bad_examples: list = field(default_factory=list)  # (line number, why), the first few
    labels: dict = field(default_factory=dict)


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


def label_name(task: Task, label) -> str | float | int:
    """How a label or prediction is written out: the class's name, its number where the task names
    none, or the score of a regression."""
    if task.is_regression:
        return float(label)
    return task.label_names[int(label)] if task.label_names else int(label)


def read_split(task: Task, split: str, path: str | Path, max_bad_fraction: float = 0.01):
    """Read one split file -> ({'idx', 'text_a', ['text_b'], ['label']} column lists, SplitReport).

    ``idx`` is the example's id: the test files' index column, else the row's number among the
    file's data rows (from 0). A row with more or fewer fields than the header (or than
    `Task.fields`, in a file without one), or with an empty text, is malformed: it is left out,
    counted, and reported (first few line numbers) in a printed note. If more than
    `max_bad_fraction` of the rows are malformed, the file is not in the expected layout and this
    raises instead.
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


def _column_positions(task: Task, wanted: list, header: list[str] | None, path: Path) -> list:
    """Where the `wanted` columns are in each row."""
    if header is None:
        return wanted
    missing = [c for c in wanted if c not in header]
    if missing:
        raise ValueError(f"task {task.name}: {path} has no column(s) {missing}; its header is {header}")
    return [header.index(c) for c in wanted]


def _row_problem(row: list[str], expected: int, positions: list, n_text: int) -> str | None:
    """Why a row is malformed (None if it is not): a field count other than the header's, a missing
    column, an empty text."""
    if expected and len(row) != expected:
        return f"{len(row)} fields, expected {expected}"
    if len(row) <= max(positions):
        return f"{len(row)} fields, expected at least {max(positions) + 1}"
    if any(not row[p].strip() for p in positions[:n_text]):
        return "empty text"
    return None


def _example_id(row: list[str], position: int | None, number: int) -> int:
    """The row's id: its index column where the file has one, else its number."""
    if position is None:
        return number
    try:
        return int(row[position])
    except ValueError:
        raise ValueError(f"index {row[position]!r} is not a whole number") from None


def _read_rows(task: Task, split: str, path: Path, max_bad_fraction: float):
    text_columns, label_column, has_header = task.layout(split)
    n_text, labelled = len(text_columns), label_column is not None
    cols = {"idx": [], "text_a": []} | ({"text_b": []} if n_text == 2 else {}) | ({"label": []} if labelled else {})
    report = SplitReport(source=str(path))
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, **_dialect(path))
        header = next(reader, None) if has_header else None
        if has_header and header is None:
            raise ValueError(f"task {task.name}: {split} file {path} is empty")
        positions = _column_positions(task, list(text_columns) + ([label_column] if labelled else []), header, path)
        id_column = task.index_column if split in task.test_splits and task.index_column else None
        id_position = _column_positions(task, [id_column], header, path)[0] if id_column else None
        expected = len(header) if header is not None else task.fields
        for number, row in enumerate(reader):
            problem = _row_problem(row, expected, positions + ([id_position] if id_column else []), n_text)
            if problem:
                report.bad_rows += 1
                if len(report.bad_examples) < 5:
                    report.bad_examples.append((reader.line_num, problem))
                continue
            where = f"{path}:{reader.line_num}"
            try:
                cols["idx"].append(_example_id(row, id_position, number))
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
            for key, p in zip(("text_a", "text_b")[:n_text], positions):
                cols[key].append(row[p])
            if labelled:
                cols["label"].append(_parse_label(task, row[positions[-1]], where))
    report.rows = len(cols["text_a"])
    if report.rows + report.bad_rows == 0:
        raise ValueError(f"task {task.name}: {split} file {path} holds no rows")
    _check_bad_rows(task, split, report, max_bad_fraction)
    report.labels = label_counts(task, cols.get("label", []))
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


def label_counts(task: Task, labels) -> dict:
    """The labels of a split: {class name: count}, or a score's {"min", "max"}; {} when unlabelled."""
    labels = list(labels)
    if not labels:
        return {}
    if task.is_regression:
        return {"min": float(min(labels)), "max": float(max(labels))}
    names, counts = np.unique(np.asarray(labels, dtype=np.int64), return_counts=True)
    return {str(label_name(task, n)): int(c) for n, c in zip(names, counts)}


def _print_labels(task: Task, reports: dict) -> None:
    """One line per labelled split: its rows and the labels found in it, so that a class that should
    not be there (or one missing) shows before any training."""
    for split, report in reports.items():
        if report.labels:
            found = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in report.labels.items())
            print(f"task {task.name} {split}: {report.rows} rows; labels: {found}")


def _task_folder(task: Task, glue_dir) -> Path:
    return Path(task.folder) if task.source == "csv" else Path(glue_dir) / task.folder


def load_task(task: Task, glue_dir: str | Path | None = None, max_bad_fraction: float = 0.01):
    """The labelled splits of `task` as {split: datasets.Dataset} (columns idx, text_a, [text_b],
    label), and {split: SplitReport}. GLUE tasks come from `glue_dir` (original GLUE layout) when
    given, else from the Hugging Face hub; custom tasks from their own folder."""
    import datasets

    if task.source == "glue" and not glue_dir:
        data, reports = _load_from_hub(task, list(task.splits))
        _print_labels(task, reports)
        return data, reports
    folder = _task_folder(task, glue_dir)
    if task.source == "glue" and not folder.is_dir():
        raise FileNotFoundError(
            f"task {task.name}: GLUE_DIR {glue_dir} has no folder {task.folder}/ "
            f"(expected the layout of the original GLUE download: {task.folder}/{'/'.join(task.splits.values())})"
        )
    data, reports = {}, {}
    for split, filename in task.splits.items():
        cols, reports[split] = read_split(task, split, folder / filename, max_bad_fraction)
        data[split] = datasets.Dataset.from_dict(cols)
    _print_labels(task, reports)
    return data, reports


def load_test_splits(task: Task, glue_dir: str | Path | None = None, max_bad_fraction: float = 0.01) -> dict:
    """The unlabelled test splits of `task` that are present, as {split: datasets.Dataset} (columns
    idx, text_a, [text_b]): files beside the task's others, or the hub's test splits. A test set
    that is absent is left out with a note (a custom task without a test file, silently)."""
    import datasets

    if not task.test_splits:
        return {}
    if task.source == "glue" and not glue_dir:
        try:
            return _load_from_hub(task, list(task.test_splits))[0]
        except ConnectionError as err:
            print(f"note: no test predictions for {task.name}: {err}")
            return {}
    folder, data = _task_folder(task, glue_dir), {}
    for split, filename in task.test_splits.items():
        if not (folder / filename).is_file():
            if task.source == "glue":
                print(f"note: no {split} predictions for {task.name}: {folder / filename} does not exist")
            continue
        cols, _ = read_split(task, split, folder / filename, max_bad_fraction)
        data[split] = datasets.Dataset.from_dict(cols)
    return data


def _load_from_hub(task: Task, splits: list[str]):
    """The task's `splits` from ``datasets.load_dataset("nyu-mll/glue", task)``, renamed to our columns."""
    import datasets

    try:
        hub = datasets.load_dataset(HUB_DATASET, task.name)
    except Exception as err:  # offline, or the hub changed
        raise ConnectionError(
            f"could not load GLUE task {task.name} from the Hugging Face hub ({type(err).__name__}: {err}). "
            f"Offline, set GLUE_DIR to a folder in the original GLUE layout, or use the demo task"
        ) from None
    data, reports = {}, {}
    for split in splits:
        ds = hub[split]
        names = ["text_a", "text_b"][: len(task.hub_text_columns)]
        labelled = split not in task.test_splits
        ds = ds.rename_columns(dict(zip(task.hub_text_columns, names))).select_columns(
            ["idx"] + names + (["label"] if labelled else []))
        if labelled and not task.is_regression:
            labels = np.asarray(ds["label"])
            if labels.size and (labels.min() < 0 or labels.max() >= task.num_labels):
                raise ValueError(f"hub {HUB_DATASET}/{task.name} {split}: labels outside 0..{task.num_labels - 1}")
        data[split] = ds
        reports[split] = SplitReport(source=f"hub:{HUB_DATASET}/{task.name}/{split}", rows=len(ds),
                                     labels=label_counts(task, ds["label"]) if labelled else {})
    return data, reports


def subsample(ds, n: int, seed: int = 0):
    """The same `n` examples for every model and seed (drawn with a fixed `seed`); all when n=0."""
    if not n or n >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(n))


# --------------------------------------------------------------------------- metrics
# Classes are integer arrays, scores float arrays. An undefined value (a correlation with a constant
# side) is NaN, as the official GLUE scorer (scipy) gives it; main_score counts it as the worst.


def _confusion(preds: np.ndarray, target: np.ndarray, k: int) -> np.ndarray:
    """(k, k) counts: row = true class, column = predicted class."""
    k = max(k, 2, int(max(preds.max(initial=0), target.max(initial=0))) + 1)
    return np.bincount(target * k + preds, minlength=k * k).reshape(k, k).astype(np.float64)


def _accuracy(preds, target, k):
    return float(np.mean(preds == target))


def _f1(preds, target, k):
    """Binary: the F1 of class 1, as GLUE reports it. More classes: the mean F1 over the classes
    that occur among labels or predictions."""
    c = _confusion(preds, target, k)
    tp, fp, fn = np.diag(c), c.sum(0) - np.diag(c), c.sum(1) - np.diag(c)
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    if k <= 2:
        return float(f1[1])
    return float(f1[denominator > 0].mean())


def _mcc(preds, target, k):
    """Matthews correlation from the confusion matrix, 0 when a marginal is constant (as
    scikit-learn and the official GLUE scorer: a model that always answers "acceptable" scores 0
    on CoLA)."""
    c = _confusion(preds, target, k)
    t, p, correct, total = c.sum(1), c.sum(0), np.trace(c), c.sum()
    denominator = math.sqrt((total**2 - (p * p).sum()) * (total**2 - (t * t).sum()))
    return 0.0 if denominator == 0 else float((correct * total - (p * t).sum()) / denominator)


def _pearson(preds, target, k):
    x, y = preds - preds.mean(), target - target.mean()
    denominator = math.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denominator) if denominator > 0 else math.nan


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given the mean of the ranks they share."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # the highest rank of each distinct value
    return (ends - (counts - 1) / 2)[inverse.ravel()]


def _spearman(preds, target, k):
    """Pearson of the ranks; NaN where a side holds a NaN (it has no rank), as scipy gives it."""
    if np.isnan(preds).any() or np.isnan(target).any():
        return math.nan
    return _pearson(_ranks(preds), _ranks(target), k)


METRICS = {"accuracy": _accuracy, "f1": _f1, "mcc": _mcc, "pearson": _pearson, "spearman": _spearman}


def compute_metrics(task: Task, preds, labels) -> dict[str, float]:
    """{metric: value} for predicted classes (or scores, for regression) against labels."""
    kind = np.float64 if task.is_regression else np.int64
    preds, labels = np.asarray(preds).astype(kind).ravel(), np.asarray(labels).astype(kind).ravel()
    return {m: float(METRICS[m](preds, labels, task.num_labels)) for m in task.metrics}


def main_score(row: dict, task: Task) -> float:
    """Mean of the task's validation metrics in one results row: picks the best epoch.
    An undefined metric (NaN, e.g. correlation of constant predictions) counts as -inf."""
    values = [row[c] for c in task.column_names() if c.startswith("validation")]
    values = [-math.inf if v is None or math.isnan(v) else v for v in values]
    return float(np.mean(values))
