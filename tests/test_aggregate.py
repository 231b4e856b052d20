"""Aggregation of GLUE results on small results folders written here, and the notebook that runs it."""

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import glue_results as gr  # noqa: E402

NOTEBOOK = REPO / "Aggregate-GLUE-results.py"
# The validation metrics the fine-tuning loop writes per task (the CSV schema).
METRICS = {
    "cola": ["mcc"],
    "sst2": ["accuracy"],
    "mrpc": ["accuracy", "f1"],
    "stsb": ["pearson", "spearman"],
    "qqp": ["accuracy", "f1"],
    "mnli": ["matched_accuracy", "mismatched_accuracy"],
    "qnli": ["accuracy"],
    "rte": ["accuracy"],
    "wnli": ["accuracy"],
    "demo": ["accuracy"],
}


def write_run(root, folder, results, model=None, seed=1, init="pretrained", info=True, tasks=None):
    """One run folder: ``results`` maps task -> {column: per-epoch values}; epochs count from 1.
    `tasks`: the run_info.json entries per task, as the fine-tuning loop writes them (none by default)."""
    run = Path(root) / folder
    run.mkdir(parents=True, exist_ok=True)
    if info:
        facts = {"model": model, "seed": seed, "init": init, "lr": 2e-5} | ({"tasks": tasks} if tasks is not None else {})
        (run / "run_info.json").write_text(json.dumps(facts))
    for task, columns in results.items():
        n = len(next(iter(columns.values())))
        frame = pd.DataFrame({"epoch": range(1, n + 1), "train_loss": [1.0 / e for e in range(1, n + 1)], **columns})
        frame.to_csv(run / f"results_{task}.csv", index=False)
    return run


def same_metrics(task, values):
    """Columns for ``task`` with every official metric equal to ``values``, so the task score is ``values``."""
    return {f"validation_{m}": list(values) for m in METRICS[task]}


def cell(table, model, column):
    return table.set_index("model").loc[model, column]


def markdown_rows(section):
    """The rows of one markdown table as dicts keyed by header."""
    lines = [line for line in section.splitlines() if line.startswith("|")]
    split = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return {row[0]: dict(zip(split[0], row)) for row in split[2:]}


# Scores per task for a model with every GLUE task: GLUE without WNLI, MNLI once as mean(60, 80) = 70.
FULL = {"cola": 0.10, "sst2": 0.20, "mrpc": 0.30, "stsb": 0.40, "qqp": 0.50, "qnli": 0.80, "rte": 0.90, "wnli": 0.99}
FULL_GLUE = (10 + 20 + 30 + 40 + 50 + 70 + 80 + 90) / 8


def write_full_and_partial(root):
    """Model "full" has all GLUE tasks and the demo task; model "partial" lacks QQP and demo."""
    full = {task: same_metrics(task, [score]) for task, score in FULL.items()}
    full["mnli"] = {"validation_matched_accuracy": [0.60], "validation_mismatched_accuracy": [0.80]}
    full["demo"] = {"validation_accuracy": [1.0]}
    write_run(root, "full-seed1", full, model="full")
    partial = {task: columns for task, columns in full.items() if task not in ("qqp", "demo")}
    write_run(root, "partial-seed1", partial, model="partial")


# --------------------------------------------------------------------------- epochs and seeds


