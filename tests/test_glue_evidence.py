"""What the aggregated table says about its own evidence: the trivial baseline's row and the marks beside
scores that do not beat it, the best convention that skips collapsed epochs, the training size and precision
of each row, and the significance of each model's lead over its random-init twin (Welch's interval by hand,
the paired bootstrap, and the committed comparison's p-values)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import glue_results as gr
import glue_runs
from glue_tasks import TASKS, Task, compute_metrics
from test_aggregate import markdown_rows, same_metrics, write_predictions, write_run

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "GLUE-Outputs"


TEXT_COLUMNS = ("init", "recipe", "train_examples", "dtype", "collapsed", "best_skipped", "baseline")


def committed_table() -> pd.DataFrame:
    """GLUE-aggregated-results.csv by model, its text columns as text ("" where empty)."""
    table = pd.read_csv(ROOT / "GLUE-aggregated-results.csv", dtype={c: str for c in TEXT_COLUMNS})
    return table.fillna({c: "" for c in TEXT_COLUMNS}).set_index("model")


@pytest.fixture(scope="module")
def committed():
    """The aggregation of the committed runs, as the committed files were written (bootstrap included)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left out, nothing kept apart
        return gr.collect(COMMITTED)


# --------------------------------------------------------------------------- Welch's interval


def test_welch_interval_is_the_hand_computation():
    # means 2 and 6, sample variances 1 and 4: se^2 = 1/3 + 4/3 = 5/3, and the Welch-Satterthwaite
    # degrees of freedom (5/3)^2 / ((1/3)^2 / 2 + (4/3)^2 / 2) = 50/17
    got = gr.welch_interval([1.0, 2.0, 3.0], [4.0, 6.0, 8.0])
    se, df = math.sqrt(5 / 3), 50 / 17
    assert (got["seeds_a"], got["seeds_b"], got["mean_a"], got["mean_b"]) == (3, 3, 2.0, 6.0)
    assert got["difference"] == pytest.approx(-4.0) and got["df"] == pytest.approx(df)
    assert got["se"] == pytest.approx(se)
    quantile = stats.t.ppf(0.975, df)
    assert 3.182 < quantile < 4.303  # between the table's t(0.975) at 3 and at 2 degrees of freedom
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((-4 - quantile * se, -4 + quantile * se))
    assert got["p"] == pytest.approx(2 * stats.t.sf(4 / se, df))
    reference = stats.ttest_ind([1.0, 2.0, 3.0], [4.0, 6.0, 8.0], equal_var=False)  # scipy's own Welch test
    assert got["p"] == pytest.approx(reference.pvalue)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx(tuple(reference.confidence_interval()))


def test_a_fixed_baseline_gives_the_one_sample_interval_from_the_t_table():
    # mean 2, se 1/sqrt(3), 2 degrees of freedom: t(0.975, 2) = 4.3027 from the table, so 2 +- 2.4841;
    # t = 2 sqrt(3) = 3.4641, whose two-sided p at 2 degrees of freedom is 0.0742
    got = gr.welch_interval([1.0, 2.0, 3.0], 0.0)
    assert got["seeds_b"] == 0 and got["df"] == pytest.approx(2.0)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((-0.4841, 4.4841), abs=1e-3)
    assert got["p"] == pytest.approx(0.0742, abs=1e-3)
    assert got["p"] == pytest.approx(stats.ttest_1samp([1.0, 2.0, 3.0], 0.0).pvalue)


def test_an_interval_needs_two_seeds_and_a_spread():
    one = gr.welch_interval([70.0], [60.0, 61.0])
    assert one["difference"] == pytest.approx(9.5) and math.isnan(one["p"]) and math.isnan(one["ci_low"])
    flat = gr.welch_interval([70.0, 70.0], [60.0, 60.0])
    assert flat["difference"] == pytest.approx(10.0) and math.isnan(flat["p"])
    with_nan = gr.welch_interval([1.0, 2.0, 3.0, math.nan], [4.0, 6.0, 8.0])  # a NaN seed is left out, as in the mean
    assert with_nan["seeds_a"] == 3 and with_nan["p"] == pytest.approx(gr.welch_interval([1, 2, 3], [4, 6, 8])["p"])


# --------------------------------------------------------------------------- the committed comparison


