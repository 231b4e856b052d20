"""The run folder's owner, glue_runs: names, run_info.json and its per-task model facts, fingerprints
(of committed runs too), the lock, and the rows the aggregation makes of a label's runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest

import fileio
import glue_models
import glue_results
import glue_runs
from glue_tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "GLUE-Outputs"


# --------------------------------------------------------------------------- names


def test_run_folder_names_are_built_and_parsed_in_one_place(tmp_path):
    assert glue_runs.run_dir(tmp_path, "ditbert-tiny", 3) == tmp_path / "ditbert-tiny-seed3"
    assert glue_runs.parse_run_name("ditbert-tiny-two-hour-step13000-seed12") == ("ditbert-tiny-two-hour-step13000", 12)
    assert glue_runs.parse_run_name("ditbert-tiny-seed1-old") is None and glue_runs.parse_run_name("plots") is None
    for name in ("m-seed1", "m-seed2", "m-random-init-seed1", "m-seedx", "m[1]-seed1"):
        (tmp_path / name).mkdir()
    (tmp_path / "m-seed3").write_text("a file, not a run folder")
    assert glue_runs.label_runs(tmp_path, "m") == {1: tmp_path / "m-seed1", 2: tmp_path / "m-seed2"}
    assert glue_runs.label_runs(tmp_path, "m[1]") == {1: tmp_path / "m[1]-seed1"}  # glob characters in a label
    assert glue_models.from_mnli_source(glue_models.ModelSource("hf", "x", "m"), str(tmp_path)).path == str(
        tmp_path / "m-seed{seed}" / "best_mnli")
    outputs = {p.name for p in glue_runs.task_outputs(COMMITTED / "ditbert-tiny-seed1", TASKS["rte"])}
    assert outputs == {"results_rte.csv", "rte_validation_final.tsv", "rte_validation_best.tsv", "rte_test_final.tsv",
                       "rte_test_best.tsv"}


# --------------------------------------------------------------------------- fingerprints


def test_committed_runs_keep_their_rows_by_the_facts_they_recorded():
    """Runs from before fingerprints, identified by the facts they recorded, and the full-size runs made
    since, by their fingerprints: the seeds of one model and settings share a fingerprint, the twins and
    the two-hour models have others, and the aggregated table they give is the committed one."""
    fingerprints = {}
    for run in sorted(COMMITTED.glob("*-seed*")):
        info = glue_runs.read_info(run)
        for task in info["tasks"]:
            fingerprints[(info["model"], info["seed"], task)] = glue_runs.task_fingerprint(info, task)
    recorded = {label for (label, _, _), f in fingerprints.items() if f.recorded}
    assert recorded == {"ditbert-tiny-two-hour-full", "ditbert-tiny-two-hour-full-random-init", "minilm-l6-full"}
    assert all(f.recorded for (label, _, _), f in fingerprints.items() if label in recorded)
    models = {}
    for (label, _, task), fingerprint in fingerprints.items():
        models.setdefault(label, set()).add(fingerprint.model_id)
        assert fingerprint.settings["dtype"] in ("float32", "bfloat16") and "seeds" not in fingerprint.settings
    assert all(len(ids) == 1 for ids in models.values()), models
    assert len({ids.pop() for ids in models.values()}) == len(models)  # every label is another model
    per_task = {(label, task): set() for label, _, task in fingerprints}
    for (label, _, task), fingerprint in fingerprints.items():
        per_task[(label, task)].add(fingerprint.id)
    assert all(len(ids) == 1 for ids in per_task.values())

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing kept apart, nothing left out
        result = glue_results.collect(COMMITTED)
    assert result.apart == []
    assert result.table.round(2).to_csv(index=False) == (ROOT / "GLUE-aggregated-results.csv").read_text()
    assert glue_results.markdown_table(result.table, result.unfinished, result.apart) == (
        ROOT / "GLUE-aggregated-results.md").read_text()


def test_the_model_fingerprint_follows_the_weights_not_the_folder(tiny_model_dir, tiny_tokenizer, tmp_path):
    source = glue_models.ditbert_source(str(tiny_model_dir), str(tiny_tokenizer), "m")
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    same = glue_models.model_fingerprint(glue_models.ditbert_source(str(copy), str(tiny_tokenizer), "other-label"))
    assert same == glue_models.model_fingerprint(source)
    assert same["pretrain_tokens_seen"] == 12345 and same["tokenizer"] and len(same["weights"]) == 16
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    changed = glue_models.model_fingerprint(glue_models.ditbert_source(str(copy), str(tiny_tokenizer), "m"))
    assert changed["weights"] != same["weights"]
    twin = glue_models.model_fingerprint(glue_models.ditbert_source(str(copy), str(tiny_tokenizer), "m", random_init=True))
    assert twin["weights"] == "random init" and twin == glue_models.model_fingerprint(
        glue_models.ditbert_source(str(tiny_model_dir), str(tiny_tokenizer), "m", random_init=True))  # same architecture


# --------------------------------------------------------------------------- run_info.json


def entry(model_source: str, weights: str, epochs: int = 3, **extra) -> dict:
    model = {"kind": "ditbert", "init": "pretrained", "weights": weights, "tokenizer": "t", "pretrain_tokens_seen": 1}
    fingerprint = glue_runs.new_fingerprint(model, {"epochs": epochs, "lr": 1e-3, "seeds": [1, 2]}, "float32")
    return {"status": "complete", "finetune": {"epochs": epochs, "lr": 1e-3}, "init": "pretrained", "kind": "ditbert",
            "model_source": model_source, "pretrain_tokens_seen": 1, "dtype": "float32",
            "model_id": fingerprint.model_id, "fingerprint": fingerprint.record(), **extra}


def test_the_top_level_holds_only_the_facts_every_task_shares(tmp_path):
    run = tmp_path / "m-seed1"
    run.mkdir()
    legacy = {"model": "m", "seed": 1, "init": "pretrained", "kind": "ditbert", "model_source": "old/final",
              "pretrain_tokens_seen": 7, "dtype": "float32", "note": "kept",
              "tasks": {"rte": {"status": "complete", "finetune": {"epochs": 2}}}}
    glue_runs.info_path(run).write_text(json.dumps(legacy))
    before = glue_runs.task_fingerprint(legacy, "rte")
    glue_runs.record_task(run, "m", 1, "wnli", entry("new/final", "aaaa"))
    info = glue_runs.read_info(run)
    assert info["tasks"]["rte"]["model_source"] == "old/final"  # the legacy task keeps the model it came from
    assert glue_runs.task_fingerprint(info, "rte") == before
    assert "model_source" not in info and "pretrain_tokens_seen" not in info and "model_id" not in info
    assert {"model_source", "pretrain_tokens_seen", "model_id"} <= set(info["differs_by_task"])
    assert (info["model"], info["seed"], info["init"], info["dtype"], info["note"]) == ("m", 1, "pretrained", "float32", "kept")

    again = tmp_path / "m-seed2"
    glue_runs.record_task(again, "m", 2, "rte", entry("new/final", "aaaa"))
    glue_runs.record_task(again, "m", 2, "wnli", entry("new/final", "aaaa", finished_at=glue_runs.now()))
    info = glue_runs.read_info(again)
    assert info["model_source"] == "new/final" and "differs_by_task" not in info
    assert info["model_id"] == glue_runs.task_fingerprint(info, "wnli").model_id
    assert glue_runs.finished_at(again, "wnli") > 0 and glue_runs.is_finished(again, "wnli")
    assert not glue_runs.is_finished(again, "cola") and glue_runs.is_finished(tmp_path / "no-info-seed1", "rte")


def test_finished_with_compares_settings_and_the_recorded_model(tmp_path):
    run = tmp_path / "m-seed1"
    glue_runs.record_task(run, "m", 1, "rte", entry("a/final", "aaaa", epochs=2))
    pd.DataFrame({"epoch": [1, 2], "validation_accuracy": [0.5, 0.6]}).to_csv(glue_runs.results_path(run, "rte"), index=False)
    settings = {"epochs": 2, "lr": 1e-3}
    model = glue_runs.task_fingerprint(glue_runs.read_info(run), "rte").model
    assert glue_runs.finished_with(run, "rte", settings, 2, model=model)
    assert glue_runs.finished_with(run, "rte", settings, 2, model={**model, "weights": None})  # None: any
    assert not glue_runs.finished_with(run, "rte", settings, 2, model={**model, "weights": "bbbb"})
    assert not glue_runs.finished_with(run, "rte", {**settings, "lr": 2e-3}, 2)
    assert glue_runs.finished_with(run, "rte", {**settings, "lr": 2e-3}, 2, ignore=("lr",))
    assert not glue_runs.finished_with(run, "rte", settings, 3) and not glue_runs.finished_with(run, "wnli", settings, 1)


# --------------------------------------------------------------------------- rows of the table


def write_result(root: Path, label: str, seed: int, task: str, value: float, task_entry: dict | None) -> Path:
    run = root / f"{label}-seed{seed}"
    if task_entry is not None:
        glue_runs.record_task(run, label, seed, task, task_entry)
    else:
        run.mkdir(parents=True, exist_ok=True)
    columns = {f"{split}_{metric}": [value] for split in TASKS[task].eval_splits for metric in TASKS[task].metrics}
    pd.DataFrame({"epoch": [1], **columns}).to_csv(glue_runs.results_path(run, task), index=False)
    return run


def test_a_task_fine_tuned_with_other_settings_gets_rows_of_its_own(tmp_path):
    """One model, RTE fine-tuned for 3 epochs in seeds 1 and 2 and for 1 epoch in seed 3: the seeds of
    each settings are averaged apart, and the model's row keeps WNLI, whose settings agree."""
    for seed, epochs, value in ((1, 3, 0.6), (2, 3, 0.7), (3, 1, 0.5)):
        write_result(tmp_path, "m", seed, "rte", value, entry("a/final", "aaaa", epochs=epochs))
        write_result(tmp_path, "m", seed, "wnli", 0.4, entry("a/final", "aaaa"))
    with pytest.warns(UserWarning, match=r"m: rte of m was fine-tuned with different settings \(they differ in epochs\)"):
        result = glue_results.collect(tmp_path)
    table = result.table.set_index("model")
    assert table.loc["m", "wnli_seeds"] == 3 and table.loc["m", "rte_seeds"] == 0
    apart = table.drop(index="m")
    assert sorted(apart["rte_seeds"]) == [1, 2] and sorted(apart["rte_final_mean"].round(6)) == [50.0, 65.0]
    assert (apart["wnli_seeds"] == 0).all() and all(name.startswith("m@") for name in apart.index)


