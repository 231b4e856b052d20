"""Aggregate GLUE fine-tuning results into one comparison table, a markdown table and plots.

The fine-tuning loop writes one folder per run, ``GLUE-Outputs/<model>-seed<seed>/`` (read through
glue_runs), holding a ``run_info.json`` and one ``results_<task>.csv`` per task (a row per epoch, columns ``epoch``,
``train_<metric>``, ``validation_<metric>``). Read top to bottom: finding and validating those
files -> per-epoch task scores -> best and final epoch per run -> collapsed epochs, dev labels and the
trivial baseline -> the table over seeds -> re-scoring -> significance -> markdown and plots.

Conventions (the README repeats them):

* Scores are percentages (x100). A task's score is the mean of its official validation metrics:
  CoLA MCC; STS-B mean of Pearson and Spearman; MRPC and QQP mean of accuracy and F1; MNLI mean of
  matched and mismatched accuracy (both also reported, as ``mnli_m`` and ``mnli_mm``); the other
  tasks accuracy. A custom task (e.g. ``demo``) scores the mean of its validation metrics, losses
  excluded. The best epoch of a run is the one with the highest task score, as the original
  DitBERT chose it, among the epochs that did not collapse (`collapsed_epochs`: the prediction
  files answer one class for all examples, or all but under 1 %; an epoch without prediction
  files, when its scores are a constant answer's); ``best_skipped`` names those it skipped.
* Two conventions side by side, the column name says which: ``<task>_best`` is the original's
  (best epoch of each run, then the best seed); ``<task>_final_mean`` / ``<task>_final_std`` are
  the last epoch's mean and sample standard deviation over seeds (``<task>_seeds`` runs; the std
  needs two). ``train_examples`` (the cap on training examples per task) and ``dtype`` (the
  fine-tuning precision) say how each row was fine-tuned; they are settings, so rows that differ in
  them are never averaged together.
* The row ``trivial-majority`` (recipe ``baseline``, `trivial_baseline`) answers each task's majority
  training class for every dev example, scored with the task's metrics; the markdown marks a score
  not above it (`baseline_mark`).
* `significance` compares each model with its random-init twin (and any pair named): the difference
  per task and on the GLUE tasks' mean, with Welch's t interval over seeds (`welch_interval`).
* ``GLUE_*`` is the mean of the eight task scores without WNLI, MNLI counted once as the mean of
  matched and mismatched (the GLUE paper's macro-average). A model missing any of the eight has no
  GLUE score (NaN); ``GLUE_partial_*`` then averages the tasks it has and ``GLUE_tasks`` counts
  them. Missing tasks are NaN (``–`` in markdown), never zero. Custom tasks never enter GLUE.
* Seeds are averaged only when they come from the same model with the same settings (their
  fingerprints in run_info.json, glue_runs.Fingerprint). A label whose runs come from several models
  gets a row per model, ``<label>@<fingerprint>``, and a task fine-tuned with different settings a row
  per settings; a warning and a note under the table name each row's run folders (`name_rows`). Runs
  recorded before fingerprints are identified by the model facts and settings they recorded.
* A run whose ``init`` is ``mnli`` gets its own label, ``<model>-from-mnli``. Each model that has
  such runs also gets a row ``<model>+mnli-init``: its own runs, with RTE, MRPC, STS-B and WNLI
  taken from the MNLI-initialised runs where they exist (how RoBERTa reports those tasks).
* Only finished runs count: a task whose ``run_info.json`` status is ``running`` or
  ``interrupted`` (or that the file does not list) is left out, with a warning and a note under
  the table, so that an unfinished run's last epoch is never reported as its final one.
* A seed that collapsed -- its final score is NaN, or its final validation predictions are all one
  class or value -- is named in the ``collapsed`` column; a NaN seed cannot enter the mean, and
  ``<task>_seeds`` still counts it. The ``recipe`` column says which fine-tuning recipe each
  model's runs used (``preset``, ``bert``, ``roberta``: glue_models.RECIPES).
* `rescore` recomputes every score from the runs' prediction files
  (``predictions/<task>_<split>_<final|best>.tsv``), to check a results file against them.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import glue_runs
from glue_tasks import (GLUE_TASKS, MNLI_INIT_TASKS, TASKS, Task, compute_metrics, label_name, main_score,
                        read_split)

GLUE_SCORE_TASKS = tuple(t for t in GLUE_TASKS if t != "wnli")  # WNLI is left out of the average
MNLI_SUFFIX = "-from-mnli"
RANDOM_SUFFIX = "-random-init"
COMBINED_SUFFIX = "+mnli-init"

# The GLUE columns of the table, in the order published tables use (MNLI as mnli_m and mnli_mm), and
# their names in tables and plots: the task's folder in the GLUE download, plus -m / -mm for MNLI.
GLUE_COLUMNS = tuple(column for task in GLUE_TASKS for column in TASKS[task].report_columns())
PRETTY = {column: TASKS[task].folder + column.removeprefix(task).replace("_", "-")
          for task in GLUE_TASKS for column in TASKS[task].report_columns()}

RUN_KEYS = ["run", "model", "base_model", "init", "seed", "task", "recipe"]
# Which model and settings each run's task comes from (glue_runs.Fingerprint): label is the row's name
# before any fingerprint suffix, main is False for a task kept apart for its settings, finished is
# when the task's fine-tuning ended (seconds since the epoch); train_examples and dtype are two of the
# settings, shown in the table: the cap on training examples per task (`training_size`) and the
# fine-tuning precision.
GROUP_KEYS = ["label", "model_id", "settings_id", "base_id", "main", "recorded", "finished", "train_examples", "dtype"]
# Settings that name a row by their values (``<label>@n2000``, ``<label>@bf16``) when a label's runs differ
# in nothing else.
NAMED_SETTINGS = ("max_train_examples", "dtype")
DTYPE_NAMES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
FINISHED = glue_runs.FINISHED  # statuses aggregated: complete, or a run_info.json that keeps none
GROUP_SUFFIX = "@"  # <label>@<fingerprint>: the row of one of a label's models, when it has several
LEVEL = 0.95  # the confidence level of the significance intervals
BOOTSTRAP = 1000  # resamples of the paired bootstrap over seeds and dev examples (`paired_bootstrap`)
BOOTSTRAP_SEED = 0


@dataclass
class Aggregation:
    """Everything the aggregation step produces, from raw epochs to the final table."""

    scores: pd.DataFrame  # one row per run, task, epoch and report column (value in %)
    selected: pd.DataFrame  # the best and the final epoch of every run and task
    table: pd.DataFrame  # models as rows, both conventions as columns
    unfinished: list = field(default_factory=list)  # "<results file> (<status>)" of the runs left out
    apart: list = field(default_factory=list)  # labels whose runs form several rows: which and why
    significance: pd.DataFrame = field(default_factory=pd.DataFrame)  # differences between rows (`significance`)

    def newest_row(self, label: str, task: str | None = None) -> str:
        """The table row of `label`'s most recently finished run (of `task`, if given): the row of the
        model fine-tuned last, whether or not the label has others."""
        rows = self.scores[(self.scores["label"] == label) & ((self.scores["task"] == task) if task else True)]
        if rows.empty:
            raise KeyError(f"no finished run of {label}" + (f" on {task}" if task else ""))
        return str(rows.loc[rows["finished"].idxmax(), "model"])


# --------------------------------------------------------------------------- reading runs


def find_results(root: str | Path) -> list[Path]:
    """Every ``results_<task>.csv`` below ``root``, in a stable order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"GLUE outputs folder {root} does not exist: run the fine-tuning notebooks first, "
            "or point GLUE_OUTPUT_DIR at the folder they wrote"
        )
    files = glue_runs.results_files(root)
    if not files:
        raise FileNotFoundError(f"no results_<task>.csv files found anywhere under {root}")
    return files


def read_run_info(run_dir: str | Path) -> dict:
    """The run's model name, seed and initialisation from ``run_info.json`` (glue_runs.run_identity:
    without that file, from the folder name ``<model>-seed<N>``, with a warning)."""
    return glue_runs.run_identity(run_dir)


task_status = glue_runs.task_status


def task_recipe(info: dict, task: str) -> str:
    """The fine-tuning recipe a task's run used, as run_info.json records it."""
    recipe = (info.get("tasks") or {}).get(task, {}).get("recipe")
    if isinstance(recipe, dict):
        return str(recipe.get("label", recipe.get("name", "unrecorded")))
    return str(recipe) if recipe else "unrecorded"


def model_label(model: str, init: str) -> str:
    """The table row a run belongs to: MNLI-initialised and random-init runs get their own row."""
    if init == "mnli" and "mnli" not in model:
        return model + MNLI_SUFFIX
    if init == "random" and "random" not in model:
        return model + RANDOM_SUFFIX
    return model


def base_model(label: str) -> str:
    """The model an MNLI-initialised label derives from (the label itself otherwise)."""
    return label.removesuffix(MNLI_SUFFIX)


def read_task_csv(path: str | Path) -> pd.DataFrame:
    """One results CSV, checked: an integer ``epoch`` column without repeats, at least one row."""
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as err:
        raise ValueError(f"{path} cannot be read as CSV: {err}") from err
    if "epoch" not in frame.columns:
        raise ValueError(f"{path} has no 'epoch' column (columns: {list(frame.columns)})")
    if frame.empty:
        raise ValueError(f"{path} has a header but no epoch rows")
    epoch = pd.to_numeric(frame["epoch"], errors="coerce")
    if epoch.isna().any() or (epoch != epoch.round()).any():
        raise ValueError(f"{path}: the 'epoch' column must hold whole numbers, got {frame['epoch'].tolist()}")
    frame["epoch"] = epoch.astype(int)
    repeated = sorted(set(frame.loc[frame["epoch"].duplicated(), "epoch"]))
    if repeated:
        raise ValueError(f"{path}: epoch(s) {repeated} appear more than once; remove the stale rows")
    return frame.sort_values("epoch", ignore_index=True)


def report_metrics(task: str, columns, path: str | Path = "") -> dict[str, list[str]]:
    """Report column -> validation metric columns for ``task``; extra columns are ignored.

    A GLUE task must have its official metrics (``glue_tasks.TASKS``: the ones fine-tuning writes). A custom task uses every ``validation_*``
    column except losses, since lower is better for a loss and it would spoil the mean.
    """
    columns = list(columns)
    if task in GLUE_TASKS:
        wanted = TASKS[task].report_columns()
    else:
        metrics = [c for c in columns if c.startswith("validation_") and "loss" not in c]
        if not metrics:
            raise ValueError(f"{path}: custom task {task!r} has no validation_<metric> column (columns: {columns})")
        wanted = {task: metrics}
    missing = [m for metrics in wanted.values() for m in metrics if m not in columns]
    if missing:
        raise ValueError(f"{path}: task {task!r} needs column(s) {missing}; columns present: {columns}")
    return wanted