def test_the_committed_comparisons_reproduce_the_audit(committed):
    """The `make demo` lead on the demo task (+1.67) has p 0.11, its five-task lead p 0.41; the two-hour
    recipe's +3.1 on the five-task mean has p 0.015 (Welch, 3 seeds each); at full training size its lead
    is +0.35, p 0.65, an interval that holds 0."""
    sig = committed.significance.set_index(["a", "b", "column"])
    demo = sig.loc[("ditbert-tiny", "ditbert-tiny-random-init", "demo")]
    five = sig.loc[("ditbert-tiny", "ditbert-tiny-random-init", "GLUE partial")]
    two_hour = sig.loc[("ditbert-tiny-two-hour-step13000", "ditbert-tiny-two-hour-random-init", "GLUE partial")]
    assert round(demo["difference"], 2) == 1.67 and round(demo["p"], 2) == 0.11
    assert round(five["difference"], 2) == 0.51 and round(five["p"], 2) == 0.41
    assert round(two_hour["difference"], 1) == 3.1 and round(two_hour["p"], 3) == 0.015
    assert five["tasks"] == two_hour["tasks"] == "cola, sst2, mrpc, stsb, rte"
    assert (demo["seeds_a"], demo["seeds_b"]) == (3, 3) and demo["method"] == "Welch t, 95 %"
    assert demo["ci_low"] < 0 < demo["ci_high"] and two_hour["ci_low"] > 0
    full = sig.loc[("ditbert-tiny-two-hour-full", "ditbert-tiny-two-hour-full-random-init", "GLUE partial")]
    assert round(full["difference"], 2) == 0.35 and round(full["p"], 2) == 0.65 and full["ci_low"] < 0 < full["ci_high"]
    assert set(committed.significance["pair"]) == {"random-init twin"}  # found by name, nothing named
    assert set(zip(committed.significance["a"], committed.significance["b"])) == {
        ("ditbert-tiny", "ditbert-tiny-random-init"),
        ("ditbert-tiny-two-hour-step13000", "ditbert-tiny-two-hour-random-init"),
        ("ditbert-tiny-two-hour-full", "ditbert-tiny-two-hour-full-random-init")}


def test_the_committed_significance_files_are_the_aggregation_of_the_committed_runs(committed):
    assert (ROOT / "GLUE-significance.csv").read_text() == gr.significance_csv(committed.significance)
    assert (ROOT / "GLUE-significance.md").read_text() == gr.significance_markdown(committed.significance)
    written = pd.read_csv(ROOT / "GLUE-significance.csv")
    assert list(written.columns) == gr.SIGNIFICANCE_COLUMNS
    assert written["boot_p"].notna().all()  # every pair is two models with prediction files


def test_a_named_pair_against_the_baseline_is_a_one_sample_interval(committed):
    table_rows = gr.with_mnli_init_rows(committed.selected)
    pairs = gr.comparisons(committed.table, "ditbert-tiny:trivial-majority")
    assert pairs[-1] == ("ditbert-tiny", "trivial-majority", "named")
    sig = gr.significance(table_rows, committed.table, pairs, COMMITTED, bootstrap=0).set_index(["b", "column"])
    rte = sig.loc[("trivial-majority", "rte")]
    seeds = [100 * pd.read_csv(path)["validation_accuracy"].iloc[-1]
             for path in sorted(COMMITTED.glob("ditbert-tiny-seed*/results_rte.csv"))]
    assert rte["method"] == "one-sample t, 95 %" and rte["seeds_b"] == 0
    assert rte["mean_b"] == pytest.approx(100 * 146 / 277)  # RTE's dev set: 146 of 277 entailment
    assert rte["p"] == pytest.approx(stats.ttest_1samp(seeds, 100 * 146 / 277).pvalue)
    assert math.isnan(rte["boot_p"])
    with pytest.raises(ValueError, match=r"nobody is not a row of the table \(rows: trivial-majority, ditbert-tiny"):
        gr.comparisons(committed.table, "ditbert-tiny:nobody")


