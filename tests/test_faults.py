"""Faults and hostile files around pretraining: a malicious pickle planted as a checkpoint,
SIGTERM / Ctrl-C mid-run, a crash while a checkpoint is written, an unwritable or full
output folder, non-finite losses and gradients, and truncated or foreign checkpoints.

Runs that must die or be signalled run `train_model.py` in a subprocess; the rest call
`train_model.main` / `train_model.train` in this process with a tiny model.
"""

from __future__ import annotations

import builtins
import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import checkpoints
import train_model  # noqa: E402
from model_defs import DitBertForMLM, load_model, save_model  # noqa: E402
from conftest import PRETRAIN_BATCH, pretrain_argv as argv, pretrain_params as params_for  # noqa: E402

BATCH = PRETRAIN_BATCH
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def data(pretrain_files):
    return pretrain_files


def run_cli(args: list[str], prelude: str = "", timeout: int = 180) -> subprocess.CompletedProcess:
    """`python train_model.py ARGS` in a fresh interpreter, optionally after running `prelude` in it."""
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r})\n{prelude}\nimport train_model\nsys.exit(train_model.main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], env=ENV, capture_output=True, text=True, timeout=timeout)


def load_ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def log_steps(out: Path) -> list[int]:
    with open(out / "log.csv") as fh:
        return [int(r["step"]) for r in csv.DictReader(fh)]


def wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout:.0f} s")
        time.sleep(0.05)


