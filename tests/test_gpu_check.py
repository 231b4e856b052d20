"""`make gpu-check` (bench/gpu_check.py) without a GPU: its CPU-side parts (the FLOP count, the peak
table, the search for what fits given a fake measure, the throughput read from a log, the report),
the whole check rehearsed at a tiny size on the CPU, the message and exit status without CUDA, and
`--help` of every new script."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from test_cli import DRIVER, clean_env, listing

sys.path.insert(0, str(ROOT / "bench"))
import gpu_check  # noqa: E402
from memory_model import micro_batch_candidates  # noqa: E402
from params import get_params  # noqa: E402

NEW_SCRIPTS = {  # script -> what its --help must name
    "memory_model.py": ["--table", "--micro-batches", "meta"],
    "bench/memory_accuracy.py": ["--measure", "within 15 %"],
    "bench/estimate.py": ["--estimate-steps", "20 %"],
    "bench/gpu_check.py": ["--rehearse", "set_per_process_memory_fraction", "FlopCounterMode", "make gpu-check"],
}


@pytest.mark.parametrize("script", sorted(NEW_SCRIPTS))
def test_help_and_unknown_arguments_do_no_work(script, tmp_path):
    run = subprocess.run([sys.executable, "-c", DRIVER, str(ROOT / script)], cwd=tmp_path, env=clean_env(),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.splitlines()[-1])
    assert result["--help"]["code"] == 0, result["--help"]["stderr"][-3000:]
    for words in NEW_SCRIPTS[script]:
        assert words in result["--help"]["stdout"], f"{script} --help does not name {words}"
    assert result["--bogus"]["code"] == 2 and "--bogus" in result["--bogus"]["stderr"]
    assert listing(tmp_path) == []


# --------------------------------------------------------------------------- FLOPs and MFU


def flops_written_out(p, micro_batch: int) -> int:
    """Multiply-adds x 2 of DitBERT's matrix products in one step, forward x 3 (the backward computes two
    products per forward one): L-1 full blocks, the last block's keys and values everywhere and the rest at
    the M masked positions, the MLM head at those only."""
    m = p.model
    d, f, V, L, T = m.d_model, m.d_ff, m.vocab_size, m.n_layers, m.max_positions
    N, M = micro_batch * T, micro_batch * round(p.train.mask_prob * m.seq_len)
    full = 2 * N * (4 * d * d + 2 * d * f) + 4 * micro_batch * T * T * d
    last = 2 * N * 2 * d * d + 2 * M * (2 * d * d + 2 * d * f) + 4 * M * T * d
    head = 2 * M * (d * d + d * V)
    return 3 * ((L - 1) * full + last + head)


@pytest.mark.parametrize("position", ["learned", "alibi"])
def test_the_flop_counter_counts_every_matrix_product_of_a_step(position):
    p = get_params("tiny", {"model.n_layers": 3, "model.d_model": 64, "model.n_heads": 4, "model.d_ff": 96,
                            "model.seq_len": 30, "model.vocab_size": 700, "model.position": position})
    per_token = gpu_check.flops_per_token(p, micro_batch=2)
    assert per_token * 2 * p.model.max_positions == flops_written_out(p, 2)


def test_the_flop_count_grows_with_the_layers_and_ignores_the_attention_kernel():
    small = {"model.d_model": 64, "model.n_heads": 4, "model.d_ff": 96, "model.seq_len": 30, "model.vocab_size": 700}
    two, four = (gpu_check.flops_per_token(get_params("tiny", {**small, "model.n_layers": n})) for n in (2, 4))
    assert four > 1.5 * two
    sdpa = gpu_check.flops_per_token(get_params("tiny", {**small, "model.n_layers": 2, "model.attention": "sdpa"}))
    assert sdpa == two  # counted with the attention written out, whichever kernel the run uses


def test_base_flops_per_token_are_near_six_times_the_encoder():
    """At base, about 6 FLOPs per encoder weight and token (the head runs at 15 % of the positions)."""
    p = get_params("base")
    encoder = p.model.n_layers * (4 * p.model.d_model**2 + 2 * p.model.d_model * p.model.d_ff)
    per_token = gpu_check.flops_per_token(p, micro_batch=1)
    assert 5.5 * encoder < per_token < 7.5 * encoder


def test_the_peak_table_finds_the_most_specific_name():
    assert gpu_check.peak_bf16_tflops("NVIDIA GeForce RTX 3060") == 25.5
    assert gpu_check.peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_check.peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert gpu_check.peak_bf16_tflops("NVIDIA A100-SXM4-40GB") == 312.0
    assert gpu_check.peak_bf16_tflops("NVIDIA A10") == 125.0
    assert gpu_check.peak_bf16_tflops("NVIDIA L40S") == 362.0 and gpu_check.peak_bf16_tflops("NVIDIA L4") == 121.0
    assert gpu_check.peak_bf16_tflops("Tesla T4") is None


def test_mfu_is_the_share_of_the_peak_and_none_without_one():
    assert gpu_check.mfu(1e5, 6e8, 100.0) == pytest.approx(0.6)
    assert gpu_check.mfu(1e5, 6e8, None) is None


def test_throughput_leaves_the_first_steps_out(tmp_path):
    log = tmp_path / "log.csv"
    rows = [["step", "loss", "perplexity", "lr", "tokens_seen", "elapsed_s", "train_s", "val_perplexity"]]
    for step in range(1, 11):  # the first two steps slow (10 s each), then 1 s per 1000 tokens
        train_s = 10 * min(step, 2) + max(0, step - 2)
        rows.append([step, 10 - step * 0.5, 0, 0, step * 1000, train_s, train_s, ""])
    with open(log, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    rate, first, last = gpu_check.log_throughput(log, skip_fraction=0.2)
    assert rate == pytest.approx(1000.0) and (first, last) == (9.5, 5.0)


# --------------------------------------------------------------------------- what fits


def test_the_fit_search_finds_each_budgets_largest_micro_batch_asking_few():
    """A fake measure: 1 GB of weights and state, 0.05 GB a sequence."""
    asked = []

    def fits(micro_batch, budget):
        asked.append((micro_batch, budget))
        return 1.0 + 0.05 * micro_batch <= budget

    found = gpu_check.largest_fits([12.0, 24.0, 40.0, 80.0], micro_batch_candidates(3200), fits)
    assert found == {12.0: 200, 24.0: 400, 40.0: 640, 80.0: 800}  # 1280 does not divide 3200
    assert len(asked) <= 4 * 5


def test_a_budget_nothing_fits_in_is_reported_as_none():
    assert gpu_check.largest_fits([0.5], micro_batch_candidates(3200), lambda m, b: 1.0 <= b) == {0.5: None}


def test_measured_fits_compares_a_real_cpu_peak_with_the_budget():
    p = get_params("tiny", {"model.n_layers": 1, "model.d_model": 32, "model.n_heads": 2, "model.d_ff": 64,
                            "model.seq_len": 16, "model.vocab_size": 512})
    fits = gpu_check.measured_fits(p, torch.device("cpu"))
    assert fits(1, 10 * 2**20) and not fits(1, 1000)


# --------------------------------------------------------------------------- the report, the rehearsal, no CUDA


def test_the_report_writes_csv_json_and_result_lines(tmp_path, capsys):
    rows = [gpu_check.Row("tokens_per_s_bf16", 1234.5, "tokens/s"), gpu_check.Row("mfu_bf16", float("nan"), "", False)]
    path = gpu_check.write_report(rows, tmp_path, "gpu_check_x", {"gpu": "x"})
    with open(path, newline="") as fh:
        read = list(csv.DictReader(fh))
    assert [r["check"] for r in read] == ["tokens_per_s_bf16", "mfu_bf16"] and read[1]["ok"] == "False"
    assert json.loads((tmp_path / "gpu_check_x.json").read_text())["meta"] == {"gpu": "x"}
    assert gpu_check.result_lines(rows) == ["RESULT gpu_check_tokens_per_s_bf16 1234"]  # no line for a NaN


@pytest.mark.slow
def test_the_rehearsal_runs_every_stage_on_the_cpu(tmp_path):
    work, results = tmp_path / "work", tmp_path / "results"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--rehearse", "--work", str(work),
                          "--results-dir", str(results)], capture_output=True, text=True, timeout=900, cwd=ROOT,
                         env=clean_env())
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with open(results / "gpu_check_cpu.csv", newline="") as fh:
        rows = {r["check"]: r for r in csv.DictReader(fh)}
    expected = {"tokenizer_s", "flops_per_token", "tokens_per_s_bf16", "loss_bf16", "peak_memory_bf16",
                "tokens_per_s_fp16", "loss_fp16", "peak_memory_fp16", "resume_max_difference", "memory_1", "memory_2",
                "memory_4", "fit_1mib", "fit_1.5mib", "fit_2mib", "fit_4mib", "export_max_logit_difference",
                "glue_demo_accuracy", "minutes"}
    assert set(rows) == expected
    assert all(r["ok"] == "True" for r in rows.values())
    assert float(rows["resume_max_difference"]["value"]) == 0.0
    fits = [float(rows[f"fit_{s}mib"]["value"]) for s in ("1", "1.5", "2", "4")]
    assert fits == sorted(fits) and fits[0] < fits[-1]  # more memory, a larger micro-batch
    assert "RESULT gpu_check_glue_demo_accuracy" in run.stdout and "every check passed" in run.stdout
    assert (work / "hf" / "config.json").is_file()


def test_without_cuda_it_says_so_and_exits_non_zero(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without a GPU, whatever this one has
    code = gpu_check.main(["--work", str(tmp_path / "work"), "--results-dir", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code == 1
    assert "gpu-check needs a CUDA GPU, and torch sees none" in err and "--rehearse" in err
    assert listing(tmp_path) == []


def test_the_makefile_target_runs_the_check():
    makefile = (ROOT / "Makefile").read_text()
    assert "gpu-check:" in makefile and "bench/gpu_check.py" in makefile
    assert "gpu-check" in makefile.split(".PHONY:")[1].splitlines()[0]
