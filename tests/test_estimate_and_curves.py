"""Before a run and during it: `train_model.py --estimate` (timed steps, projected run, nothing written
into the output folder), train.micro_batch=auto (the largest micro-batch that fits, recorded) and
train.tensorboard (the curves as event files, continued by --resume), and finetune.tensorboard (the
curves of each fine-tuned task)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

import fileio
import glue_models
import glue_utils
import memory_model
import pandas as pd
import train_model
from conftest import pretrain_argv as argv, pretrain_params as params_for
from params import FinetuneConfig

TB_TAGS = {"train/loss", "train/perplexity", "train/lr", "train/tokens_per_s", "train/grad_norm", "val/perplexity"}


@pytest.fixture
def data(pretrain_files, tmp_path):
    corpus, tok, cache = pretrain_files
    return corpus, tok, cache


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# --------------------------------------------------------------------------- --estimate


def test_estimate_prints_the_projection_and_writes_nothing_into_the_run_folder(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_model.main(argv(data, out, 20, "--stop-at", "3")) == 0  # a run stands in the folder
    before = {name: (out / name).read_bytes() for name in ("checkpoint.pt", "log.csv", "summary.json")}
    names = sorted(p.name for p in out.iterdir())
    capsys.readouterr()
    with fileio.folder_lock(out, "another pretraining run"):  # and a run holds the folder right now
        code = train_model.main(argv(data, out, 20000, "--estimate", "--estimate-steps", "4", "--estimate-warmup", "1"))
    printed = capsys.readouterr().out
    assert code == 0, printed
    for words in ("tokens/s", "peak memory", "GiB", "train.micro_batch=auto would pick", "20,000 steps",
                  "RESULT estimate_tokens_per_s", "RESULT estimate_train_hours"):
        assert words in printed, words
    assert {name: (out / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in out.iterdir()) == names


def test_estimate_projects_the_steps_and_the_budget(data, tmp_path):
    params = params_for(data, tmp_path / "never-made", 1000, "train.eval_every=100", "train.checkpoint_every=250")
    result = train_model.estimate(params, steps=4, warmup=1, show=False)
    assert not (tmp_path / "never-made").exists()
    assert result["steps"] == 1000 and result["evaluations"] == 10 and result["checkpoints"] == 4
    assert result["train_s"] == pytest.approx(1000 * result["seconds_per_step"])
    assert result["wall_s"] == pytest.approx(result["train_s"] + 10 * result["validation_s"] + 4 * result["checkpoint_s"])
    assert result["tokens_per_s"] == pytest.approx(4 * 18 / result["seconds_per_step"])  # 4 sequences of 18 tokens
    assert result["peak_memory_bytes"] >= 0 and result["predicted_peak_bytes"] > 0
    assert result["auto_micro_batch"] == 4  # the largest that splits a batch of 4, on a machine with memory to spare
    budget = train_model.estimate(params_for(data, tmp_path / "x", 1000, "train.budget_minutes=2"), steps=4, warmup=1,
                                  show=False)
    assert budget["steps"] == int(120 / budget["seconds_per_step"]) and budget["train_s"] == 120
    assert budget["tokens"] == budget["steps"] * 4 * 18


def test_estimate_of_a_resumed_run_projects_what_is_left(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_model.main(argv(data, out, 40, "--stop-at", "10")) == 0
    capsys.readouterr()
    assert train_model.main(["--out", str(out), "--resume", "--estimate", "--estimate-steps", "3"]) == 0
    printed = capsys.readouterr().out
    assert "30 steps (after step 10)" in printed


def test_a_large_accumulation_is_timed_at_two_counts_and_extrapolated(data, tmp_path):
    params = params_for(data, tmp_path / "run", 100, "train.batch_size=32", "train.micro_batch=1")
    result = train_model.estimate(params, steps=6, warmup=1, show=False)
    assert result["accumulation"] == 32 and result["micro_batches_per_timed_step"] == [1, train_model.ESTIMATE_ACCUMULATION]
    assert result["seconds_per_step"] == pytest.approx(result["seconds_per_update"] + 32 * result["seconds_per_micro_batch"])


def test_estimate_with_the_auto_micro_batch_times_the_one_it_picks(data, tmp_path):
    params = params_for(data, tmp_path / "run", 100, "train.micro_batch=1")
    result = train_model.estimate(params, steps=2, warmup=0, auto_micro_batch=True, show=False)
    assert result["auto_pick"]["picked"] == 4 and (result["micro_batch"], result["accumulation"]) == (4, 1)
    assert params.train.micro_batch == 1  # the settings given are not changed


def test_step_times_fit_a_line_through_the_two_counts():
    times = train_model.StepTimes()
    for seconds in (1.5, 1.7):  # 1 micro-batch: mean 1.6
        times.add(1, seconds)
    for seconds in (2.5, 2.7):  # 4 micro-batches: mean 2.6 -> 1/3 s per micro-batch, 1.2667 s of update
        times.add(4, seconds)
    step, per_micro, update = times.step_seconds(100)
    assert per_micro == pytest.approx(1 / 3) and update == pytest.approx(1.6 - 1 / 3)
    assert step == pytest.approx(update + 100 / 3)
    assert times.step_seconds(4)[0] == pytest.approx(2.6)  # measured directly: no extrapolation


def test_durations_read_in_their_unit():
    assert train_model.duration(5) == "5.00 s" and train_model.duration(45) == "45 s"
    assert train_model.duration(750) == "12.5 min" and train_model.duration(3 * 86400) == "3.0 days"


# --------------------------------------------------------------------------- train.micro_batch=auto


def test_auto_micro_batch_picks_what_fits_and_the_run_records_it(data, tmp_path, monkeypatch, capsys):
    params = params_for(data, tmp_path / "probe", 4, "train.batch_size=8", "train.micro_batch=8")
    model = memory_model.build(params)
    room = (model.peak(2, 4) + model.peak(4, 2)) / 2  # a device where 2 fits and 4 does not
    monkeypatch.setattr(memory_model, "available_memory", lambda device: room / (1 - memory_model.FRAGMENTATION_MARGIN))
    out = tmp_path / "run"
    assert train_model.main(argv(data, out, 4, sets=("train.batch_size=8", "train.micro_batch=auto"))) == 0
    assert "train.micro_batch=auto: 2 (4 accumulation steps" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["micro_batch_auto"]["picked"] == 2 and summary["micro_batch_auto"]["predicted"] == 2
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["params"]["train"]["micro_batch"] == 2 and state["params"]["train"]["batch_size"] == 8
    assert state["tokens_seen"] == 4 * 8 * 18  # the batch stayed 8 sequences a step


def test_auto_micro_batch_names_the_shortfall_when_nothing_fits(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(memory_model, "available_memory", lambda device: 1000)
    out = tmp_path / "run"
    assert train_model.main(argv(data, out, 4, sets=("train.micro_batch=auto",))) == 2
    err = capsys.readouterr().err
    assert "train.micro_batch=auto: not even a micro-batch of 1 fits" in err and "GiB usable" in err


# --------------------------------------------------------------------------- train.tensorboard


def curves(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_the_curves_are_written_as_the_run_goes(data, tmp_path):
    out = tmp_path / "run"
    assert train_model.main(argv(data, out, 6, "--tensorboard", sets=("train.log_every=2", "train.eval_every=3"))) == 0
    read = curves(out / "tensorboard")
    assert set(read) == TB_TAGS
    assert [step for step, _ in read["train/loss"]] == [2, 3, 4, 6]  # every log_every step and every evaluation
    assert [step for step, _ in read["val/perplexity"]] == [3, 6]
    summary = json.loads((out / "summary.json").read_text())
    assert read["val/perplexity"][-1][1] == pytest.approx(summary["val_ppl"], rel=1e-6)
    assert all(value > 0 for _, value in read["train/grad_norm"])
    log_lr = [float(line.split(",")[3]) for line in (out / "log.csv").read_text().splitlines()[1:]]
    assert [value for _, value in read["train/lr"]] == pytest.approx(log_lr, rel=1e-6)  # log.csv stays, the same figures


def test_resume_continues_the_same_curves_without_what_came_after_the_checkpoint(data, tmp_path):
    out = tmp_path / "run"
    sets = ("train.tensorboard=true", "train.log_every=1")
    assert train_model.main(argv(data, out, 8, "--stop-at", "3", sets=sets)) == 0
    saved = tmp_path / "checkpoint-at-3.pt"
    shutil.copy(out / "checkpoint.pt", saved)
    assert train_model.main(["--out", str(out), "--resume", "--stop-at", "5"]) == 0
    shutil.copy(saved, out / "checkpoint.pt")  # the process died after step 5, its last checkpoint at step 3
    assert train_model.main(["--out", str(out), "--resume"]) == 0
    read = curves(out / "tensorboard")
    assert [step for step, _ in read["train/loss"]] == list(range(1, 9))  # each step once: 4 and 5 from the last process
    log = [line.split(",") for line in (out / "log.csv").read_text().splitlines()[1:]]
    assert [value for _, value in read["train/loss"]] == pytest.approx([float(row[1]) for row in log], rel=1e-6)


def test_a_resumed_run_can_turn_the_curves_on(data, tmp_path):
    out = tmp_path / "run"
    assert train_model.main(argv(data, out, 5, "--stop-at", "2", sets=("train.log_every=1",))) == 0
    assert not (out / "tensorboard").exists()
    assert train_model.main(["--out", str(out), "--resume", "--tensorboard"]) == 0
    assert [step for step, _ in curves(out / "tensorboard")["train/loss"]] == [3, 4, 5]  # from the step it resumed at


def test_overwrite_removes_the_replaced_runs_curves(data, tmp_path):
    out = tmp_path / "run"
    assert train_model.main(argv(data, out, 4, "--tensorboard")) == 0
    first = listing(out / "tensorboard")
    assert train_model.main(argv(data, out, 2, "--tensorboard", "--overwrite")) == 0
    assert set(listing(out / "tensorboard")).isdisjoint(first)
    assert [step for step, _ in curves(out / "tensorboard")["train/loss"]] == [1, 2]


def test_without_the_setting_no_curves_are_written(data, tmp_path):
    out = tmp_path / "run"
    assert train_model.main(argv(data, out, 2)) == 0
    assert not (out / "tensorboard").exists()


def test_fine_tuning_writes_each_tasks_curves_and_replaces_them_with_the_task(tiny_model_dir, tiny_tokenizer,
                                                                            glue_layout, tmp_path):
    """finetune.tensorboard: <run>/tensorboard/<task>/ holds every step's loss and learning rate and each
    epoch's metrics (those of results_<task>.csv); the setting leaves the run's fingerprint alone, and a
    task fine-tuned again replaces its curves."""
    ft = FinetuneConfig(lr=1e-3, warmup_epochs=0.5, epochs=2, batch_size=8, seeds=[1], output_dir=str(tmp_path),
                        save_best=False, tensorboard=True)
    source = glue_models.ditbert_source(str(tiny_model_dir), str(tiny_tokenizer), label="ditbert-test")
    [run] = glue_utils.run_glue(source, "rte", ft, glue_dir=glue_layout)
    read = curves(run / "tensorboard" / "rte")
    steps = [step for step, _ in read["train/loss"]]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) % 2 == 0 and len(steps) >= 4
    assert [step for step, _ in read["train/lr"]] == steps and read["train/lr"][0][1] < max(v for _, v in read["train/lr"])
    results = pd.read_csv(run / "results_rte.csv")
    assert [step for step, _ in read["epoch/validation_accuracy"]] == [len(steps) // 2, len(steps)]
    assert [v for _, v in read["epoch/validation_accuracy"]] == pytest.approx(results["validation_accuracy"].tolist())
    assert [v for _, v in read["epoch/train_accuracy"]] == pytest.approx(results["train_accuracy"].tolist())

    assert glue_utils.finished_run(source, "rte", dataclasses.replace(ft, tensorboard=False), 1)  # the same result
    first = {path for path in listing(run / "tensorboard") if "tfevents" in path}
    glue_utils.run_glue(source, "rte", dataclasses.replace(ft, epochs=1), glue_dir=glue_layout, overwrite=True)
    assert len(first) == 1 and set(listing(run / "tensorboard")).isdisjoint(first)
    assert [step for step, _ in curves(run / "tensorboard" / "rte")["epoch/validation_accuracy"]] == [len(steps) // 2]


def test_a_resumed_run_picks_its_micro_batch_again(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_model.main(argv(data, out, 6, "--stop-at", "2", sets=("train.batch_size=8", "train.micro_batch=8"))) == 0
    capsys.readouterr()
    assert train_model.main(["--out", str(out), "--resume", "--set", "train.micro_batch=auto"]) == 0
    printed = capsys.readouterr().out
    assert "train.micro_batch=auto: 8 (1 accumulation steps" in printed
    assert "changed settings" not in printed  # no placeholder passes for a change of the checkpoint's settings
    assert json.loads((out / "summary.json").read_text())["micro_batch_auto"]["picked"] == 8
