"""GLUE metrics against values worked out by hand."""

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import pytest

from glue_tasks import TASKS, compute_metrics, csv_task, main_score

# preds vs labels: TP = 2 (items 0, 4), FP = 1 (item 1), TN = 2 (items 2, 3), FN = 1 (item 5)
PREDS = [1, 1, 0, 0, 1, 0]
LABELS = [1, 0, 0, 0, 1, 1]


def test_cola_matthews_correlation():
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (4 - 1) / sqrt(3*3*3*3) = 1/3
    assert compute_metrics(TASKS["cola"], PREDS, LABELS) == {"mcc": pytest.approx(1 / 3)}


def test_matthews_correlation_of_constant_predictions_is_zero():
    assert compute_metrics(TASKS["cola"], [1] * 6, LABELS)["mcc"] == pytest.approx(0.0)
    # CoLA's dev balance (721 acceptable, 322 not): always answering "acceptable" scores 0, as in
    # scikit-learn and the official scorer, not a small positive value
    labels = [1] * 721 + [0] * 322
    assert compute_metrics(TASKS["cola"], [1] * 1043, labels)["mcc"] == 0.0
    assert compute_metrics(TASKS["cola"], [0] * 1043, labels)["mcc"] == 0.0


def test_matthews_correlation_on_an_unbalanced_case():
    # TP = 6, FN = 2, FP = 1, TN = 1: (6*1 - 1*2) / sqrt(7 * 8 * 2 * 3) = 4 / sqrt(336)
    preds = [1] * 6 + [0] * 2 + [1] + [0]
    labels = [1] * 8 + [0] * 2
    assert compute_metrics(TASKS["cola"], preds, labels)["mcc"] == pytest.approx(4 / math.sqrt(336))


def test_mrpc_and_qqp_accuracy_and_f1_of_the_positive_class():
    # accuracy 4/6; F1 = 2TP / (2TP + FP + FN) = 4/6
    expected = {"accuracy": pytest.approx(4 / 6), "f1": pytest.approx(2 / 3)}
    assert compute_metrics(TASKS["mrpc"], PREDS, LABELS) == expected
    assert compute_metrics(TASKS["qqp"], PREDS, LABELS) == expected
    # swapping which class is positive changes F1 but not accuracy: F1(class 1) of these is 2*1/(2*1+0+2) = 1/2
    m = compute_metrics(TASKS["mrpc"], [0, 0, 0, 0, 1, 0], [1, 0, 0, 0, 1, 1])
    assert m == {"accuracy": pytest.approx(4 / 6), "f1": pytest.approx(1 / 2)}


def test_stsb_pearson_and_spearman():
    # Pearson of (1,2,3,4) and (2,4,5,9): deviations (-1.5,-.5,.5,1.5) and (-3,-1,0,4):
    # 11 / sqrt(5 * 26)
    m = compute_metrics(TASKS["stsb"], [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 5.0, 9.0])
    assert m["pearson"] == pytest.approx(11 / math.sqrt(130))
    assert m["spearman"] == pytest.approx(1.0)  # same order
    # ranks (1,2,3,4) vs (1,4,3,2): d^2 = 0+4+0+4 = 8, rho = 1 - 6*8 / (4*15) = 0.2
    assert compute_metrics(TASKS["stsb"], [1.0, 2.0, 3.0, 4.0], [2.0, 9.0, 5.0, 4.0])["spearman"] == pytest.approx(0.2)


def test_three_class_accuracy_is_the_fraction_correct():
    # not the per-class average (which would be (1 + 1/2 + 1) / 3 here)
    assert compute_metrics(TASKS["mnli"], [0, 1, 2, 2], [0, 1, 1, 2]) == {"accuracy": pytest.approx(0.75)}


def test_main_score_averages_validation_metrics_and_treats_nan_as_worst():
    row = {"epoch": 1, "train_pearson": 0.9, "train_spearman": 0.9, "validation_pearson": 0.5, "validation_spearman": 0.7}
    assert main_score(row, TASKS["stsb"]) == pytest.approx(0.6)
    row["validation_pearson"] = float("nan")
    assert main_score(row, TASKS["stsb"]) == -math.inf
    mnli = {"epoch": 1, "train_accuracy": 1.0, "validation_matched_accuracy": 0.6, "validation_mismatched_accuracy": 0.8}
    assert main_score(mnli, TASKS["mnli"]) == pytest.approx(0.7)


def test_custom_task_metric_names_are_checked(tmp_path):
    (tmp_path / "train.csv").write_text("sentence,label\na,0\nb,1\n")
    (tmp_path / "dev.csv").write_text("sentence,label\na,0\n")
    (tmp_path / "task.json").write_text('{"metrics": ["accuracy", "auc"]}')
    with pytest.raises(ValueError, match=r"unknown metrics \['auc'\]"):
        csv_task(tmp_path)