def test_best_epoch_is_chosen_by_the_mean_of_the_task_metrics(tmp_path):
    # MRPC: accuracy alone picks epoch 1, F1 alone epoch 3, their mean (70, 75, 72.5) epoch 2.
    # STS-B: Pearson alone picks epoch 3, Spearman epoch 1, the mean (75, 77.5, 70) epoch 2.
    write_run(
        tmp_path,
        "m-seed1",
        {
            "mrpc": {
                "validation_accuracy": [0.90, 0.80, 0.70],
                "validation_f1": [0.50, 0.70, 0.75],
                "validation_loss": [0.1, 0.9, 0.5],  # extra columns are ignored
                "train_accuracy": [0.99, 0.1, 0.1],
                "learning_rate": [1e-5, 2e-5, 1e-5],
            },
            "stsb": {"validation_pearson": [0.6, 0.7, 0.9], "validation_spearman": [0.9, 0.85, 0.5]},
        },
        model="m",
    )
    selected = gr.select_epochs(gr.load_scores(tmp_path)).set_index(["task", "selection", "column"])
    assert selected.loc[("mrpc", "best", "mrpc"), "epoch"] == 2
    assert selected.loc[("mrpc", "best", "mrpc"), "value"] == pytest.approx(75.0)
    assert selected.loc[("mrpc", "final", "mrpc"), "value"] == pytest.approx(72.5)
    assert selected.loc[("stsb", "best", "stsb"), "epoch"] == 2
    assert selected.loc[("stsb", "best", "stsb"), "value"] == pytest.approx(77.5)
    assert selected.loc[("stsb", "final", "stsb"), "epoch"] == 3


def test_seeds_give_mean_std_at_the_final_epoch_and_the_best_seed(tmp_path):
    mcc = {1: [0.30, 0.50, 0.40], 2: [0.20, 0.45, 0.44], 3: [0.55, 0.35, 0.48]}
    for seed, values in mcc.items():
        write_run(tmp_path, f"m-seed{seed}", {"cola": {"validation_mcc": values}}, model="m", seed=seed)
    write_run(tmp_path, "solo-seed7", {"cola": {"validation_mcc": [0.1, 0.2]}}, model="solo", seed=7)
    table = gr.collect(tmp_path).table
    finals = [100 * values[-1] for values in mcc.values()]
    assert cell(table, "m", "cola_best") == pytest.approx(55.0)  # seed 3, epoch 1
    assert cell(table, "m", "cola_final_mean") == pytest.approx(statistics.mean(finals))
    assert cell(table, "m", "cola_final_std") == pytest.approx(statistics.stdev(finals))
    assert cell(table, "m", "cola_seeds") == 3
    assert cell(table, "solo", "cola_seeds") == 1
    assert math.isnan(cell(table, "solo", "cola_final_std"))  # one seed has no spread
    final_rows = markdown_rows(gr.markdown_table(table).split("**Final epoch")[1])
    assert "±" in final_rows["m"]["CoLA"] and "±" not in final_rows["solo"]["CoLA"]


def test_mnli_reports_matched_and_mismatched_from_the_epoch_and_seed_of_their_mean(tmp_path):
    # Seed 1: means 75, 74 -> epoch 1 (m 70, mm 80). Seed 2: means 71, 77 -> epoch 2 (m 78, mm 76).
    # The best seed is 2 (77 > 75), even though seed 1 has the higher mismatched score.
    runs = {1: ([0.70, 0.74], [0.80, 0.74]), 2: ([0.72, 0.78], [0.70, 0.76])}
    for seed, (matched, mismatched) in runs.items():
        columns = {"validation_matched_accuracy": matched, "validation_mismatched_accuracy": mismatched}
        write_run(tmp_path, f"m-seed{seed}", {"mnli": columns}, model="m", seed=seed)
    table = gr.collect(tmp_path).table
    assert cell(table, "m", "mnli_m_best") == pytest.approx(78.0)
    assert cell(table, "m", "mnli_mm_best") == pytest.approx(76.0)
    assert cell(table, "m", "mnli_m_final_mean") == pytest.approx(76.0)
    assert cell(table, "m", "mnli_mm_final_mean") == pytest.approx(75.0)
    assert "mnli_best" not in table.columns  # the mean enters GLUE but is not a table column


# --------------------------------------------------------------------------- GLUE average and missing tasks