def _numeric(frame: pd.DataFrame, columns: list[str], path: str | Path) -> pd.DataFrame:
    values = frame[columns].apply(pd.to_numeric, errors="coerce")
    bad = [c for c in columns if (values[c].isna() & frame[c].notna()).any()]
    if bad:
        raise ValueError(f"{path}: non-numeric values in column(s) {bad}")
    return values


def epoch_scores(task: str, frame: pd.DataFrame, path: str | Path = "") -> pd.DataFrame:
    """Per epoch, the task score (column named after the task) and each report column, in %.

    A metric that is NaN in some epoch makes that epoch's score NaN rather than the mean of
    the rest, so an epoch never looks better because one of its metrics failed.
    """
    wanted = report_metrics(task, frame.columns, path)
    every_metric = [m for metrics in wanted.values() for m in metrics]
    values = _numeric(frame, every_metric, path) * 100
    wide = pd.DataFrame({"epoch": frame["epoch"]})
    for column, metrics in wanted.items():
        wide[column] = values[metrics].mean(axis=1, skipna=False)
    wide[task] = values[every_metric].mean(axis=1, skipna=False)
    return wide.melt(id_vars="epoch", var_name="column", value_name="value")


def load_scores(root: str | Path = "GLUE-Outputs") -> pd.DataFrame:
    """The per-epoch scores of every finished run under ``root``: columns run, model, base_model,
    init, seed, task, recipe, the model and settings they come from (`GROUP_KEYS`), epoch, column,
    value. Unfinished runs are left out with a warning; a label whose runs come from several models
    or settings gets several rows (`name_rows`), with a warning."""
    return _load_scores(root)[0]


def _load_scores(root: str | Path) -> tuple[pd.DataFrame, list[str], list[str]]:
    """(the scores of finished runs, "<results file> (<status>)" of those left out, what was kept apart)."""
    root = Path(root)
    infos: dict[Path, dict] = {}
    parts, runs, unfinished = [], [], []
    for path in find_results(root):
        if path.parent not in infos:
            infos[path.parent] = read_run_info(path.parent)
        info = infos[path.parent]
        task = glue_runs.results_task(path)
        status = task_status(info, task)
        if status not in FINISHED:
            unfinished.append(f"{path.relative_to(root).as_posix()} ({status})")
            continue
        init = glue_runs.task_init(info["info"], task) if info["info"] else info["init"]
        label = model_label(info["model"], init)
        fingerprint = glue_runs.task_fingerprint(info["info"], task)
        run = path.parent.relative_to(root).as_posix()
        runs.append({"run": run, "task": task, "label": label, "model_id": fingerprint.model_id,
                     "settings_id": fingerprint.settings_id, "group_id": fingerprint.id, "base_id": fingerprint.base_id,
                     "recorded": fingerprint.recorded, "fingerprint": fingerprint,
                     "finished": glue_runs.finished_at(path.parent, task, info["info"]),
                     "train_examples": training_size(fingerprint.settings),
                     "dtype": str(fingerprint.settings.get("dtype") or "unrecorded")})
        scores = epoch_scores(task, read_task_csv(path), path)
        parts.append(scores.assign(run=run, base_model=base_model(label), init=init, seed=info["seed"], task=task,
                                   recipe=task_recipe(info, task)))
    if unfinished:
        warnings.warn(f"left out, not finished (see run_info.json): {', '.join(unfinished)}", stacklevel=3)
    if not parts:
        raise FileNotFoundError(f"no finished run under {root}: every results file belongs to an unfinished run "
                                f"({', '.join(unfinished)})")
    groups = pd.DataFrame(runs)
    names, apart = name_rows(groups)
    for note in apart:
        warnings.warn(f"kept apart: {note}", stacklevel=3)
    keys = groups.drop(columns=["group_id", "fingerprint"]).merge(names, on=["run", "task"])
    scores = pd.concat(parts, ignore_index=True).merge(keys, on=["run", "task"], how="left")
    return scores[RUN_KEYS + GROUP_KEYS + ["epoch", "column", "value"]], unfinished, apart


def training_size(settings: dict) -> str:
    """The cap on training examples per task that a run's settings record (``finetune.max_train_examples``):
    the number, ``all`` for no cap (0), ``unrecorded`` where the run kept no settings. A task with fewer
    training examples than the cap trains on all of them (WNLI's 635 under a cap of 2000)."""
    value = (settings or {}).get("max_train_examples")
    if value is None:
        return "unrecorded"
    return "all" if int(value) == 0 else str(int(value))


def _settings_tag(settings: dict, keys) -> str:
    """A row name's suffix from the values of `keys` (of `NAMED_SETTINGS`): ``n2000``, ``full``, ``bf16``."""
    parts = []
    for key in (k for k in NAMED_SETTINGS if k in keys):
        if key == "max_train_examples":
            size = training_size(settings)
            parts.append("full" if size == "all" else f"n{size}")
        else:
            value = str(settings.get(key))
            parts.append(DTYPE_NAMES.get(value, value))
    return "-".join(parts)


def name_rows(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The table row of every run's task (`runs`: one row per run and task, with its label and
    glue_runs.Fingerprint), so that no row averages seeds of different models or settings:

    * a label whose runs all come from one model is one row, named by the label;
    * a label whose runs come from several models gets a row per model, ``<label>@<model id>``;
    * within a model, a task whose seeds were fine-tuned with different settings gets a row per
      settings, ``<label>@<id>`` (the id of model and settings), holding that task only, and the
      model's row leaves the task out. Where the settings differ only in the training size or the
      precision (`NAMED_SETTINGS`) and the label has one model, the row is named by their values
      instead, so that a reader sees them: ``<label>@n2000``, ``<label>@full``, ``<label>@bf16``.

    Returns (run, task, model, main) and one line per label kept apart, naming the rows, their run
    folders and tasks, and what differs."""
    rows, notes = [], []
    for label, of_label in runs.groupby("label", sort=True):
        order = of_label.groupby("model_id")["finished"].max().sort_values(ascending=False).index
        several = len(order) > 1
        described = []
        for position, model_id in enumerate(order):
            of_model = of_label[of_label["model_id"] == model_id]
            row = f"{label}{GROUP_SUFFIX}{model_id[:8]}" if several else label
            described.append((row + (" (newest)" if position == 0 else ""), of_model))
            for task, of_task in of_model.groupby("task", sort=True):
                settings = list(dict.fromkeys(of_task.sort_values("finished", ascending=False)["settings_id"]))
                if len(settings) == 1:
                    rows += [(r.run, task, row, True) for r in of_task.itertuples()]
                    continue
                groups = [of_task[of_task["settings_id"] == settings_id] for settings_id in settings]
                facts = [group["fingerprint"].iloc[0].settings for group in groups]
                differ = _differing_keys(facts)
                by_value = not several and set(differ) <= set(NAMED_SETTINGS)
                split = []
                for group, fact in zip(groups, facts):
                    suffix = _settings_tag(fact, differ) if by_value else group["group_id"].iloc[0][:8]
                    name = f"{label}{GROUP_SUFFIX}{suffix}"
                    rows += [(r.run, task, name, False) for r in group.itertuples()]
                    split.append((name, group))
                notes.append(f"{label}: {task} of {row} was fine-tuned with different settings "
                             f"({_differences(facts)}); rows "
                             + "; ".join(_described(name, group) for name, group in split)
                             + f"; {row} leaves {task} out")
        if several:
            models = [group["fingerprint"].iloc[0].model for _, group in described]
            notes.append(f"{label}: the runs come from {len(order)} different models ({_differences(models)}); rows "
                         + "; ".join(_described(name, group) for name, group in described))
    return pd.DataFrame(rows, columns=["run", "task", "model", "main"]), notes


def _described(name: str, group: pd.DataFrame) -> str:
    """"<row> = <run folders> (<tasks>)", noting runs recorded before fingerprints."""
    legacy = "" if group["recorded"].all() else ", recorded before fingerprints"
    return (f"{name} = {', '.join(sorted(set(group['run'])))} ({', '.join(sorted(set(group['task'])))}{legacy})")


def _differing_keys(facts: list[dict]) -> list[str]:
    """The keys whose values differ between the dicts `facts`, sorted."""
    keys = sorted({k for f in facts for k in f})
    return [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in facts}) > 1]


def _differences(facts: list[dict], most: int = 6) -> str:
    """The keys whose values differ between the dicts `facts`: "differ in weights, epochs"."""
    differ = _differing_keys(facts)
    shown = ", ".join(differ[:most]) + (f" and {len(differ) - most} more" if len(differ) > most else "")
    return f"they differ in {shown}" if differ else "they differ"


# --------------------------------------------------------------------------- epochs and seeds


def select_epochs(scores: pd.DataFrame, collapsed: pd.DataFrame | None = None) -> pd.DataFrame:
    """The best epoch (highest task score, earliest on ties) and the final epoch of each run and task.

    `collapsed` (`collapsed_epochs`: run, task, epoch, why) lists epochs the best may not be: the best
    is then the highest-scoring epoch among the others, and a run whose every epoch collapsed has none.
    The final epoch is the last one whatever it holds (`mark_collapsed` names it).

    Returns the rows of ``scores`` at those epochs with a ``selection`` column, "best" or "final",
    and, where `collapsed` made the best another epoch, a "skipped" row (the task column only) for
    every collapsed epoch that scored at least as high as the best chosen (every collapsed epoch, where
    none was left), its reason in a ``collapsed`` column.
    """
    keys = ["run", "task"]
    columns = RUN_KEYS + GROUP_KEYS + ["selection", "epoch", "column", "value"]
    task_rows = scores[scores["column"] == scores["task"]]
    if collapsed is None or collapsed.empty:
        flagged = task_rows.assign(why="")
    else:
        flagged = task_rows.merge(collapsed[keys + ["epoch", "why"]], on=keys + ["epoch"], how="left")
        flagged["why"] = flagged["why"].fillna("")
    ranked = flagged.dropna(subset=["value"]).sort_values(["value", "epoch"], ascending=[False, True])
    best = ranked[ranked["why"] == ""].drop_duplicates(keys)[keys + ["epoch"]].assign(selection="best")
    final = task_rows.sort_values("epoch").drop_duplicates(keys, keep="last")[keys + ["epoch"]]
    chosen = pd.concat([best, final.assign(selection="final")], ignore_index=True)
    selected = chosen.merge(scores, on=keys + ["epoch"])[columns]
    skipped = flagged[flagged["why"] != ""]
    if skipped.empty:
        return selected
    best_value = ranked[ranked["why"] == ""].drop_duplicates(keys)[keys + ["value"]].rename(columns={"value": "best_value"})
    skipped = skipped.merge(best_value, on=keys, how="left")
    outranked = skipped["best_value"].isna() | (skipped["value"].fillna(-math.inf) >= skipped["best_value"])
    skipped = skipped[outranked].assign(selection="skipped")
    return pd.concat([selected, skipped[columns + ["why"]].rename(columns={"why": "collapsed"})], ignore_index=True)


def with_mnli_init_rows(selected: pd.DataFrame) -> pd.DataFrame:
    """Add a ``<model>+mnli-init`` row for every model that has MNLI-initialised runs.

    It holds the model's own runs, with each of RTE, MRPC, STS-B and WNLI replaced by the
    MNLI-initialised runs of that task where those exist. The MNLI-initialised runs pair with the
    model their MNLI model was fine-tuned from (their fingerprints say which); runs recorded before
    fingerprints pair as long as each label is one row.
    """
    parts = [selected]
    main = selected[selected["main"]]
    labels = set(main["label"])
    for label in sorted(labels):
        base = base_model(label)
        if label == base or base not in labels:
            continue
        own_rows, from_rows = main[main["label"] == base], main[main["label"] == label]
        unrecorded = not (own_rows["recorded"].all() and from_rows["recorded"].all())
        one_each = own_rows["model"].nunique() == 1 and from_rows["model"].nunique() == 1
        for _, from_model in from_rows.groupby("model", sort=True):
            own = own_rows[own_rows["model_id"] == from_model["base_id"].iloc[0]]
            if own.empty and unrecorded and one_each:
                own = own_rows
            if own.empty:
                continue
            name = own["model"].iloc[0] + COMBINED_SUFFIX
            from_mnli = from_model[from_model["task"].isin(MNLI_INIT_TASKS)]
            own = own[~own["task"].isin(set(from_mnli["task"]))]
            parts.append(pd.concat([own, from_mnli]).assign(model=name, base_model=base))
    return pd.concat(parts, ignore_index=True)


def _best_seed(best: pd.DataFrame) -> pd.DataFrame:
    """Per model and task, the run whose best epoch scored highest (lowest seed on ties)."""
    task_rows = best[best["column"] == best["task"]]
    winners = task_rows.sort_values(["value", "seed"], ascending=[False, True]).drop_duplicates(["model", "task"])
    return best.merge(winners[["model", "task", "run"]], on=["model", "task", "run"])


def _glue_average(task_scores: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(full GLUE score or NaN, mean over the tasks present, number of tasks present)."""
    present = task_scores.reindex(columns=list(GLUE_SCORE_TASKS))
    count = present.notna().sum(axis=1)
    partial = present.mean(axis=1)
    return partial.where(count == len(GLUE_SCORE_TASKS)), partial, count