def test_correlations_of_constant_predictions_are_undefined_and_rank_worst():
    # as the official scorer (scipy) gives them; main_score then never picks such an epoch
    m = compute_metrics(TASKS["stsb"], [2.0, 2.0, 2.0], [1.0, 2.0, 3.0])
    assert math.isnan(m["pearson"]) and math.isnan(m["spearman"])
    row = {"validation_pearson": m["pearson"], "validation_spearman": m["spearman"]}
    assert main_score(row, TASKS["stsb"]) == -math.inf
    # ties share the mean of their ranks: (1, 2.5, 2.5, 4) against (1, 2, 3, 4)
    assert compute_metrics(TASKS["stsb"], [1.0, 2.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])["spearman"] == pytest.approx(
        4.5 / math.sqrt(4.5 * 5))


def test_metrics_need_no_torch():
    code = "import sys, glue_tasks; glue_tasks.compute_metrics(glue_tasks.TASKS['cola'], [1, 0], [1, 1]); " \
           "assert 'torch' not in sys.modules"
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert done.returncode == 0, done.stderr


# --------------------------------------------------------------------------- against scikit-learn and scipy

REGRESSION_EDGES = [
    ([1.0, 2.0], [2.0, 1.0]),  # two examples
    ([1.0, 2.0], [1.0, 2.0]),
    ([1.0, 2.0, 3.0], [3.0, 1.0, 2.0]),  # three
    ([0.1, 0.2, 0.30000001], [1.0, 2.0, 3.0]),
    ([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]),  # constant predictions
    ([1.0, 2.0, 3.0], [2.5, 2.5, 2.5]),  # constant labels
    ([1.0, 2.0, float("nan")], [1.0, 2.0, 3.0]),  # a diverged model
    ([1e10, 1e10 + 1, 1e10 + 3], [1.0, 2.0, 3.0]),  # far from 0
    ([1.0, 2.0, 2.0, 3.0], [3.0, 3.0, 1.0, 2.0]),  # ties on both sides
    ([0.5, 0.5, 1.5, 1.5, 2.5], [0.0, 5.0, 0.0, 5.0, 2.0]),
]


@pytest.mark.parametrize("preds, labels", REGRESSION_EDGES)
def test_pearson_and_spearman_follow_scipy_on_edge_cases(preds, labels):
    """NaN where scipy gives NaN (a constant or NaN side), scipy's value to 1e-12 elsewhere."""
    import warnings

    from scipy.stats import pearsonr, spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on constant input
        expected = {"pearson": float(pearsonr(preds, labels)[0]), "spearman": float(spearmanr(preds, labels)[0])}
    ours = compute_metrics(TASKS["stsb"], preds, labels)
    for metric, value in expected.items():
        assert ours[metric] == pytest.approx(value, abs=1e-12, nan_ok=True), (metric, ours, expected)


CLASS_EDGES = [
    ([1, 1, 1, 1], [1, 0, 1, 0]),  # constant predictions
    ([0, 0, 0, 0], [0, 0, 0, 0]),  # one class everywhere: no positive at all
    ([1, 1], [1, 1]),
    ([0, 1], [1, 0]),  # all wrong
    ([1, 0, 1, 1, 0, 0, 1], [1, 0, 0, 1, 1, 0, 1]),
    ([1], [0]),  # one example
]


@pytest.mark.parametrize("preds, labels", CLASS_EDGES)
def test_accuracy_f1_and_mcc_follow_scikit_learn_on_edge_cases(preds, labels):
    import warnings

    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert compute_metrics(TASKS["cola"], preds, labels)["mcc"] == pytest.approx(matthews_corrcoef(labels, preds))
        expected = {"accuracy": accuracy_score(labels, preds), "f1": f1_score(labels, preds, zero_division=0.0)}
    assert compute_metrics(TASKS["mrpc"], preds, labels) == pytest.approx(expected)


def test_three_class_mcc_and_macro_f1_follow_scikit_learn():
    from sklearn.metrics import f1_score, matthews_corrcoef

    preds, labels = [0, 1, 2, 2, 1, 0, 0], [0, 1, 1, 2, 2, 0, 2]
    three = dataclasses.replace(TASKS["mnli"], metrics=("mcc", "f1"))
    assert compute_metrics(three, preds, labels) == pytest.approx(
        {"mcc": matthews_corrcoef(labels, preds), "f1": f1_score(labels, preds, average="macro")})