def test_pairs_are_parsed_and_twins_found_by_name():
    assert gr.parse_pairs("a:b; c@n2000:d ,") == [("a", "b"), ("c@n2000", "d")]
    assert gr.parse_pairs([("a", "b")]) == [("a", "b")]
    with pytest.raises(ValueError, match="must name two rows"):
        gr.parse_pairs("a-b")
    names = {"x": ("2000", "float32"), "x-random-init": ("2000", "float32"), "x-step700": ("2000", "float32"),
             "x-two-hour-step13000": ("2000", "bfloat16"), "x-two-hour-random-init": ("2000", "bfloat16"),
             "y-random-init": ("2000", "float32"), "z": ("2000", "float32"), "x+mnli-init": ("2000", "float32"),
             "m@n2000": ("2000", "float32"), "m@full": ("all", "float32"), "m-random-init@n2000": ("2000", "float32"),
             "m-random-init@full": ("all", "float32"), "w": ("all", "float32"), "w-random-init": ("2000", "float32")}
    table = pd.DataFrame([{"model": name, "recipe": "preset", "train_examples": size, "dtype": dtype}
                          for name, (size, dtype) in names.items()]
                         + [{"model": "trivial-majority", "recipe": "baseline", "train_examples": "", "dtype": ""}])
    assert gr.twin_pairs(table) == [("m@full", "m-random-init@full"), ("m@n2000", "m-random-init@n2000"),
                                    ("x", "x-random-init"), ("x-step700", "x-random-init"),
                                    ("x-two-hour-step13000", "x-two-hour-random-init")]


# --------------------------------------------------------------------------- the paired bootstrap


def random_task_data(rng, task: Task, rows: int, n: int):
    if task.is_regression:
        labels = rng.integers(0, 6, size=(rows, n)).astype(float)  # ties, as STS-B's scores have
        predictions = np.round(labels + rng.normal(0, 1.5, size=(rows, n)), 1)
        predictions[0] = 2.5  # a constant answer: correlations undefined
        return predictions, labels
    labels = rng.integers(0, task.num_labels, size=(rows, n))
    predictions = np.where(rng.random((rows, n)) < 0.6, labels, rng.integers(0, task.num_labels, size=(rows, n)))
    predictions[0] = 1  # a constant answer: MCC 0
    return predictions, labels


@pytest.mark.parametrize("task", [TASKS["cola"], TASKS["mrpc"], TASKS["stsb"], TASKS["mnli"],
                                  Task(name="three", num_labels=3, metrics=("accuracy", "f1", "mcc"), text_columns=("t",),
                                       label_column="label", source="csv")], ids=lambda t: t.name)
def test_batch_metrics_are_compute_metrics_row_by_row(task):
    rng = np.random.default_rng(7)
    predictions, labels = random_task_data(rng, task, rows=12, n=40)
    batched = gr.batch_metrics(task, predictions, labels)
    examples = rng.integers(0, 40, size=(12, 40))
    by_index = gr.batch_metrics(task, predictions[3], labels[3], examples)
    for row in range(12):
        expected = compute_metrics(task, predictions[row], labels[row])
        resampled = compute_metrics(task, predictions[3][examples[row]], labels[3][examples[row]])
        for metric in task.metrics:
            assert batched[metric][row] == pytest.approx(expected[metric], nan_ok=True), (metric, row)
            assert by_index[metric][row] == pytest.approx(resampled[metric], nan_ok=True), (metric, row)
    if task.is_regression:
        assert math.isnan(batched["pearson"][0]) and math.isnan(batched["spearman"][0])


def bootstrap_runs(predictions_by_seed, labels):
    ids = np.arange(len(labels))
    return {("rte", "validation"): {seed: (np.asarray(p), np.asarray(labels), ids) for seed, p in predictions_by_seed.items()}}