def test_mnli_initialised_runs_pair_with_the_model_their_mnli_model_came_from(tmp_path):
    """Two models under one label, and runs started from the MNLI model of one of them: the
    +mnli-init row joins those runs to that model's row only."""
    old, new = entry("old/final", "aaaa"), entry("new/final", "bbbb", finished_at=glue_runs.now())
    write_result(tmp_path, "m", 1, "cola", 0.2, old)
    write_result(tmp_path, "m", 2, "cola", 0.3, new)
    write_result(tmp_path, "m", 2, "mnli", 0.5, new)
    mnli = glue_runs.task_fingerprint(glue_runs.read_info(tmp_path / "m-seed2"), "mnli")
    from_mnli = dict(entry("x", "x"), init="mnli")
    fingerprint = glue_runs.Fingerprint({**mnli.model, "from_mnli": mnli.settings_id}, {"epochs": 3})
    from_mnli.update(model_id=fingerprint.model_id, fingerprint=fingerprint.record())
    write_result(tmp_path, "m-from-mnli", 2, "rte", 0.9, from_mnli)
    with pytest.warns(UserWarning, match="kept apart"):
        table = glue_results.collect(tmp_path).table.set_index("model")
    new_row = f"m@{fingerprint.base_id[:8]}"
    assert new_row in table.index and f"{new_row}+mnli-init" in table.index
    combined = table.loc[f"{new_row}+mnli-init"]
    assert combined["rte_final_mean"] == pytest.approx(90.0) and combined["cola_final_mean"] == pytest.approx(30.0)
    assert sum(name.endswith("+mnli-init") for name in table.index) == 1