def mark_collapsed(selected: pd.DataFrame, collapsed: pd.DataFrame | None = None) -> pd.DataFrame:
    """Fill the ``collapsed`` column of the final-epoch rows: "NaN score" where the final task score is
    NaN, else the reason `collapsed_epochs` gives for the final epoch (its prediction files answer one
    class or value, or its scores are a constant answer's); empty elsewhere. The "skipped" rows of
    `select_epochs` keep theirs."""
    selected = selected.copy()
    if "collapsed" not in selected.columns:
        selected["collapsed"] = ""
    selected["collapsed"] = selected["collapsed"].fillna("")
    final = selected["selection"] == "final"
    selected.loc[final, "collapsed"] = ""
    reasons = {} if collapsed is None else {(r.run, r.task, r.epoch): r.why for r in collapsed.itertuples()}
    for row in selected[final & (selected["column"] == selected["task"])].itertuples():
        why = "NaN score" if pd.isna(row.value) else reasons.get((row.run, row.task, row.epoch), "")
        if why:
            at = final & (selected["run"] == row.run) & (selected["task"] == row.task)
            selected.loc[at, "collapsed"] = why
    return selected


def _seed_notes(rows: pd.DataFrame, epochs: bool = False) -> pd.Series:
    """Per model, "<task> seed <k> (<why>)" for `rows` (task-column rows with a ``collapsed`` reason),
    with the epoch where `epochs`: "cola seed 1 epoch 1 (constant predictions)"."""
    rows = rows[(rows["collapsed"] != "") & (rows["column"] == rows["task"])]
    rows = rows.drop_duplicates(["model", "task", "seed", "epoch"]).sort_values(["model", "task", "seed", "epoch"])
    names: dict[str, list[str]] = {}
    for r in rows.itertuples():
        names.setdefault(r.model, []).append(f"{r.task} seed {r.seed}" + (f" epoch {r.epoch}" if epochs else "")
                                             + f" ({r.collapsed})")
    return pd.Series({model: "; ".join(found) for model, found in names.items()}, dtype=object)


def _collapsed_names(selected: pd.DataFrame) -> pd.Series:
    """Per model, its seeds whose final epoch collapsed: "stsb seed 2 (NaN score); cola seed 1 (constant predictions)"."""
    if "collapsed" not in selected.columns:
        return pd.Series(dtype=str)
    return _seed_notes(selected[selected["selection"] == "final"])


def _skipped_names(selected: pd.DataFrame) -> pd.Series:
    """Per model, the collapsed epochs the best convention skipped: "cola seed 1 epoch 1 (constant predictions)"."""
    if "collapsed" not in selected.columns:
        return pd.Series(dtype=str)
    return _seed_notes(selected[selected["selection"] == "skipped"], epochs=True)


def _joined(values: pd.Series) -> str:
    return "+".join(sorted({str(v) for v in values}))


# --------------------------------------------------------------------------- collapsed epochs, dev labels, the trivial baseline

NEAR_CONSTANT = 0.01  # an epoch answering one class for all but fewer than this share of the examples collapsed
SAME_SCORE = 1e-6  # two scores (in %) closer than this are equal
BASELINE_ROW = "trivial-majority"
BASELINE_RECIPE = "baseline"


class PredictionCache:
    """Prediction files and run_info.json files read once per aggregation."""

    def __init__(self):
        self._frames: dict[str, pd.DataFrame] = {}
        self._infos: dict[str, dict] = {}

    def frame(self, path: str | Path) -> pd.DataFrame:
        key = str(path)
        if key not in self._frames:
            frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
            missing = {"index", "prediction", "label"} - set(frame.columns)
            if missing:
                raise ValueError(f"{path}: no column(s) {sorted(missing)}; expected index, prediction, label")
            self._frames[key] = frame
        return self._frames[key]

    def info(self, run: str | Path) -> dict:
        key = str(run)
        if key not in self._infos:
            self._infos[key] = glue_runs.read_info(run) if glue_runs.info_path(run).is_file() else {}
        return self._infos[key]


def _tasks_in(scores: pd.DataFrame) -> list[str]:
    """The tasks of `scores`: GLUE's in their order, then custom ones sorted."""
    present = set(scores["task"])
    return [t for t in GLUE_TASKS if t in present] + sorted(present - set(GLUE_TASKS))


def _task_spec(task: str, runs, root: str | Path, cache: PredictionCache) -> Task | None:
    """The task a name scores (`scored_task`): GLUE's own, a custom one from the first of `runs` whose
    run_info.json recorded it; None where none did."""
    if task in TASKS:
        return TASKS[task]
    for run in sorted(runs):
        try:
            return scored_task(task, glue_runs.task_entry(cache.info(Path(root) / run), task))
        except ValueError:
            continue
    return None


def _run_dev_labels(spec: Task, folder: Path, cache: PredictionCache) -> dict[str, np.ndarray] | None:
    """{split: labels} of one run's final validation prediction files, or None where one is missing."""
    paths = {split: glue_runs.prediction_path(folder, spec.name, split, "final") for split in spec.eval_splits}
    if not all(path.is_file() for path in paths.values()):
        return None
    return {split: read_prediction_values(spec, path, cache.frame(path))[1] for split, path in paths.items()}


def dev_labels(scores: pd.DataFrame, root: str | Path, glue_dir: str | Path | None = None,
               cache: PredictionCache | None = None, notes: dict | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Per task of `scores`, the labels of its evaluation splits ({split: labels}), as the runs were
    scored on them: from the runs' final validation prediction files -- the dev set most of them share (the
    first by folder on a tie; where they differ, e.g. runs with ``finetune.max_eval_examples``, `notes`
    gets "<k> of <n> runs") --, else from the dev files of a GLUE task in `glue_dir`. A task with
    neither is left out."""
    cache = cache or PredictionCache()
    found = {}
    for task in _tasks_in(scores):
        runs = sorted(set(scores.loc[scores["task"] == task, "run"]))
        spec = _task_spec(task, runs, root, cache)
        if spec is None:
            continue
        sets: dict[tuple, list] = {}
        for run in runs:
            labels = _run_dev_labels(spec, Path(root) / run, cache)
            if labels is not None:
                key = tuple((split, y.tobytes()) for split, y in labels.items())
                sets.setdefault(key, [labels, 0])[1] += 1
        if sets:
            labels, count = max(sets.values(), key=lambda entry: entry[1])  # the first on a tie
            found[task] = labels
            if len(sets) > 1 and notes is not None:
                notes[task] = f"the dev set of {count} of {sum(n for _, n in sets.values())} runs"
        elif glue_dir and task in TASKS:
            files = {split: Path(glue_dir) / spec.folder / spec.splits[split] for split in spec.eval_splits}
            if all(path.is_file() for path in files.values()):
                found[task] = {split: np.asarray(read_split(spec, split, path)[0]["label"]) for split, path in files.items()}
    return found


def prediction_collapse(frames) -> str:
    """Why validation predictions (`frames`, one per split, as the prediction files hold them) show a
    collapsed model: "constant predictions" where a split's are all one class or value, "near-constant
    predictions, <k> of <n> differ" where all but fewer than `NEAR_CONSTANT` of them are; "" otherwise."""
    near = ""
    for frame in frames:
        n = len(frame)
        if n < 2:
            continue
        counts = frame["prediction"].value_counts()
        if len(counts) == 1:
            return "constant predictions"
        others = int(n - counts.iloc[0])
        if others < NEAR_CONSTANT * n:
            near = f"near-constant predictions, {others} of {n} differ"
    return near