def test_the_paired_bootstrap_measures_dev_sampling_and_seeds():
    units = [(TASKS["rte"], "validation")]
    labels = np.array([0, 1] * 50)
    right, wrong = labels, 1 - labels
    same = gr.paired_bootstrap(units, bootstrap_runs({1: right, 2: wrong}, labels),
                               bootstrap_runs({1: right, 2: wrong}, labels), resamples=200)
    assert same["boot_p"] == 1.0 and same["boot_low"] <= 0 <= same["boot_high"]
    apart = gr.paired_bootstrap(units, bootstrap_runs({1: right, 2: right}, labels),
                                bootstrap_runs({1: wrong, 2: wrong}, labels), resamples=200)
    assert apart == {"boot_low": 100.0, "boot_high": 100.0, "boot_p": 0.0}
    # a 60 % model against a 50 % one on 100 examples: the interval spans the dev set's sampling error
    rng = np.random.default_rng(0)
    better = np.where(np.arange(100) < 60, labels, 1 - labels)
    coin = np.where(rng.random(100) < 0.5, labels, 1 - labels)
    near = gr.paired_bootstrap(units, bootstrap_runs({1: better, 2: better}, labels),
                               bootstrap_runs({1: coin, 2: coin}, labels), resamples=500, key="near")
    difference = 60 - 100 * float(np.mean(coin == labels))
    assert near["boot_low"] < difference < near["boot_high"] and near["boot_high"] - near["boot_low"] > 10
    again = gr.paired_bootstrap(units, bootstrap_runs({1: better, 2: better}, labels),
                                bootstrap_runs({1: coin, 2: coin}, labels), resamples=500, key="near")
    assert again == near  # the draws follow the pair's key
    other = bootstrap_runs({1: right, 2: right}, labels)
    other[("rte", "validation")][2] = (right, labels, np.arange(100)[::-1])  # another order of the dev examples
    assert math.isnan(gr.paired_bootstrap(units, other, bootstrap_runs({1: wrong, 2: wrong}, labels))["boot_p"])
    one_seed = gr.paired_bootstrap(units, bootstrap_runs({1: right}, labels), bootstrap_runs({1: wrong, 2: wrong}, labels))
    assert math.isnan(one_seed["boot_low"])


# --------------------------------------------------------------------------- the trivial baseline


RTE_DEV = ["entailment", "entailment", "entailment", "not_entailment"]


def rte_run(root, folder, seed, train_counts=None, model="m", init="pretrained", final=(0.75,)):
    """A run of RTE whose final predictions are right on the first three of `RTE_DEV`; `train_counts`: the
    training labels its run_info.json records."""
    entry = {"status": "complete", "best_epoch": len(final)}
    if train_counts is not None:
        entry["data"] = {"train": {"labels": train_counts}}
    run = write_run(root, folder, {"rte": {"validation_accuracy": list(final)}}, model=model, seed=seed, init=init,
                    tasks={"rte": entry})
    answers = RTE_DEV[:3] + ["entailment"]
    for which in ("final", "best"):
        write_predictions(run, "rte", "validation", which, answers, RTE_DEV)
    return run


def glue_dir_with_rte_train(tmp_path, labels):
    folder = tmp_path / "glue" / "RTE"
    folder.mkdir(parents=True)
    lines = ["index\tsentence1\tsentence2\tlabel"] + [f"{i}\ta\tb\t{label}" for i, label in enumerate(labels)]
    (folder / "train.tsv").write_text("\n".join(lines) + "\n")
    return tmp_path / "glue"


def test_the_baseline_answers_the_training_majority_and_says_where_it_came_from(tmp_path):
    # the runs recorded 30 not_entailment to 10 entailment training labels: not_entailment, 1 of 4 dev examples
    for seed in (1, 2):
        rte_run(tmp_path / "out", f"m-seed{seed}", seed, {"entailment": 10, "not_entailment": 30})
    recorded = gr.collect(tmp_path / "out").table.set_index("model")
    row = recorded.loc[gr.BASELINE_ROW]
    assert recorded.index[0] == gr.BASELINE_ROW and row["recipe"] == "baseline" and row["init"] == "none"
    assert row["rte_final_mean"] == pytest.approx(25.0) and row["rte_best"] == pytest.approx(25.0)
    assert row["rte_seeds"] == 0 and math.isnan(row["rte_final_std"])
    assert row["baseline"] == "rte: not_entailment (training majority)"
    assert row["GLUE_partial_final_mean"] == pytest.approx(25.0) and row["GLUE_tasks"] == 1
    # a training file in GLUE_DIR wins over the recorded counts: here entailment, 3 of 4
    glue = glue_dir_with_rte_train(tmp_path, ["entailment"] * 3 + ["not_entailment"])
    from_file = gr.collect(tmp_path / "out", glue_dir=glue).table.set_index("model").loc[gr.BASELINE_ROW]
    assert from_file["rte_final_mean"] == pytest.approx(75.0)
    assert from_file["baseline"] == "rte: entailment (training majority)"
    # without training labels, the dev labels' majority, said so
    for seed in (1, 2):
        rte_run(tmp_path / "dev-only", f"m-seed{seed}", seed)
    dev_only = gr.collect(tmp_path / "dev-only").table.set_index("model").loc[gr.BASELINE_ROW]
    assert dev_only["rte_final_mean"] == pytest.approx(75.0)
    assert dev_only["baseline"] == "rte: entailment (dev majority: no training labels)"


