"""The run folder, ``<finetune.output_dir>/<model label>-seed<k>/``: the one module that writes and reads it.

A run folder holds one model label's fine-tunings with one seed, a task at a time (glue_utils writes them):

* ``results_<task>.csv`` (a row per epoch), ``best_<task>/`` (the best epoch's model, when kept) and
  ``predictions/<task>_<split>_<final|best>.tsv``: a task's outputs (`task_outputs`, `clear_task_outputs`);
* ``run_info.json``: the label and seed, and per task (``tasks.<task>``) its status (``running``,
  ``interrupted``, ``complete``), settings, outcome and the facts of the model it started from, with that
  model's **fingerprint** (`Fingerprint`). The top level repeats the facts every task shares; a fact the
  tasks do not share is left out there and named in ``differs_by_task`` (a task re-fine-tuned with
  another model into the folder), so the top level never describes only the last task's model;
* ``.lock``: held while a fine-tuning writes the folder (`lock`); a second one stops at once with
  fileio.FolderBusy, naming the holder's pid. The kernel lets go of it when its holder exits (kill -9
  included), so a stale lock is taken over.

**Fingerprints.** Two runs are seeds of one experiment when their fingerprints are equal. A task's
fingerprint has two parts: the *model* (its kind and initialisation, a hash of its weight files -- or of the
architecture, for fresh weights --, its tokenizer's fingerprint, the pretraining tokens it saw; a hub model's
name and revision; for a run started from an MNLI model, the fingerprint of the run that saved that model)
and the *settings* that change a result (``finetune.*`` but the seeds, output folder, model saving and
bad-row threshold, plus the autocast dtype). Runs written before fingerprints were recorded are identified
by the facts they did record (`task_fingerprint`). Torch-free: the aggregation and the submission read
folders through it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import fileio
from glue_tasks import EXTRA_TEST_TASKS, TASKS, Task

INFO_FILE = "run_info.json"
RESULTS_PREFIX = "results_"
PREDICTIONS = "predictions"
CURVES = "tensorboard"  # finetune.tensorboard: <run>/tensorboard/<task>/
WHICH = ("final", "best")  # the final epoch's model and the best epoch's
FINISHED = ("complete", "unrecorded")  # statuses aggregated: complete, or a run_info.json that keeps none
UNFINISHED = ("running", "interrupted")  # statuses of a fine-tuning that did not end (a kill leaves running)
LOCK_WHAT = "fine-tuning run"
RUN_NAME = re.compile(r"^(?P<label>.+)-seed(?P<seed>\d+)$")

# The facts of the model a task started from, kept in its run_info.json entry (and at the top level
# when every task of the folder shares them).
MODEL_FACTS = ("init", "kind", "model_source", "tokenizer", "pretrain_tokens_seen", "max_len", "device", "dtype",
               "torch", "model_config", "model_id")
# finetune.* settings that do not change a result: left out of the fingerprint.
IGNORED_SETTINGS = ("seeds", "output_dir", "save_best", "max_bad_fraction", "tensorboard")
# What a run from before fingerprints is identified by (its model part).
LEGACY_MODEL_FACTS = ("kind", "init", "model_source", "tokenizer", "pretrain_tokens_seen", "model_config")
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "merges.txt",
                   "special_tokens_map.json", "added_tokens.json", "spiece.model", "sentencepiece.bpe.model")

# --------------------------------------------------------------------------- names and paths


def run_name(label: str, seed: int | str) -> str:
    """``<label>-seed<seed>`` (`seed` may be the ``{seed}`` placeholder of a path template)."""
    return f"{label}-seed{seed}"


def run_dir(output_dir: str | Path, label: str, seed: int | str) -> Path:
    return Path(output_dir) / run_name(label, seed)


def parse_run_name(name: str) -> tuple[str, int] | None:
    """(label, seed) of a run folder's name, or None for a name of another form."""
    match = RUN_NAME.match(name)
    return (match["label"], int(match["seed"])) if match else None


