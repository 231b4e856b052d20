"""Pretraining by the clock (train.budget_minutes) and from a trained model (train.init_from).

The clock is replaced by a fake one that advances a fixed amount on every reading, so that a step
"takes" a known time and the tests do not depend on the machine's speed.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import checkpoints
import train_model
from conftest import PRETRAIN_TINY
from model_defs import load_model
from params import get_params, parse_overrides
from runtime import lr_factor
from tokenization import train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
STEP_S = 0.5  # what one optimizer step takes on the fake clock (the time between two readings)
BUDGET_MIN = 0.1  # 6 seconds: 12 steps
BUDGET_STEPS = round(BUDGET_MIN * 60 / STEP_S)


class FakeClock:
    """Advances `tick` seconds on every reading; `advance` moves it on as slow work would."""

    def __init__(self, tick: float = STEP_S):
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def data(pretrain_files):
    return pretrain_files


def params_for(data, out: Path, *sets: str, steps: int = 1_000_000):
    corpus, tok, cache = data
    overrides = parse_overrides([*PRETRAIN_TINY, f"data.cache_dir={cache}", "train.warmup_steps=2",
                                 f"train.budget_minutes={BUDGET_MIN}", "train.checkpoint_every=1000", *sets])
    overrides.update({"data.corpus": [str(corpus)], "train.tokenizer": str(tok), "train.out_dir": str(out),
                      "train.steps": steps})
    return get_params("tiny", overrides)


def log_rows(out: Path) -> list[dict]:
    with open(out / "log.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- the schedule


def test_the_clock_schedule_warms_up_peaks_and_ends_at_min_lr():
    # by the clock, the shape runs over the whole budget; the warmup caps it in the first steps
    assert lr_factor(0, 4, 10**6, progress=0.0) == pytest.approx(0.25)
    assert lr_factor(3, 4, 10**6, progress=0.001) == pytest.approx(0.999)
    assert lr_factor(500, 4, 10**6, progress=0.5) == pytest.approx(0.5)
    assert lr_factor(900, 4, 10**6, 0.1, progress=1.0) == pytest.approx(0.1)
    assert lr_factor(950, 4, 10**6, 0.1, progress=1.7) == pytest.approx(0.1), "past the budget: held at the end"
    # Cramming's triangle: a quarter of the peak at the start, the peak at 3/4, min_lr at the end
    assert lr_factor(10, 0, 100, shape="triangle", progress=0.0) == pytest.approx(0.25)
    assert lr_factor(10, 0, 100, shape="triangle", progress=0.75) == pytest.approx(1.0)
    assert lr_factor(10, 0, 100, shape="triangle", progress=0.875) == pytest.approx(0.5)
    assert lr_factor(10, 0, 100, 0.0, "triangle", progress=1.0) == pytest.approx(0.0)
    # by steps, a triangle spans the whole run
    assert lr_factor(75, 0, 100, shape="triangle") == pytest.approx(1.0)


def test_a_budget_run_stops_at_the_budget_decayed_and_writes_its_final_model(data, tmp_path):
    out = tmp_path / "run"
    summary = train_model.train(params_for(data, out, "train.warmup_steps=4"), show_progress=False, clock=FakeClock())
    assert summary["step"] == BUDGET_STEPS, "the run ends when the budget is spent, train.steps aside"
    assert summary["train_minutes"] == pytest.approx(BUDGET_MIN)
    assert (out / "final" / "model.safetensors").is_file()
    final = json.loads((out / "final" / "config.json").read_text())
    assert final["train_minutes"] == pytest.approx(BUDGET_MIN) and final["tokens_seen"] == summary["tokens_seen"]
    rows = log_rows(out)
    lrs = [float(r["lr"]) for r in rows]
    peak = params_for(data, out).train.lr
    assert lrs[0] < lrs[1], f"warmup: {lrs}"  # each row's rate is the next step's
    assert all(b < a for a, b in zip(lrs[3:], lrs[4:])), f"the rate falls with the clock after the warmup: {lrs}"
    assert lrs[-1] <= 0.1 * peak, f"decayed when the budget ends: {lrs[-1]} of peak {peak}"
    assert [float(r["train_s"]) for r in rows] == pytest.approx([STEP_S * (i + 1) for i in range(BUDGET_STEPS)])
    assert rows[-1]["val_perplexity"], "validated at the end of the run"


def test_with_steps_of_equal_length_the_clock_gives_the_steps_schedule(data, tmp_path):
    """By the clock a linear decay runs from the end of the warmup to the end of the budget, as by
    steps it runs from the warmup's last step to train.steps: the same rates when every step takes
    the same time."""
    clock = train_model.train(params_for(data, tmp_path / "clock", "train.warmup_steps=4"), show_progress=False,
                              clock=FakeClock())
    steps = train_model.train(params_for(data, tmp_path / "steps", "train.warmup_steps=4", "train.budget_minutes=0",
                                         steps=BUDGET_STEPS), show_progress=False)
    assert clock["step"] == steps["step"] == BUDGET_STEPS
    clock_lrs = [float(r["lr"]) for r in log_rows(tmp_path / "clock")]
    steps_lrs = [float(r["lr"]) for r in log_rows(tmp_path / "steps")]
    assert clock_lrs == pytest.approx(steps_lrs, abs=1e-12)
    a = load_model(tmp_path / "clock" / "final").state_dict()
    b = load_model(tmp_path / "steps" / "final").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "the same rates, the same weights"


def test_validation_and_checkpoints_do_not_count_against_the_budget(data, tmp_path, monkeypatch):
    clock, validate = FakeClock(), train_model.validate

    def slow_validation(*args, **kwargs):
        clock.advance(100.0)  # far beyond the budget, were it counted
        return validate(*args, **kwargs)

    monkeypatch.setattr(train_model, "validate", slow_validation)
    out = tmp_path / "run"
    summary = train_model.train(params_for(data, out, "train.eval_every=2", "train.checkpoint_every=2"),
                                show_progress=False, clock=clock)
    assert summary["step"] == BUDGET_STEPS
    assert sum(1 for r in log_rows(out) if r["val_perplexity"]) == BUDGET_STEPS // 2


def test_a_resumed_budget_run_carries_the_time_spent_and_ends_as_one_run(data, tmp_path):
    whole = train_model.train(params_for(data, tmp_path / "whole"), show_progress=False, clock=FakeClock())
    out = tmp_path / "parts"
    train_model.train(params_for(data, out), stop_at=5, show_progress=False, clock=FakeClock())
    assert checkpoints.read_checkpoint(out / "checkpoint.pt")["train_s"] == pytest.approx(5 * STEP_S)
    resumed = train_model.train(params_for(data, out), resume=True, show_progress=False, clock=FakeClock())
    assert resumed["step"] == whole["step"] == BUDGET_STEPS
    assert resumed["train_minutes"] == pytest.approx(BUDGET_MIN)
    a, b = load_model(tmp_path / "whole" / "final").state_dict(), load_model(out / "final").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "stopped and resumed = uninterrupted"
    assert [r["lr"] for r in log_rows(out)] == [r["lr"] for r in log_rows(tmp_path / "whole")]

    again = train_model.train(params_for(data, out), resume=True, show_progress=False, clock=FakeClock())
    assert "is finished" in again["already_done"] and "train.budget_minutes" in again["already_done"]
    longer = train_model.train(params_for(data, out, f"train.budget_minutes={BUDGET_MIN * 2}"), resume=True,
                               show_progress=False, clock=FakeClock())
    assert longer["step"] == 2 * BUDGET_STEPS, "a raised budget continues the run"


def test_a_run_stopped_after_minutes_of_training_resumes_to_the_same_end(data, tmp_path, capsys):
    out = tmp_path / "run"
    paused = train_model.train(params_for(data, out), stop_at_minutes=BUDGET_MIN / 4, show_progress=False,
                               clock=FakeClock())
    assert paused["step"] == BUDGET_STEPS // 4 and not (out / "final").exists()
    again = train_model.train(params_for(data, out), resume=True, stop_at_minutes=BUDGET_MIN / 4,
                              show_progress=False, clock=FakeClock())
    assert "nothing to do before a stop at 0.025 minutes of training" in again["already_done"]
    whole = train_model.train(params_for(data, tmp_path / "whole"), show_progress=False, clock=FakeClock())
    resumed = train_model.train(params_for(data, out), resume=True, show_progress=False, clock=FakeClock())
    assert resumed["step"] == whole["step"] == BUDGET_STEPS
    a, b = load_model(tmp_path / "whole" / "final").state_dict(), load_model(out / "final").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    code = train_model.main(["--out", str(tmp_path / "x"), "--stop-at-minutes", "0"])
    assert code == 2 and "more than 0 minutes" in capsys.readouterr().err


FREE_PORT_CHILD = """
import itertools, os, sys
sys.path.insert(0, sys.argv[1])
import train_model
rank, ticks = int(os.environ["RANK"]), itertools.count()
# rank 1's clock runs three times as fast: alone, it would stop after a third of the steps
sys.exit(train_model.main(sys.argv[2:], clock=lambda: next(ticks) * 0.5 * (1 + 2 * rank)))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_follow_one_clock_and_stop_at_the_same_step(data, tmp_path):
    corpus, tok, cache = data
    out = tmp_path / "ddp"
    script = tmp_path / "child.py"
    script.write_text(FREE_PORT_CHILD)
    sets = [s for s in PRETRAIN_TINY if not s.startswith(("train.batch_size", "train.micro_batch"))]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(script), str(ROOT),
           "--corpus", str(corpus), "--tokenizer", str(tok), "--out", str(out), "--budget-minutes", str(BUDGET_MIN),
           "--set", *sets, "train.batch_size=8", "train.micro_batch=2", "train.warmup_steps=2",
           f"data.cache_dir={cache}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == BUDGET_STEPS, "rank 0's clock decides for both"
    assert "pretrained 0.1 minutes, 12 steps" in run.stdout


