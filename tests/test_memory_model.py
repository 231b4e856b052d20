"""The memory model (memory_model.py): its live-byte counter, its extrapolation, the search for the
largest micro-batch that fits, and its predictions against the peaks real pretraining steps reach on
the CPU, measured in a subprocess (bench/memory_accuracy.py --measure)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import memory_model
from conftest import ROOT
from memory_model import (GiB, MemoryModel, Probe, TensorMemory, confirmed_fit, extrapolated_peak, largest_fitting,
                          micro_batch_candidates, usable_bytes)
from params import get_params

# A small config the subprocess measures in a few seconds: 2 x 64 layers, 1000-token vocabulary, 66 positions.
SMALL = {"model.n_layers": 2, "model.d_model": 64, "model.n_heads": 2, "model.d_ff": 128, "model.seq_len": 64,
         "model.vocab_size": 1000, "model.position": "learned", "train.device": "cpu", "train.dtype": "fp32"}


def small(**overrides):
    return get_params("tiny", {**SMALL, **{k.replace("__", "."): v for k, v in overrides.items()}})


def measured_peak(micro_batch: int, accumulation: int, dtype: str = "fp32") -> int:
    """Peak live tensor bytes of two real optimizer steps, measured by the benchmark in a fresh interpreter."""
    sets = [f"{k}={v}" for k, v in SMALL.items() if k != "train.dtype"]
    sets += [f"train.micro_batch={micro_batch}", f"train.batch_size={micro_batch * accumulation}", f"train.dtype={dtype}"]
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "memory_accuracy.py"), "--measure", "--preset", "tiny",
                           "--set", *sets], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(loss is not None for loss in result["losses"])  # the steps were taken, not skipped
    return result["peak_bytes"]


# --------------------------------------------------------------------------- counting live bytes


def test_the_counter_follows_allocations_and_frees_and_keeps_the_peak():
    meter = TensorMemory(record=True)
    with meter:
        a = torch.zeros(1000)  # 4000 bytes
        b = torch.ones(500, dtype=torch.float64)  # 4000 bytes
        view = a[10:]  # no new storage
        assert meter.current == 8000
        del a  # the view keeps a's storage
        assert meter.current == 8000
        del view, b
        c = torch.zeros(250)
    assert meter.current == 1000 and meter.peak == 8000
    assert meter.timeline[:2] == [4000, 8000]
    del c
    assert meter.current == 0


def test_tensors_made_before_the_counter_are_counted_once_tracked():
    w = torch.zeros(100)
    meter = TensorMemory()
    meter.track(w)
    with meter:
        w.add_(1.0)  # an in-place result: the same storage, not counted again
        y = w * 2
    assert meter.current == 800 and meter.peak == 800
    del y


# --------------------------------------------------------------------------- the extrapolation


def test_each_point_of_the_timeline_is_extrapolated_so_a_moving_peak_is_found():
    """At micro-batch 1 and 2 the highest point is a fixed-size buffer (100); a point growing with the
    micro-batch (40 + 30 per sequence) passes it by micro-batch 3: the peak at 4 is 160, not 100."""
    at_1, at_2 = (100, 70), (100, 100)
    assert extrapolated_peak(at_1, at_2, 1) == 100
    assert extrapolated_peak(at_1, at_2, 4) == 40 + 30 * 4
    # timelines of different lengths: the line through their peaks
    assert extrapolated_peak((10, 20), (10, 20, 45), 3) == 20 + 25 * 2


def test_the_peak_is_the_worst_of_the_first_micro_batch_a_later_one_and_the_update():
    probe = Probe(first=((100,), (110,)), accumulating=((50,), (70,)), device="cpu", dtype="float32")
    model = MemoryModel(n_params=10, largest_group=8, probe=probe)
    static = 4 * 10 + 8 * 10  # weights and AdamW's two moments
    assert model.peak(1, accumulation=1) == static + 100  # no later micro-batch: the first one's peak
    assert model.parts(1, accumulation=2)["peak_at"] == "first micro-batch"  # 100 against 40 + 50
    assert model.peak(10, accumulation=2) == static + 40 + 50 + 20 * 9  # later ones hold the gradients too
    unfused = MemoryModel(n_params=10, largest_group=8, probe=Probe(((0,), (0,)), ((0,), (0,)), "cpu", "float32"),
                          fused_adamw=False)
    assert unfused.parts(1, 1)["peak_at"] == "update" and unfused.peak(1, 1) == static + 40 + 4 * 8


# --------------------------------------------------------------------------- what fits


def test_candidates_are_the_micro_batches_that_keep_the_batch():
    assert micro_batch_candidates(3200)[-6:] == [200, 320, 400, 640, 800, 1600, 3200][-6:]
    assert micro_batch_candidates(12, world_size=2) == [1, 2, 3, 6]
    assert micro_batch_candidates(10, world_size=3) == []


@pytest.mark.parametrize("limit, expected", [(0, None), (1, 1), (33, 32), (64, 64), (10_000, 3200)])
def test_bisection_finds_the_largest_that_fits_asking_few(limit, expected):
    candidates = micro_batch_candidates(3200)
    asked = []

    def fits(m):
        asked.append(m)
        return m <= limit

    assert largest_fitting(candidates, fits) == expected
    assert len(asked) <= 5 and len(set(asked)) == len(asked)  # 24 candidates: at most ceil(log2(25)) asked


def test_a_trial_that_fails_steps_the_prediction_down():
    candidates = micro_batch_candidates(3200)
    tried = []

    def trial(m):
        tried.append(m)
        return m <= 50  # the device holds less than predicted

    assert confirmed_fit(candidates, 128, trial) == 50
    assert tried[0] == 128 and all(m < 128 for m in tried[1:])
    assert confirmed_fit(candidates, 40, lambda m: True) == 40  # a confirmed prediction is kept
    assert confirmed_fit(candidates, None, trial) is None


def test_usable_memory_takes_the_context_and_a_margin_off():
    assert usable_bytes(12 * GiB) == int((12 * GiB - memory_model.CUDA_CONTEXT_BYTES) * 0.9)
    assert usable_bytes(12 * GiB, "cpu") == int(12 * GiB * 0.9)
    assert usable_bytes(0.1 * GiB) == 0


def test_a_device_that_holds_less_fits_a_smaller_micro_batch():
    p = small(train__batch_size=16, train__micro_batch=16)
    model = memory_model.build(p)
    budget = (model.peak(4, 4) + model.peak(8, 2)) // 2
    assert memory_model.predicted_fit(model, 16, budget) == 4
    assert memory_model.predicted_fit(model, 16, 10 * GiB) == 16
    rows = memory_model.memory_table(model, 16)
    assert [r["micro_batch"] for r in rows] == [16, 16, 16, 16]
    assert "| 12 GB (RTX 3060) | 16 | 1 |" in memory_model.table_markdown(rows)


# --------------------------------------------------------------------------- against measured peaks


@pytest.fixture(scope="module")
def model_fp32():
    return memory_model.build(small(), "cpu", "fp32")


@pytest.mark.parametrize("micro_batch", [1, 2, 4])
def test_prediction_within_15_percent_of_the_measured_peak(model_fp32, micro_batch):
    """Two optimizer steps of two micro-batches each, measured from before the model is built: the peak
    of the weights, AdamW's state, the gradients and the activations, at micro-batch 1, 2 and 4 (4 is
    extrapolated from the probe at 1 and 2)."""
    measured = measured_peak(micro_batch, accumulation=2)
    predicted = model_fp32.peak(micro_batch, accumulation=2)
    assert abs(predicted / measured - 1) < 0.15, (micro_batch, predicted, measured)


def test_prediction_without_accumulation_and_in_bf16(model_fp32):
    """One micro-batch per step (its gradients are allocated while the activations are freed), and bf16
    autocast (half-precision activations and weight copies, fp32 master weights)."""
    assert abs(model_fp32.peak(4, accumulation=1) / measured_peak(4, accumulation=1) - 1) < 0.15
    bf16 = memory_model.build(small(), "cpu", "bf16")
    assert abs(bf16.peak(4, 2) / measured_peak(4, accumulation=2, dtype="bf16") - 1) < 0.15
    assert bf16.probe.dtype == "bfloat16"


def test_the_activations_grow_with_the_micro_batch(model_fp32):
    peaks = [model_fp32.peak(m, 2) for m in (1, 8, 64)]
    assert peaks[0] < peaks[1] < peaks[2]
    static = model_fp32.weights + model_fp32.optimizer_state + model_fp32.gradients
    assert peaks[0] > static  # the activations and the gradients' transients come on top


def test_the_trial_step_measures_what_the_model_predicts():
    p = small()
    measured = memory_model.trial_step(p, "cpu", micro_batch=4, accumulation=2)
    assert measured is not None
    assert abs(memory_model.build(p).peak(4, 2) / measured - 1) < 0.15
    before = torch.get_rng_state()
    memory_model.trial_step(p, "cpu", micro_batch=1)
    assert torch.equal(before, torch.get_rng_state())  # a run that tries first initialises its model as without


def test_the_table_command(capsys):
    assert memory_model.main(["--preset", "tiny", "--set", *[f"{k}={v}" for k, v in SMALL.items()], "--table"]) == 0
    out = capsys.readouterr().out
    assert "| GPU memory | `train.micro_batch` |" in out and "| 80 GB | 32 | 1 |" in out
    assert "python memory_model.py --preset tiny --table" in out


@pytest.mark.slow
def test_the_readmes_gpu_table_is_the_models_prediction():
    """The README's table is what `python memory_model.py --preset base --table` prints (the probe's sizes do
    not depend on the random token ids, so the prediction is the same on every machine)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    model = memory_model.build(get_params("base"), "cpu", "bf16")
    table = memory_model.table_markdown(memory_model.memory_table(model, 3200))
    assert table in readme, f"README.md: regenerate the table with python memory_model.py --preset base --table\n{table}"
    assert "Predicted, not yet measured on a GPU" in readme and "python memory_model.py --preset base --table" in readme