def label_runs(output_dir: str | Path, label: str) -> dict[int, Path]:
    """The run folders ``<label>-seed<k>`` under `output_dir`, by seed."""
    runs = {}
    for folder in sorted(Path(output_dir).glob(f"{glob_escape(label)}-seed*")):
        parsed = parse_run_name(folder.name)
        if parsed and parsed[0] == label and folder.is_dir():
            runs[parsed[1]] = folder
    return runs


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def results_path(run: str | Path, task: str) -> Path:
    return Path(run) / f"{RESULTS_PREFIX}{task}.csv"


def results_task(path: str | Path) -> str:
    """The task a ``results_<task>.csv`` holds."""
    return Path(path).stem.removeprefix(RESULTS_PREFIX)


def run_results(run: str | Path) -> list[Path]:
    """The ``results_<task>.csv`` of one run folder."""
    return sorted(Path(run).glob(f"{RESULTS_PREFIX}*.csv"))


def results_files(root: str | Path) -> list[Path]:
    """Every ``results_<task>.csv`` below `root` (run folders at any depth), in a stable order."""
    return sorted(Path(root).rglob(f"{RESULTS_PREFIX}*.csv"))


def best_model_dir(run: str | Path, task: str) -> Path:
    return Path(run) / f"best_{task}"


def curves_dir(run: str | Path, task: str) -> Path:
    """finetune.tensorboard's event files of one task."""
    return Path(run) / CURVES / task


def predictions_dir(run: str | Path) -> Path:
    return Path(run) / PREDICTIONS


def prediction_path(run: str | Path, task: str, split: str, which: str) -> Path:
    return predictions_dir(run) / f"{task}_{split}_{which}.tsv"


def prediction_files(run: str | Path, task: str, split_prefix: str, which: str) -> list[Path]:
    """The prediction files of `task` whose split starts with `split_prefix` (e.g. every validation split)."""
    return sorted(predictions_dir(run).glob(f"{glob_escape(task)}_{glob_escape(split_prefix)}*_{which}.tsv"))


def prediction_splits(task: Task) -> list[tuple[Task, str]]:
    """(task, split) of every prediction file a fine-tuning of `task` writes: its evaluation and test
    splits, and the test sets its model predicts for another task (the diagnostic set, after MNLI)."""
    own = [(task, split) for split in [*task.eval_splits, *task.test_splits]]
    return own + [(TASKS[name], split) for name in EXTRA_TEST_TASKS.get(task.name, ()) for split in TASKS[name].test_splits]


def task_outputs(run: str | Path, task: Task) -> list[Path]:
    """The files and folders an earlier fine-tuning of `task` left in `run`."""
    paths = [results_path(run, task.name), best_model_dir(run, task.name), curves_dir(run, task.name)]
    paths += [prediction_path(run, t.name, split, which) for t, split in prediction_splits(task) for which in WHICH]
    return [p for p in paths if p.exists()]


def clear_task_outputs(run: str | Path, task: Task) -> None:
    """Remove what an earlier fine-tuning of `task` wrote in `run`, holding the folder's lock."""
    with lock(run):
        for path in task_outputs(run, task):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


# --------------------------------------------------------------------------- one writer at a time

_held: dict[str, int] = {}  # run folders this process holds, with how many blocks hold each


@contextlib.contextmanager
def lock(run: str | Path):
    """Hold the run folder's lock while the block runs (fileio.folder_lock, which creates the folder):
    another process that asks for it stops at once with fileio.FolderBusy naming this one's pid. Nested
    blocks of one process share the lock."""
    key = os.path.abspath(run)
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    with fileio.folder_lock(run, LOCK_WHAT):
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]


def check_not_busy(runs) -> None:
    """Stop at once, with fileio.FolderBusy, if another process is fine-tuning into one of the run
    folders `runs` (those that exist: a folder not made yet has no writer)."""
    for run in dict.fromkeys(map(Path, runs)):
        if run.is_dir():
            with lock(run):
                pass