def test_glue_average_leaves_out_wnli_and_custom_tasks_and_missing_tasks_stay_missing(tmp_path):
    write_full_and_partial(tmp_path)
    table = gr.collect(tmp_path).table
    for convention in ("GLUE_best", "GLUE_final_mean"):
        assert cell(table, "full", convention) == pytest.approx(FULL_GLUE)
        assert math.isnan(cell(table, "partial", convention))
    assert cell(table, "full", "GLUE_tasks") == 8
    assert cell(table, "partial", "GLUE_tasks") == 7
    assert cell(table, "partial", "GLUE_partial_best") == pytest.approx((FULL_GLUE * 8 - 50) / 7)
    assert cell(table, "full", "wnli_best") == pytest.approx(99.0)
    assert cell(table, "full", "demo_best") == pytest.approx(100.0)
    assert math.isnan(cell(table, "partial", "qqp_best"))
    assert math.isnan(cell(table, "partial", "demo_final_mean"))
    assert cell(table, "partial", "qqp_seeds") == 0
    # A GLUE task nobody ran still has its columns, empty.
    write_run(tmp_path / "only-cola", "x-seed1", {"cola": {"validation_mcc": [0.5]}}, model="x")
    sparse = gr.collect(tmp_path / "only-cola").table
    assert {"qqp_best", "mnli_m_final_mean", "wnli_final_std"} <= set(sparse.columns)
    assert sparse["qqp_best"].isna().all()


def test_markdown_table_shows_both_conventions_and_dashes_for_missing_tasks(tmp_path):
    write_full_and_partial(tmp_path)
    text = gr.markdown_table(gr.collect(tmp_path).table)
    original, final = text.split("**Final epoch")
    assert "best epoch" in original and "mean ± std" in final
    for section in (original, final):
        rows = markdown_rows(section)
        assert rows["full"]["GLUE"] == f"{FULL_GLUE:.1f}"
        assert rows["full"]["MNLI-m"] == "60.0" and rows["full"]["MNLI-mm"] == "80.0"
        assert rows["partial"]["QQP"] == "–" and rows["partial"]["GLUE"] == "–"
        assert rows["partial"]["GLUE partial"].endswith("(7/8)")
        assert rows["full"]["demo (custom)"] == "100.0"
        assert rows["partial"]["demo (custom)"] == "–"
    assert "not part of GLUE" in text


# --------------------------------------------------------------------------- MNLI-initialised runs


def test_model_labels_for_mnli_and_random_initialisation():
    assert gr.model_label("bert", "mnli") == "bert-from-mnli"
    assert gr.model_label("bert-from-mnli", "mnli") == "bert-from-mnli"
    assert gr.model_label("tiny", "random") == "tiny-random-init"
    assert gr.model_label("tiny-random", "random") == "tiny-random"
    assert gr.model_label("tiny", "pretrained") == "tiny"
    assert gr.base_model("bert-from-mnli") == "bert"


def test_mnli_initialised_runs_get_their_own_row_and_a_combined_row(tmp_path):
    write_run(tmp_path, "bert-seed1", {"cola": {"validation_mcc": [0.40]}, "rte": {"validation_accuracy": [0.60]}}, model="bert")
    from_mnli = {"rte": {"validation_accuracy": [0.70]}, "mrpc": same_metrics("mrpc", [0.80])}
    write_run(tmp_path, "bert-from-mnli-seed1", from_mnli, model="bert", init="mnli")
    table = gr.collect(tmp_path).table
    assert set(table["model"]) == {"bert", "bert-from-mnli", "bert+mnli-init"}
    assert cell(table, "bert", "rte_best") == pytest.approx(60.0)
    assert cell(table, "bert-from-mnli", "rte_best") == pytest.approx(70.0)
    assert math.isnan(cell(table, "bert-from-mnli", "cola_best"))
    assert cell(table, "bert+mnli-init", "rte_best") == pytest.approx(70.0)
    assert cell(table, "bert+mnli-init", "mrpc_best") == pytest.approx(80.0)
    assert cell(table, "bert+mnli-init", "cola_best") == pytest.approx(40.0)
    assert cell(table, "bert+mnli-init", "init") == "mnli+pretrained"
    assert set(gr.collect(tmp_path, mnli_init_rows=False).table["model"]) == {"bert", "bert-from-mnli"}