# --------------------------------------------------------------------------- the lock


def test_the_lock_is_shared_within_a_process_and_refused_to_another(tmp_path):
    run = tmp_path / "m-seed1"
    glue_runs.check_not_busy([run])
    assert not run.exists()  # probing a folder not made yet makes nothing
    code = ("import sys, glue_runs, fileio\n"
            "try:\n    glue_runs.check_not_busy([sys.argv[1]])\nexcept fileio.FolderBusy as busy:\n"
            "    print(busy)\n    sys.exit(3)\n")
    with glue_runs.lock(run):
        with glue_runs.lock(run):  # nested: the same process
            glue_runs.record_task(run, "m", 1, "rte", entry("a/final", "aaaa"))
        other = subprocess.run([sys.executable, "-c", code, str(run)], cwd=ROOT, capture_output=True, text=True,
                               env={"PYTHONPATH": str(ROOT), "PATH": ""}, timeout=60)
        assert other.returncode == 3, other.stderr[-2000:]
        assert f"{run} is in use by another fine-tuning run (pid " in other.stdout
    glue_runs.check_not_busy([run])  # let go
    with pytest.raises(fileio.FolderBusy):
        with fileio.folder_lock(run, "fine-tuning run"), glue_runs.lock(run):
            pass  # the flock of another open file of this process counts as another holder
