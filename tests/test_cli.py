"""Every entry point, notebooks run as scripts included, answers `--help` and rejects arguments it
does not know, before any work; Train-Tokenizer.py keeps an existing tokenizer unless asked.

Each entry point runs in a fresh interpreter whose working directory is an empty folder: the
defaults of every output path are relative, so anything written there shows up."""

from __future__ import annotations

import json
import shutil
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import cli
from conftest import ROOT
from params import ENVIRONMENT

# `--help` then `--bogus`, each as `python <path> <arg>` would run it, in one interpreter: the
# second run costs no second import of torch.
DRIVER = r"""
import contextlib, io, json, os, runpy, sys
path = sys.argv[1]
sys.path.insert(0, os.path.dirname(path))
results = {}
for arg in ("--help", "--bogus"):
    sys.argv = [path, arg]
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(path, run_name="__main__")
        except SystemExit as stop:
            code = stop.code
    results[arg] = {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
print(json.dumps(results))
"""

# entry point -> what its help must name: variables and settings it reads
ENTRY_POINTS = {
    "Train-Tokenizer.py": ["DITBERT_PRESET", "DITBERT_OVERWRITE", "train.tokenizer", "data.corpus"],
    "GLUE-Finetune.py": ["GLUE_TASKS", "DITBERT_MODEL", "GLUE_OUTPUT_DIR", "DITBERT_OVERWRITE", "finetune."],
    "GLUE-Finetune-from-mnli.py": ["GLUE_TASKS", "MNLI_MODEL_DIR", "MODEL_LABEL"],
    "GLUE-Finetune-huggingface.py": ["HF_MODELS", "GLUE_SEEDS"],
    "GLUE-Finetune-huggingface-from-mnli.py": ["HF_MODELS", "MNLI_MODEL_DIR"],
    "Aggregate-GLUE-results.py": ["GLUE_OUTPUT_DIR", "GLUE_AGGREGATED_CSV", "GLUE_PLOTS_DIR"],
    "Pretraining-Value.py": ["VALUE_STEPS", "VALUE_NAME", "DITBERT_SET"],
    "train_model.py": ["DITBERT_PRESET", "--set", "--resume"],
    "pretraining_value.py": ["GLUE_DIR", "--set"],
    "hf_export.py": ["--model", "--tokenizer", "--out"],
    "glue_submission.py": ["--model", "--outputs"],
}


def clean_env(**extra: str) -> dict:
    """This environment without any of the project's variables, with the repository importable."""
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
    return env | {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"} | extra


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_help_and_unknown_arguments_do_no_work(entry, tmp_path):
    # A corpus that does not exist: an entry point that starts work instead of answering fails fast.
    env = clean_env(DITBERT_PRESET="tiny", DITBERT_SET="data.corpus=missing-corpus.txt")
    run = subprocess.run([sys.executable, "-c", DRIVER, str(ROOT / entry)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.splitlines()[-1])
    helped, bogus = result["--help"], result["--bogus"]
    assert helped["code"] == 0, helped["stderr"][-3000:]
    for name in ENTRY_POINTS[entry]:
        assert name in helped["stdout"], f"{entry} --help does not name {name}"
    assert bogus["code"] == 2, bogus["stderr"][-3000:]
    assert "--bogus" in bogus["stderr"]
    assert listing(tmp_path) == [], f"{entry} wrote files when asked for help or given a wrong argument"


def test_a_kernel_arguments_are_not_the_notebook_arguments(monkeypatch):
    """Under Jupyter the kernel's own command line (`-f <connection file>`) is ignored."""
    shell = types.ModuleType("IPython")
    shell.get_ipython = lambda: object()
    monkeypatch.setitem(sys.modules, "IPython", shell)
    assert cli.in_notebook()
    cli.notebook_arguments("GLUE-Finetune.py", argv=["-f", "/tmp/kernel-1.json"])


def test_every_notebook_is_covered():
    notebooks = {p.name for p in ROOT.glob("*.py") if p.name[0].isupper()}
    assert notebooks <= set(ENTRY_POINTS)


def train_tokenizer_notebook(tmp_path: Path, corpus: Path, tokenizer: Path, **env: str):
    settings = f"data.corpus={corpus};tokenizer.vocab_size=300;train.tokenizer={tokenizer}"
    return subprocess.run([sys.executable, str(ROOT / "Train-Tokenizer.py")], cwd=tmp_path,
                          env=clean_env(DITBERT_PRESET="tiny", DITBERT_SET=settings, **env),
                          capture_output=True, text=True, timeout=300)


def test_train_tokenizer_keeps_an_existing_tokenizer_unless_asked(tiny_corpus, tiny_tokenizer, tmp_path):
    tokenizer = tmp_path / "runs" / "tokenizer.json"
    tokenizer.parent.mkdir()
    tokenizer.write_bytes(tiny_tokenizer.read_bytes())
    before = tokenizer.read_bytes()

    refused = train_tokenizer_notebook(tmp_path, tiny_corpus, tokenizer)
    assert refused.returncode != 0
    assert "DITBERT_OVERWRITE" in refused.stderr and str(tokenizer) in refused.stderr
    assert "learned" not in refused.stdout  # refused before training
    assert tokenizer.read_bytes() == before
    assert listing(tmp_path) == ["runs", "runs/tokenizer.json"]

    replaced = train_tokenizer_notebook(tmp_path, tiny_corpus, tokenizer, DITBERT_OVERWRITE="1")
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert tokenizer.read_bytes() != before
    assert len(json.loads(tokenizer.read_text())["model"]["vocab"]) == 300


def test_the_settings_page_holds_the_environment_table():
    page = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert cli.environment_markdown() in page, "docs/settings.md: regenerate its table from cli.environment_markdown()"
    assert "DITBERT_OVERWRITE" in page and "`finetune.seeds`" in page


def test_the_readmes_notebook_commands_run_a_notebook(tiny_corpus, tmp_path):
    """The README's two commands, with what `make setup` installs: jupytext writes the notebook,
    jupyter nbconvert executes it in place (here Train-Tokenizer.py on a tiny corpus)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = [line.split("#")[0].split() for line in readme.splitlines() if line.startswith(".venv/bin/jup")]
    assert [c[0] for c in commands] == [".venv/bin/jupytext", ".venv/bin/jupyter"], commands
    shutil.copy(ROOT / "Train-Tokenizer.py", tmp_path / "Train-Tokenizer.py")
    tokenizer = tmp_path / "runs" / "tokenizer.json"
    env = clean_env(DITBERT_PRESET="tiny", PYTHONPATH=str(ROOT),
                    DITBERT_SET=f"data.corpus={tiny_corpus};tokenizer.vocab_size=300;train.tokenizer={tokenizer}")
    for command in commands:
        program = Path(sys.executable).parent / Path(command[0]).name
        words = [w.replace("GLUE-Finetune", "Train-Tokenizer") for w in command[1:]]
        run = subprocess.run([str(program), *words], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
    executed = json.loads((tmp_path / "Train-Tokenizer.ipynb").read_text())
    assert any(cell.get("outputs") for cell in executed["cells"]), "the cells ran and kept their outputs"
    assert len(json.loads(tokenizer.read_text())["model"]["vocab"]) == 300