def _split_score(task: Task, predictions, labels) -> float:
    """The score (in %) of predictions on one split: the mean of the task's metrics (NaN if one is)."""
    return 100 * float(np.mean(list(compute_metrics(task, predictions, labels).values())))


def constant_answers(task: Task, labels: dict | None) -> list[dict[str, float]]:
    """What answering one class for every dev example scores, per class: {report column: score in %}.
    Without dev labels, only what holds for any labels: an MCC task's constant answer scores 0. A
    regression has none (the correlation of a constant answer is NaN, which never ranks best)."""
    if task.is_regression:
        return []
    columns = dict(zip(task.eval_splits, task.report_columns()))
    if labels is None:
        return [dict.fromkeys(columns.values(), 0.0)] if set(task.metrics) == {"mcc"} else []
    return [{columns[split]: _split_score(task, np.full(len(y), answer), y) for split, y in labels.items()}
            for answer in range(task.num_labels)]


def collapsed_epochs(scores: pd.DataFrame, root: str | Path, dev: dict | None = None,
                     cache: PredictionCache | None = None) -> pd.DataFrame:
    """Every epoch of a run and task that collapsed, and why: columns run, task, epoch, why.

    An epoch with prediction files -- the final epoch, and the best one as the fine-tuning loop chose it
    (``best_epoch`` in run_info.json) -- is judged by them (`prediction_collapse`): one answer for every
    validation example, or for all but fewer than 1 %. The other epochs have only their scores in the
    results file: such an epoch collapsed when every report column is what answering one class for every
    dev example scores ("a constant answer's scores", `constant_answers`: from the run's own dev labels in
    its prediction files, else those of `dev`, or, without either, an MCC of exactly 0)."""
    cache = cache or PredictionCache()
    dev = dev or {}
    rows = []
    for (run, task), of_run in scores.groupby(["run", "task"], sort=True):
        folder = Path(root) / run
        entry = glue_runs.task_entry(cache.info(folder), task) or {}
        spec = _task_spec(task, [run], root, cache)
        wide = of_run.pivot_table(index="epoch", columns="column", values="value", aggfunc="first", dropna=False)
        files = {int(wide.index.max()): glue_runs.prediction_files(folder, task, "validation", "final")}
        ranked = wide[task].fillna(-math.inf)
        loop_best = int(entry["best_epoch"]) if entry.get("best_epoch") else int(ranked.idxmax())
        files.setdefault(loop_best, [])
        files[loop_best] = files[loop_best] or glue_runs.prediction_files(folder, task, "validation", "best")
        own = _run_dev_labels(spec, folder, cache) if spec is not None else None
        answers = constant_answers(spec, own if own is not None else dev.get(task)) if spec is not None else []
        for epoch, values in wide.iterrows():
            if files.get(epoch):
                why = prediction_collapse(cache.frame(path) for path in files[epoch])
            else:
                same = any(all(abs(values.get(column, math.nan) - score) < SAME_SCORE for column, score in answer.items())
                           for answer in answers)
                why = "a constant answer's scores" if same else ""
            if why:
                rows.append({"run": run, "task": task, "epoch": int(epoch), "why": why})
    return pd.DataFrame(rows, columns=["run", "task", "epoch", "why"])


def _training_counts(task: Task, runs, root: str | Path, glue_dir, cache: PredictionCache) -> np.ndarray | None:
    """How many training examples each class has: from the training file in `glue_dir` (a GLUE task),
    else from the counts the first of `runs` recorded in run_info.json (``data.train.labels``, read from
    that same file when it was fine-tuned); None where neither is there."""
    if glue_dir and task.name in TASKS:
        path = Path(glue_dir) / task.folder / task.splits["train"]
        if path.is_file():
            labels = np.asarray(read_split(task, "train", path)[0]["label"], dtype=np.int64)
            return np.bincount(labels, minlength=task.num_labels)
    names = {name: i for i, name in enumerate(task.label_names)}
    for run in sorted(runs):
        entry = glue_runs.task_entry(cache.info(Path(root) / run), task.name) or {}
        recorded = ((entry.get("data") or {}).get("train") or {}).get("labels") or {}
        counts = np.zeros(task.num_labels, dtype=np.int64)
        try:
            for name, count in recorded.items():
                counts[names[name] if name in names else int(name)] += int(count)
        except (ValueError, IndexError):
            continue
        if counts.sum():
            return counts
    return None


def trivial_baseline(scores: pd.DataFrame, root: str | Path, dev: dict, glue_dir: str | Path | None = None,
                     cache: PredictionCache | None = None, notes: dict | None = None) -> dict:
    """The trivial baseline of every task in `scores`: the majority class of the training labels answered
    for every dev example (`dev`: the labels the runs were scored on), scored with the task's own metrics.

    The training labels are the training file's in `glue_dir`, else the class counts the runs recorded from
    it (both "training majority"); where neither is there, the majority of the dev labels ("dev majority"),
    which is labelled so. Ties go to the first class. A regression (STS-B) answers a constant, whose
    correlation with the labels is undefined (NaN): it is scored 0, as CoLA's MCC of a constant answer is.

    Returns {"scores": {report column and task: score in %}, "answers": ["<task>: <answer> (<source>)", ...]};
    a task's `notes` (`dev_labels`: which dev set, where the runs' differ) follow its answer.
    """
    cache = cache or PredictionCache()
    values, answers = {}, []
    for task in _tasks_in(scores):
        runs = sorted(set(scores.loc[scores["task"] == task, "run"]))
        spec, labels = _task_spec(task, runs, root, cache), dev.get(task)
        if spec is None or labels is None:
            answers.append(f"{task}: none (no dev labels)")
            continue
        columns = dict(zip(spec.eval_splits, spec.report_columns()))
        if spec.is_regression:
            split_scores = dict.fromkeys(labels, 0.0)
            answers.append(f"{task}: a constant (its correlation is undefined: scored 0)")
        else:
            counts = _training_counts(spec, runs, root, glue_dir, cache)
            source = "training majority"
            if counts is None:
                pooled = np.concatenate([np.asarray(y, dtype=np.int64) for y in labels.values()])
                counts, source = np.bincount(pooled, minlength=spec.num_labels), "dev majority: no training labels"
            answer = int(np.argmax(counts))
            split_scores = {split: _split_score(spec, np.full(len(y), answer), y) for split, y in labels.items()}
            answers.append(f"{task}: {label_name(spec, answer)} ({source})")
        if (notes or {}).get(task):
            answers[-1] += f", on {notes[task]}"
        for split, score in split_scores.items():
            values[columns[split]] = score
        values[task] = float(np.mean(list(split_scores.values())))
    return {"scores": values, "answers": answers}


def with_baseline(table: pd.DataFrame, baseline: dict | None) -> pd.DataFrame:
    """The table with the trivial baseline's row, `BASELINE_ROW`, first (recipe ``baseline``): each task's
    score as both conventions (no seeds, no spread), its GLUE averages, and in ``baseline`` what it
    answers. No row where no task has one."""
    if not baseline or not baseline["scores"]:
        return table
    row = {column: "" for column in ("init", "recipe", "train_examples", "dtype", "collapsed", "best_skipped")}
    row.update(model=BASELINE_ROW, init="none", recipe=BASELINE_RECIPE, baseline="; ".join(baseline["answers"]))
    for name in table.columns:
        if name.endswith("_best") and not name.startswith("GLUE"):
            column = name.removesuffix("_best")
            value = baseline["scores"].get(column, math.nan)
            row.update({f"{column}_best": value, f"{column}_final_mean": value, f"{column}_final_std": math.nan,
                        f"{column}_seeds": 0, f"{column}_collapsed": 0})
    tasks = pd.DataFrame([{t: baseline["scores"].get(t, math.nan) for t in GLUE_SCORE_TASKS}])
    full, partial, count = _glue_average(tasks)
    row.update(GLUE_best=full[0], GLUE_partial_best=partial[0], GLUE_tasks=int(count[0]), GLUE_final_mean=full[0],
               GLUE_partial_final_mean=partial[0])
    out = pd.concat([pd.DataFrame([row]), table], ignore_index=True)[list(table.columns)]
    counts = [c for c in out.columns if c.endswith(("_seeds", "_collapsed")) and c != "collapsed"] + ["GLUE_tasks"]
    return out.astype({c: int for c in counts})


def aggregate(selected: pd.DataFrame) -> pd.DataFrame:
    """The comparison table: a row per model with its ``init``, ``recipe``, ``train_examples`` (the cap
    on training examples per task, `training_size`), ``dtype`` (the fine-tuning precision), ``collapsed``
    seeds, the collapsed epochs the best convention skipped (``best_skipped``) and an empty ``baseline``
    (what a `trivial_baseline` row answers); per report column ``_best``, ``_final_mean``,
    ``_final_std``, ``_seeds`` (seeds run, a NaN one included) and ``_collapsed`` (how many of them
    collapsed); the GLUE task columns, then ``GLUE_*``, then custom tasks.

    Every GLUE column is present even when no model ran that task, so a gap stays visible.
    """
    models = sorted(selected["model"].unique())
    custom = sorted(set(selected["task"]) - set(GLUE_TASKS))
    every = [*GLUE_COLUMNS, "mnli", *custom]  # reindexing to these turns a task not run into NaN
    best = _best_seed(selected[selected["selection"] == "best"])
    best = best.pivot_table(index="model", columns="column", values="value", aggfunc="first")
    best = best.reindex(index=models, columns=every)
    final = selected[selected["selection"] == "final"].groupby(["model", "column"])["value"]
    final_mean = final.mean().unstack().reindex(index=models, columns=every)
    final_std = final.std().unstack().reindex(index=models, columns=every)
    seeds = final.size().unstack().reindex(index=models, columns=every).fillna(0).astype(int)  # NaN seeds too
    final_rows = selected[selected["selection"] == "final"]
    flagged = final_rows[final_rows.get("collapsed", pd.Series("", index=final_rows.index)) != ""]
    collapsed = flagged.groupby(["model", "column"]).size().unstack().reindex(index=models, columns=every)
    collapsed = collapsed.fillna(0).astype(int)

    table = pd.DataFrame(index=pd.Index(models, name="model"))
    table["init"] = selected.groupby("model")["init"].agg(lambda s: "+".join(sorted(set(s))))
    table["recipe"] = selected.groupby("model")["recipe"].agg(lambda s: "+".join(sorted(set(s))))
    for column in ("train_examples", "dtype"):
        table[column] = selected.groupby("model")[column].agg(_joined)
    table["collapsed"] = _collapsed_names(selected).reindex(models).fillna("")
    table["best_skipped"] = _skipped_names(selected).reindex(models).fillna("")
    table["baseline"] = ""

    def add(columns):
        for column in columns:
            table[f"{column}_best"] = best[column]
            table[f"{column}_final_mean"] = final_mean[column]
            table[f"{column}_final_std"] = final_std[column]
            table[f"{column}_seeds"] = seeds[column]
            table[f"{column}_collapsed"] = collapsed[column]

    add(GLUE_COLUMNS)
    table["GLUE_best"], table["GLUE_partial_best"], table["GLUE_tasks"] = _glue_average(best)
    table["GLUE_final_mean"], table["GLUE_partial_final_mean"], _ = _glue_average(final_mean)
    add(custom)
    return table.reset_index()


