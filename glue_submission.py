"""Test-set predictions in the GLUE benchmark server's layout, and the zip to upload.

    python glue_submission.py --model ditbert-tiny                 # final epoch, best seed per task
    python glue_submission.py --model ditbert-tiny --which best --seed 2 --out my_submission.zip
    python glue_submission.py --check glue_submission.zip          # row counts against the official ones

The fine-tuning loop writes, for every task whose test file is present, the test predictions of the
final and of the best epoch as ``<run folder>/predictions/<task>_<split>_<final|best>.tsv`` (columns
``index``, ``prediction``, ``label``; the label is empty on the test split). This module picks one
run per task, converts its predictions to the server's file names and label format (``index
prediction``; class numbers for CoLA, SST-2, MRPC, QQP and WNLI, label names for the inference
tasks, a score in [0, 5] for STS-B) and zips them. Torch-free: it reads text files only.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import re
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

import fileio
from glue_results import FINISHED, task_status
from glue_tasks import TASKS

RUN_DIR_NAME = re.compile(r"^(?P<model>.+)-seed(?P<seed>\d+)$")
WHICH = ("final", "best")


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


def model_runs(outputs: str | Path, model: str) -> dict[int, Path]:
    """The run folders ``<model>-seed<n>`` under `outputs`, by seed."""
    runs = {}
    for folder in sorted(Path(outputs).glob(f"{model}-seed*")):
        match = RUN_DIR_NAME.match(folder.name)
        if match and match["model"] == model and folder.is_dir():
            runs[int(match["seed"])] = folder
    return runs


def finished(run: Path, task: str) -> bool:
    """Whether `run` fine-tuned `task` to the end (run_info.json; a folder without one is taken as it is)."""
    path = run / "run_info.json"
    if not path.is_file():
        return True
    info = json.loads(path.read_text())
    tasks = info.get("tasks") if isinstance(info.get("tasks"), dict) else None
    return task_status({"tasks": tasks}, task) in FINISHED


def dev_score(run: Path, task: str, which: str) -> float:
    """The mean of the task's validation metrics at the final or the best epoch of `run` (NaN if none)."""
    path = run / f"results_{task}.csv"
    if not path.is_file():
        return math.nan
    frame = pd.read_csv(path)
    scores = frame[[c for c in frame.columns if c.startswith("validation")]].mean(axis=1)
    if scores.empty:
        return math.nan
    value = scores.iloc[-1] if which == "final" else scores.max()
    return float(value) if pd.notna(value) else math.nan


def pick_run(runs: dict[int, Path], task: str, which: str, seed: int | None) -> Path | None:
    """The run whose predictions go into the submission: seed `seed`, or the seed with the best dev score
    among those that fine-tuned the task to the end (the dev task of AX is MNLI)."""
    dev_task = "mnli" if task == "ax" else task
    if seed is not None:
        return runs[seed] if seed in runs and finished(runs[seed], dev_task) else None
    scored = [(dev_score(run, dev_task, which), s) for s, run in runs.items() if finished(run, dev_task)]
    scored = [(score, s) for score, s in scored if not math.isnan(score)]
    return runs[max(scored)[1]] if scored else None


def collect(outputs: str | Path, model: str, which: str = "final", seed: int | None = None) -> dict[str, pd.DataFrame]:
    """Server file name -> its table, for every task with test predictions of `model`."""
    if which not in WHICH:
        raise ValueError(f"which={which!r}: choose one of {WHICH}")
    runs = model_runs(outputs, model)
    if not runs:
        raise FileNotFoundError(f"no run folders {model}-seed<n> under {outputs}")
    if seed is not None and seed not in runs:
        raise FileNotFoundError(f"no run folder {model}-seed{seed} under {outputs}; seeds found: {sorted(runs)}")
    tables = {}
    for file in SERVER_FILES:
        run = pick_run(runs, file.task, which, seed)
        path = run / "predictions" / f"{file.prediction_file}_{which}.tsv" if run else None
        if path is not None and path.is_file():
            tables[file.name] = server_frame(file, read_predictions(path))
    return tables


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


def report(tables: dict[str, pd.DataFrame]) -> list[str]:
    """Print what the submission holds; return its problems."""
    for name, frame in tables.items():
        print(f"  {name:12s} {len(frame):7d} rows")
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
    parser.add_argument("--which", default="final", choices=WHICH, help="the final epoch's model or the best epoch's")
    parser.add_argument("--seed", type=int, default=None, help="one seed for every task (default: the best per task)")
    parser.add_argument("--out", default="glue_submission.zip", help="the zip to write")
    parser.add_argument("--check", metavar="ZIP", help="only check an existing zip")
    args = parser.parse_args(argv)
    if not args.check and not args.model:
        parser.error("give --model (or --check ZIP)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.check:
        return 1 if report(read_zip(args.check)) else 0
    tables = collect(args.outputs, args.model, args.which, args.seed)
    if not tables:
        print(f"error: no test predictions of {args.model} under {args.outputs} "
              "(fine-tune with GLUE_DIR pointing at folders that hold test.tsv)", file=sys.stderr)
        return 1
    problems = report(tables)
    if problems:
        print(f"error: {args.out} not written", file=sys.stderr)
        return 1
    print(f"wrote {write_zip(tables, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
