"""Test-set predictions in the GLUE benchmark server's layout, and the zip to upload.

    python glue_submission.py --model ditbert-tiny                 # the newest model's runs, best seed per task
    python glue_submission.py --model ditbert-tiny --tasks cola,sst2 --which best --out my_submission.zip
    python glue_submission.py --model ditbert-tiny --fingerprint 3f9a1c2e   # the runs of another model
    python glue_submission.py --check glue_submission.zip          # row counts against the official ones

The fine-tuning loop writes, for every task whose test file is present, the test predictions of the
final and of the best epoch as ``<run folder>/predictions/<task>_<split>_<final|best>.tsv`` (columns
``index``, ``prediction``, ``label``; the label is empty on the test split). This module picks one
run per task, converts its predictions to the server's file names and label format (``index
prediction``; class numbers for CoLA, SST-2, MRPC, QQP and WNLI, label names for the inference
tasks, a score in [0, 5] for STS-B) and zips them. Torch-free: it reads text files only.

Which runs: a label's run folders (``<model>-seed<k>``) may hold runs of several models -- a new
model fine-tuned beside the seeds of an earlier one, or one task fine-tuned again. A submission is
built from one model only: by default the model of the label's newest finished run, whatever its task
(the one just fine-tuned), else the one whose fingerprint ``--fingerprint`` gives (a prefix of the
model id the aggregated table's warnings, the manifest and run_info.json show). Within it, a task
whose seeds were fine-tuned with different settings takes the newest run's settings. Per task the
seed with the best dev score is taken (``--seed`` takes one seed). Every run left out is named.
What each file came from -- run folder, seed, final or best epoch and its number, fingerprint -- is
printed and written beside the zip as ``<name>.manifest.tsv`` (the server is given the task files
only: the format it documents has nothing else in the zip).
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

import fileio
import glue_runs
from glue_tasks import TASKS, parse_tasks

WHICH = glue_runs.WHICH


@dataclass(frozen=True)
class ServerFile:
    """One file of a GLUE submission: the task and test split it holds, and its official size."""

    task: str
    split: str
    name: str
    rows: int
    labels: tuple[str, ...] = ()  # class i is written as i when given, as its name otherwise; () = a score

    @property
    def prediction_file(self) -> str:
        return f"{self.task}_{self.split}"


# The tasks the server scores by class number, with their classes' names (from the task table).
BINARY = {task: TASKS[task].label_names for task in ("cola", "sst2", "mrpc", "qqp", "wnli")}
SERVER_FILES = [
    ServerFile("cola", "test", "CoLA.tsv", 1063, BINARY["cola"]),
    ServerFile("sst2", "test", "SST-2.tsv", 1821, BINARY["sst2"]),
    ServerFile("mrpc", "test", "MRPC.tsv", 1725, BINARY["mrpc"]),
    ServerFile("stsb", "test", "STS-B.tsv", 1379),
    ServerFile("qqp", "test", "QQP.tsv", 390965, BINARY["qqp"]),
    ServerFile("mnli", "test_matched", "MNLI-m.tsv", 9796),
    ServerFile("mnli", "test_mismatched", "MNLI-mm.tsv", 9847),
    ServerFile("qnli", "test", "QNLI.tsv", 5463),
    ServerFile("rte", "test", "RTE.tsv", 3000),
    ServerFile("wnli", "test", "WNLI.tsv", 146, BINARY["wnli"]),
    ServerFile("ax", "test", "AX.tsv", 1104),
]
BY_NAME = {f.name: f for f in SERVER_FILES}


def server_prediction(file: ServerFile, prediction) -> str:
    """One prediction as the server reads it."""
    if not file.labels and file.task == "stsb":
        score = float(prediction)
        if not math.isfinite(score):
            raise ValueError(f"{file.name}: prediction {prediction!r} is not a number")
        return f"{min(5.0, max(0.0, score)):.3f}"
    if file.labels:
        if str(prediction) not in file.labels:
            raise ValueError(f"{file.name}: prediction {prediction!r} is none of {file.labels}")
        return str(file.labels.index(str(prediction)))
    return str(prediction)


def server_frame(file: ServerFile, predictions: pd.DataFrame) -> pd.DataFrame:
    """The project's prediction table (index, prediction, label) in the server's layout."""
    return pd.DataFrame({"index": predictions["index"].astype(int),
                         "prediction": [server_prediction(file, p) for p in predictions["prediction"]]})


def read_predictions(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, sep="\t", dtype={"prediction": str}, keep_default_na=False)
    missing = {"index", "prediction"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: no column {sorted(missing)}; expected index, prediction, label")
    return frame


def finished(run: Path, task: str) -> bool:
    """Whether `run` fine-tuned `task` to the end (run_info.json; a folder without one is taken as it is)."""
    return glue_runs.is_finished(run, task)


def dev_task(file: ServerFile) -> str:
    """The task whose fine-tuning predicted `file`, and whose dev score ranks its seeds (AX: MNLI's)."""
    return "mnli" if file.task == "ax" else file.task


def dev_score(run: Path, task: str, which: str) -> float:
    """The mean of the task's validation metrics at the final or the best epoch of `run` (NaN if none)."""
    path = glue_runs.results_path(run, task)
    if not path.is_file():
        return math.nan
    frame = pd.read_csv(path)
    scores = frame[[c for c in frame.columns if c.startswith("validation")]].mean(axis=1)
    if scores.empty:
        return math.nan
    value = scores.iloc[-1] if which == "final" else scores.max()
    return float(value) if pd.notna(value) else math.nan


def epoch_of(run: Path, task: str, which: str) -> int | None:
    """The epoch whose model made `run`'s `which` predictions of `task`: the last, or the best as the
    loop recorded it (else as it picks it: the first with the highest mean of the validation metrics)."""
    path = glue_runs.results_path(run, task)
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    if frame.empty:
        return None
    if which == "final":
        return int(frame["epoch"].iloc[-1])
    entry = glue_runs.task_entry(glue_runs.read_info(run), task) or {}
    if entry.get("best_epoch"):
        return int(entry["best_epoch"])
    validation = frame[[c for c in frame.columns if c.startswith("validation")]]
    return int(frame["epoch"].iloc[int(validation.fillna(-math.inf).mean(axis=1).to_numpy().argmax())])


def pick_run(runs: dict[int, Path], task: str, which: str, seed: int | None) -> Path | None:
    """The run whose predictions go into the submission: seed `seed`, or the seed with the best dev score
    among those that fine-tuned the task to the end (the dev task of AX is MNLI)."""
    dev = "mnli" if task == "ax" else task
    if seed is not None:
        return runs[seed] if seed in runs and finished(runs[seed], dev) else None
    scored = [(dev_score(run, dev, which), s) for s, run in runs.items() if finished(run, dev)]
    scored = [(score, s) for score, s in scored if not math.isnan(score)]
    return runs[max(scored)[1]] if scored else None


SUBMITTED_TASKS = tuple(dict.fromkeys(f.task for f in SERVER_FILES))


def server_files(tasks=None) -> list[ServerFile]:
    """The files of `tasks` (names, or a comma-separated string; None = every task): MNLI brings the
    diagnostic set, AX, which its model predicts."""
    if tasks is None:
        return list(SERVER_FILES)
    names = [t.lower() for t in parse_tasks(tasks)]
    unknown = [t for t in names if t not in SUBMITTED_TASKS]
    if unknown or not names:
        raise ValueError(f"tasks {unknown or names}: a GLUE submission holds {', '.join(SUBMITTED_TASKS)}")
    wanted = set(names) | ({"ax"} if "mnli" in names else set())
    return [f for f in SERVER_FILES if f.task in wanted]


@dataclass(frozen=True)
class Run:
    """A finished fine-tuning of one task in one run folder, and the model and settings it came from."""

    seed: int
    folder: Path
    task: str
    fingerprint: glue_runs.Fingerprint
    finished: float

    def named(self) -> str:
        return f"{self.folder.name} ({self.task})"


@dataclass(frozen=True)
class Pick:
    """Where one file of the submission comes from."""

    file: ServerFile
    run: Run
    which: str
    epoch: int | None
    path: Path

    def describe(self) -> str:
        return f"{self.run.folder.name}, {self.which} (epoch {self.epoch})"


@dataclass
class Selection:
    """The runs a submission is built from: one model of `label` (`model_id`, and why that one),
    the file each server file comes from, and the runs left out."""

    label: str
    model_id: str = ""
    why: str = ""
    picks: dict[str, Pick] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def finished_runs(runs: dict[int, Path], tasks) -> list[Run]:
    """Every finished fine-tuning of `tasks` in the run folders `runs` ({seed: folder})."""
    found = []
    for seed, folder in sorted(runs.items()):
        info = glue_runs.read_info(folder)
        for task in tasks:
            if glue_runs.results_path(folder, task).is_file() and finished(folder, task):
                found.append(Run(seed, folder, task, glue_runs.task_fingerprint(info, task),
                                 glue_runs.finished_at(folder, task, info)))
    return found


def _groups(found: list[Run]) -> str:
    """"<model id> (<run folders>)" for each model among `found`, newest first."""
    by_model: dict[str, list[Run]] = {}
    for run in sorted(found, key=lambda r: -r.finished):
        by_model.setdefault(run.fingerprint.model_id, []).append(run)
    return "; ".join(f"{model_id} ({', '.join(sorted({r.folder.name for r in rs}))}"
                     f"{'' if rs[0].fingerprint.recorded else ', recorded before fingerprints'})"
                     for model_id, rs in by_model.items())


def select(outputs: str | Path, model: str, which: str = "final", seed: int | None = None, tasks=None,
           fingerprint: str | None = None) -> Selection:
    """The runs of `model` (a label) a submission of `tasks` is built from, as the module's docstring
    says: one model (the newest finished run's, or the one `fingerprint` names), then per file the best
    seed by dev score (or `seed`), and the table of its `which` test predictions."""
    if which not in WHICH:
        raise ValueError(f"which={which!r}: choose one of {WHICH}")
    files = server_files(tasks)
    runs = glue_runs.label_runs(outputs, model)
    if not runs:
        raise FileNotFoundError(f"no run folders {glue_runs.run_name(model, '<n>')} under {outputs}")
    if seed is not None and seed not in runs:
        raise FileNotFoundError(f"no run folder {glue_runs.run_name(model, seed)} under {outputs}; seeds found: {sorted(runs)}")
    selection = Selection(model)
    runs = runs if seed is None else {seed: runs[seed]}
    every = finished_runs(runs, dict.fromkeys(map(dev_task, SERVER_FILES)))  # the label's runs of any task
    found = [r for r in every if r.task in {dev_task(f) for f in files}]
    if not found:
        return selection
    if fingerprint:
        matching = {r.fingerprint.model_id for r in every if r.fingerprint.model_id.startswith(fingerprint)}
        if len(matching) != 1:
            raise ValueError(f"{'no' if not matching else 'more than one'} model of {model} has the fingerprint "
                             f"{fingerprint!r}: its runs' models are {_groups(every)}")
        selection.model_id = matching.pop()
        selection.why = f"--fingerprint {fingerprint}"
    else:
        newest = max(every, key=lambda r: r.finished)
        selection.model_id = newest.fingerprint.model_id
        selection.why = f"the model of the newest finished run, {newest.named()}"
    kept = []
    for task in dict.fromkeys(r.task for r in found):
        of_model = sorted((r for r in found if r.task == task and r.fingerprint.model_id == selection.model_id),
                          key=lambda r: -r.finished)
        kept += [r for r in of_model if r.fingerprint.settings == of_model[0].fingerprint.settings]
    left = [r for r in found if r not in kept]
    if left:
        selection.left_out = [f"{r.named()}: " + ("other settings than the newest run of the task"
                                                   if r.fingerprint.model_id == selection.model_id else
                                                   f"model {r.fingerprint.model_id}"
                                                   + ("" if r.fingerprint.recorded else ", recorded before fingerprints"))
                              for r in sorted(left, key=lambda r: (r.folder.name, r.task))]
    for file in files:
        candidates = {r.seed: r for r in kept if r.task == dev_task(file)}
        folder = pick_run({s: r.folder for s, r in candidates.items()}, file.task, which, seed)
        if folder is None:
            continue
        run = next(r for r in candidates.values() if r.folder == folder)
        path = glue_runs.prediction_path(folder, file.task, file.split, which)
        if path.is_file():
            selection.picks[file.name] = Pick(file, run, which, epoch_of(folder, run.task, which), path)
            selection.tables[file.name] = server_frame(file, read_predictions(path))
    return selection


def collect(outputs: str | Path, model: str, which: str = "final", seed: int | None = None, tasks=None,
            fingerprint: str | None = None) -> dict[str, pd.DataFrame]:
    """Server file name -> its table, for every file `select` finds test predictions of `model` for."""
    return select(outputs, model, which, seed, tasks, fingerprint).tables


def manifest(selection: Selection) -> pd.DataFrame:
    """One row per file of the submission: where it came from."""
    rows = [{"file": name, "rows": len(selection.tables[name]), "task": p.file.task, "split": p.file.split,
             "run": p.run.folder.name, "seed": p.run.seed, "which": p.which, "epoch": p.epoch,
             "model": selection.label, "model_id": p.run.fingerprint.model_id, "fingerprint": p.run.fingerprint.id,
             "predictions": p.path.relative_to(p.run.folder).as_posix()} for name, p in selection.picks.items()]
    return pd.DataFrame(rows, columns=["file", "rows", "task", "split", "run", "seed", "which", "epoch", "model",
                                       "model_id", "fingerprint", "predictions"])


def manifest_path(out: str | Path) -> Path:
    """The manifest beside the zip: ``<name>.manifest.tsv``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.manifest.tsv")


def check_tables(tables: dict[str, pd.DataFrame]) -> list[str]:
    """Problems that would make the server refuse the files: wrong row counts or indices."""
    problems = []
    for name, frame in tables.items():
        file = BY_NAME.get(name)
        if file is None:
            problems.append(f"{name}: not a GLUE submission file")
        elif len(frame) != file.rows:
            problems.append(f"{name}: {len(frame)} rows, the official test set has {file.rows}")
        elif sorted(frame["index"]) != list(range(file.rows)):
            problems.append(f"{name}: the indices are not 0 .. {file.rows - 1}")
    return problems


def missing_files(tables: dict[str, pd.DataFrame]) -> list[str]:
    return [f.name for f in SERVER_FILES if f.name not in tables]


def write_zip(tables: dict[str, pd.DataFrame], out: str | Path) -> Path:
    """Write the tables into `out` (a zip of flat TSV files), through a temporary file."""
    out = Path(out)
    with fileio.atomic_writer(out) as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, frame in tables.items():
            entry = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
            entry.external_attr = fileio.file_mode() << 16  # unzipped files readable as any other (not 0600)
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, frame.to_csv(sep="\t", index=False))
    return out


def read_zip(path: str | Path) -> dict[str, pd.DataFrame]:
    with zipfile.ZipFile(path) as archive:
        return {name: pd.read_csv(io.BytesIO(archive.read(name)), sep="\t") for name in archive.namelist()}


def report(tables: dict[str, pd.DataFrame], selection: Selection | None = None) -> list[str]:
    """Print what the submission holds (and, given the `selection`, where each file comes from and
    which runs were left out); return its problems."""
    if selection is not None:
        print(f"{selection.label}: model {selection.model_id} ({selection.why})")
    for name, frame in tables.items():
        source = f"  {selection.picks[name].describe()}" if selection is not None and name in selection.picks else ""
        print(f"  {name:12s} {len(frame):7d} rows{source}")
    if selection is not None and selection.left_out:
        print(f"left out, not the submitted model's runs (choose another with --fingerprint or --seed): "
              f"{'; '.join(selection.left_out)}")
    missing = missing_files(tables)
    if missing:
        print(f"not in the submission (no test predictions): {', '.join(missing)}; the server scores a "
              "submission only when every file is present")
    problems = check_tables(tables)
    for problem in problems:
        print(f"error: {problem}")
    return problems


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model label of the run folders, e.g. ditbert-tiny (folders <model>-seed<n>)")
    parser.add_argument("--outputs", default="GLUE-Outputs", help="folder holding the run folders")
    parser.add_argument("--tasks", default=None,
                        help=f"comma-separated tasks to submit, of {','.join(SUBMITTED_TASKS)} (mnli brings ax; "
                             "default: every task with test predictions)")
    parser.add_argument("--which", default="final", choices=WHICH, help="the final epoch's model or the best epoch's")
    parser.add_argument("--seed", type=int, default=None, help="one seed for every task (default: the best per task)")
    parser.add_argument("--fingerprint", default=None,
                        help="the model whose runs to submit, by (a prefix of) its model id (default: the model of "
                             "the newest finished run)")
    parser.add_argument("--out", default="glue_submission.zip", help="the zip to write (the manifest goes beside it)")
    parser.add_argument("--check", metavar="ZIP", help="only check an existing zip")
    args = parser.parse_args(argv)
    if not args.check and not args.model:
        parser.error("give --model (or --check ZIP)")
    if args.tasks is not None:
        try:
            server_files(args.tasks)
        except ValueError as err:
            parser.error(str(err))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.check:
        return 1 if report(read_zip(args.check)) else 0
    try:
        selection = select(args.outputs, args.model, args.which, args.seed, args.tasks, args.fingerprint)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not selection.tables:
        others = (f"; the runs of other models left out: {'; '.join(selection.left_out)} (choose one with "
                  "--fingerprint)" if selection.left_out else "")
        print(f"error: no test predictions of {args.model} under {args.outputs}"
              + (f" from model {selection.model_id} ({selection.why})" if selection.model_id else "")
              + f" (fine-tune with GLUE_DIR pointing at folders that hold test.tsv){others}", file=sys.stderr)
        return 1
    problems = report(selection.tables, selection)
    if problems:
        print(f"error: {args.out} not written", file=sys.stderr)
        return 1
    out = write_zip(selection.tables, args.out)
    listing = manifest_path(out)
    fileio.atomic_write_bytes(listing, manifest(selection).to_csv(sep="\t", index=False).encode())
    print(f"wrote {out} and {listing} (where each file came from)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