def test_the_baseline_takes_the_dev_set_most_runs_were_scored_on(tmp_path):
    for seed in (1, 2):
        rte_run(tmp_path, f"m-seed{seed}", seed, {"entailment": 30, "not_entailment": 10})
    short = write_run(tmp_path, "m-seed3", {"rte": {"validation_accuracy": [1.0]}}, model="m", seed=3,
                      tasks={"rte": {"status": "complete", "best_epoch": 1}})
    write_predictions(short, "rte", "validation", "final", ["not_entailment"] * 2, ["not_entailment"] * 2)
    notes = {}
    dev = gr.dev_labels(gr.load_scores(tmp_path), tmp_path, notes=notes)
    assert list(dev["rte"]["validation"]) == [0, 0, 0, 1] and notes == {"rte": "the dev set of 2 of 3 runs"}
    row = gr.collect(tmp_path).table.set_index("model").loc[gr.BASELINE_ROW]
    assert row["rte_final_mean"] == pytest.approx(75.0)
    assert row["baseline"] == "rte: entailment (training majority), on the dev set of 2 of 3 runs"


def test_the_baseline_scores_with_the_tasks_own_metrics(tmp_path):
    run = write_run(tmp_path, "m-seed1", {"mrpc": same_metrics("mrpc", [0.5]), "stsb": same_metrics("stsb", [0.5]),
                                          "cola": {"validation_mcc": [0.1]}}, model="m",
                    tasks={t: {"status": "complete", "best_epoch": 1} for t in ("mrpc", "stsb", "cola")})
    names = ["not_equivalent", "equivalent"]
    write_predictions(run, "mrpc", "validation", "final", [names[i] for i in (1, 0, 1, 0)], [names[i] for i in (1, 1, 1, 0)])
    write_predictions(run, "stsb", "validation", "final", [1.0, 2.0, 3.0, 4.0], [0.5, 2.5, 3.0, 5.0])
    write_predictions(run, "cola", "validation", "final", ["acceptable", "unacceptable", "acceptable"],
                      ["acceptable", "unacceptable", "unacceptable"])
    table = gr.collect(tmp_path).table.set_index("model")
    row = table.loc[gr.BASELINE_ROW]
    # MRPC: the dev majority "equivalent" everywhere -> accuracy 3/4 and F1 2*3/(2*3 + 1) = 6/7
    assert row["mrpc_final_mean"] == pytest.approx(100 * (0.75 + 6 / 7) / 2)
    assert row["stsb_final_mean"] == 0.0 and row["cola_final_mean"] == 0.0
    assert "stsb: a constant (its correlation is undefined: scored 0)" in row["baseline"]
    assert "cola: unacceptable (dev majority: no training labels)" in row["baseline"]
    # no prediction files and no GLUE_DIR: no dev labels, no baseline row
    write_run(tmp_path / "bare", "m-seed1", {"rte": same_metrics("rte", [0.6])}, model="m")
    assert gr.BASELINE_ROW not in set(gr.collect(tmp_path / "bare").table["model"])


def test_the_committed_baseline_is_the_majority_answer_on_each_dev_set():
    """The audit's trivial scores: MRPC's all-"equivalent" 74.80, RTE's majority 52.7, WNLI's 56.3."""
    table = committed_table()
    row = table.loc[gr.BASELINE_ROW]
    mrpc = pd.read_csv(COMMITTED / "ditbert-tiny-seed1" / "predictions" / "mrpc_validation_final.tsv", sep="\t")
    equivalent = float((mrpc["label"] == "equivalent").mean())
    f1 = 2 * equivalent / (2 * equivalent + (1 - equivalent))
    assert row["mrpc_final_mean"] == pytest.approx(round(100 * (equivalent + f1) / 2, 2)) == 74.80
    assert row["rte_final_mean"] == pytest.approx(52.71) and row["wnli_final_mean"] == pytest.approx(56.34)
    assert row["sst2_final_mean"] == pytest.approx(50.92) and row["cola_final_mean"] == row["stsb_final_mean"] == 0.0
    assert row["demo_final_mean"] == pytest.approx(48.8)  # the training majority is negative, the dev set's positive
    assert row["recipe"] == "baseline" and row.name == table.index[0]
    counts = json.loads((COMMITTED / "ditbert-tiny-seed1" / "run_info.json").read_text())["tasks"]["rte"]["data"]["train"]["labels"]
    assert "rte: entailment (training majority)" in row["baseline"] and counts["entailment"] > counts["not_entailment"]
    assert "dev majority" not in row["baseline"]  # every task's answer is its training majority