# --------------------------------------------------------------------------- starting from a trained model


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A finished 6-step run: its final/ folder, its checkpoint and a folder exported for transformers."""
    import hf_export

    root = tmp_path_factory.mktemp("trained")
    params = params_for(data, root / "run", "train.budget_minutes=0", steps=6)
    train_model.train(params, show_progress=False)
    hf_export.export(root / "run" / "final", data[1], root / "exported")
    return {"final": root / "run" / "final", "checkpoint": root / "run" / "checkpoint.pt", "exported": root / "exported"}


def init_argv(data, out: Path, source: Path, *sets: str) -> list[str]:
    corpus, tok, cache = data
    tiny = [s for s in PRETRAIN_TINY if not s.startswith("model.")]  # the model settings come from the source
    return ["--init-from", str(source), "--corpus", str(corpus), "--tokenizer", str(tok), "--out", str(out),
            "--steps", "2", "--set", *tiny, f"data.cache_dir={cache}", "train.lr=1e-12", "train.weight_decay=0",
            *sets]


@pytest.mark.parametrize("form", ["final", "checkpoint", "exported"])
def test_a_new_run_starts_from_each_form_of_a_trained_model(data, trained, tmp_path, capsys, form):
    out = tmp_path / "continued"
    assert train_model.main(init_argv(data, out, trained[form])) == 0, capsys.readouterr().err
    source = load_model(trained["final"]).state_dict()
    continued = load_model(out / "final").state_dict()
    for key, value in source.items():  # two steps at lr 1e-12 leaves the weights where they were
        torch.testing.assert_close(continued[key], value, atol=1e-6, rtol=0, msg=f"{form}: {key}")
    fresh = torch.nn.utils.parameters_to_vector(
        train_model.DitBertForMLM(load_model(trained["final"]).cfg).parameters())
    assert not torch.allclose(fresh, torch.nn.utils.parameters_to_vector(load_model(out / "final").parameters()),
                              atol=1e-3)
    record = json.loads((out / "final" / "config.json").read_text())
    assert record["params"]["train"]["init_from"] == str(trained[form])
    source_tokens = json.loads((trained["final"] / "config.json").read_text())["tokens_seen"]
    assert record["init_from"]["tokens_seen"] == source_tokens
    assert record["tokens_seen"] == source_tokens * 2 // 6, "the new run counts its own tokens (2 steps of 6)"
    state = checkpoints.read_checkpoint(out / "checkpoint.pt")
    assert float(state["optimizer"]["state"][0]["step"]) == 2, "a new optimizer: two steps taken"


def test_the_source_model_settings_are_kept_and_a_change_is_refused(data, trained, tmp_path, capsys):
    code = train_model.main(init_argv(data, tmp_path / "wider", trained["final"], "model.d_model=48"))
    err = capsys.readouterr().err
    assert code == 2 and "model.d_model=48 (the model has 32)" in err, err
    assert not (tmp_path / "wider").exists(), "refused before any work"


def test_another_tokenizer_than_the_models_is_refused_naming_both(data, trained, tmp_path, capsys):
    corpus, tok, cache = data
    other = tmp_path / "other-tokenizer.json"
    train_tokenizer([corpus], 400, other)
    args = init_argv(data, tmp_path / "run", trained["final"])
    args[args.index("--tokenizer") + 1] = str(other)
    code = train_model.main(args)
    err = capsys.readouterr().err
    assert code == 2 and str(other) in err and str(trained["final"]) in err, err
    assert f"({tok})" in err, "the message names the tokenizer file the model wants"
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.parametrize("form", ["final", "checkpoint", "exported"])
def test_without_a_tokenizer_the_run_takes_the_models_own(data, trained, tmp_path, capsys, form):
    corpus, tok, cache = data
    args = init_argv(data, tmp_path / "run", trained[form])
    del args[args.index("--tokenizer"):args.index("--tokenizer") + 2]
    assert train_model.main(args) == 0, capsys.readouterr().err
    used = json.loads((tmp_path / "run" / "final" / "config.json").read_text())["params"]["train"]["tokenizer"]
    expected = trained["exported"] / "tokenizer.json" if form == "exported" else tok
    assert used == str(expected)


def test_a_missing_source_is_named(data, tmp_path, capsys):
    code = train_model.main(init_argv(data, tmp_path / "run", tmp_path / "nowhere"))
    err = capsys.readouterr().err
    assert code == 2 and f"{tmp_path / 'nowhere'} does not exist" in err, err
