"""Fine-tuning never loses or silently changes a run: results are not overwritten unless asked, a
model is refused with another tokenizer, malformed rows are counted, Ctrl-C stops cleanly and
leaves the run marked unfinished (and out of the table), a resumed command keeps what
finished and fine-tunes the rest, a model folder that is no model is
named as such, the runs of two models under one label are never averaged or submitted together,
and a run folder has one fine-tuning writing it at a time."""

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

import cli
import fileio
import glue_results
import glue_submission
import glue_tasks
import glue_models
import glue_utils
from conftest import TINY_VOCAB, tiny_model_config
from test_glue_finetune import write_test_files
from model_defs import DitBertForMLM, save_model
from params import FinetuneConfig
from tokenization import tokenizer_fingerprint, train_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def tiny_ft(out_dir, **kw) -> FinetuneConfig:
    base = dict(lr=1e-3, warmup_epochs=0.5, epochs=1, batch_size=8, seeds=[1], output_dir=str(out_dir), save_best=False)
    return FinetuneConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def ditbert(tiny_model_dir, tiny_tokenizer):
    return glue_models.ditbert_source(str(tiny_model_dir), str(tiny_tokenizer), label="ditbert-test")


# --------------------------------------------------------------------------- results are not overwritten


def test_fine_tuning_into_a_folder_with_results_is_refused_before_any_work(ditbert, glue_layout, tmp_path):
    """Every (task, seed) is checked first: the error names the file and how to replace it, and
    nothing is written, not even for the tasks and seeds that have no results yet."""
    glue_utils.run_glue(ditbert, "rte", tiny_ft(tmp_path, save_best=True), glue_dir=glue_layout)
    run = tmp_path / "ditbert-test-seed1"
    before = (run / "results_rte.csv").read_bytes()
    with pytest.raises(FileExistsError, match=r"ditbert-test-seed1/results_rte\.csv \(rte\).*DITBERT_OVERWRITE=1"):
        glue_utils.run_glue(ditbert, "wnli,rte", tiny_ft(tmp_path, seeds=[1, 2], epochs=2), glue_dir=glue_layout)
    assert (run / "results_rte.csv").read_bytes() == before
    assert not (run / "results_wnli.csv").exists() and not (tmp_path / "ditbert-test-seed2").exists()

    glue_utils.run_glue(ditbert, "rte", tiny_ft(tmp_path, epochs=2), glue_dir=glue_layout, overwrite=True)
    assert len(pd.read_csv(run / "results_rte.csv")) == 2  # replaced
    assert not (run / "best_rte").exists()  # the old best model went with its results (save_best is off now)
    info = json.loads((run / "run_info.json").read_text())
    assert info["tasks"]["rte"]["finetune"]["epochs"] == 2 and info["tasks"]["rte"]["status"] == "complete"