def collect(root: str | Path = "GLUE-Outputs", mnli_init_rows: bool = True, glue_dir: str | Path | None = None,
            compare=(), bootstrap: int = BOOTSTRAP) -> Aggregation:
    """Read every finished run under ``root`` and build the table (with ``+mnli-init`` rows unless
    disabled), its trivial baseline row and the significance of the differences between models.

    `glue_dir` (a GLUE download) gives the baseline the training labels, else the counts the runs
    recorded, else the dev labels (`trivial_baseline`); it also gives the dev labels where no run kept
    prediction files. `compare`: pairs of table rows to compare besides each model and its random-init
    twin (`comparisons`), as ``[(a, b), ...]`` or the text ``"a:b;c:d"``; `bootstrap`: the resamples of
    their paired bootstrap (`paired_bootstrap`; 0: Welch's intervals only). The unfinished runs left out
    are listed in the result."""
    scores, unfinished, apart = _load_scores(root)
    cache, notes = PredictionCache(), {}
    dev = dev_labels(scores, root, glue_dir, cache, notes)
    collapsed = collapsed_epochs(scores, root, dev, cache)
    selected = mark_collapsed(select_epochs(scores, collapsed), collapsed)
    table_rows = with_mnli_init_rows(selected) if mnli_init_rows else selected
    table = with_baseline(aggregate(table_rows), trivial_baseline(scores, root, dev, glue_dir, cache, notes))
    pairs = comparisons(table, compare)
    return Aggregation(scores=scores, selected=selected, table=table, unfinished=unfinished, apart=apart,
                       significance=significance(table_rows, table, pairs, root, bootstrap, cache))


# --------------------------------------------------------------------------- re-scoring from predictions


def scored_task(name: str, entry: dict | None) -> Task:
    """The task a results file scores: a GLUE task from the task table, a custom one from what its
    run_info.json entry recorded (labels and metrics)."""
    if name in TASKS:
        return TASKS[name]
    spec = (entry or {}).get("task")
    if not spec:
        raise ValueError(f"custom task {name!r}: run_info.json records no labels and metrics to re-score it with")
    return Task(name=name, num_labels=int(spec["num_labels"]), metrics=tuple(spec["metrics"]), text_columns=("text",),
                label_column="label", label_names=tuple(spec.get("label_names", ())), source="csv")


def read_prediction_values(task: Task, path: Path, frame: pd.DataFrame | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, labels) of a validation prediction file, as the metrics take them: class
    numbers (from the classes' names) or scores. `frame`: the file as already read (`PredictionCache`)."""
    frame = PredictionCache().frame(path) if frame is None else frame

    def values(column):
        if task.is_regression:
            return frame[column].astype(float).to_numpy()
        names = {name: i for i, name in enumerate(task.label_names)}
        try:
            return np.array([names[v] if v in names else int(v) for v in frame[column]])
        except ValueError:
            raise ValueError(f"{path}: {column} values {sorted(set(frame[column]))[:5]} are not classes of "
                             f"{task.name}") from None

    return values("prediction"), values("label")


def rescore_run(run_dir: str | Path) -> pd.DataFrame:
    """Every validation score of a run recomputed from its prediction files, beside the score its
    results file records: columns task, split, which (final, best), epoch, metric, recorded,
    recomputed. A finished task whose prediction file is missing is an error naming the file."""
    run_dir = Path(run_dir)
    info = glue_runs.read_info(run_dir)
    rows = []
    for path in glue_runs.run_results(run_dir):
        name = glue_runs.results_task(path)
        entry = (info.get("tasks") or {}).get(name)
        if task_status(info, name) not in FINISHED:
            continue
        task, frame = scored_task(name, entry), read_task_csv(path)
        epochs = {"final": int(frame["epoch"].iloc[-1]), "best": _best_epoch(frame, task, entry)}
        for which, epoch in epochs.items():
            recorded = frame.set_index("epoch").loc[epoch]
            for split in task.eval_splits:
                file = glue_runs.prediction_path(run_dir, name, split, which)
                if not file.is_file():
                    raise FileNotFoundError(f"{file} does not exist: {path} cannot be re-scored")
                metrics = compute_metrics(task, *read_prediction_values(task, file))
                rows += [{"task": name, "split": split, "which": which, "epoch": epoch, "metric": metric,
                          "recorded": float(recorded[f"{split}_{metric}"]), "recomputed": value}
                         for metric, value in metrics.items()]
    return pd.DataFrame(rows, columns=["task", "split", "which", "epoch", "metric", "recorded", "recomputed"])


def _best_epoch(frame: pd.DataFrame, task: Task, entry: dict | None) -> int:
    """The best epoch as the run recorded it (as the loop picks it: the first with the highest mean
    of the validation metrics)."""
    if entry and entry.get("best_epoch"):
        return int(entry["best_epoch"])
    scores = [main_score(row, task) for row in frame.to_dict("records")]
    return int(frame["epoch"].iloc[int(np.argmax(scores))])


def rescore(root: str | Path = "GLUE-Outputs") -> pd.DataFrame:
    """`rescore_run` over every run folder under ``root`` that has prediction files (a ``run`` column
    added); a ``difference`` column holds |recorded - recomputed| (0 where both are NaN)."""
    parts = [rescore_run(folder).assign(run=Path(folder).relative_to(root).as_posix())
             for folder in sorted({p.parent for p in glue_runs.results_files(root)})
             if glue_runs.predictions_dir(folder).is_dir() and glue_runs.info_path(folder).is_file()]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["task", "split", "which", "epoch", "metric", "recorded", "recomputed", "run"])
    both_nan = table["recorded"].isna() & table["recomputed"].isna()
    table["difference"] = (table["recorded"] - table["recomputed"]).abs().where(~both_nan, 0.0)
    return table


# --------------------------------------------------------------------------- significance

STEP_LABEL = re.compile(r"-step\d+$")
SIGNIFICANCE_COLUMNS = ["a", "b", "pair", "column", "tasks", "seeds_a", "seeds_b", "mean_a", "mean_b", "baseline",
                        "difference", "ci_low", "ci_high", "p", "df", "method", "boot_low", "boot_high", "boot_p"]



def welch_interval(a, b, level: float = LEVEL) -> dict:
    """Welch's t interval for mean(a) - mean(b), seeds as the samples (NaN values left out): the
    difference, its standard error sqrt(s_a^2/n_a + s_b^2/n_b), the Welch-Satterthwaite degrees of
    freedom, the two-sided interval at `level` (scipy.stats.t) and the two-sided p of Welch's t-test.

    `b` a single number (a baseline's fixed score) gives the one-sample t interval of mean(a) - b
    (n_a - 1 degrees of freedom). Where a side has fewer than two values, or the spread is 0, the
    interval and p are NaN: nothing measures the seed-to-seed variation."""
    from scipy import stats

    a = np.asarray(a, dtype=float)
    a = a[~np.isnan(a)]
    fixed = np.ndim(b) == 0
    b = np.asarray([b] if fixed else b, dtype=float)
    b = b[~np.isnan(b)]
    n_a, n_b = len(a), (0 if fixed else len(b))
    out = {"seeds_a": n_a, "seeds_b": n_b, "mean_a": a.mean() if n_a else math.nan,
           "mean_b": b.mean() if len(b) else math.nan}
    out["difference"] = out["mean_a"] - out["mean_b"]
    out.update(se=math.nan, df=math.nan, ci_low=math.nan, ci_high=math.nan, p=math.nan)
    if n_a < 2 or (not fixed and n_b < 2) or not len(b):
        return out
    var_a = a.var(ddof=1) / n_a
    var_b = 0.0 if fixed else b.var(ddof=1) / n_b
    se = math.sqrt(var_a + var_b)
    if se == 0:
        return out
    df = (var_a + var_b) ** 2 / (var_a**2 / (n_a - 1) + (0.0 if fixed else var_b**2 / (n_b - 1)))
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    p = float(2 * stats.t.sf(abs(out["difference"]) / se, df))
    out.update(se=se, df=df, ci_low=out["difference"] - half, ci_high=out["difference"] + half, p=p)
    return out


def _label_of(row: str) -> tuple[str, str]:
    """(label, suffix) of a table row: ``m@n2000`` -> (m, n2000)."""
    label, _, suffix = row.partition(GROUP_SUFFIX)
    return label, suffix


def twin_pairs(table: pd.DataFrame) -> list[tuple[str, str]]:
    """Each model beside its random-init twin, found by name: the row ``<name>-random-init`` pairs with
    ``<name>`` and with every ``<name>-step<k>`` (the snapshots of pretraining_value), with equal
    ``train_examples`` and ``dtype``; where a label has rows for several models or settings
    (``<label>@...``), rows with the same suffix pair first. Rows combined from MNLI runs are left out."""
    rows = table[table["recipe"] != BASELINE_RECIPE].set_index("model")
    names = [m for m in rows.index if COMBINED_SUFFIX not in m and not _label_of(m)[0].endswith(MNLI_SUFFIX)]
    pairs = []
    for twin in names:
        label, suffix = _label_of(twin)
        if not label.endswith(RANDOM_SUFFIX):
            continue
        base = label.removesuffix(RANDOM_SUFFIX)
        for model in names:
            model_label, model_suffix = _label_of(model)
            if model == twin or (model_label != base and STEP_LABEL.sub("", model_label) != base):
                continue
            if model_label.endswith(RANDOM_SUFFIX):
                continue
            if tuple(rows.loc[model, ["train_examples", "dtype"]]) != tuple(rows.loc[twin, ["train_examples", "dtype"]]):
                continue
            rivals = [t for t in names if _label_of(t)[0] == label and tuple(rows.loc[t, ["train_examples", "dtype"]])
                      == tuple(rows.loc[model, ["train_examples", "dtype"]])]
            if len(rivals) > 1 and suffix != model_suffix and any(_label_of(t)[1] == model_suffix for t in rivals):
                continue
            pairs.append((model, twin))
    return sorted(pairs)


