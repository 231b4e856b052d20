"""bench/peer_pretrain.py's machinery at toy size: a few seconds of pretraining for each recipe, one
task, one seed; the table, the plot and the RESULT lines, and a second run that redoes nothing."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import PRETRAIN_TINY

ROOT = Path(__file__).resolve().parents[1]
MINUTES = 0.05  # 3 seconds of training per run


def load_bench():
    spec = importlib.util.spec_from_file_location("peer_pretrain", ROOT / "bench" / "peer_pretrain.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench_run(pretrain_files, tmp_path_factory):
    corpus, tok, cache = pretrain_files
    root = tmp_path_factory.mktemp("peer")
    bench = load_bench()
    argv = ["--minutes", str(MINUTES), "--tasks", "demo", "--seeds", "1", "--train-examples", "64",
            "--work", str(root / "work"), "--out", str(root / "out"), "--set", *PRETRAIN_TINY,
            f"data.corpus={corpus}", f"train.tokenizer={tok}", f"data.cache_dir={cache}", "finetune.epochs=1"]
    assert bench.main(argv) == 0
    return bench, argv, root


def test_every_recipe_is_pretrained_for_the_budget_with_a_snapshot_at_half(bench_run):
    _, _, root = bench_run
    table = pd.read_csv(root / "out" / "peer_pretrain.csv")
    assert sorted(zip(table["model"], table["snapshot"])) == sorted(
        [("random-init", "none"), ("hf-random-init", "none")] + [(m, kind) for m in ("ditbert", "hf-mlm15", "hf-mlm40") for kind in ("B/2", "B")])
    trained = table[table["snapshot"] != "none"]
    assert (trained["tokens_seen"] > 0).all()
    full, half = trained[trained["snapshot"] == "B"], trained[trained["snapshot"] == "B/2"]
    assert (full["minutes"] <= MINUTES * 1.5).all(), "each run stops at its budget"
    assert (half.set_index("model")["tokens_seen"] < full.set_index("model")["tokens_seen"]).all()
    ditbert = trained[trained["model"] == "ditbert"].sort_values("minutes")
    assert ditbert["minutes"].tolist() == pytest.approx([MINUTES / 2, MINUTES], abs=0.01)


def test_every_snapshot_and_the_twin_are_fine_tuned_and_reported(bench_run, capsys):
    bench, _, root = bench_run
    table = pd.read_csv(root / "out" / "peer_pretrain.csv")
    assert all(math.isfinite(v) and 0 <= v <= 100 for v in table["demo_mean"]), table
    assert (root / "out" / "peer_pretrain.png").stat().st_size > 1000
    runs = sorted(p.name for p in (root / "work" / "GLUE-Outputs").iterdir())
    assert len(runs) == 8 and "peer-random-init-seed1" in runs and "peer-hf-mlm40-0.05min-seed1" in runs
    twin = json.loads((root / "work" / "GLUE-Outputs" / "peer-hf-random-init-seed1" / "run_info.json").read_text())
    assert twin["kind"] == "hf" and twin["tasks"]["demo"]["status"] == "complete"


def test_a_second_run_redoes_nothing_and_prints_the_result_lines(bench_run, capsys):
    bench, argv, root = bench_run
    snapshot = root / "work" / "snapshots" / "hf-mlm15-0.05min" / "model.safetensors"
    results = root / "work" / "GLUE-Outputs" / "peer-ditbert-0.025min-seed1" / "results_demo.csv"
    before = (snapshot.stat().st_mtime_ns, results.stat().st_mtime_ns)
    capsys.readouterr()
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert (snapshot.stat().st_mtime_ns, results.stat().st_mtime_ns) == before
    for name in ("peer_glue_small_ditbert", "peer_glue_small_hf", "peer_tokens_ratio", "peer_gain_ditbert", "peer_gain_hf"):
        assert f"RESULT {name} " in out


def test_models_limits_the_report_and_an_unknown_model_is_named(bench_run, capsys):
    bench, argv, root = bench_run
    assert bench.main([*argv, "--out", str(root / "twins"), "--stage", "report", "--models", "random-init,hf-random-init"]) == 0
    assert sorted(pd.read_csv(root / "twins" / "peer_pretrain.csv")["model"]) == ["hf-random-init", "random-init"]
    with pytest.raises(SystemExit):
        bench.main([*argv, "--models", "ditbert,hf-mlm99"])
    assert "unknown --models hf-mlm99" in capsys.readouterr().err