def test_scores_not_above_the_baseline_are_marked():
    assert gr.baseline_mark(75.0, 0.9, 74.8) == "≈"  # MRPC: within the spread
    assert gr.baseline_mark(53.4, 0.6, 52.7) == ""  # RTE: mean - std above the majority
    assert gr.baseline_mark(17.8, 1.6, 56.3) == "↓"  # WNLI: below it by more than the spread
    assert gr.baseline_mark(-1.5, 2.7, 0.0) == "≈"
    assert gr.baseline_mark(0.0, math.nan, 0.0) == "≈" and gr.baseline_mark(0.1, math.nan, 0.0) == ""
    assert gr.baseline_mark(math.nan, 1.0, 50.0) == "" and gr.baseline_mark(60.0, 1.0, math.nan) == ""
    text = (ROOT / "GLUE-aggregated-results.md").read_text()
    final = markdown_rows(text.split("**Final epoch")[1])
    assert final["ditbert-tiny"]["MRPC"] == "75.0 ± 0.9 ≈" and final["ditbert-tiny"]["WNLI"] == "17.8 ± 1.6 ↓"
    assert final["ditbert-tiny"]["RTE"] == "53.4 ± 0.6" and final["ditbert-tiny-random-init"]["RTE"] == "48.7 ± 1.0 ↓"
    assert final["ditbert-tiny"]["CoLA"] == "-1.5 ± 2.7 ≈" and final["ditbert-tiny"]["SST-2"] == "75.8 ± 1.1"
    assert final[gr.BASELINE_ROW]["MRPC"] == "74.8" and final[gr.BASELINE_ROW]["seeds"] == "–"
    assert "≈: not above the trivial baseline within the seeds' spread" in text


# --------------------------------------------------------------------------- collapsed epochs and the best convention


def test_the_best_convention_skips_collapsed_epochs(tmp_path):
    """Epoch 1 answers "acceptable" throughout (its MCC 0 was the best, as the loop recorded it); the best
    is then epoch 3, and the table names what it skipped. A run whose every epoch collapsed has no best."""
    dev = ["acceptable", "unacceptable"] * 2
    run = write_run(tmp_path, "m-seed1", {"cola": {"validation_mcc": [0.0, -0.05, -0.02]}}, model="m",
                    tasks={"cola": {"status": "complete", "best_epoch": 1}})
    write_predictions(run, "cola", "validation", "best", ["acceptable"] * 4, dev)
    write_predictions(run, "cola", "validation", "final", ["acceptable", "acceptable", "unacceptable", "acceptable"], dev)
    flat = write_run(tmp_path, "m-seed2", {"cola": {"validation_mcc": [0.0, 0.0]}}, model="m", seed=2,
                     tasks={"cola": {"status": "complete", "best_epoch": 1}})
    for which in ("best", "final"):
        write_predictions(flat, "cola", "validation", which, ["acceptable"] * 4, dev)
    result = gr.collect(tmp_path)
    table = result.table.set_index("model")
    assert table.loc["m", "cola_best"] == pytest.approx(-2.0)  # seed 1's epoch 3; seed 2 has none
    assert table.loc["m", "best_skipped"] == ("cola seed 1 epoch 1 (constant predictions); cola seed 2 epoch 1 "
                                              "(constant predictions); cola seed 2 epoch 2 (constant predictions)")
    assert table.loc["m", "collapsed"] == "cola seed 2 (constant predictions)"
    best = result.selected[result.selected["selection"] == "best"]
    assert set(best["seed"]) == {1} and set(best["epoch"]) == {3}
    rows = markdown_rows(gr.markdown_table(result.table).split("**Final epoch")[0])
    assert rows["m"]["collapsed epochs skipped"].startswith("cola seed 1 epoch 1")