class Payload:
    """Unpickling this creates the file `marker`: code that runs merely by loading the file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


# --------------------------------------------------------------------------- hostile checkpoint files


def test_malicious_pickle_checkpoint_is_refused_and_never_runs(data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    marker = tmp_path / "code-ran"
    params = params_for(data, out, 4)
    ckpt = out / "checkpoint.pt"
    torch.save({"model": {}, "params": params.to_dict(), "step": Payload(marker)}, ckpt)

    with pytest.raises(ValueError) as err:
        checkpoints.load_checkpoint(ckpt, params)
    message = str(err.value)
    assert str(ckpt) in message and "refused" in message
    assert not marker.exists()

    assert train_model.main(argv(data, out, 4, "--resume")) == 2  # the command line refuses it too
    stderr = capsys.readouterr().err
    assert f"checkpoint {ckpt}" in stderr and "refused" in stderr
    assert not marker.exists(), "loading the checkpoint ran code from it"

    # The payload is live: an unguarded torch.load would have run it.
    torch.load(ckpt, weights_only=False)
    assert marker.exists()


def test_pickle_disguised_as_safetensors_model_is_refused(data, tmp_path):
    model_dir = tmp_path / "final"
    save_model(DitBertForMLM(params_for(data, tmp_path, 2).model), model_dir)
    marker = tmp_path / "code-ran"
    weights = model_dir / "model.safetensors"
    torch.save({"encoder.tok_emb.weight": Payload(marker)}, weights)
    with pytest.raises(ValueError, match=f"{weights} is not a readable safetensors file"):
        load_model(model_dir)
    assert not marker.exists()


def good_checkpoint(data, tmp_path) -> tuple[Path, object]:
    out = tmp_path / "good"
    params = params_for(data, out, 2)
    train_model.train(params, show_progress=False)
    return out / "checkpoint.pt", params


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[: len(b) // 2], "corrupt or truncated"),
        (lambda b: b[:10], "corrupt or truncated"),
        (lambda b: b"", "corrupt or truncated"),
        (lambda b: b"\x00garbage" * 100, "corrupt or truncated"),
    ],
    ids=["half", "10 bytes", "empty", "garbage"],
)
def test_truncated_or_garbage_checkpoint_names_the_file(data, tmp_path, damage, message):
    ckpt, params = good_checkpoint(data, tmp_path)
    ckpt.write_bytes(damage(ckpt.read_bytes()))
    with pytest.raises(ValueError, match=f"checkpoint {ckpt} is {message}"):
        checkpoints.load_checkpoint(ckpt, params)


def test_checkpoint_of_another_shape_or_kind_names_the_file(data, tmp_path, capsys):
    ckpt, params = good_checkpoint(data, tmp_path)
    wider = params_for(data, ckpt.parent, 2, "model.d_model=64")
    with pytest.raises(ValueError, match=rf"checkpoint {ckpt} was made for another model config .*'d_model': \(32, 64\)"):
        checkpoints.load_checkpoint(ckpt, wider)
    # the same through the command line, before any training
    assert train_model.main(argv(data, ckpt.parent, 4, "--resume", sets=("model.d_model=64",))) == 2
    assert f"checkpoint {ckpt} was made for another model config" in capsys.readouterr().err

    torch.save(torch.zeros(3), ckpt)  # a valid torch file, but not a training checkpoint
    with pytest.raises(ValueError, match=f"checkpoint {ckpt} is not a DitBERT training checkpoint"):
        checkpoints.load_checkpoint(ckpt, params)
    ckpt.unlink()
    with pytest.raises(FileNotFoundError, match=f"{ckpt} does not exist"):
        checkpoints.load_checkpoint(ckpt, params)


def test_checkpoint_with_settings_of_another_version_names_the_file(data, tmp_path):
    ckpt, params = good_checkpoint(data, tmp_path)
    state = load_ckpt(ckpt)
    state["params"]["model"]["no_such_setting"] = 1  # written by a version with a setting this one lacks
    torch.save(state, ckpt)
    with pytest.raises(ValueError, match=f"checkpoint {ckpt} holds settings this version of DitBERT does not know"):
        checkpoints.load_checkpoint(ckpt, params)


def test_truncated_or_mismatched_saved_model_names_the_file(data, tmp_path):
    params = params_for(data, tmp_path, 2)
    model_dir = save_model(DitBertForMLM(params.model), tmp_path / "final")
    weights, config = model_dir / "model.safetensors", model_dir / "config.json"
    good_weights, good_config = weights.read_bytes(), config.read_text()

    weights.write_bytes(good_weights[: len(good_weights) // 2])
    with pytest.raises(ValueError, match=f"{weights} is not a readable safetensors file"):
        load_model(model_dir)
    weights.write_bytes(good_weights)

    cfg = json.loads(good_config)
    cfg["model"]["d_model"] = 64  # the config of another model beside these weights
    config.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=f"{weights} does not match .*{config}"):
        load_model(model_dir)

    config.write_text("{ not json")
    with pytest.raises(ValueError, match=f"{config} is not a DitBERT config"):
        load_model(model_dir)
    config.write_text(json.dumps({"model": {"d_model": 32, "no_such_setting": 1}}))
    with pytest.raises(ValueError, match=f"{config} is not a DitBERT config"):
        load_model(model_dir)


# --------------------------------------------------------------------------- signals


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_signal_mid_run_writes_a_new_checkpoint_and_resume_continues(data, tmp_path, signum):
    out = tmp_path / "run"
    ckpt = out / "checkpoint.pt"
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r})\nimport train_model\nsys.exit(train_model.main(sys.argv[1:]))"
    args = argv(data, out, 100_000, sets=("train.checkpoint_every=3",))
    with open(tmp_path / "stdout", "w") as so, open(tmp_path / "stderr", "w") as se:
        proc = subprocess.Popen([sys.executable, "-c", code, *args], env=ENV, stdout=so, stderr=se)
        try:
            wait_for(ckpt.is_file, proc, "first checkpoint")
            last_good = load_ckpt(ckpt)["step"]  # a complete checkpoint exists while training runs
            proc.send_signal(signum)
            rc = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stdout = (tmp_path / "stdout").read_text()
    assert rc == 130, f"exit {rc}: {stdout[-2000:]} {(tmp_path / 'stderr').read_text()[-2000:]}"
    state = load_ckpt(ckpt)
    stopped = state["step"]
    assert stopped > last_good, "a new checkpoint was written when the signal came"
    assert f"stopped by {signum.name} at step {stopped}" in stdout and "--resume" in stdout
    assert state["loader"]["position"] == stopped * BATCH
    assert not list(out.glob("*.tmp"))

    run = run_cli(argv(data, out, 100_000, "--resume", "--stop-at", str(stopped + 2)))
    assert run.returncode == 0, run.stderr[-2000:]
    resumed = load_ckpt(ckpt)
    assert resumed["step"] == stopped + 2 and resumed["loader"]["position"] == (stopped + 2) * BATCH
    assert log_steps(out) == list(range(1, stopped + 3)), "the log reads as one run"


# --------------------------------------------------------------------------- crash while writing a checkpoint

# Runs before train_model.main in the child: on the second checkpoint, SIGKILL the process
# either half-way through writing the temporary file or after writing it, before the rename.
CRASH_PRELUDE = """
import io, os, signal, torch
MODE = os.environ["CRASH_MODE"]
real_save, real_replace, saves = torch.save, os.replace, []

