"""Data-parallel pretraining under torchrun: two CPU processes with gloo compute the same
optimizer steps as one process with the same global batch, and a run checkpointed on two
ranks resumes on one.

Global batch 8 sequences per step, split three ways:
    one process:  micro-batch 4 x 2 accumulation x 1 rank
    two ranks:    micro-batch 2 x 2 accumulation x 2 ranks
    resumed:      micro-batch 2 x 4 accumulation x 1 rank (after 2 steps on two ranks)

and a SIGTERM sent to torchrun stops both ranks at the same step with a checkpoint.
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


STEPS, GLOBAL_BATCH = 4, 8
TINY = [
    "model.n_layers=2", "model.d_model=32", "model.n_heads=2", "model.d_ff=64", "model.seq_len=16",
    "model.vocab_size=512", f"train.batch_size={GLOBAL_BATCH}", "train.warmup_steps=2", "train.lr=3e-3",
    "train.checkpoint_every=1000", "train.eval_every=1000", "train.log_every=1", "train.threads=1",
    "train.device=cpu", "data.val_sequences=8",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data(pretrain_files):
    return pretrain_files


def launch(data, out: Path, micro: int, ranks: int, *extra: str) -> subprocess.CompletedProcess:
    corpus, tok, cache = data
    args = [str(ROOT / "train_model.py"), "--corpus", str(corpus), "--tokenizer", str(tok), "--out", str(out),
            "--steps", str(STEPS), *extra, "--set", *TINY, f"train.micro_batch={micro}", f"data.cache_dir={cache}"]
    if ranks > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}", "--nnodes=1",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", *args]
    else:
        cmd = [sys.executable, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    run = subprocess.run(cmd, cwd=out.parent, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"{' '.join(cmd)} failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run


def checkpoint(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp-runs")
    out = {}
    out["one"] = launch(data, root / "one", 4, 1)
    out["two"] = launch(data, root / "two", 2, 2)
    out["two-then-stop"] = launch(data, root / "resumed", 2, 2, "--stop-at", "2")
    out["resumed"] = launch(data, root / "resumed", 2, 1, "--resume")
    return root, out


def assert_close_weights(a: dict, b: dict, what: str):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=2e-6, msg=lambda m: f"{what}: {k}: {m}")


def test_two_ranks_compute_the_same_steps_as_one_process(runs):
    root, out = runs
    assert "2 rank(s), micro-batch 2 x 2 accumulation x 2 = 8 sequences per step" in out["two"].stdout
    assert "1 rank(s), micro-batch 4 x 2 accumulation x 1 = 8 sequences per step" in out["one"].stdout
    one, two = checkpoint(root / "one"), checkpoint(root / "two")
    assert one["step"] == two["step"] == STEPS
    assert one["loader"]["position"] == two["loader"]["position"] == STEPS * GLOBAL_BATCH
    assert_close_weights(one["model"], two["model"], "2 ranks vs 1 process")
    for group in ("exp_avg", "exp_avg_sq"):  # the optimizer saw the same gradients
        for key, state in one["optimizer"]["state"].items():
            # all-reduce sums in another order than accumulation; an entry far below the tensor's
            # largest (a rare token's row) may differ in its third digit, a wrong gradient in its first
            ours = state[group]
            torch.testing.assert_close(ours, two["optimizer"]["state"][key][group], rtol=1e-3,
                                       atol=1e-5 * float(ours.abs().max()) + 1e-12)
    with open(root / "one" / "log.csv") as fh:
        losses_one = [float(r["loss"]) for r in csv.DictReader(fh)]
    with open(root / "two" / "log.csv") as fh:
        losses_two = [float(r["loss"]) for r in csv.DictReader(fh)]
    assert len(losses_one) == STEPS and losses_one == pytest.approx(losses_two, rel=1e-5)


def test_weights_moved_far_beyond_the_tolerance(runs, data):
    """Guards the comparison above against passing because nothing was trained."""
    root, _ = runs
    one = checkpoint(root / "one")
    torch.manual_seed(1234)  # train.seed: the initial weights of rank 0 and of a single process
    from model_defs import DitBertForMLM
    from params import get_params, parse_overrides

    params = get_params("tiny", parse_overrides([*TINY, "train.micro_batch=4"]))
    init = DitBertForMLM(params.model).state_dict()
    change = max((one["model"][k] - init[k]).abs().max().item() for k in init)
    assert change > 100 * 2e-6, f"the weights changed by only {change} in {STEPS} steps"


def test_checkpoint_from_two_ranks_resumes_on_one(runs):
    root, out = runs
    assert "stopped" not in out["two-then-stop"].stdout  # --stop-at ends normally, with a checkpoint
    assert "1 rank(s), micro-batch 2 x 4 accumulation x 1 = 8 sequences per step" in out["resumed"].stdout
    one, resumed = checkpoint(root / "one"), checkpoint(root / "resumed")
    assert resumed["step"] == STEPS
    assert resumed["loader"]["position"] == STEPS * GLOBAL_BATCH, "the loader continued where two ranks stopped"
    assert_close_weights(one["model"], resumed["model"], "2 ranks then 1 rank vs 1 process")
    with open(root / "resumed" / "log.csv") as fh:
        steps = [int(r["step"]) for r in csv.DictReader(fh)]
    assert steps == list(range(1, STEPS + 1)), "the log reads as one run"
    assert not list((root / "resumed").glob("*.tmp")), "no temporary checkpoint left behind"


def test_sigterm_to_torchrun_stops_every_rank_at_one_step_with_a_checkpoint(data, tmp_path):
    """A scheduler's SIGTERM reaches torchrun, which passes it to the ranks: they agree on the
    step to stop at, rank 0 writes the checkpoint, and nothing hangs."""
    corpus, tok, cache = data
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", str(ROOT / "train_model.py"), "--corpus", str(corpus), "--tokenizer", str(tok),
           "--out", str(out), "--steps", "100000", "--set", *TINY, "train.micro_batch=2", "train.checkpoint_every=5",
           f"data.cache_dir={cache}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with open(tmp_path / "stdout", "w") as so, open(tmp_path / "stderr", "w") as se:
        proc = subprocess.Popen(cmd, env=env, stdout=so, stderr=se)
        try:
            deadline = time.monotonic() + 180
            while not (out / "checkpoint.pt").is_file():
                assert proc.poll() is None, f"torchrun ended early: {(tmp_path / 'stderr').read_text()[-2000:]}"
                assert time.monotonic() < deadline, "no checkpoint within 180 s"
                time.sleep(0.1)
            first = checkpoint(out)["step"]
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stdout = (tmp_path / "stdout").read_text()
    state = checkpoint(out)
    assert f"stopped by SIGTERM at step {state['step']}" in stdout, stdout[-2000:]
    assert state["step"] > first and state["loader"]["position"] == state["step"] * GLOBAL_BATCH
    assert not list(out.glob("*.tmp"))
