"""Aggregate GLUE fine-tuning results into one comparison table, a markdown table and plots.

The fine-tuning loop writes one folder per run, ``GLUE-Outputs/<model>-seed<seed>/`` (read through
glue_runs), holding a ``run_info.json`` and one ``results_<task>.csv`` per task (a row per epoch, columns ``epoch``,
``train_<metric>``, ``validation_<metric>``). Read top to bottom: finding and validating those
files -> per-epoch task scores -> best and final epoch per run -> the table over seeds -> markdown
and plots.

Conventions (the README repeats them):

* Scores are percentages (x100). A task's score is the mean of its official validation metrics:
  CoLA MCC; STS-B mean of Pearson and Spearman; MRPC and QQP mean of accuracy and F1; MNLI mean of
  matched and mismatched accuracy (both also reported, as ``mnli_m`` and ``mnli_mm``); the other
  tasks accuracy. A custom task (e.g. ``demo``) scores the mean of its validation metrics, losses
  excluded. The best epoch of a run is the one with the highest task score, as the original
  DitBERT chose it.
* Two conventions side by side, the column name says which: ``<task>_best`` is the original's
  (best epoch of each run, then the best seed); ``<task>_final_mean`` / ``<task>_final_std`` are
  the last epoch's mean and sample standard deviation over seeds (``<task>_seeds`` runs; the std
  needs two).
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
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import glue_runs
from glue_tasks import GLUE_TASKS, MNLI_INIT_TASKS, TASKS, Task, compute_metrics, main_score

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
# when the task's fine-tuning ended (seconds since the epoch).
GROUP_KEYS = ["label", "model_id", "settings_id", "base_id", "main", "recorded", "finished"]
FINISHED = glue_runs.FINISHED  # statuses aggregated: complete, or a run_info.json that keeps none
GROUP_SUFFIX = "@"  # <label>@<fingerprint>: the row of one of a label's models, when it has several


@dataclass
class Aggregation:
    """Everything the aggregation step produces, from raw epochs to the final table."""

    scores: pd.DataFrame  # one row per run, task, epoch and report column (value in %)
    selected: pd.DataFrame  # the best and the final epoch of every run and task
    table: pd.DataFrame  # models as rows, both conventions as columns
    unfinished: list = field(default_factory=list)  # "<results file> (<status>)" of the runs left out
    apart: list = field(default_factory=list)  # labels whose runs form several rows: which and why

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
                     "finished": glue_runs.finished_at(path.parent, task, info["info"])})
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


def name_rows(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The table row of every run's task (`runs`: one row per run and task, with its label and
    glue_runs.Fingerprint), so that no row averages seeds of different models or settings:

    * a label whose runs all come from one model is one row, named by the label;
    * a label whose runs come from several models gets a row per model, ``<label>@<model id>``;
    * within a model, a task whose seeds were fine-tuned with different settings gets a row per
      settings, ``<label>@<id>`` (the id of model and settings), holding that task only, and the
      model's row leaves the task out.

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
                split = []
                for settings_id in settings:
                    group = of_task[of_task["settings_id"] == settings_id]
                    name = f"{label}{GROUP_SUFFIX}{group['group_id'].iloc[0][:8]}"
                    rows += [(r.run, task, name, False) for r in group.itertuples()]
                    split.append((name, group))
                notes.append(f"{label}: {task} of {row} was fine-tuned with different settings "
                             f"({_differences([g['fingerprint'].iloc[0].settings for _, g in split])}); rows "
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


def _differences(facts: list[dict], most: int = 6) -> str:
    """The keys whose values differ between the dicts `facts`: "differ in weights, epochs"."""
    keys = sorted({k for f in facts for k in f})
    differ = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in facts}) > 1]
    shown = ", ".join(differ[:most]) + (f" and {len(differ) - most} more" if len(differ) > most else "")
    return f"they differ in {shown}" if differ else "they differ"


# --------------------------------------------------------------------------- epochs and seeds


def select_epochs(scores: pd.DataFrame) -> pd.DataFrame:
    """The best epoch (highest task score, earliest on ties) and the final epoch of each run and task.

    Returns the rows of ``scores`` at those epochs with a ``selection`` column, "best" or "final".
    """
    keys = ["run", "task"]
    task_rows = scores[scores["column"] == scores["task"]]
    ranked = task_rows.dropna(subset=["value"]).sort_values(["value", "epoch"], ascending=[False, True])
    best = ranked.drop_duplicates(keys)[keys + ["epoch"]].assign(selection="best")
    final = task_rows.sort_values("epoch").drop_duplicates(keys, keep="last")[keys + ["epoch"]]
    chosen = pd.concat([best, final.assign(selection="final")], ignore_index=True)
    return chosen.merge(scores, on=keys + ["epoch"])[RUN_KEYS + GROUP_KEYS + ["selection", "epoch", "column", "value"]]


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


def constant_predictions(run_dir: Path, task: str) -> bool:
    """Whether a run's final validation predictions of `task` are all one class or value (from its
    prediction files; False where there are none)."""
    for path in glue_runs.prediction_files(run_dir, task, "validation", "final"):
        frame = pd.read_csv(path, sep="\t", dtype={"prediction": str}, keep_default_na=False)
        if len(frame) > 1 and frame["prediction"].nunique() == 1:
            return True
    return False


def mark_collapsed(selected: pd.DataFrame, root: str | Path) -> pd.DataFrame:
    """Add a ``collapsed`` column: on the final-epoch rows of a run whose final task score is NaN
    ("NaN score") or whose final validation predictions are constant ("constant predictions"),
    why; empty elsewhere."""
    selected = selected.assign(collapsed="")
    final = selected[(selected["selection"] == "final") & (selected["column"] == selected["task"])]
    for _, row in final.iterrows():
        why = "NaN score" if pd.isna(row["value"]) else ""
        if not why and constant_predictions(Path(root) / row["run"], row["task"]):
            why = "constant predictions"
        if why:
            at = (selected["run"] == row["run"]) & (selected["task"] == row["task"]) & (selected["selection"] == "final")
            selected.loc[at, "collapsed"] = why
    return selected


def _collapsed_names(selected: pd.DataFrame) -> pd.Series:
    """Per model, its collapsed seeds: "stsb seed 2 (NaN score); cola seed 1 (constant predictions)"."""
    if "collapsed" not in selected.columns:
        return pd.Series(dtype=str)
    rows = selected[(selected["collapsed"] != "") & (selected["column"] == selected["task"])]
    rows = rows.drop_duplicates(["model", "task", "seed"]).sort_values(["model", "task", "seed"])
    names: dict[str, list[str]] = {}
    for r in rows.itertuples():
        names.setdefault(r.model, []).append(f"{r.task} seed {r.seed} ({r.collapsed})")
    return pd.Series({model: "; ".join(found) for model, found in names.items()}, dtype=object)


def aggregate(selected: pd.DataFrame) -> pd.DataFrame:
    """The comparison table: a row per model with its ``init``, ``recipe`` and ``collapsed`` seeds;
    per report column ``_best``, ``_final_mean``, ``_final_std``, ``_seeds`` (seeds run, a NaN one
    included) and ``_collapsed`` (how many of them collapsed); the GLUE task columns, then
    ``GLUE_*``, then custom tasks.

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
    table["collapsed"] = _collapsed_names(selected).reindex(models).fillna("")

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


