"""The GLUE server's submission files: names, label formats, row counts, the best seed per task."""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pandas as pd
import pytest

import glue_submission as gs

CLASSES = {"cola": gs.BINARY["cola"], "rte": ("entailment", "not_entailment"), "mnli": ("entailment", "neutral", "contradiction")}


def write_run(root, model, seed, task, split, predictions, dev_scores=(0.5, 0.6), which="final"):
    run = root / f"{model}-seed{seed}"
    (run / "predictions").mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"index": range(len(predictions)), "prediction": predictions, "label": ""})
    frame.to_csv(run / "predictions" / f"{task}_{split}_{which}.tsv", sep="\t", index=False)
    pd.DataFrame({"epoch": range(1, len(dev_scores) + 1), "validation_accuracy": dev_scores}).to_csv(
        run / f"results_{task}.csv", index=False)
    return run


def test_labels_are_written_as_the_server_reads_them():
    cola, rte, stsb = gs.BY_NAME["CoLA.tsv"], gs.BY_NAME["RTE.tsv"], gs.BY_NAME["STS-B.tsv"]
    assert gs.server_prediction(cola, "acceptable") == "1" and gs.server_prediction(cola, "unacceptable") == "0"
    assert gs.server_prediction(rte, "not_entailment") == "not_entailment"
    assert gs.server_prediction(stsb, "5.7") == "5.000" and gs.server_prediction(stsb, "-0.2") == "0.000"
    assert gs.server_prediction(stsb, 2.34567) == "2.346"
    with pytest.raises(ValueError, match="CoLA.tsv.*'maybe'"):
        gs.server_prediction(cola, "maybe")
    with pytest.raises(ValueError, match="STS-B.tsv.*not a number"):
        gs.server_prediction(stsb, "nan")


def test_a_full_submission_zip_has_the_official_rows_and_the_best_seed(tmp_path, capsys):
    rows = gs.BY_NAME["RTE.tsv"].rows
    write_run(tmp_path, "m", 1, "rte", "test", ["entailment"] * rows, dev_scores=(0.70, 0.55))
    write_run(tmp_path, "m", 2, "rte", "test", ["not_entailment"] * rows, dev_scores=(0.50, 0.60))
    write_run(tmp_path, "m", 1, "cola", "test", ["acceptable"] * 1063)

    final = gs.collect(tmp_path, "m", "final")  # seed 2 ends higher on RTE
    assert set(final) == {"RTE.tsv", "CoLA.tsv"}
    assert set(final["RTE.tsv"]["prediction"]) == {"not_entailment"}
    assert set(final["CoLA.tsv"]["prediction"]) == {"1"}
    assert gs.collect(tmp_path, "m", "final", seed=1)["RTE.tsv"]["prediction"].iloc[0] == "entailment"

    out = gs.write_zip(final, tmp_path / "sub.zip")
    with zipfile.ZipFile(out) as archive:
        assert sorted(archive.namelist()) == ["CoLA.tsv", "RTE.tsv"]
        assert archive.read("RTE.tsv").decode().splitlines()[0] == "index\tprediction"
    assert gs.report(gs.read_zip(out)) == []
    assert "MNLI-m.tsv" in capsys.readouterr().out  # the missing files are named
    assert gs.main(["--check", str(out)]) == 0


def test_wrong_row_counts_are_refused_and_no_zip_is_written(tmp_path, capsys):
    write_run(tmp_path, "m", 1, "rte", "test", ["entailment"] * 10)
    assert gs.main(["--model", "m", "--outputs", str(tmp_path), "--out", str(tmp_path / "sub.zip")]) == 1
    assert "RTE.tsv: 10 rows, the official test set has 3000" in capsys.readouterr().out
    assert not (tmp_path / "sub.zip").exists()


def test_missing_runs_and_seeds_name_what_was_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match="m-seed<n>"):
        gs.collect(tmp_path, "m")
    write_run(tmp_path, "m", 1, "rte", "test", ["entailment"] * 3)
    with pytest.raises(FileNotFoundError, match=r"m-seed7.*seeds found: \[1\]"):
        gs.collect(tmp_path, "m", seed=7)
    with pytest.raises(ValueError, match="which='last'"):
        gs.collect(tmp_path, "m", which="last")


# --------------------------------------------------------------------------- make submission

ROOT = Path(__file__).resolve().parents[1]
SMALL = ("CoLA", "SST-2", "MRPC", "STS-B", "RTE", "WNLI")


def submission_sh(env: dict) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("GLUE_DIR", "DITBERT_MODEL", "DITBERT_OVERWRITE")}
    return subprocess.run(["bash", "scripts/submission.sh"], cwd=ROOT, env={**clean, **env}, capture_output=True,
                          text=True, timeout=900)


def test_make_submission_says_what_it_needs(tmp_path):
    done = submission_sh({})
    assert done.returncode == 1 and "set GLUE_DIR" in done.stderr
    (tmp_path / "CoLA").mkdir()
    done = submission_sh({"GLUE_DIR": str(tmp_path)})
    assert done.returncode == 1 and f"{tmp_path}/CoLA/test.tsv does not exist" in done.stderr
    for folder in SMALL:
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / "test.tsv").write_text("index\tsentence\n")
    done = submission_sh({"GLUE_DIR": str(tmp_path), "DITBERT_SET": f"train.out_dir={tmp_path / 'nothing'}"})
    assert done.returncode == 1 and f"no pretrained model at {tmp_path / 'nothing' / 'final'}" in done.stderr


@pytest.mark.slow
def test_make_submission_fine_tunes_the_six_small_tasks_and_zips_their_official_rows(glue_layout, tiny_model_dir,
                                                                                     tiny_tokenizer, tmp_path):
    from test_glue_finetune import write_test_files

    glue = tmp_path / "glue"
    for folder in SMALL:
        shutil.copytree(glue_layout / folder, glue / folder)
    official = {f.task: f.rows for f in gs.SERVER_FILES}
    folders = dict(zip(SMALL, ("cola", "sst2", "mrpc", "stsb", "rte", "wnli")))
    write_test_files(glue, {folder: official[task] for folder, task in folders.items()})
    settings = (f"train.out_dir={tiny_model_dir.parent};train.tokenizer={tiny_tokenizer};finetune.epochs=1;"
                "finetune.batch_size=8;finetune.save_best=false")
    done = submission_sh({"GLUE_DIR": str(glue), "DITBERT_PRESET": "tiny", "DITBERT_SET": settings,
                          "GLUE_OUTPUT_DIR": str(tmp_path / "out"), "MODEL_LABEL": "ditbert-sub", "GLUE_SEEDS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    tables = gs.read_zip(tmp_path / "out" / "glue_submission.zip")
    assert sorted(tables) == sorted(["CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "RTE.tsv", "WNLI.tsv"])
    assert gs.check_tables(tables) == []  # the official row counts, indices 0 .. n-1
    assert gs.main(["--check", str(tmp_path / "out" / "glue_submission.zip")]) == 0
