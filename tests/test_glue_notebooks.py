"""The four GLUE notebooks, converted with jupytext and executed with nbclient in tiny mode, and
one of them run as a plain Python script."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import glue_models
import glue_utils
from conftest import execute_notebook, printed
from params import FinetuneConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = "finetune.epochs=1;finetune.batch_size=8;finetune.max_train_examples=16;finetune.max_eval_examples=8"
pytestmark = pytest.mark.slow


@pytest.fixture
def nb_env(monkeypatch, jupyter_path, glue_layout, tiny_model_dir, tiny_tokenizer, tmp_path):
    """Environment for a tiny run: local GLUE files, the tiny model, outputs under tmp_path."""
    env = {"JUPYTER_PATH": str(jupyter_path), "DITBERT_PRESET": "tiny", "DITBERT_SET": TINY,
           "GLUE_DIR": str(glue_layout), "GLUE_OUTPUT_DIR": str(tmp_path / "out"), "GLUE_SEEDS": "1",
           "DITBERT_MODEL": str(tiny_model_dir), "DITBERT_TOKENIZER": str(tiny_tokenizer),
           "MODEL_LABEL": "ditbert-nb", "HF_MODELS": "minilm-l6", "HF_HUB_OFFLINE": "1", "RANDOM_INIT": "0"}
    for key in ("MNLI_MODEL_DIR", "GLUE_TASKS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return tmp_path / "out"


def tiny_ft(out: Path) -> FinetuneConfig:
    return FinetuneConfig(epochs=1, batch_size=8, max_train_examples=16, max_eval_examples=8, output_dir=str(out))


def test_glue_finetune_notebook(nb_env, tmp_path, monkeypatch):
    monkeypatch.setenv("GLUE_TASKS", "mnli,cola")
    monkeypatch.setenv("GLUE_SEEDS", "1,2")
    monkeypatch.setenv("DITBERT_SET", TINY + ";train.dtype=bf16")  # fine-tuning follows train.device and train.dtype
    nb = execute_notebook("GLUE-Finetune.py", tmp_path)
    for seed in (1, 2):
        run = nb_env / f"ditbert-nb-seed{seed}"
        assert len(pd.read_csv(run / "results_mnli.csv")) == 1
        assert list(pd.read_csv(run / "results_cola.csv").columns) == ["epoch", "train_mcc", "validation_mcc"]
        info = json.loads((run / "run_info.json").read_text())
        assert info["init"] == "pretrained" and info["tasks"]["cola"]["finetune"]["max_train_examples"] == 16
        assert (info["device"], info["dtype"]) == ("cpu", "bfloat16")
    assert "validation_matched_accuracy" in printed(nb)  # the results cell showed the table


def test_glue_finetune_from_mnli_notebook(nb_env, tmp_path, tiny_model_dir, tiny_tokenizer, glue_layout, monkeypatch):
    base = glue_models.ditbert_source(str(tiny_model_dir), str(tiny_tokenizer), "ditbert-nb")
    glue_utils.run_glue(base, "mnli", tiny_ft(nb_env), glue_dir=glue_layout)
    monkeypatch.setenv("GLUE_TASKS", "rte,stsb")
    execute_notebook("GLUE-Finetune-from-mnli.py", tmp_path)
    run = nb_env / "ditbert-nb-from-mnli-seed1"
    info = json.loads((run / "run_info.json").read_text())
    assert info["init"] == "mnli" and info["model"] == "ditbert-nb-from-mnli"
    assert info["model_source"] == str(nb_env / "ditbert-nb-seed1" / "best_mnli")
    assert (run / "results_stsb.csv").is_file() and (run / "best_rte" / "model.safetensors").is_file()


def test_glue_finetune_huggingface_notebook(nb_env, tmp_path, monkeypatch):
    monkeypatch.setenv("GLUE_TASKS", "rte")
    monkeypatch.setenv("DITBERT_SET", TINY + ";finetune.save_best=false")
    execute_notebook("GLUE-Finetune-huggingface.py", tmp_path)
    run = nb_env / "minilm-l6-seed1"
    assert not (run / "best_rte").exists()  # the setting reached the loop
    assert list(pd.read_csv(run / "results_rte.csv").columns) == ["epoch", "train_accuracy", "validation_accuracy"]
    info = json.loads((run / "run_info.json").read_text())
    assert info["kind"] == "hf" and info["tasks"]["rte"]["recipe"]["label"] == "bert (finetune.epochs set)"
    assert info["tasks"]["rte"]["finetune"]["lr"] == 5e-5  # MiniLM at BERT's recipe; epochs as DITBERT_SET says


def test_glue_finetune_huggingface_from_mnli_notebook(nb_env, tmp_path, glue_layout, monkeypatch):
    glue_utils.run_glue(glue_models.hf_source("minilm-l6"), "mnli", tiny_ft(nb_env), glue_dir=glue_layout)
    monkeypatch.setenv("GLUE_TASKS", "wnli")
    monkeypatch.setenv("DITBERT_SET", TINY + ";finetune.save_best=false")
    execute_notebook("GLUE-Finetune-huggingface-from-mnli.py", tmp_path)
    run = nb_env / "minilm-l6-from-mnli-seed1"
    info = json.loads((run / "run_info.json").read_text())
    assert info["init"] == "mnli" and (run / "results_wnli.csv").is_file()


def test_notebook_runs_as_a_plain_script_and_drives_the_random_init_control(nb_env):
    env = {**os.environ, "GLUE_TASKS": "rte", "RANDOM_INIT": "1"}
    proc = subprocess.run([sys.executable, "GLUE-Finetune.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((nb_env / "ditbert-nb-random-init-seed1" / "run_info.json").read_text())
    assert info["init"] == "random" and info["pretrain_tokens_seen"] == 0
    assert "validation_accuracy" in proc.stdout