# --------------------------------------------------------------------------- collapsed seeds, recipes, re-scoring


def write_predictions(run, task, split, which, predictions, labels):
    (run / "predictions").mkdir(exist_ok=True)
    frame = pd.DataFrame({"index": range(len(predictions)), "prediction": predictions, "label": labels})
    frame.to_csv(run / "predictions" / f"{task}_{split}_{which}.tsv", sep="\t", index=False)


def test_collapsed_seeds_are_counted_named_and_shown(tmp_path):
    """A seed whose final score is NaN cannot enter the mean: it is still counted in the seeds and
    named in the collapsed column, as is one whose final predictions are all one class."""
    stsb = {1: [0.6, 0.8], 2: [0.5, float("nan")], 3: [0.7, 0.9]}
    for seed, values in stsb.items():
        write_run(tmp_path, f"m-seed{seed}", {"stsb": same_metrics("stsb", values)}, model="m", seed=seed)
    run = write_run(tmp_path, "m-seed1", {"cola": {"validation_mcc": [0.2, 0.0]}}, model="m", seed=1)
    write_predictions(run, "cola", "validation", "final", ["acceptable"] * 4, ["acceptable", "unacceptable"] * 2)
    table = gr.collect(tmp_path).table
    assert cell(table, "m", "stsb_seeds") == 3 and cell(table, "m", "stsb_collapsed") == 1
    assert cell(table, "m", "cola_collapsed") == 1 and cell(table, "m", "rte_collapsed") == 0
    assert cell(table, "m", "stsb_final_mean") == pytest.approx(85.0)  # seeds 1 and 3
    assert cell(table, "m", "collapsed") == "cola seed 1 (constant predictions); stsb seed 2 (NaN score)"
    final_rows = markdown_rows(gr.markdown_table(table).split("**Final epoch")[1])
    assert final_rows["m"]["collapsed"] == "cola seed 1 (constant predictions); stsb seed 2 (NaN score)"


def test_the_table_says_which_recipe_each_model_used(tmp_path):
    recipe = {"name": "bert", "label": "bert"}
    write_run(tmp_path, "b-seed1", {"rte": same_metrics("rte", [0.6])}, model="b",
              tasks={"rte": {"status": "complete", "recipe": recipe}})
    write_run(tmp_path, "d-seed1", {"rte": same_metrics("rte", [0.6])}, model="d",
              tasks={"rte": {"status": "complete", "recipe": {"name": "preset", "label": "preset"}}})
    write_run(tmp_path, "old-seed1", {"rte": same_metrics("rte", [0.6])}, model="old")
    table = gr.collect(tmp_path).table
    assert [cell(table, m, "recipe") for m in ("b", "d", "old")] == ["bert", "preset", "unrecorded"]
    assert markdown_rows(gr.markdown_table(table).split("**Final epoch")[0])["b"]["recipe"] == "bert"


def test_rescore_recomputes_the_results_from_the_prediction_files(tmp_path):
    run = write_run(tmp_path, "m-seed1", {"mrpc": {"validation_accuracy": [0.75, 0.5], "validation_f1": [0.8, 0.5]}},
                    model="m", tasks={"mrpc": {"status": "complete", "best_epoch": 1}})
    names = ["not_equivalent", "equivalent"]
    write_predictions(run, "mrpc", "validation", "best", [names[i] for i in (1, 1, 0, 1)], [names[i] for i in (1, 1, 0, 0)])
    write_predictions(run, "mrpc", "validation", "final", [names[i] for i in (1, 0, 1, 0)], [names[i] for i in (1, 1, 0, 0)])
    table = gr.rescore(tmp_path).set_index(["which", "metric"])
    assert table.loc[("best", "f1"), "recomputed"] == pytest.approx(0.8) and table["difference"].max() < 1e-12
    (run / "predictions" / "mrpc_validation_final.tsv").unlink()
    with pytest.raises(FileNotFoundError, match="mrpc_validation_final.tsv does not exist"):
        gr.rescore(tmp_path)