def collect(root: str | Path = "GLUE-Outputs", mnli_init_rows: bool = True) -> Aggregation:
    """Read every finished run under ``root`` and build the table (with ``+mnli-init`` rows unless
    disabled); the unfinished runs left out are listed in the result."""
    scores, unfinished, apart = _load_scores(root)
    selected = mark_collapsed(select_epochs(scores), root)
    table_rows = with_mnli_init_rows(selected) if mnli_init_rows else selected
    return Aggregation(scores=scores, selected=selected, table=aggregate(table_rows), unfinished=unfinished,
                       apart=apart)


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


def read_prediction_values(task: Task, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, labels) of a validation prediction file, as the metrics take them: class
    numbers (from the classes' names) or scores."""
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = {"index", "prediction", "label"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: no column(s) {sorted(missing)}; expected index, prediction, label")

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


def markdown_table(table: pd.DataFrame, unfinished=(), apart=()) -> str:
    """Both conventions as two markdown tables, each headed by what its numbers mean, the
    unfinished runs that were left out (`Aggregation.unfinished`) and the labels whose runs were kept
    apart in several rows (`Aggregation.apart`)."""
    columns = _task_columns(table)
    custom = [c for c in columns if c not in GLUE_COLUMNS]
    partial = bool((table["GLUE_tasks"] < len(GLUE_SCORE_TASKS)).any())
    sections = []
    for title, convention in (
        ("Original convention: best epoch of each run, best seed", "best"),
        ("Final epoch: mean ± std over seeds", "final"),
    ):
        rows = []
        for _, row in table.iterrows():
            cells = {"model": row["model"], "recipe": row.get("recipe", ""), "seeds": _seed_range(row, columns)}
            for column in columns:
                if convention == "best":
                    cell = _fmt(row[f"{column}_best"])
                else:
                    cell = _fmt_mean_std(row[f"{column}_final_mean"], row[f"{column}_final_std"])
                cells[PRETTY.get(column, f"{column} (custom)")] = cell
                if column == "wnli":
                    glue_key = "GLUE_best" if convention == "best" else "GLUE_final_mean"
                    cells["GLUE"] = _fmt(row[glue_key])
                    if partial:
                        value = row[glue_key.replace("GLUE_", "GLUE_partial_")]
                        n = row["GLUE_tasks"]
                        cells["GLUE partial"] = f"{_fmt(value)} ({n}/{len(GLUE_SCORE_TASKS)})" if n else "–"
            if convention == "final":
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
        "roberta: the authors' recipes of glue_models.RECIPES). collapsed: seeds whose final score is NaN (left "
        "out of the mean, counted in seeds) or whose final predictions are all one class or value."
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


def plot_task_scores(selected: pd.DataFrame):
    """Bars per task and model at the final epoch; error bars are the std over seeds."""
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


def write_report(
    result: Aggregation,
    csv_path: str | Path = "GLUE-aggregated-results.csv",
    plots_dir: str | Path = "GLUE-Outputs/plots",
    markdown_path: str | Path | None = None,
) -> dict[str, Path]:
    """Write the table (CSV rounded to 2 decimals, markdown beside it unless given) and both plots.

    Returns the written paths under the keys csv, markdown, task_scores, curves.
    """
    csv_path = Path(csv_path)
    markdown_path = Path(markdown_path) if markdown_path else csv_path.with_suffix(".md")
    plots_dir = Path(plots_dir)
    for folder in (csv_path.parent, markdown_path.parent, plots_dir):
        folder.mkdir(parents=True, exist_ok=True)
    result.table.round(2).to_csv(csv_path, index=False)
    markdown_path.write_text(markdown_table(result.table, result.unfinished, result.apart))
    paths = {"csv": csv_path, "markdown": markdown_path}
    for name, figure in (("task_scores", plot_task_scores(result.selected)), ("curves", plot_curves(result.scores))):
        paths[name] = plots_dir / f"{name.replace('_', '-')}.png"
        figure.savefig(paths[name], dpi=110)
    return paths