def test_epochs_without_prediction_files_are_judged_by_their_scores(tmp_path):
    """RTE on 200 examples, 120 entailment: epoch 1's accuracy is what answering "entailment" throughout
    scores (60 %), epoch 2 (the loop's best) answers "entailment" for all but one example, epoch 3 is the
    final one. Only epoch 3 can be the best."""
    labels = ["entailment"] * 120 + ["not_entailment"] * 80
    run = write_run(tmp_path, "m-seed1", {"rte": {"validation_accuracy": [0.60, 0.605, 0.55]}}, model="m",
                    tasks={"rte": {"status": "complete", "best_epoch": 2}})
    write_predictions(run, "rte", "validation", "best", ["entailment"] * 199 + ["not_entailment"], labels)
    final = ["entailment"] * 100 + ["not_entailment"] * 100
    write_predictions(run, "rte", "validation", "final", final, labels)
    dev = gr.dev_labels(gr.load_scores(tmp_path), tmp_path)
    collapsed = gr.collapsed_epochs(gr.load_scores(tmp_path), tmp_path, dev).set_index("epoch")["why"]
    assert collapsed.to_dict() == {1: "a constant answer's scores", 2: "near-constant predictions, 1 of 200 differ"}
    assert gr.collect(tmp_path).table.set_index("model").loc["m", "rte_best"] == pytest.approx(55.0)
    # without dev labels an accuracy cannot tell: only an MCC of exactly 0 is a constant answer's
    assert gr.constant_answers(TASKS["rte"], None) == []
    assert gr.constant_answers(TASKS["cola"], None) == [{"cola": 0.0}]
    assert gr.constant_answers(TASKS["stsb"], {"validation": np.array([1.0, 2.0])}) == []


def test_the_committed_best_convention_skips_the_collapsed_cola_epochs():
    """Six of the committed best-epoch CoLA files answer "acceptable" throughout, and the two-hour model's
    CoLA best of 4.6 came from an epoch that answers "unacceptable" once: none is a best any more."""
    constant = [p for p in sorted(COMMITTED.glob("*/predictions/cola_validation_best.tsv"))
                if pd.read_csv(p, sep="\t")["prediction"].nunique() == 1]
    assert len(constant) == 6
    table = committed_table()
    skipped = "; ".join(table["best_skipped"])
    for path in constant:
        label, seed = glue_runs.parse_run_name(path.parents[1].name)
        assert f"cola seed {seed} epoch" in table.loc[label, "best_skipped"], path
    assert skipped.count("(constant predictions)") == 6
    assert table.loc["ditbert-tiny-two-hour-step13000", "best_skipped"] == (
        "cola seed 1 epoch 2 (near-constant predictions, 1 of 1043 differ)")
    seeds = [pd.read_csv(p)["validation_mcc"].iloc[-1]
             for p in sorted(COMMITTED.glob("ditbert-tiny-two-hour-step13000-seed*/results_cola.csv"))]
    assert table.loc["ditbert-tiny-two-hour-step13000", "cola_best"] == pytest.approx(round(100 * max(seeds), 2))
    assert table.loc["ditbert-tiny-two-hour-step13000", "cola_best"] < 4.6


# --------------------------------------------------------------------------- training size and precision


def fingerprinted(root, seed, size, dtype="float32", label="m", task="rte", value=0.6):
    """A run whose run_info.json records a fingerprint, fine-tuned on `size` examples (0 = all) in `dtype`."""
    model = {"kind": "ditbert", "init": "pretrained", "weights": "aaaa", "tokenizer": "t", "pretrain_tokens_seen": 1}
    finetune = {"epochs": 1, "lr": 1e-3, "max_train_examples": size}
    fingerprint = glue_runs.new_fingerprint(model, finetune, dtype)
    entry = {"status": "complete", "finetune": finetune, "init": "pretrained", "kind": "ditbert", "dtype": dtype,
             "model_id": fingerprint.model_id, "fingerprint": fingerprint.record()}
    run = root / f"{label}-seed{seed}"
    glue_runs.record_task(run, label, seed, task, entry)
    pd.DataFrame({"epoch": [1], "validation_accuracy": [value]}).to_csv(glue_runs.results_path(run, task), index=False)