# --------------------------------------------------------------------------- run_info.json


def info_path(run: str | Path) -> Path:
    return Path(run) / INFO_FILE


def read_info(run: str | Path) -> dict:
    """The run's ``run_info.json`` as written ({} where there is none); bad JSON is an error naming it."""
    path = info_path(run)
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(info, dict):
        raise ValueError(f"{path} holds {type(info).__name__}, not an object of run facts")
    return info


def run_identity(run: str | Path) -> dict:
    """The run's model label, seed and initialisation, and its ``run_info.json`` (key ``info``).

    Without that file the folder name ``<model>-seed<N>`` still identifies the run, so it is used with
    a warning and ``init`` "unknown"; any other folder name is an error, because guessing would mix runs
    of different models."""
    run = Path(run)
    path = info_path(run)
    if not path.exists():
        parsed = parse_run_name(run.name)
        if parsed is None:
            raise FileNotFoundError(f"{path} is missing and the folder name {run.name!r} is not '<model>-seed<N>', so "
                                    "the results beside it cannot be given a model and seed")
        warnings.warn(f"{path} is missing; labelling the run from its folder name (whether it finished is unknown)",
                      stacklevel=3)
        return {"model": parsed[0], "seed": parsed[1], "init": "unknown", "tasks": None, "info": {}}
    info = read_info(run)
    missing = [key for key in ("model", "seed") if key not in info]
    if missing:
        raise ValueError(f"{path} lacks {missing}; keys present: {sorted(info)}")
    try:
        seed = int(info["seed"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: seed {info['seed']!r} is not an integer") from err
    tasks = info.get("tasks") if isinstance(info.get("tasks"), dict) else None
    return {"model": str(info["model"]), "seed": seed, "init": str(info.get("init", "unknown")), "tasks": tasks,
            "info": info}


def task_entry(info: dict, task: str) -> dict | None:
    tasks = info.get("tasks") if isinstance(info.get("tasks"), dict) else None
    entry = (tasks or {}).get(task)
    return entry if isinstance(entry, dict) else None


def task_status(info: dict, task: str) -> str:
    """Whether a task of a run finished: its status in run_info.json (``running``, ``interrupted``,
    ``complete``); ``complete`` for an entry that predates statuses (written only at the end);
    ``unfinished`` when the file lists other tasks but not this one; ``unrecorded`` when it lists none."""
    tasks = info.get("tasks") if isinstance(info.get("tasks"), dict) else None
    if tasks is None:
        return "unrecorded"
    if task not in tasks:
        return "unfinished"
    return str(tasks[task].get("status", "complete"))


def task_init(info: dict, task: str) -> str:
    """How the model of a task was initialised (the task's entry, else the folder's top level)."""
    entry = task_entry(info, task) or {}
    return str(entry.get("init", info.get("init", "unknown")))


def is_finished(run: str | Path, task: str) -> bool:
    """Whether `run` fine-tuned `task` to the end (a folder without run_info.json is taken as it is)."""
    if not info_path(run).is_file():
        return True
    return task_status(read_info(run), task) in FINISHED


def finished_at(run: str | Path, task: str, info: dict | None = None) -> float:
    """When the task's fine-tuning ended (seconds since the epoch): as recorded, else the time its
    results file was last written (runs recorded before the time was kept), else 0."""
    entry = task_entry(read_info(run) if info is None else info, task) or {}
    if entry.get("finished_at"):
        try:
            return datetime.fromisoformat(str(entry["finished_at"])).timestamp()
        except ValueError:
            pass
    path = results_path(run, task)
    return path.stat().st_mtime if path.is_file() else 0.0


def now() -> str:
    """The time to record as a task's ``finished_at``: UTC, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def record_task(run: str | Path, label: str, seed: int, task: str, entry: dict) -> None:
    """Write `task`'s entry into the run's ``run_info.json``, atomically, under the folder's lock.

    Entries written before each task kept its own model facts get the ones the top level recorded
    for them first; then the top level is rebuilt: label, seed, the facts every task shares, and
    ``differs_by_task``, the facts they do not."""
    with lock(run):
        info = read_info(run)
        tasks = dict(info.get("tasks")) if isinstance(info.get("tasks"), dict) else {}
        for old in tasks.values():  # entries that predate per-task facts: the folder's were theirs
            for key in (*MODEL_FACTS, "finetune"):
                if key not in old and key in info and key != "model_id":
                    old[key] = info[key]
        tasks[task] = entry
        shared, differ = _shared_facts(info, tasks)
        kept = {k: v for k, v in info.items() if k not in (*MODEL_FACTS, "model", "seed", "tasks", "finetune",
                                                            "differs_by_task")}
        out = {"model": label, "seed": seed, **shared, **kept, **({"differs_by_task": differ} if differ else {}),
               "tasks": tasks}
        fileio.atomic_write_bytes(info_path(run), json.dumps(out, indent=2, default=str).encode())


_ABSENT = object()


def _shared_facts(info: dict, tasks: dict) -> tuple[dict, list[str]]:
    """({fact: value} shared by every task's entry, [facts whose values differ between tasks])."""
    shared, differ = {}, []
    for key in MODEL_FACTS:
        if key == "model_id":
            values = [task_fingerprint(info | {"tasks": tasks}, name).model_id for name in tasks]
        else:
            values = [entry.get(key, _ABSENT) for entry in tasks.values()]
        distinct = {json.dumps(v, sort_keys=True, default=str) for v in values if v is not _ABSENT}
        if len(distinct) > 1:
            differ.append(key)
        elif distinct and all(v is not _ABSENT for v in values):
            shared[key] = values[0]
    return shared, differ


# --------------------------------------------------------------------------- fingerprints


def fingerprint_id(value) -> str:
    """A short hash of a JSON-able value (keys sorted): 12 hex digits."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]


_file_hashes: dict[tuple, str] = {}  # (path, size, mtime) -> sha256: each file is read once per process


def file_hash(path: str | Path) -> str:
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _file_hashes:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
        _file_hashes[key] = digest.hexdigest()
    return _file_hashes[key]


def files_digest(folder: str | Path, patterns) -> str | None:
    """A hash of the files of `folder` that match `patterns` (names and contents; 16 hex digits), or
    None where none matches."""
    folder = Path(folder)
    files = sorted({p for pattern in patterns for p in folder.glob(pattern) if p.is_file()})
    if not files:
        return None
    listing = "\n".join(f"{p.name} {file_hash(p)}" for p in files)
    return hashlib.sha256(listing.encode()).hexdigest()[:16]


def weights_digest(folder: str | Path) -> str | None:
    """The hash of a model folder's weight files (safetensors, or PyTorch .bin)."""
    return files_digest(folder, WEIGHT_FILES)


def tokenizer_files_digest(folder: str | Path) -> str | None:
    """The hash of a Hugging Face model folder's tokenizer files."""
    return files_digest(folder, TOKENIZER_FILES)


def result_settings(finetune: dict, dtype) -> dict:
    """The settings of a fine-tuning that change its result: ``finetune.*`` but `IGNORED_SETTINGS`,
    and the autocast dtype."""
    return {k: v for k, v in (finetune or {}).items() if k not in IGNORED_SETTINGS} | {"dtype": dtype}


@dataclass(frozen=True)
class Fingerprint:
    """What a task's result depends on: the model fine-tuning started from, and the settings.

    `recorded` is False for a run from before fingerprints, identified by the facts it recorded (its
    model part then names them, with ``recorded_before_fingerprints``)."""

    model: dict
    settings: dict
    recorded: bool = True

    @property
    def model_id(self) -> str:
        return fingerprint_id(self.model)

    @property
    def settings_id(self) -> str:
        return fingerprint_id(self.settings)

    @property
    def id(self) -> str:
        return fingerprint_id({"model": self.model, "settings": self.settings})

    @property
    def base_id(self) -> str:
        """The model id of the model an MNLI-initialised run's MNLI model was fine-tuned from (its
        own model id otherwise): what its ``+mnli-init`` row pairs it with."""
        return fingerprint_id({k: v for k, v in self.model.items() if k != "from_mnli"})

    def record(self) -> dict:
        """As run_info.json keeps it in a task's entry."""
        return {"model": self.model, "settings": self.settings, "model_id": self.model_id, "id": self.id}


def new_fingerprint(model: dict, finetune: dict, dtype) -> Fingerprint:
    return Fingerprint(dict(model), result_settings(finetune, dtype))


def task_fingerprint(info: dict, task: str) -> Fingerprint:
    """The fingerprint of a task of a run (`info`: its run_info.json). A run recorded before
    fingerprints is identified by the model facts it recorded (model_source, tokenizer,
    pretrain_tokens_seen, model_config, kind, init) and the task's settings; a folder without
    run_info.json by nothing at all (every such run of a label is one group)."""
    if not info:
        return Fingerprint({"unrecorded": True}, {}, recorded=False)
    entry = task_entry(info, task) or {}
    recorded = entry.get("fingerprint")
    if isinstance(recorded, dict) and isinstance(recorded.get("model"), dict):
        return Fingerprint(recorded["model"], dict(recorded.get("settings") or {}))

    def fact(key):
        return entry.get(key, info.get(key))

    model = {"recorded_before_fingerprints": True, **{key: fact(key) for key in LEGACY_MODEL_FACTS}}
    if model["init"] == "mnli" and isinstance(model["model_source"], str) and "seed" in info:
        # each seed started from its own seed's MNLI model: the path template is what they share
        model["model_source"] = re.sub(rf"-seed{int(info['seed'])}(?=/|$)", "-seed{seed}", model["model_source"])
    settings = result_settings(entry.get("finetune", info.get("finetune")) or {}, fact("dtype"))
    return Fingerprint(model, settings, recorded=False)


def saved_model_fingerprint(model_dir: str | Path) -> Fingerprint | None:
    """The fingerprint of the fine-tuning that saved `model_dir`, where it is a run folder's
    ``best_<task>/`` whose task finished (None otherwise)."""
    model_dir = Path(model_dir)
    if not model_dir.name.startswith("best_"):
        return None
    task, run = model_dir.name.removeprefix("best_"), model_dir.parent
    info = read_info(run) if info_path(run).is_file() else {}
    if not info or task_status(info, task) != "complete":
        return None
    return task_fingerprint(info, task)


def finished_with(run: str | Path, task: str, finetune: dict, epochs: int, ignore=(), model: dict | None = None) -> bool:
    """Whether `run` holds `task` fine-tuned to the end (every one of `epochs`) with the settings
    `finetune` (those in `ignore` aside) and, where the run recorded a fingerprint and `model` is
    given, from that model (a value None in `model` matches any)."""
    results = results_path(run, task)
    info = read_info(run)
    entry = task_entry(info, task)
    if not results.is_file() or entry is None or entry.get("status", "complete") != "complete":
        return False
    done = {k: v for k, v in (entry.get("finetune", info.get("finetune")) or {}).items() if k not in ignore}
    wanted = {k: v for k, v in finetune.items() if k not in ignore}
    if done != wanted:
        return False
    fingerprint = task_fingerprint(info, task)
    if model is not None and fingerprint.recorded:
        if any(v is not None and fingerprint.model.get(k) != v for k, v in model.items()):
            return False
    with open(results) as fh:
        rows = sum(1 for line in fh if line.strip()) - 1
    return rows >= epochs