def sklearn_scipy_scores(task, predictions: pd.DataFrame) -> dict:
    """A prediction file's metrics as scikit-learn and scipy compute them (the reference)."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    if task.is_regression:
        p, y = predictions["prediction"].astype(float), predictions["label"].astype(float)
        return {"pearson": pearsonr(p, y)[0], "spearman": spearmanr(p, y)[0]}
    p, y = (predictions[c].map(lambda v: task.label_names.index(v) if task.label_names else int(v))
            for c in ("prediction", "label"))
    reference = {"accuracy": accuracy_score, "mcc": matthews_corrcoef, "f1": lambda y, p: f1_score(y, p, zero_division=0.0)}
    return {m: reference[m](y, p) for m in task.metrics}


def assert_every_run_rescores(outputs: Path) -> None:
    """Every score of every finished run under `outputs`, at the final and the best epoch, is what
    scikit-learn and scipy compute from the run's prediction files, to 1e-6."""
    import warnings

    runs = sorted({p.parent for p in outputs.rglob("results_*.csv")})
    assert runs, f"no runs under {outputs}"
    checked = 0
    for run in runs:
        info = json.loads((run / "run_info.json").read_text())
        for path in sorted(run.glob("results_*.csv")):
            name = path.stem.removeprefix("results_")
            if gr.task_status(info, name) not in gr.FINISHED:
                continue
            entry = (info.get("tasks") or {}).get(name, {})
            task, results = gr.scored_task(name, entry), pd.read_csv(path).set_index("epoch")
            for which, epoch in (("final", results.index[-1]), ("best", entry.get("best_epoch"))):
                for split in task.eval_splits:
                    file = run / "predictions" / f"{name}_{split}_{which}.tsv"
                    assert file.is_file(), f"{file} is missing: {path} cannot be re-scored"
                    frame = pd.read_csv(file, sep="\t", keep_default_na=False)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # scipy warns on a constant side (then NaN)
                        reference = sklearn_scipy_scores(task, frame)
                    for metric, value in reference.items():
                        recorded = results.loc[epoch, f"{split}_{metric}"]
                        assert recorded == pytest.approx(value, abs=1e-6, nan_ok=True), (file, metric)
                        checked += 1
    assert checked > 0


def test_every_committed_run_rescores_from_its_predictions_to_1e_6():
    """The committed GLUE-Outputs hold the predictions behind every committed score."""
    assert_every_run_rescores(REPO / "GLUE-Outputs")


# --------------------------------------------------------------------------- written files


def test_write_report_writes_csv_markdown_and_plots(tmp_path):
    root = tmp_path / "GLUE-Outputs"
    for seed in (1, 2):
        write_run(root, f"a-seed{seed}", {"rte": same_metrics("rte", [0.5, 0.6 + seed / 100])}, model="a", seed=seed)
    write_full_and_partial(root)
    result = gr.collect(root)
    paths = gr.write_report(result, tmp_path / "out" / "table.csv", root / "plots")
    csv = pd.read_csv(paths["csv"])
    assert list(csv["model"]) == ["a", "full", "partial"]
    assert list(csv.columns[:10]) == ["model", "init", "recipe", "train_examples", "dtype", "collapsed", "best_skipped",
                                      "baseline", "cola_best", "cola_final_mean"]
    assert pd.isna(csv.set_index("model").loc["partial", "qqp_best"])
    assert paths["markdown"] == tmp_path / "out" / "table.md"
    assert paths["markdown"].read_text() == gr.markdown_table(result.table)
    assert paths["significance"] == tmp_path / "out" / "GLUE-significance.csv"
    assert paths["significance"].read_text() == gr.significance_csv(result.significance)
    assert paths["significance_markdown"].read_text() == gr.significance_markdown(result.significance)
    assert "No pair to compare" in paths["significance_markdown"].read_text()  # no model has its twin here
    for name in ("task_scores", "curves"):
        assert paths[name].parent == root / "plots"
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert paths[name].stat().st_size > 10_000