def parse_pairs(text) -> list[tuple[str, str]]:
    """Pairs of table rows to compare: ``"a:b;c:d"`` (``,`` separates pairs too) or [(a, b), ...]."""
    if not isinstance(text, str):
        return [tuple(pair) for pair in (text or ())]
    pairs = []
    for item in (part.strip() for part in text.replace(";", ",").split(",")):
        if not item:
            continue
        a, sep, b = item.partition(":")
        if not sep or not a.strip() or not b.strip():
            raise ValueError(f"comparison {item!r} must name two rows of the table as a:b")
        pairs.append((a.strip(), b.strip()))
    return pairs


def comparisons(table: pd.DataFrame, compare=()) -> list[tuple[str, str, str]]:
    """The pairs of rows to compare, (a, b, why): each model and its random-init twin (`twin_pairs`,
    "random-init twin"), then the pairs `compare` names (`parse_pairs`, "named"; b may be the trivial
    baseline's row). A name that is not a row of the table is an error naming the rows."""
    found = [(a, b, "random-init twin") for a, b in twin_pairs(table)]
    rows = set(table["model"])
    for a, b in parse_pairs(compare):
        unknown = [name for name in (a, b) if name not in rows]
        if unknown:
            raise ValueError(f"comparison {a}:{b}: {', '.join(unknown)} is not a row of the table "
                             f"(rows: {', '.join(table['model'])})")
        if (a, b) not in [(x, y) for x, y, _ in found]:
            found.append((a, b, "named"))
    return found


def _seed_finals(table_rows: pd.DataFrame) -> pd.DataFrame:
    """The final-epoch score of every model, seed and column (task and report columns): (model, seed) x column."""
    final = table_rows[table_rows["selection"] == "final"]
    return final.groupby(["model", "seed", "column"])["value"].first().unstack()


def _reference(table: pd.DataFrame, column: str) -> float:
    """The trivial baseline row's score on a column (MNLI's task score: the mean of m and mm); NaN without one."""
    rows = table[table["recipe"] == BASELINE_RECIPE]
    if rows.empty:
        return math.nan
    row = rows.iloc[0]
    if column == "mnli":
        return float(np.mean([row.get(f"{c}_final_mean", math.nan) for c in TASKS["mnli"].report_columns()]))
    return float(row.get(f"{column}_final_mean", math.nan))


def _batch_confusion(P: np.ndarray, Y: np.ndarray, k: int):
    """Per row of (B, N) class arrays and per class c < k: (predicted c, labelled c, both), each (k, B)."""
    k = max(k, 2, int(max(P.max(initial=0), Y.max(initial=0))) + 1)
    predicted = np.stack([(P == c).sum(1) for c in range(k)]).astype(np.float64)
    labelled = np.stack([(Y == c).sum(1) for c in range(k)]).astype(np.float64)
    both = np.stack([((P == c) & (Y == c)).sum(1) for c in range(k)]).astype(np.float64)
    return predicted, labelled, both


def _batch_accuracy(P, Y, k):
    return (P == Y).mean(1)


def _batch_f1(P, Y, k):
    predicted, labelled, both = _batch_confusion(P, Y, k)
    denominator = predicted + labelled
    f1 = np.divide(2 * both, denominator, out=np.zeros_like(both), where=denominator > 0)
    if k <= 2:
        return f1[1]
    present = denominator > 0
    return (f1 * present).sum(0) / present.sum(0)


def _batch_mcc(P, Y, k):
    predicted, labelled, both = _batch_confusion(P, Y, k)
    total, correct = P.shape[1], both.sum(0)
    denominator = np.sqrt((total**2 - (predicted**2).sum(0)) * (total**2 - (labelled**2).sum(0)))
    numerator = correct * total - (predicted * labelled).sum(0)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _batch_pearson(P, Y, k):
    x, y = P - P.mean(1, keepdims=True), Y - Y.mean(1, keepdims=True)
    denominator = np.sqrt((x * x).sum(1) * (y * y).sum(1))
    return np.divide((x * y).sum(1), denominator, out=np.full(len(P), math.nan), where=denominator > 0)


