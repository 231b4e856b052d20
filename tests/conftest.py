"""Shared fixtures: a tiny real corpus, tokenizer and saved DitBERT, and GLUE files in the
original download layout.

Everything here is small enough for two CPU cores: a 600-token BPE learned from 300 Wikipedia
lead sections, a one-layer 32-wide DitBERT, and a handful of rows per GLUE file.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from corpus import embedded_corpus_file
from model_defs import DitBertForMLM, save_model
from params import ModelConfig
from tokenization import train_tokenizer

TINY_VOCAB = 600
TINY_SEQ_LEN = 62  # 64 positions with [START] and [END]

# The smallest pretraining run the run-level tests train: a few optimizer steps of a 2 x 32 model.
PRETRAIN_BATCH = 4
PRETRAIN_TINY = [
    "model.n_layers=2", "model.d_model=32", "model.n_heads=2", "model.d_ff=64", "model.seq_len=16",
    "model.vocab_size=512", f"train.batch_size={PRETRAIN_BATCH}", f"train.micro_batch={PRETRAIN_BATCH}",
    "train.warmup_steps=1", "train.lr=3e-3", "train.eval_every=1000", "train.log_every=1", "train.threads=1",
    "train.device=cpu", "data.val_sequences=8",
]


def pretrain_argv(data, out: Path, steps: int | None, *extra: str, sets: tuple[str, ...] = ()) -> list[str]:
    """train_model.py's command line for a PRETRAIN_TINY run on `data` (corpus, tokenizer, token cache) into
    `out`: `steps` (None: the settings' own), `extra` flags, then `sets` on top of the tiny settings."""
    corpus, tok, cache = data
    head = ["--corpus", str(corpus), "--tokenizer", str(tok), "--out", str(out)]
    head += ["--steps", str(steps)] if steps is not None else []
    return [*head, *extra, "--set", *PRETRAIN_TINY, f"data.cache_dir={cache}", *sets]


def pretrain_params(data, out: Path, steps: int, *sets: str):
    """The settings `pretrain_argv` gives, as train_model.train takes them."""
    from params import get_params, parse_overrides

    corpus, tok, cache = data
    overrides = parse_overrides([*PRETRAIN_TINY, f"data.cache_dir={cache}", *sets])
    overrides.update({"data.corpus": [str(corpus)], "train.tokenizer": str(tok), "train.out_dir": str(out),
                      "train.steps": steps})
    return get_params("tiny", overrides)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """300 Wikipedia lead sections from the embedded corpus, one per line."""
    d = tmp_path_factory.mktemp("corpus")
    lines = embedded_corpus_file(d).read_text(encoding="utf-8").splitlines()[:300]
    path = d / "small.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_corpus, tmp_path_factory) -> Path:
    """Path of a tokenizer.json with DitBERT's special tokens and 600 entries."""
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    train_tokenizer([tiny_corpus], TINY_VOCAB, path)
    return path


@pytest.fixture(scope="session")
def pretrain_files(tiny_corpus, tmp_path_factory):
    """(corpus, 512-token tokenizer, folder with the corpus's token file): what a pretraining run reads."""
    from pretrain_data import prepare_token_file

    d = tmp_path_factory.mktemp("pretrain-data")
    corpus = d / "corpus.txt"
    corpus.write_bytes(tiny_corpus.read_bytes())
    tok = d / "tokenizer.json"
    train_tokenizer([corpus], 512, tok)
    prepare_token_file([corpus], tok, d)
    return corpus, tok, d


def tiny_model_config() -> ModelConfig:
    return ModelConfig(vocab_size=TINY_VOCAB, n_layers=1, d_model=32, n_heads=2, d_ff=64, seq_len=TINY_SEQ_LEN)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved (untrained) one-layer DitBERT, laid out as pretraining's final model, with tokens_seen."""
    import torch

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("pretrained") / "final"
    save_model(DitBertForMLM(tiny_model_config()), out, extra={"tokens_seen": 12345})
    return out


# --------------------------------------------------------------------------- GLUE files

WORDS = ("the cat dog film movie plot actor man woman child ran saw liked hated good bad great dull "
         "long short happy sad story music scene house river city old new").split()


def _sentence(rng: random.Random, n: int = 6) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def _pair(rng):
    return _sentence(rng, rng.randint(4, 9)), _sentence(rng, rng.randint(3, 6))


def _glue_rows(task: str, split: str, n: int, rng: random.Random) -> tuple[str | None, list[list[str]]]:
    """(header or None, rows) in the real column layout of each GLUE file."""
    if task == "CoLA":  # no header: source, label, original label, sentence
        return None, [["gj04", str(i % 2), "*" if i % 2 == 0 else "", _sentence(rng)] for i in range(n)]
    if task == "SST-2":  # sentence with its trailing space, label
        return "sentence\tlabel", [[_sentence(rng).lower() + " ", str(i % 2)] for i in range(n)]
    if task == "MRPC":  # a BOM before the header; texts with bare quote characters
        rows = []
        for i in range(n):
            a, b = _pair(rng)
            rows.append([str(i % 2), str(1000 + i), str(2000 + i), f'He said " {a}', f"{b} ''"])
        return "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String", rows
    if task == "STS-B":
        head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
        rows = []
        for i in range(n):
            a, b = _pair(rng)
            rows.append([str(i), "main-news", "headlines", "2015", f"{i:04d}", "none", "none", f'"{a}', b,
                         f"{(i * 0.37) % 5:.3f}"])
        return head, rows
    if task == "QQP":
        rows = []
        for i in range(n):
            a, b = _pair(rng)
            rows.append([str(i), str(10 + i), str(20 + i), a + "?", b + "?", str(i % 2)])
        return "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate", rows
    if task == "MNLI":
        labels = ("entailment", "neutral", "contradiction")
        cols = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
        extra = ["label1", "gold_label"] if split == "train" else [f"label{k}" for k in range(1, 6)] + ["gold_label"]
        rows = []
        for i in range(n):
            a, b = _pair(rng)
            label = labels[i % 3]
            rows.append([str(i), str(i), f"{i}e", "fiction", f"( {a} )", f"( {b} )", f"(ROOT {a})", f"(ROOT {b})",
                         a, b] + [label] * (len(extra)))
        return "\t".join(cols + extra), rows
    if task == "QNLI":
        rows = []
        for i in range(n):
            a, b = _pair(rng)
            rows.append([str(i), a[:-1] + "?", b, ("entailment", "not_entailment")[i % 2]])
        return "index\tquestion\tsentence\tlabel", rows
    if task == "RTE":
        return "index\tsentence1\tsentence2\tlabel", [
            [str(i), *_pair(rng), ("entailment", "not_entailment")[i % 2]] for i in range(n)]
    if task == "WNLI":
        return "index\tsentence1\tsentence2\tlabel", [[str(i), *_pair(rng), str(i % 2)] for i in range(n)]
    if task == "diagnostic":
        return "index\tsentence1\tsentence2", [[str(i), *_pair(rng)] for i in range(n)]
    raise KeyError(task)


GLUE_FILES = {
    "CoLA": ("train.tsv", "dev.tsv"), "SST-2": ("train.tsv", "dev.tsv"), "MRPC": ("train.tsv", "dev.tsv"),
    "STS-B": ("train.tsv", "dev.tsv"), "QQP": ("train.tsv", "dev.tsv"),
    "MNLI": ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"), "QNLI": ("train.tsv", "dev.tsv"),
    "RTE": ("train.tsv", "dev.tsv"), "WNLI": ("train.tsv", "dev.tsv"), "diagnostic": ("diagnostic.tsv",),
}


def write_glue_layout(root: Path, n_train: int = 24, n_dev: int = 12, seed: int = 0) -> Path:
    """Write every GLUE task's files, in the original download's layout and column layout."""
    rng = random.Random(seed)
    for task, files in GLUE_FILES.items():
        (root / task).mkdir(parents=True, exist_ok=True)
        for name in files:
            split = "train" if name == "train.tsv" else "dev"
            header, rows = _glue_rows(task, split, n_train if split == "train" else n_dev, rng)
            lines = ([header] if header is not None else []) + ["\t".join(r) for r in rows]
            (root / task / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def glue_layout(tmp_path_factory) -> Path:
    """A folder in the original GLUE layout with a few rows per file (read-only for tests)."""
    return write_glue_layout(tmp_path_factory.mktemp("glue_data"))


# --------------------------------------------------------------------------- notebooks

ROOT = Path(__file__).resolve().parents[1]
KERNEL = "ditbert-tests"


@pytest.fixture(scope="session")
def jupyter_path(tmp_path_factory):
    """A kernelspec that runs this interpreter, so the notebooks see this environment's packages
    whatever other 'python3' kernels the machine has (set JUPYTER_PATH to it)."""
    root = tmp_path_factory.mktemp("jupyter")
    spec_dir = root / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "DitBERT tests", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return root


def execute_notebook(notebook: str, tmp_path: Path, cwd: Path = ROOT):
    """Convert a repository notebook with the jupytext command line, then run every cell in a fresh
    kernel whose working directory is `cwd`; returns the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    ipynb = tmp_path / (Path(notebook).stem + ".ipynb")
    subprocess.run([sys.executable, "-m", "jupytext", "--to", "notebook", "--output", str(ipynb), str(ROOT / notebook)],
                   check=True, capture_output=True)
    nb = nbformat.read(ipynb, as_version=4)
    NotebookClient(nb, kernel_name=KERNEL, timeout=600, resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def printed(nb) -> str:
    """Everything an executed notebook's cells printed."""
    return "".join(out.get("text", "") for cell in nb.cells for out in cell.get("outputs", []))


def clean_environment(tmp_path: Path, **extra: str) -> tuple[dict, str]:
    """Environment and working directory of a process that cannot import this repository (no PYTHONPATH,
    run from an empty folder) and reaches no hub (`extra`: more variables)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
               TOKENIZERS_PARALLELISM="false", **extra)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir(exist_ok=True)
    return env, str(workdir)