def test_rows_that_differ_in_training_size_or_precision_are_named_by_them(tmp_path):
    for seed, size in ((1, 2000), (2, 2000), (3, 0), (4, 0)):
        fingerprinted(tmp_path / "size", seed, size, value=0.6 if size else 0.8)
    with pytest.warns(UserWarning, match=r"they differ in max_train_examples"):
        table = gr.collect(tmp_path / "size").table.set_index("model")
    assert set(table.index) == {"m@n2000", "m@full"}
    assert (table.loc["m@n2000", "train_examples"], table.loc["m@full", "train_examples"]) == ("2000", "all")
    assert table.loc["m@full", "rte_final_mean"] == pytest.approx(80.0) and table.loc["m@n2000", "rte_seeds"] == 2
    for seed, dtype in ((1, "bfloat16"), (2, "float32")):
        fingerprinted(tmp_path / "dtype", seed, 2000, dtype)
    with pytest.warns(UserWarning, match="kept apart"):
        table = gr.collect(tmp_path / "dtype").table.set_index("model")
    assert set(table.index) == {"m@bf16", "m@fp32"} and table.loc["m@bf16", "dtype"] == "bfloat16"
    # the committed rows: 2000 examples, fp32 for make demo's, bf16 for the two-hour recipe; all of them, fp32,
    # for the two-hour recipe's full-size rows and MiniLM's
    committed = committed_table()
    sizes = committed.drop(index=gr.BASELINE_ROW)["train_examples"]
    assert set(sizes) == {"2000", "all"}
    assert sorted(sizes[sizes == "all"].index) == ["ditbert-tiny-two-hour-full", "ditbert-tiny-two-hour-full-random-init",
                                                   "minilm-l6-full"]
    assert set(committed.loc[sizes[sizes == "all"].index, "dtype"]) == {"float32"}
    assert committed.loc["ditbert-tiny", "dtype"] == "float32"
    assert committed.loc["ditbert-tiny-two-hour-step13000", "dtype"] == "bfloat16"
    rows = markdown_rows((ROOT / "GLUE-aggregated-results.md").read_text().split("**Final epoch")[1])
    assert (rows["ditbert-tiny"]["train examples"], rows["ditbert-tiny"]["dtype"]) == ("2000", "float32")


def test_the_training_size_is_part_of_the_fingerprint():
    """Two runs that differ only in finetune.max_train_examples are never seeds of one row."""
    info = glue_runs.read_info(COMMITTED / "ditbert-tiny-seed1")
    settings = glue_runs.task_fingerprint(info, "rte").settings
    assert settings["max_train_examples"] == 2000 and gr.training_size(settings) == "2000"
    other = json.loads(json.dumps(info))
    other["tasks"]["rte"]["finetune"]["max_train_examples"] = 0
    assert glue_runs.task_fingerprint(other, "rte").settings_id != glue_runs.task_fingerprint(info, "rte").settings_id
    assert gr.training_size({}) == "unrecorded" and gr.training_size({"max_train_examples": 0}) == "all"


def test_a_model_row_and_its_twin_are_compared_per_task_and_on_their_glue_mean(tmp_path):
    """Two tasks, two seeds each: the GLUE partial difference is Welch's on the seeds' two-task means."""
    scores = {"m": {1: (0.70, 0.60), 2: (0.72, 0.66)}, "m-random-init": {1: (0.60, 0.50), 2: (0.64, 0.52)}}
    for label, seeds in scores.items():
        for seed, (rte, sst2) in seeds.items():
            write_run(tmp_path, f"{label}-seed{seed}", {"rte": same_metrics("rte", [rte]), "sst2": same_metrics("sst2", [sst2])},
                      model=label.removesuffix("-random-init"), seed=seed,
                      init="random" if label.endswith("random-init") else "pretrained")
    sig = gr.collect(tmp_path).significance.set_index("column")
    assert list(sig.index) == ["sst2", "rte", "GLUE partial"] and set(sig["pair"]) == {"random-init twin"}
    means = {label: [100 * (rte + sst2) / 2 for rte, sst2 in seeds.values()] for label, seeds in scores.items()}
    expected = gr.welch_interval(means["m"], means["m-random-init"])
    assert sig.loc["GLUE partial", "difference"] == pytest.approx(expected["difference"])
    assert sig.loc["GLUE partial", "p"] == pytest.approx(stats.ttest_ind(means["m"], means["m-random-init"],
                                                                         equal_var=False).pvalue)
    assert sig.loc["rte", "difference"] == pytest.approx(100 * ((0.70 + 0.72) - (0.60 + 0.64)) / 2)
    assert sig["boot_p"].isna().all()  # no prediction files to resample
    text = gr.significance_markdown(gr.collect(tmp_path).significance)
    assert "**m vs m-random-init** (random-init twin; Welch t, 95 %)" in text and "| GLUE partial (2 tasks) |" in text