def _codes(values: np.ndarray, examples: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """(the position of each value among the distinct values, how many are distinct), of `values` or, with
    `examples`, of the resamples values[examples]: sorting the one vector, not each resample."""
    unique, inverse = np.unique(values, return_inverse=True)
    inverse = inverse.reshape(np.shape(values))
    return (inverse if examples is None else inverse[examples]), len(unique)


def _batch_ranks(codes: np.ndarray, width: int) -> np.ndarray:
    """The ranks 1..N within each row, from its values' `_codes`, ties given the mean of the ranks they
    share (as scipy.stats.rankdata), by counting each distinct value per row."""
    rows = codes.shape[0]
    counts = np.bincount((np.arange(rows)[:, None] * width + codes).ravel(), minlength=rows * width)
    counts = counts.reshape(rows, width)
    ranks = np.cumsum(counts, axis=1) - counts + (counts + 1) / 2
    return np.take_along_axis(ranks, codes, axis=1)


BATCH_METRICS = {"accuracy": _batch_accuracy, "f1": _batch_f1, "mcc": _batch_mcc, "pearson": _batch_pearson}


def batch_metrics(task: Task, predictions, labels, examples: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """`compute_metrics` for many resamples at once: {metric: (B,) values}, as compute_metrics gives them
    resample by resample. Each row of the (B, N) arrays `predictions` and `labels` is one resample; or,
    with `examples` (B, N indices), `predictions` and `labels` are one run's (N,) vectors and resample b
    is their values at examples[b]."""
    kind = np.float64 if task.is_regression else np.int64
    predictions, labels = np.asarray(predictions).astype(kind), np.asarray(labels).astype(kind)
    if examples is None:
        P, Y = np.atleast_2d(predictions), np.atleast_2d(labels)
    else:
        P, Y = predictions[examples], labels[examples]
    found = {}
    for metric in task.metrics:
        if metric == "spearman":
            if examples is None:
                ranks = [_batch_ranks(*_codes(X)) for X in (P, Y)]
            else:
                ranks = [_batch_ranks(*_codes(x, examples)) for x in (predictions, labels)]
            found[metric] = _batch_pearson(*ranks, task.num_labels)
        else:
            found[metric] = BATCH_METRICS[metric](P, Y, task.num_labels)
    return found


def _final_predictions(table_rows: pd.DataFrame, root: Path, cache: "PredictionCache", model: str, task: Task,
                       split: str) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{seed: (predictions, labels, example ids)} of a model's final validation predictions on one split
    ({} for a seed whose file is missing: then none)."""
    rows = table_rows[(table_rows["selection"] == "final") & (table_rows["model"] == model)
                      & (table_rows["task"] == task.name) & (table_rows["column"] == task.name)]
    found = {}
    for row in rows.drop_duplicates("seed").itertuples():
        path = glue_runs.prediction_path(root / row.run, task.name, split, "final")
        if not path.is_file():
            return {}
        frame = cache.frame(path)
        predictions, labels = read_prediction_values(task, path, frame)
        found[int(row.seed)] = (predictions, labels, frame["index"].to_numpy())
    return found


def _rng(*keys) -> np.random.Generator:
    """A generator seeded by `BOOTSTRAP_SEED` and the text of `keys`: the same draws whatever else is compared."""
    import zlib

    return np.random.default_rng([BOOTSTRAP_SEED, zlib.crc32("|".join(map(str, keys)).encode())])


def paired_bootstrap(units, a: dict, b: dict, resamples: int = BOOTSTRAP, level: float = LEVEL, key: str = "",
                     memo: dict | None = None) -> dict:
    """The paired bootstrap of mean score(a) - mean score(b) over seeds and dev examples.

    `units`: the (task, split) a score averages (one split for a task's column; every split of several
    tasks for the GLUE tasks' mean, each task the mean of its splits); `a`, `b`: {(task name, split):
    {seed: (predictions, labels, ids)}} of each model. Each resample draws the dev examples of every split with replacement, the same for
    both models (paired), and each model's seeds with replacement; a model's score is the mean over its
    drawn seeds of the mean over tasks. Returns the percentile interval at `level` (boot_low,
    boot_high) and the two-sided p, twice the share of resampled differences on the far side of 0 (at
    most 1); NaN where a split's examples differ between runs or a model has fewer than two seeds. The
    draws follow `key` (the pair) and the split, so one pair's columns and its GLUE mean share them;
    `memo` keeps each run's resampled scores for the next call of the same pair."""
    nothing = {"boot_low": math.nan, "boot_high": math.nan, "boot_p": math.nan}
    seeds_a = sorted(set.intersection(*(set(runs) for runs in a.values())))
    seeds_b = sorted(set.intersection(*(set(runs) for runs in b.values())))
    if resamples <= 0 or len(seeds_a) < 2 or len(seeds_b) < 2:
        return nothing
    draw_a = _rng(key, "seeds", len(seeds_a)).integers(0, len(seeds_a), size=(resamples, len(seeds_a)))
    draw_b = _rng(key, "seeds-b", len(seeds_b)).integers(0, len(seeds_b), size=(resamples, len(seeds_b)))
    splits_of: dict[str, int] = {}
    for task, _ in units:
        splits_of[task.name] = splits_of.get(task.name, 0) + 1
    total_a, total_b = np.zeros(resamples), np.zeros(resamples)
    for task, split in units:
        runs_a, runs_b = a[(task.name, split)], b[(task.name, split)]
        ids, labels = runs_a[seeds_a[0]][2], runs_a[seeds_a[0]][1]
        if any(len(r[2]) != len(ids) or (r[2] != ids).any() or (r[1] != labels).any()
               for runs in (runs_a, runs_b) for r in runs.values()):
            return nothing
        examples = _rng(key, task.name, split).integers(0, len(ids), size=(resamples, len(ids)))
        weight = 1.0 / (len(splits_of) * splits_of[task.name])
        memo = {} if memo is None else memo
        for side, runs, seeds, draw, total in ((0, runs_a, seeds_a, draw_a, total_a), (1, runs_b, seeds_b, draw_b, total_b)):
            for s in seeds:
                if (side, s, task.name, split, resamples) not in memo:
                    scores = batch_metrics(task, runs[s][0], labels, examples).values()
                    memo[(side, s, task.name, split, resamples)] = 100 * np.mean(list(scores), axis=0)
            per_seed = np.stack([memo[(side, s, task.name, split, resamples)] for s in seeds])  # (seeds, resamples)
            total += weight * np.take_along_axis(per_seed, draw.T, axis=0).mean(0)
    difference = total_a - total_b
    difference = difference[~np.isnan(difference)]
    if not len(difference):
        return nothing
    low, high = np.percentile(difference, [50 * (1 - level), 50 * (1 + level)])
    p = min(1.0, 2 * min(float(np.mean(difference <= 0)), float(np.mean(difference >= 0))))
    return {"boot_low": float(low), "boot_high": float(high), "boot_p": p}


def significance(table_rows: pd.DataFrame, table: pd.DataFrame, pairs, root: str | Path | None = None,
                 bootstrap: int = 0, cache: "PredictionCache | None" = None) -> pd.DataFrame:
    """For each pair (a, b, why) of `comparisons`, a's final-epoch score minus b's on every column both
    have, and on the mean of the GLUE tasks both have (``GLUE partial``; ``GLUE`` with all eight): the
    mean over seeds of each seed's mean over those tasks. Each with its `welch_interval` over seeds; b the
    trivial baseline's row gives a's one-sample interval against its fixed score. With `bootstrap`
    resamples and the runs' folder `root`, also the `paired_bootstrap` over seeds and dev examples of two
    models (boot_*; NaN against the baseline, or where prediction files are missing). Columns
    `SIGNIFICANCE_COLUMNS`; ``baseline`` is the trivial baseline's score on that column, for reference."""
    finals = _seed_finals(table_rows)
    recipes = table.set_index("model")["recipe"]
    cache = cache or PredictionCache()
    rows = []

    def seeds_of(model: str) -> pd.DataFrame:
        return finals.loc[model] if model in finals.index.get_level_values(0) else pd.DataFrame()

    def has(seeds: pd.DataFrame | None, column: str) -> bool:
        if seeds is None:  # the baseline's row: a fixed score
            return not math.isnan(_reference(table, column))
        return column in seeds.columns and bool(seeds[column].notna().any())

    def splits(column: str, tasks: list[str]) -> list[tuple[Task, str]]:
        if len(tasks) > 1:
            return [unit for t in tasks for unit in splits(t, [t])]
        name = next((t for t in GLUE_TASKS if column == t or column in TASKS[t].report_columns()), column)
        spec = _task_spec(name, set(table_rows.loc[table_rows["task"] == name, "run"]), root or ".", cache)
        if spec is None:
            return []
        if column == name:
            return [(spec, split) for split in spec.eval_splits]
        return [(spec, dict(zip(spec.report_columns(), spec.eval_splits))[column])]

    for a, b, why in pairs:
        fixed = recipes[b] == BASELINE_RECIPE
        seeds_a, seeds_b = seeds_of(a), (None if fixed else seeds_of(b))
        method = f"{'one-sample' if fixed else 'Welch'} t, {round(100 * LEVEL)} %"
        memo: dict = {}

        def compare(column: str, tasks: list[str]):
            if len(tasks) == 1:
                ours = seeds_a[column].to_numpy()
                theirs = _reference(table, column) if fixed else seeds_b[column].to_numpy()
            else:
                ours = seeds_a[tasks].dropna().mean(axis=1).to_numpy()
                theirs = (float(np.mean([_reference(table, t) for t in tasks])) if fixed
                          else seeds_b[tasks].dropna().mean(axis=1).to_numpy())
            reference = float(np.mean([_reference(table, t) for t in tasks]))
            boot = {"boot_low": math.nan, "boot_high": math.nan, "boot_p": math.nan}
            units = splits(column, tasks) if bootstrap and root is not None and not fixed else []
            if units:
                runs = [{(spec.name, split): _final_predictions(table_rows, Path(root), cache, model, spec, split)
                         for spec, split in units} for model in (a, b)]
                if all(found for side in runs for found in side.values()):
                    boot = paired_bootstrap(units, *runs, resamples=bootstrap, key=f"{a}|{b}", memo=memo)
            rows.append({"a": a, "b": b, "pair": why, "column": column, "tasks": ", ".join(tasks),
                         "baseline": reference, "method": method, **welch_interval(ours, theirs), **boot})

        present = [c for c in finals.columns if has(seeds_a, c) and has(seeds_b, c)]
        for column in (c for c in GLUE_COLUMNS if c in present):
            compare(column, [column])
        tasks = [t for t in GLUE_SCORE_TASKS if t in present]
        if len(tasks) > 1:
            compare("GLUE" if len(tasks) == len(GLUE_SCORE_TASKS) else "GLUE partial", tasks)
        for column in sorted(set(present) - set(GLUE_COLUMNS) - set(GLUE_TASKS)):
            compare(column, [column])
    return pd.DataFrame(rows, columns=[*SIGNIFICANCE_COLUMNS, "se"])[SIGNIFICANCE_COLUMNS]


def _fmt_p(p: float) -> str:
    if pd.isna(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.2g}"


def significance_markdown(frame: pd.DataFrame) -> str:
    """The differences of `significance` as one markdown table per pair, each headed by the pair, with a
    note on the method; bold: the 95 % interval excludes 0."""
    if frame.empty:
        return ("**Significance**\n\nNo pair to compare: no model has its random-init twin (`<name>-random-init`) "
                "in the table, and no pair was named (`GLUE_COMPARE=a:b`).\n")
    sections = []
    for (a, b), pair in frame.groupby(["a", "b"], sort=False):
        rows = []
        for r in pair.itertuples():
            name = PRETTY.get(r.column, r.column if r.column.startswith("GLUE") else f"{r.column} (custom)")
            if r.column.startswith("GLUE"):
                name += f" ({len(r.tasks.split(', '))} tasks)"
            shown = f"{r.difference:+.2f}"
            excludes = not pd.isna(r.ci_low) and (r.ci_low > 0 or r.ci_high < 0)
            rows.append({"task": name, a: f"{r.mean_a:.2f} ({r.seeds_a})",
                         b: f"{r.mean_b:.2f}" + (f" ({r.seeds_b})" if r.seeds_b else ""),
                         BASELINE_ROW: _fmt(r.baseline) if not pd.isna(r.baseline) else "–",
                         "difference": f"**{shown}**" if excludes else shown,
                         "95 % interval": "–" if pd.isna(r.ci_low) else f"{r.ci_low:+.2f} to {r.ci_high:+.2f}",
                         "p": _fmt_p(r.p),
                         "bootstrap interval": "–" if pd.isna(r.boot_low) else f"{r.boot_low:+.2f} to {r.boot_high:+.2f}",
                         "bootstrap p": _fmt_p(r.boot_p)})
        head = f"**{a} vs {b}** ({pair['pair'].iloc[0]}; {pair['method'].iloc[0]})"
        sections.append(head + "\n\n" + pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True))
    tasks = "; ".join(sorted({f"{r.column}: {r.tasks}" for r in frame.itertuples() if r.column.startswith("GLUE")}))
    note = (
        "Final-epoch dev scores x100; each model's mean over its seeds, with the number of seeds in brackets. "
        "difference: the first model's mean minus the second's. 95 % interval and p: Welch's t interval and "
        "two-sided t-test over seeds (unequal variances, Welch-Satterthwaite degrees of freedom, scipy.stats.t); "
        "against the trivial baseline's row, the one-sample t interval of the first model's seeds against its "
        "fixed score. There the seeds are the only samples: the interval measures how much fine-tuning seeds move "
        "the score, not the sampling of the dev set. Bootstrap: the paired bootstrap over seeds and dev examples "
        f"({BOOTSTRAP} resamples where computed; each draws the dev examples with replacement, the same for both "
        "models, and each model's seeds with replacement), its 95 % percentile interval and two-sided p (twice the "
        "share of resampled differences on the far side of 0); it adds the dev set's sampling, and with three "
        "seeds it understates their spread (a resample of three values keeps two thirds of their variance "
        "on average), so read it beside Welch's; – against the baseline's row. Bold: Welch's interval excludes 0. "
        "A task's score is the mean of its "
        "official metrics, as in the aggregated table. GLUE partial (GLUE with all eight): per seed, the mean over "
        "the GLUE tasks both models have, without WNLI"
        + (f" ({tasks})" if tasks else "") + "; then compared over seeds. "
        f"{BASELINE_ROW}: the trivial baseline's score (the aggregated table's row), for reference. "
        "Pairs: each model and its random-init twin (`<name>` or `<name>-step<k>` beside `<name>-random-init`), "
        "and those named with GLUE_COMPARE."
    )
    return "\n\n".join(sections + [note]) + "\n"


# --------------------------------------------------------------------------- markdown


def _fmt(value: float) -> str:
    return "–" if pd.isna(value) else f"{value:.1f}"


def _fmt_mean_std(mean: float, std: float) -> str:
    if pd.isna(mean) or pd.isna(std):
        return _fmt(mean)  # a single seed has no spread to report
    return f"{_fmt(mean)} ± {std:.1f}"


def _task_columns(table: pd.DataFrame) -> list[str]:
    """Report columns present in the table: the GLUE ones, then custom tasks."""
    names = [c.removesuffix("_best") for c in table.columns if c.endswith("_best") and not c.startswith("GLUE")]
    return [c for c in GLUE_COLUMNS if c in names] + [c for c in names if c not in GLUE_COLUMNS]


def _seed_range(row: pd.Series, columns: list[str]) -> str:
    counts = sorted({int(row[f"{c}_seeds"]) for c in columns if row[f"{c}_seeds"] > 0})
    if not counts:
        return "0"
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"


def baseline_mark(score: float, spread: float, baseline: float) -> str:
    """The mark of a score against the trivial baseline's: "" where score - spread is above it (NaN
    spread: 0), "≈" where it is not but score + spread reaches it (within the seeds' spread), "↓" where
    even score + spread is below it."""
    if pd.isna(score) or pd.isna(baseline):
        return ""
    spread = 0.0 if pd.isna(spread) else float(spread)
    if score - spread > baseline:
        return ""
    return "≈" if score + spread >= baseline else "↓"


def _marked(cell: str, mark: str) -> str:
    return f"{cell} {mark}" if mark else cell


def markdown_table(table: pd.DataFrame, unfinished=(), apart=()) -> str:
    """Both conventions as two markdown tables, each headed by what its numbers mean, the
    unfinished runs that were left out (`Aggregation.unfinished`) and the labels whose runs were kept
    apart in several rows (`Aggregation.apart`). A score not above the trivial baseline's row is marked
    (`baseline_mark`), and the note under the tables says what that row answers."""
    columns = _task_columns(table)
    custom = [c for c in columns if c not in GLUE_COLUMNS]
    partial = bool((table["GLUE_tasks"] < len(GLUE_SCORE_TASKS)).any())
    baselines = table[table.get("recipe", pd.Series("", index=table.index)) == BASELINE_RECIPE]
    base = baselines.iloc[0] if len(baselines) else None
    marked = False
    sections = []
    for title, convention in (
        ("Original convention: best epoch of each run (collapsed epochs skipped), best seed", "best"),
        ("Final epoch: mean ± std over seeds", "final"),
    ):
        rows = []
        for _, row in table.iterrows():
            is_base = row.get("recipe", "") == BASELINE_RECIPE
            cells = {"model": row["model"], "recipe": row.get("recipe", ""),
                     "train examples": row.get("train_examples", "") or "–", "dtype": row.get("dtype", "") or "–",
                     "seeds": "–" if is_base else _seed_range(row, columns)}
            for column in columns:
                if convention == "best":
                    score, spread = row[f"{column}_best"], math.nan
                    cell = _fmt(score)
                else:
                    score, spread = row[f"{column}_final_mean"], row[f"{column}_final_std"]
                    cell = _fmt_mean_std(score, spread)
                mark = "" if is_base or base is None else baseline_mark(score, spread, base[f"{column}_final_mean"])
                marked = marked or bool(mark)
                cells[PRETTY.get(column, f"{column} (custom)")] = _marked(cell, mark)
                if column == "wnli":
                    glue_key = "GLUE_best" if convention == "best" else "GLUE_final_mean"
                    cells["GLUE"] = _fmt(row[glue_key])
                    if partial:
                        value = row[glue_key.replace("GLUE_", "GLUE_partial_")]
                        n = row["GLUE_tasks"]
                        cells["GLUE partial"] = f"{_fmt(value)} ({n}/{len(GLUE_SCORE_TASKS)})" if n else "–"
            if convention == "best":
                cells["collapsed epochs skipped"] = row.get("best_skipped", "") or "–"
            else:
                cells["collapsed"] = row.get("collapsed", "") or "–"
            rows.append(cells)
        sections.append(f"**{title}**\n\n" + pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True))
    notes = (
        "Scores x100 on the validation sets. CoLA: MCC; STS-B: mean of Pearson and Spearman; "
        "MRPC, QQP: mean of accuracy and F1; MNLI: matched / mismatched accuracy; others: accuracy. "
        f"GLUE: mean of the {len(GLUE_SCORE_TASKS)} tasks without WNLI, MNLI counted once as the mean "
        "of m and mm; given only when all are present"
        + (" (GLUE partial: mean over the tasks present, and how many)" if partial else "")
        + ". – = not run."
        + (f" Custom tasks ({', '.join(custom)}) are not part of GLUE." if custom else "")
        + " recipe: the fine-tuning settings' source (preset = the preset's `finetune.*` and the user's; bert, "
        "roberta: the authors' recipes of glue_models.RECIPES). train examples: the cap on training examples per "
        "task (`finetune.max_train_examples`; a task with fewer trains on all of them; all = no cap); dtype: the "
        "fine-tuning precision. collapsed: seeds whose final score is NaN (left out of the mean, counted in seeds) "
        "or whose final predictions are all one class or value, or all but fewer than 1 % of them. The best "
        "convention skips collapsed epochs (judged by the prediction files where the run kept them: the final "
        "epoch and the loop's best; an epoch with only its scores, when they are what answering one class for "
        "every dev example scores); collapsed epochs skipped: those that scored at least the best kept; – in a "
        "best cell beside a run: every epoch of every seed collapsed."
        + (f" {BASELINE_ROW} ({BASELINE_RECIPE}): the majority class of the training labels answered for every dev "
           "example, scored with the task's metrics (the training file in GLUE_DIR, else the class counts the runs "
           "recorded from it; without either, the dev labels' majority, said so); a regression answers a constant, "
           "whose correlation is undefined and scored 0. It answers: " + base["baseline"] + "."
           if base is not None else "")
        + (" ≈: not above the trivial baseline within the seeds' spread (mean - std, or the one score, not above "
           "the baseline's); ↓: below it by more than the spread (mean + std below the baseline's)."
           if marked else "")
        + (f" Left out, not finished: {', '.join(unfinished)}." if unfinished else "")
        + (" Kept apart, runs of different models or settings under one label (never averaged together): "
           + " ".join(f"{note}." for note in apart) if apart else "")
    )
    return "\n\n".join(sections + [notes]) + "\n"