# --------------------------------------------------------------------------- bad input


def test_no_results_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gr.collect(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no results_<task>.csv"):
        gr.collect(tmp_path / "empty")


def test_a_csv_without_epoch_column_names_the_file(tmp_path):
    run = write_run(tmp_path, "m-seed1", {"rte": {"validation_accuracy": [0.5]}}, model="m")
    pd.DataFrame({"step": [1], "validation_accuracy": [0.5]}).to_csv(run / "results_rte.csv", index=False)
    with pytest.raises(ValueError, match=r"results_rte\.csv has no 'epoch' column"):
        gr.collect(tmp_path)


def test_a_glue_csv_missing_an_official_metric_names_it(tmp_path):
    write_run(tmp_path, "m-seed1", {"mrpc": {"validation_accuracy": [0.5]}}, model="m")
    with pytest.raises(ValueError, match=r"results_mrpc\.csv.*validation_f1"):
        gr.collect(tmp_path)


def test_repeated_epochs_and_non_numeric_values_are_errors(tmp_path):
    run = write_run(tmp_path, "m-seed1", {"rte": {"validation_accuracy": [0.5]}}, model="m")
    pd.DataFrame({"epoch": [1, 1], "validation_accuracy": [0.5, 0.6]}).to_csv(run / "results_rte.csv", index=False)
    with pytest.raises(ValueError, match=r"epoch\(s\) \[1\] appear more than once"):
        gr.collect(tmp_path)
    pd.DataFrame({"epoch": [1], "validation_accuracy": ["high"]}).to_csv(run / "results_rte.csv", index=False)
    with pytest.raises(ValueError, match="non-numeric"):
        gr.collect(tmp_path)


def test_missing_run_info_falls_back_to_the_folder_name_or_fails_clearly(tmp_path):
    write_run(tmp_path / "ok", "tiny-seed3", {"rte": {"validation_accuracy": [0.5]}}, info=False)
    with pytest.warns(UserWarning, match="run_info.json is missing"):
        scores = gr.load_scores(tmp_path / "ok")
    assert set(scores["model"]) == {"tiny"} and set(scores["seed"]) == {3}
    write_run(tmp_path / "bad", "my-run", {"rte": {"validation_accuracy": [0.5]}}, info=False)
    with pytest.raises(FileNotFoundError, match=r"my-run/run_info\.json is missing"):
        gr.load_scores(tmp_path / "bad")


def test_run_info_without_seed_is_a_clear_error(tmp_path):
    run = write_run(tmp_path, "m-seed1", {"rte": {"validation_accuracy": [0.5]}}, model="m")
    (run / "run_info.json").write_text(json.dumps({"model": "m"}))
    with pytest.raises(ValueError, match=r"run_info\.json lacks \['seed'\]"):
        gr.load_scores(tmp_path)


# --------------------------------------------------------------------------- the notebook


def write_demo_outputs(root):
    for seed in (1, 2):
        write_run(root, f"tiny-seed{seed}", {"demo": {"validation_accuracy": [0.6, 0.7 + seed / 100]}}, model="tiny", seed=seed)
    write_full_and_partial(root)


def test_notebook_converts_and_executes_as_a_notebook(tmp_path, monkeypatch):
    write_demo_outputs(tmp_path / "GLUE-Outputs")
    ipynb = tmp_path / "Aggregate-GLUE-results.ipynb"
    subprocess.run([sys.executable, "-m", "jupytext", "--to", "notebook", "-o", str(ipynb), str(NOTEBOOK)], check=True)
    notebook = nbformat.read(ipynb, as_version=4)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    for name in ("GLUE_OUTPUT_DIR", "GLUE_AGGREGATED_CSV", "GLUE_PLOTS_DIR", "DITBERT_SET"):
        monkeypatch.delenv(name, raising=False)  # the defaults, relative to the notebook's folder
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    # Kernel specs and runtime files from this folder only: a kernel a user installed elsewhere is not picked up.
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    client = NotebookClient(notebook, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    text = "".join(out.get("text", "") for c in notebook.cells if c.cell_type == "code" for out in c.get("outputs", []))
    assert "Original convention" in text
    images = [out for c in notebook.cells for out in c.get("outputs", []) if "image/png" in out.get("data", {})]
    assert len(images) == 2
    models = set(pd.read_csv(tmp_path / "GLUE-aggregated-results.csv")["model"])
    assert models - {"trivial-majority"} == {"tiny", "full", "partial"}  # the baseline row when labels are known
    assert (tmp_path / "GLUE-aggregated-results.md").exists()
    assert {p.name for p in (tmp_path / "GLUE-Outputs" / "plots").iterdir()} == {"task-scores.png", "curves.png"}


def test_notebook_runs_as_a_script_with_settings_from_the_environment(tmp_path):
    write_demo_outputs(tmp_path / "runs-here")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "GLUE_OUTPUT_DIR": str(tmp_path / "runs-here"),
        "GLUE_AGGREGATED_CSV": str(tmp_path / "tables" / "glue.csv"),
        "GLUE_PLOTS_DIR": str(tmp_path / "figures"),
        "GLUE_COMPARE": "tiny:full",
    }
    done = subprocess.run([sys.executable, str(NOTEBOOK)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "| tiny" in done.stdout and "**tiny vs full** (named; Welch t, 95 %)" in done.stdout
    table = pd.read_csv(tmp_path / "tables" / "glue.csv").set_index("model")
    assert table.loc["tiny", "demo_final_mean"] == pytest.approx(100 * (0.71 + 0.72) / 2)
    assert (tmp_path / "tables" / "glue.md").exists()
    assert (tmp_path / "figures" / "curves.png").exists()
    compared = pd.read_csv(tmp_path / "tables" / "GLUE-significance.csv")
    assert compared[["a", "b", "column"]].values.tolist() == [["tiny", "full", "demo"]]
    assert compared.loc[0, "difference"] == pytest.approx(100 * (0.71 + 0.72) / 2 - 100)
    assert (tmp_path / "tables" / "GLUE-significance.md").exists()
    env["GLUE_COMPARE"] = "tiny:nobody"
    refused = subprocess.run([sys.executable, str(NOTEBOOK)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert refused.returncode == 1 and "error: comparison tiny:nobody: nobody is not a row of the table" in refused.stderr


def test_aggregation_imports_no_torch_and_scores_tasks_as_the_task_table_declares(monkeypatch):
    """glue_results takes the tasks, their metrics and report columns from glue_tasks, the table the
    fine-tuning loop writes by, and stays torch-free: a metric declared there is one it requires."""
    code = "import sys, glue_results; assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    import dataclasses

    import glue_tasks

    assert gr.GLUE_COLUMNS == ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli_m", "mnli_mm", "qnli", "rte", "wnli")
    assert gr.PRETTY["mnli_mm"] == "MNLI-mm" and gr.PRETTY["sst2"] == "SST-2"
    assert gr.report_metrics("rte", ["epoch", "validation_accuracy"]) == {"rte": ["validation_accuracy"]}
    monkeypatch.setitem(glue_tasks.TASKS, "rte", dataclasses.replace(glue_tasks.TASKS["rte"], metrics=("accuracy", "f1")))
    with pytest.raises(ValueError, match=r"needs column\(s\) \['validation_f1'\]"):
        gr.report_metrics("rte", ["epoch", "validation_accuracy"])