def save(obj, f, *args, **kwargs):
    saves.append(1)
    if MODE == "mid-write" and len(saves) == 2:
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        f.flush()
        os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)

def replace(src, dst, *args, **kwargs):
    if MODE == "before-rename" and str(dst).endswith("checkpoint.pt") and len(saves) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *args, **kwargs)

torch.save, os.replace = save, replace
"""


@pytest.mark.parametrize("mode", ["mid-write", "before-rename"])
def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(data, tmp_path, mode, monkeypatch):
    out = tmp_path / "run"
    ckpt, tmp = out / "checkpoint.pt", out / "checkpoint.pt.tmp"
    monkeypatch.setitem(ENV, "CRASH_MODE", mode)
    run = run_cli(argv(data, out, 100, sets=("train.checkpoint_every=2",)), prelude=CRASH_PRELUDE)
    assert run.returncode == -signal.SIGKILL, f"the run was not killed: {run.returncode} {run.stderr[-2000:]}"
    assert tmp.is_file(), "the process died while writing the new checkpoint"
    if mode == "mid-write":
        with pytest.raises(Exception):
            load_ckpt(tmp)  # the new checkpoint is torn ...
    else:
        assert load_ckpt(tmp)["step"] == 4  # ... or complete but not yet renamed
    assert load_ckpt(ckpt)["step"] == 2, "the previous checkpoint is intact and loadable"

    run = run_cli(argv(data, out, 100, "--resume", "--stop-at", "5"))
    assert run.returncode == 0, run.stderr[-2000:]
    assert load_ckpt(ckpt)["step"] == 5 and not tmp.exists()
    assert log_steps(out) == [1, 2, 3, 4, 5]


def test_full_disk_during_a_checkpoint_write_keeps_the_previous_one(data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    ckpt = out / "checkpoint.pt"
    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            f.write(b"x" * 1000)  # part of the file made it to disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    assert train_model.main(argv(data, out, 10, sets=("train.checkpoint_every=2",))) == 2
    err = capsys.readouterr().err
    assert f"{ckpt}" in err and "No space left on device" in err
    assert load_ckpt(ckpt)["step"] == 2
    assert not (out / "checkpoint.pt.tmp").exists(), "the partial temporary file is removed"


# --------------------------------------------------------------------------- output folder


def test_unwritable_output_folder_fails_before_training(data, tmp_path, capsys):
    corpus, tok, _ = data
    fresh_cache = tmp_path / "cache"
    fresh_cache.mkdir()
    blocker = tmp_path / "afile"
    blocker.write_text("a regular file where a folder is needed: no user, root included, can create one inside")
    for out in (blocker / "out", blocker):
        code = train_model.main(argv(data, out, 4, sets=(f"data.cache_dir={fresh_cache}",)))
        captured = capsys.readouterr()
        assert code == 2
        assert f"output folder {out} is not writable" in captured.err
        assert "sequences per step" not in captured.out, "training had started"
        assert not list(fresh_cache.iterdir()), "the corpus was tokenised before the folder was checked"


def test_full_disk_fails_before_training(data, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    out = tmp_path / "run"
    with pytest.raises(OSError, match=rf"output folder {out} has 0 MB free; a checkpoint needs about \d+ MB"):
        train_model.train(params_for(data, out, 4), show_progress=False)
    assert not (out / "log.csv").exists()


# --------------------------------------------------------------------------- non-finite losses and gradients


def poison_forward(monkeypatch, bad_calls, value=float("nan"), where="loss"):
    """Make training forward passes number `bad_calls` (1-based) give a non-finite loss,
    or a finite loss whose gradient is non-finite."""
    real_forward, calls = DitBertForMLM.forward, []

    def forward(self, input_ids, labels, attention_mask=None):
        loss, logits = real_forward(self, input_ids, labels, attention_mask)
        if self.training:
            calls.append(1)
            if len(calls) in bad_calls:
                if where == "loss":
                    loss = loss * value
                else:  # value * 0 in the forward pass, but d/dx of sqrt(x) at x = 0 is inf
                    loss = loss + torch.sqrt(loss * 0.0) * 0.0
        return loss, logits

    monkeypatch.setattr(DitBertForMLM, "forward", forward)
    return calls


def test_a_nan_loss_skips_the_step_and_training_goes_on(data, tmp_path, monkeypatch, capsys):
    poison_forward(monkeypatch, {3})
    out = tmp_path / "run"
    summary = train_model.train(params_for(data, out, 5), show_progress=False)
    assert "step 3: non-finite loss (nan); step skipped" in capsys.readouterr().out
    assert summary["step"] == 5
    state = load_ckpt(out / "checkpoint.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert log_steps(out) == [1, 2, 3, 4, 5]
    with open(out / "log.csv") as fh:
        assert all(float(r["loss"]) < 100 for r in csv.DictReader(fh))


def test_non_finite_losses_in_a_row_stop_training_naming_the_step(data, tmp_path, monkeypatch, capsys):
    poison_forward(monkeypatch, set(range(3, 100)), value=float("inf"))
    out = tmp_path / "run"
    code = train_model.main(argv(data, out, 20, sets=("train.checkpoint_every=1", "train.max_nonfinite_steps=4")))
    captured = capsys.readouterr()
    assert code == 2
    assert ["step 3: non-finite loss (inf); step skipped"] * 4 == [
        line for line in captured.out.splitlines() if "non-finite" in line
    ]
    assert "training stopped at step 3: 4 non-finite losses or gradients in a row" in captured.err
    assert f"last good checkpoint is {out / 'checkpoint.pt'}" in captured.err
    state = load_ckpt(out / "checkpoint.pt")
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_divergence_from_a_huge_learning_rate_is_caught(data, tmp_path):
    out = tmp_path / "run"
    params = params_for(data, out, 30, "train.lr=1e30", "train.warmup_steps=1", "train.max_nonfinite_steps=3")
    with pytest.raises(FloatingPointError, match=r"training stopped at step \d+: 3 non-finite losses or gradients in a row"):
        train_model.train(params, show_progress=False)


def test_a_non_finite_gradient_with_a_finite_loss_skips_the_step(data, tmp_path, monkeypatch, capsys):
    poison_forward(monkeypatch, {3}, where="grad")
    out = tmp_path / "run"
    summary = train_model.train(params_for(data, out, 5), show_progress=False)
    assert "step 3: non-finite gradient (norm nan, loss " in capsys.readouterr().out
    assert summary["step"] == 5
    state = load_ckpt(out / "checkpoint.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values()), "one bad gradient spoiled the weights"