@pytest.mark.slow
def test_the_notebook_refuses_to_overwrite_unless_DITBERT_OVERWRITE_is_set(ditbert, glue_layout, tiny_model_dir,
                                                                            tiny_tokenizer, tmp_path):
    glue_utils.run_glue(ditbert, "rte", tiny_ft(tmp_path / "out"), glue_dir=glue_layout)
    env = {**os.environ, "DITBERT_PRESET": "tiny", "GLUE_DIR": str(glue_layout), "GLUE_TASKS": "rte",
           "GLUE_OUTPUT_DIR": str(tmp_path / "out"), "GLUE_SEEDS": "1", "DITBERT_MODEL": str(tiny_model_dir),
           "DITBERT_TOKENIZER": str(tiny_tokenizer), "MODEL_LABEL": "ditbert-test", "RANDOM_INIT": "0",
           "DITBERT_SET": "finetune.epochs=2;finetune.batch_size=8;finetune.save_best=false"}
    env.pop("DITBERT_OVERWRITE", None)
    refused = subprocess.run([sys.executable, "GLUE-Finetune.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=600)
    assert refused.returncode != 0 and "results_rte.csv" in refused.stderr and "DITBERT_OVERWRITE=1" in refused.stderr
    assert "Traceback" not in refused.stderr and "error: " in refused.stderr, refused.stderr[-2000:]
    assert len(pd.read_csv(tmp_path / "out" / "ditbert-test-seed1" / "results_rte.csv")) == 1
    done = subprocess.run([sys.executable, "GLUE-Finetune.py"], cwd=ROOT, env={**env, "DITBERT_OVERWRITE": "1"},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(pd.read_csv(tmp_path / "out" / "ditbert-test-seed1" / "results_rte.csv")) == 2


# --------------------------------------------------------------------------- the model's own tokenizer


@pytest.fixture(scope="module")
def other_tokenizer(tiny_corpus, tmp_path_factory):
    """A tokenizer of the same vocabulary size as the tiny one, learned from other lines: other merges."""
    d = tmp_path_factory.mktemp("other-tokenizer")
    lines = tiny_corpus.read_text(encoding="utf-8").splitlines()
    (d / "corpus.txt").write_text("\n".join(reversed(lines[100:])) + "\n", encoding="utf-8")
    train_tokenizer([d / "corpus.txt"], TINY_VOCAB, d / "tokenizer.json")
    return d / "tokenizer.json"


@pytest.fixture(scope="module")
def fingerprinted_model(tiny_tokenizer, tmp_path_factory):
    """A saved DitBERT whose config.json records the tiny tokenizer's fingerprint."""
    out = tmp_path_factory.mktemp("fingerprinted") / "final"
    save_model(DitBertForMLM(tiny_model_config()), out, extra={"tokenizer_fingerprint": tokenizer_fingerprint(tiny_tokenizer)})
    return out


def test_fine_tuning_with_another_tokenizer_is_refused_naming_both_files(fingerprinted_model, tiny_tokenizer,
                                                                          other_tokenizer, glue_layout, tmp_path):
    assert tokenizer_fingerprint(other_tokenizer) != tokenizer_fingerprint(tiny_tokenizer)
    wrong = glue_models.ditbert_source(str(fingerprinted_model), str(other_tokenizer), label="m")
    with pytest.raises(ValueError, match=rf"{other_tokenizer} is not the tokenizer {fingerprinted_model} was trained"):
        glue_utils.run_glue(wrong, "rte", tiny_ft(tmp_path), glue_dir=glue_layout)
    assert not (tmp_path / "m-seed1").exists()  # refused before any work
    with pytest.raises(ValueError, match="is not the tokenizer"):  # the control is refused alike
        glue_utils.run_glue(glue_models.ditbert_source(str(fingerprinted_model), str(other_tokenizer), "m", True), "rte",
                            tiny_ft(tmp_path), glue_dir=glue_layout)

    right = glue_models.ditbert_source(str(fingerprinted_model), str(tiny_tokenizer), label="m")
    glue_utils.run_glue(right, "rte", tiny_ft(tmp_path, save_best=True), glue_dir=glue_layout)
    best = tmp_path / "m-seed1" / "best_rte"
    assert json.loads((best / "config.json").read_text())["tokenizer_fingerprint"] == tokenizer_fingerprint(tiny_tokenizer)
    from_best = glue_models.ModelSource("ditbert", str(best), "m2", str(other_tokenizer), init="mnli")
    with pytest.raises(ValueError, match=rf"{other_tokenizer} is not the tokenizer {best} was trained"):
        glue_utils.run_glue(from_best, "rte", tiny_ft(tmp_path), glue_dir=glue_layout)


def test_a_model_that_recorded_no_tokenizer_is_accepted(tiny_model_dir, other_tokenizer, glue_layout, tmp_path):
    assert "tokenizer_fingerprint" not in json.loads((tiny_model_dir / "config.json").read_text())
    source = glue_models.ditbert_source(str(tiny_model_dir), str(other_tokenizer), label="old")
    glue_utils.run_glue(source, "rte", tiny_ft(tmp_path), glue_dir=glue_layout)
    assert (tmp_path / "old-seed1" / "results_rte.csv").is_file()


# --------------------------------------------------------------------------- malformed rows


def test_an_unquoted_comma_in_a_csv_row_is_a_bad_row_not_a_third_class(tmp_path, capsys):
    rows = [f"review number {i} was {('dull', 'fine')[i % 2]},{('negative', 'positive')[i % 2]}" for i in range(200)]
    rows[17] = "a gorgeous, witty, seductive movie,positive"
    (tmp_path / "train.csv").write_text("sentence,label\n" + "\n".join(rows) + "\n")
    (tmp_path / "dev.csv").write_text("sentence,label\nfine,positive\ndull,negative\n\"quoted, comma\",positive\n")
    task = glue_tasks.get_task(str(tmp_path))
    assert task.label_names == ("negative", "positive") and task.num_labels == 2
    data, reports = glue_tasks.load_task(task)
    assert reports["train"].bad_rows == 1 and reports["train"].bad_examples == [(19, "4 fields, expected 2")]
    assert reports["validation"].bad_rows == 0 and data["validation"]["text_a"][2] == "quoted, comma"
    assert reports["train"].labels == {"negative": 100, "positive": 99}
    out = capsys.readouterr().out
    assert "1 of 200 rows" in out and "line 19" in out
    assert "labels: negative 100, positive 99" in out  # the label set found is printed


def test_rows_with_too_many_or_too_few_fields_in_a_glue_tsv_are_malformed(glue_layout, tmp_path):
    (tmp_path / "RTE").mkdir()
    lines = (glue_layout / "RTE" / "train.tsv").read_text().splitlines()
    body = lines[1:] * 10  # 240 rows
    body[3] = body[3] + "\textra field"  # line 5
    body[8] = "\t".join(body[8].split("\t")[:3])  # line 10: the label missing
    (tmp_path / "RTE" / "train.tsv").write_text("\n".join([lines[0]] + body) + "\n")
    (tmp_path / "RTE" / "dev.tsv").write_bytes((glue_layout / "RTE" / "dev.tsv").read_bytes())
    data, reports = glue_tasks.load_task(glue_tasks.TASKS["rte"], tmp_path)
    assert reports["train"].bad_rows == 2 and len(data["train"]) == 238
    assert reports["train"].bad_examples == [(5, "5 fields, expected 4"), (10, "3 fields, expected 4")]
    cola = glue_tasks.TASKS["cola"]  # no header: four fields a row
    (tmp_path / "CoLA").mkdir()
    rows = (glue_layout / "CoLA" / "train.tsv").read_text().splitlines() * 10
    rows[0] += "\tstray"
    (tmp_path / "CoLA" / "train.tsv").write_text("\n".join(rows) + "\n")
    _, report = glue_tasks.read_split(cola, "train", tmp_path / "CoLA" / "train.tsv")
    assert report.bad_examples == [(1, "5 fields, expected 4")]


# --------------------------------------------------------------------------- Ctrl-C


def interrupt_on_epoch(monkeypatch, epoch: int):
    """Make the loop's `epoch`-th training pass raise KeyboardInterrupt, as Ctrl-C would."""
    calls = []
    train_epoch = glue_utils.train_epoch

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            raise KeyboardInterrupt
        return train_epoch(*args, **kwargs)

    monkeypatch.setattr(glue_utils, "train_epoch", interrupted)


def test_ctrl_c_stops_cleanly_and_the_run_is_marked_and_left_out(ditbert, glue_layout, tmp_path, monkeypatch, capsys):
    glue_utils.run_glue(ditbert, "rte", tiny_ft(tmp_path, seeds=[1]), glue_dir=glue_layout)  # one finished run
    interrupt_on_epoch(monkeypatch, 2)
    try:
        with pytest.raises(SystemExit) as stop:
            glue_utils.run_glue(ditbert, "rte", tiny_ft(tmp_path, seeds=[2], epochs=3), glue_dir=glue_layout)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped as a raw KeyboardInterrupt")
    assert stop.value.code == 130
    message = capsys.readouterr().err
    assert "interrupted: ditbert-test seed 2 on rte stopped after 1 of 3 epochs" in message
    assert "DITBERT_OVERWRITE=1" in message
    run = tmp_path / "ditbert-test-seed2"
    entry = json.loads((run / "run_info.json").read_text())["tasks"]["rte"]
    assert (entry["status"], entry["epochs_done"]) == ("interrupted", 1)
    assert len(pd.read_csv(run / "results_rte.csv")) == 1

    with pytest.warns(UserWarning, match=r"left out, not finished.*ditbert-test-seed2/results_rte\.csv \(interrupted\)"):
        result = glue_results.collect(tmp_path)
    assert set(result.selected["seed"]) == {1}  # the interrupted run's epoch 1 is not its "final"
    assert result.table.set_index("model").loc["ditbert-test", "rte_seeds"] == 1
    assert "Left out, not finished: ditbert-test-seed2/results_rte.csv (interrupted)" in glue_results.markdown_table(
        result.table, result.unfinished)
    assert glue_submission.pick_run({1: tmp_path / "ditbert-test-seed1", 2: run}, "rte", "final", None).name.endswith("1")


def test_resume_keeps_what_finished_and_fine_tunes_the_rest(ditbert, glue_layout, tmp_path, monkeypatch, capsys):
    """A command stopped part-way and run again with resume: the (task, seed) that finished is kept
    byte for byte, the interrupted one is fine-tuned again and the ones never begun are fine-tuned; run
    once more, nothing is trained; with other settings the finished results are still refused."""
    ft = tiny_ft(tmp_path, seeds=[1, 2], epochs=2)
    train_epoch = glue_utils.train_epoch
    interrupt_on_epoch(monkeypatch, 4)  # rte: seed 1 finishes its 2 epochs, seed 2 stops in its second
    with pytest.raises(SystemExit):
        glue_utils.run_glue(ditbert, "rte,wnli", ft, glue_dir=glue_layout)
    first, second = tmp_path / "ditbert-test-seed1", tmp_path / "ditbert-test-seed2"
    kept = (first / "results_rte.csv").read_bytes(), json.loads((first / "run_info.json").read_text())["tasks"]["rte"]
    assert json.loads((second / "run_info.json").read_text())["tasks"]["rte"]["status"] == "interrupted"

    monkeypatch.setattr(glue_utils, "train_epoch", train_epoch)
    capsys.readouterr()
    glue_utils.run_glue(ditbert, "rte,wnli", ft, glue_dir=glue_layout, resume=True)
    assert "ditbert-test: kept, finished before with the same model and settings: rte seed 1" in capsys.readouterr().out
    assert (first / "results_rte.csv").read_bytes() == kept[0]
    assert json.loads((first / "run_info.json").read_text())["tasks"]["rte"] == kept[1]
    for run in (first, second):
        tasks = json.loads((run / "run_info.json").read_text())["tasks"]
        assert {task: entry["status"] for task, entry in tasks.items()} == {"rte": "complete", "wnli": "complete"}
        assert len(pd.read_csv(run / "results_rte.csv")) == 2 and len(pd.read_csv(run / "results_wnli.csv")) == 2

    def no_training(*args, **kwargs):
        raise AssertionError("resume trained a task that had finished")

    monkeypatch.setattr(glue_utils, "train_epoch", no_training)
    glue_utils.run_glue(ditbert, "rte,wnli", ft, glue_dir=glue_layout, resume=True)
    with pytest.raises(FileExistsError, match=r"ditbert-test-seed1/results_rte\.csv \(rte\)"):
        glue_utils.run_glue(ditbert, "rte", dataclasses.replace(ft, lr=2e-3), glue_dir=glue_layout, resume=True)
    assert (first / "results_rte.csv").read_bytes() == kept[0]


def test_a_run_without_a_finished_record_is_left_out_of_the_table(tmp_path):
    """A process killed while fine-tuning leaves its task 'running'; a task the run_info.json does
    not list was never finished either. Neither is reported as final."""
    for seed, tasks in ((1, {"rte": {"status": "complete"}}), (2, {"rte": {"status": "running"}}),
                        (3, {"cola": {"status": "complete"}})):
        run = tmp_path / f"m-seed{seed}"
        run.mkdir()
        (run / "run_info.json").write_text(json.dumps({"model": "m", "seed": seed, "init": "pretrained", "tasks": tasks}))
        pd.DataFrame({"epoch": [1, 2], "validation_accuracy": [0.5, 0.6]}).to_csv(run / "results_rte.csv", index=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = glue_results.collect(tmp_path)
    assert result.unfinished == ["m-seed2/results_rte.csv (running)", "m-seed3/results_rte.csv (unfinished)"]
    assert any("left out, not finished" in str(w.message) for w in caught)
    assert set(result.selected["seed"]) == {1}


@pytest.mark.slow
def test_ctrl_c_in_the_notebook_run_as_a_script_prints_no_traceback(glue_layout, tiny_model_dir, tiny_tokenizer,
                                                                    tmp_path):
    code = textwrap.dedent("""
        import runpy, sys
        import glue_utils
        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt
        glue_utils.train_epoch = interrupted
        sys.argv = ["GLUE-Finetune.py"]
        runpy.run_path("GLUE-Finetune.py", run_name="__main__")
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DITBERT_PRESET": "tiny", "GLUE_DIR": str(glue_layout),
           "GLUE_TASKS": "rte", "GLUE_OUTPUT_DIR": str(tmp_path), "GLUE_SEEDS": "1", "MODEL_LABEL": "nb",
           "DITBERT_MODEL": str(tiny_model_dir), "DITBERT_TOKENIZER": str(tiny_tokenizer), "RANDOM_INIT": "0",
           "DITBERT_SET": "finetune.batch_size=8"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 130, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "fine-tuning interrupted: nb seed 1 on rte" in done.stderr
    assert json.loads((tmp_path / "nb-seed1" / "run_info.json").read_text())["tasks"]["rte"]["status"] == "interrupted"


# --------------------------------------------------------------------------- a model folder that is no model


def test_a_hugging_face_source_that_is_no_model_is_named_as_such(glue_layout, tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    with pytest.raises(FileNotFoundError, match=rf"{empty} is a folder but not a Hugging Face model: it has no "
                                                r"config\.json \(it holds \['notes\.txt'\]\)"):
        glue_utils.run_glue(glue_models.hf_source(str(empty)), "rte", tiny_ft(tmp_path), glue_dir=glue_layout)
    for missing in (str(tmp_path / "no" / "such" / "model"), "../no-such-model"):
        with pytest.raises(FileNotFoundError, match=rf"model folder {missing} does not exist"):
            glue_utils.run_glue(glue_models.hf_source(f"x={missing}"), "rte", tiny_ft(tmp_path), glue_dir=glue_layout)
    assert not list(tmp_path.glob("*-seed1"))  # refused before any work


# --------------------------------------------------------------------------- one label, two models


@pytest.fixture(scope="module")
def two_models(ditbert, glue_layout, tmp_path_factory):
    """Run folders as a fresh clone holds them after a new model is fine-tuned: the committed seeds 2 and
    3 of `ditbert-tiny` (model A, recorded before fingerprints), and seed 1 fine-tuned here from another
    model (B, the tiny test model) under the same label, on WNLI with a test file of the official size."""
    root = tmp_path_factory.mktemp("two-models")
    outputs = root / "GLUE-Outputs"
    for seed in (2, 3):
        shutil.copytree(ROOT / "GLUE-Outputs" / f"ditbert-tiny-seed{seed}", outputs / f"ditbert-tiny-seed{seed}")
    glue = root / "glue"
    shutil.copytree(glue_layout / "WNLI", glue / "WNLI")
    write_test_files(glue, {"WNLI": glue_submission.BY_NAME["WNLI.tsv"].rows})
    model_b = dataclasses.replace(ditbert, label="ditbert-tiny")
    glue_utils.run_glue(model_b, "wnli", tiny_ft(outputs, max_train_examples=20), glue_dir=glue)
    return outputs


def test_a_submission_after_a_new_model_holds_only_the_new_models_runs(two_models, tmp_path, capsys):
    """The zip is built from the model of the newest run alone (B: WNLI), never from the committed
    seeds of model A; the output names the folder and epoch of every file, and the folders left out."""
    out = tmp_path / "glue_submission.zip"
    assert glue_submission.main(["--model", "ditbert-tiny", "--outputs", str(two_models), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert sorted(glue_submission.read_zip(out)) == ["WNLI.tsv"]
    assert "WNLI.tsv" in printed and "ditbert-tiny-seed1, final (epoch 1)" in printed
    left_out = next(line for line in printed.splitlines() if line.startswith("left out"))
    assert "ditbert-tiny-seed2 (cola)" in left_out and "ditbert-tiny-seed3 (wnli)" in left_out
    assert "recorded before fingerprints" in left_out and "ditbert-tiny-seed1" not in left_out
    manifest = pd.read_csv(tmp_path / "glue_submission.manifest.tsv", sep="\t")
    assert manifest[["file", "run", "which", "epoch"]].values.tolist() == [["WNLI.tsv", "ditbert-tiny-seed1", "final", 1]]

    # model A's runs are still there for the asking, by the fingerprint the left-out line names
    model_a = re.search(r"ditbert-tiny-seed2 \(cola\): model ([0-9a-f]+)", left_out).group(1)
    chosen = glue_submission.select(two_models, "ditbert-tiny", fingerprint=model_a[:8])
    assert {p.run.folder.name for p in chosen.picks.values()} <= {"ditbert-tiny-seed2", "ditbert-tiny-seed3"}
    assert sorted(chosen.picks) == sorted(["CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "RTE.tsv", "WNLI.tsv"])
    assert glue_submission.check_tables(chosen.tables) == []
    assert glue_submission.collect(two_models, "ditbert-tiny", tasks="cola,rte") == {}  # B has neither: no A instead
    assert glue_submission.main(["--model", "ditbert-tiny", "--outputs", str(two_models), "--tasks", "cola,rte",
                                 "--out", str(tmp_path / "none.zip")]) == 1
    assert "no test predictions of ditbert-tiny" in capsys.readouterr().err and not (tmp_path / "none.zip").exists()
    with pytest.raises(ValueError, match=r"no model of ditbert-tiny has the fingerprint 'ffffffff'.*ditbert-tiny-seed1"):
        glue_submission.select(two_models, "ditbert-tiny", fingerprint="ffffffff")


def test_runs_of_two_models_under_one_label_are_never_averaged(two_models):
    """The aggregated table gives each model its own row, named by the label and the model's
    fingerprint, and a warning and the note under the table name each row's folders."""
    with pytest.warns(UserWarning, match=r"kept apart: ditbert-tiny: the runs come from 2 different models") as caught:
        result = glue_results.collect(two_models)
    message = next(str(w.message) for w in caught if "kept apart" in str(w.message))
    assert "ditbert-tiny-seed1 (wnli)" in message and "ditbert-tiny-seed2, ditbert-tiny-seed3 (cola, demo" in message
    table = result.table.set_index("model")
    assert glue_results.BASELINE_ROW in table.index  # scored on the dev labels the runs' predictions hold
    table = table.drop(index=glue_results.BASELINE_ROW)
    assert "ditbert-tiny" not in table.index and len(table) == 2
    new = result.newest_row("ditbert-tiny")
    (old,) = set(table.index) - {new}
    assert new.startswith("ditbert-tiny@") and old.startswith("ditbert-tiny@")
    assert table.loc[new, "wnli_seeds"] == 1 and table.loc[new, "sst2_seeds"] == 0
    assert table.loc[old, "wnli_seeds"] == 2 and table.loc[old, "sst2_seeds"] == 2
    committed = [100 * pd.read_csv(two_models / f"ditbert-tiny-seed{s}" / "results_sst2.csv")["validation_accuracy"].iloc[-1]
                 for s in (2, 3)]
    assert table.loc[old, "sst2_final_mean"] == pytest.approx(sum(committed) / 2)
    assert f"{new} (newest) = ditbert-tiny-seed1 (wnli)" in glue_results.markdown_table(result.table, (), result.apart)


# --------------------------------------------------------------------------- one fine-tuning per run folder

HOLDER = textwrap.dedent("""
    import sys, time
    import glue_models, glue_utils
    from params import FinetuneConfig

    model, tokenizer, glue, out = sys.argv[1:5]

    def stalled(*args, **kwargs):  # the first epoch holds on, as a long one would
        print("training", flush=True)
        time.sleep(120)

    glue_utils.train_epoch = stalled
    ft = FinetuneConfig(lr=1e-3, warmup_epochs=0.5, epochs=1, batch_size=8, seeds=[1], output_dir=out, save_best=False)
    glue_utils.run_glue(glue_models.ditbert_source(model, tokenizer, "ditbert-test"), "rte", ft, glue_dir=glue)
""")


def start_holder(tiny_model_dir, tiny_tokenizer, glue_layout, out) -> subprocess.Popen:
    """A fine-tuning of ditbert-test seed 1 on RTE into `out`, in another process, held in its first
    epoch: returned once it trains (it has the run folder's lock then)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tiny_model_dir), str(tiny_tokenizer), str(glue_layout),
                               str(out)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(120, holder.kill)  # a holder that never gets there does not hang the tests
    watchdog.daemon = True
    watchdog.start()
    for line in holder.stdout:
        if line.strip() == "training":
            return holder
    pytest.fail(f"the holding fine-tuning did not start: {holder.stderr.read()[-3000:]}")


def test_a_second_fine_tuning_into_a_run_folder_stops_at_once_naming_the_first(ditbert, tiny_model_dir, tiny_tokenizer,
                                                                             glue_layout, tmp_path, monkeypatch, capsys):
    holder = start_holder(tiny_model_dir, tiny_tokenizer, glue_layout, tmp_path)
    try:
        run = tmp_path / "ditbert-test-seed1"
        before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
        assert json.loads(before["run_info.json"])["tasks"]["rte"]["status"] == "running"

        def no_data(*args, **kwargs):
            raise AssertionError("the second fine-tuning read the task's data")

        monkeypatch.setattr(glue_utils, "load_task", no_data)
        started = time.monotonic()
        with pytest.raises(fileio.FolderBusy, match=rf"ditbert-test-seed1 is in use by another fine-tuning run "
                                                    rf"\(pid {holder.pid} on ") as busy:
            glue_utils.run_glue(ditbert, "rte", tiny_ft(tmp_path), glue_dir=glue_layout, overwrite=True)
        assert time.monotonic() - started < 5
        with pytest.raises(fileio.FolderBusy, match=rf"pid {holder.pid} "):  # a task fine-tuned on its own alike
            glue_utils.finetune_task(glue_tasks.TASKS["wnli"], ditbert, tiny_ft(tmp_path), 1, glue_layout)
        assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # nothing touched

        fallback = []
        cli.script_errors(lambda *args: fallback.append(args))(fileio.FolderBusy, busy.value, None)
        err = capsys.readouterr().err
        assert not fallback and err.startswith("error: ") and err.count("\n") == 1 and f"pid {holder.pid}" in err
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_fine_tuning_is_taken_over(ditbert, tiny_model_dir, tiny_tokenizer, glue_layout,
                                                           tmp_path):
    holder = start_holder(tiny_model_dir, tiny_tokenizer, glue_layout, tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    run = tmp_path / "ditbert-test-seed1"
    assert f"pid {holder.pid} " in (run / ".lock").read_text()  # the dead run's stamp is still there
    glue_utils.run_glue(ditbert, "rte", tiny_ft(tmp_path), glue_dir=glue_layout)
    info = json.loads((run / "run_info.json").read_text())
    assert info["tasks"]["rte"]["status"] == "complete"
    assert f"pid {os.getpid()} " in (run / ".lock").read_text()
    # the lock file is no part of the results: the table and a submission read the folder as before
    assert glue_results.collect(tmp_path).table.set_index("model").loc["ditbert-test", "rte_seeds"] == 1
    assert glue_submission.select(tmp_path, "ditbert-test").picks == {}  # no test file, no test predictions