# --------------------------------------------------------------------------- plots
# Figures are built with matplotlib's object API (no pyplot): they render headless through
# Agg and leave no global figure state behind in a notebook or a test.


def _palette(models: list[str]) -> dict[str, tuple]:
    import seaborn as sns

    return dict(zip(models, sns.color_palette("tab10", n_colors=max(len(models), 1))))


def plot_task_scores(selected: pd.DataFrame, baseline: dict | None = None):
    """Bars per task and model at the final epoch; error bars are the std over seeds; a dashed line
    across each task at the trivial baseline's score (`baseline`: {report column: score})."""
    import seaborn as sns
    from matplotlib.figure import Figure

    final = selected[(selected["selection"] == "final") & (selected["column"] != "mnli")]
    present = set(final["column"])
    order = [c for c in GLUE_COLUMNS if c in present] + sorted(present - set(GLUE_COLUMNS))
    models = sorted(final["model"].unique())
    fig = Figure(figsize=(max(6.0, 0.6 * len(order) * (1 + 0.25 * len(models))), 4.5), layout="constrained")
    ax = fig.subplots()
    sns.barplot(
        data=final, x="column", y="value", hue="model", order=order, hue_order=models,
        palette=_palette(models), errorbar="sd", capsize=0.1, ax=ax,
    )  # fmt: skip
    ax.set_xticks(range(len(order)), [PRETTY.get(c, c) for c in order])
    labelled = False
    for position, column in enumerate(order):
        value = (baseline or {}).get(column, math.nan)
        if not pd.isna(value):
            ax.hlines(value, position - 0.45, position + 0.45, colors="black", linestyles="--", linewidth=1.2,
                      label=None if labelled else BASELINE_ROW)
            labelled = True
    ax.set(xlabel="", ylabel="validation score (%)", title="Final epoch, mean ± std over seeds")
    ax.legend(title="model", fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def plot_curves(scores: pd.DataFrame):
    """Validation task score against epoch, one panel per task, a line per model (band = std over seeds)."""
    import seaborn as sns
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    rows = scores[scores["column"] == scores["task"]]
    tasks = [t for t in GLUE_TASKS if t in set(rows["task"])] + sorted(set(rows["task"]) - set(GLUE_TASKS))
    models = sorted(rows["model"].unique())
    palette = _palette(models)
    ncols = min(3, len(tasks))
    nrows = math.ceil(len(tasks) / ncols)
    fig = Figure(figsize=(4.0 * ncols + 2.0, 3.0 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, task in zip(axes, tasks):
        data = rows[rows["task"] == task]
        sns.lineplot(
            data=data, x="epoch", y="value", hue="model", hue_order=models, palette=palette,
            errorbar="sd", marker="o", legend=False, ax=ax,
        )  # fmt: skip
        name = PRETTY.get(task, task)
        ax.set(title="MNLI (mean of m, mm)" if task == "mnli" else name, xlabel="epoch", ylabel="score (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[len(tasks) :]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=palette[m], marker="o", label=m) for m in models]
    fig.legend(handles=handles, title="model", loc="outside right upper", fontsize="small")
    fig.suptitle("Fine-tuning curves: validation score per epoch")
    return fig


# --------------------------------------------------------------------------- writing


SIGNIFICANCE_FILE = "GLUE-significance.csv"


def significance_csv(frame: pd.DataFrame) -> str:
    """The significance table as its CSV holds it: scores, differences and intervals to 2 decimals, p to
    4 and the degrees of freedom to 2."""
    rounded = frame.round({c: 2 for c in ("mean_a", "mean_b", "baseline", "difference", "ci_low", "ci_high", "df")})
    return rounded.round({"p": 4}).to_csv(index=False)


def write_report(
    result: Aggregation,
    csv_path: str | Path = "GLUE-aggregated-results.csv",
    plots_dir: str | Path = "GLUE-Outputs/plots",
    markdown_path: str | Path | None = None,
    significance_path: str | Path | None = None,
) -> dict[str, Path]:
    """Write the table (CSV rounded to 2 decimals, markdown beside it unless given), the significance of
    the differences (`significance_csv`, ``GLUE-significance.csv`` beside the table unless given, and its
    markdown beside it) and both plots.

    Returns the written paths under the keys csv, markdown, significance, significance_markdown,
    task_scores, curves.
    """
    csv_path = Path(csv_path)
    markdown_path = Path(markdown_path) if markdown_path else csv_path.with_suffix(".md")
    significance_path = Path(significance_path) if significance_path else csv_path.with_name(SIGNIFICANCE_FILE)
    plots_dir = Path(plots_dir)
    for folder in (csv_path.parent, markdown_path.parent, significance_path.parent, plots_dir):
        folder.mkdir(parents=True, exist_ok=True)
    result.table.round(2).to_csv(csv_path, index=False)
    markdown_path.write_text(markdown_table(result.table, result.unfinished, result.apart))
    significance_path.write_text(significance_csv(result.significance))
    significance_path.with_suffix(".md").write_text(significance_markdown(result.significance))
    paths = {"csv": csv_path, "markdown": markdown_path, "significance": significance_path,
             "significance_markdown": significance_path.with_suffix(".md")}
    rows = result.table[result.table["recipe"] == BASELINE_RECIPE]
    baseline = {} if rows.empty else {c.removesuffix("_final_mean"): rows.iloc[0][c] for c in rows.columns
                                      if c.endswith("_final_mean") and not c.startswith("GLUE")}
    figures = (("task_scores", plot_task_scores(result.selected, baseline)), ("curves", plot_curves(result.scores)))
    for name, figure in figures:
        paths[name] = plots_dir / f"{name.replace('_', '-')}.png"
        figure.savefig(paths[name], dpi=110)
    return paths
