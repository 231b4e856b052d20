"""The pretraining loop: learning, schedule, accumulation, exact resume, checkpoints, errors."""

import csv
import os
from pathlib import Path

import pytest
import torch

import checkpoints
import train_model
from corpus import embedded_corpus_file
from model_defs import load_model
from params import get_params
from runtime import autocast_dtype
from tokenization import train_tokenizer

SMALL = {
    "model.n_layers": 2,
    "model.d_model": 64,
    "model.n_heads": 2,
    "model.d_ff": 128,
    "model.seq_len": 32,
    "model.vocab_size": 600,
    "train.steps": 12,
    "train.warmup_steps": 3,
    "train.batch_size": 8,
    "train.micro_batch": 8,
    "train.checkpoint_every": 100,
    "train.eval_every": 6,
    "train.log_every": 2,
    "data.val_sequences": 32,
}


@pytest.fixture(scope="module")
def corpus_and_tokenizer(tmp_path_factory):
    d = tmp_path_factory.mktemp("pretrain-data")
    lines = embedded_corpus_file(d).read_text(encoding="utf-8").splitlines()[:600]
    corpus = d / "small.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tok = d / "tokenizer.json"
    train_tokenizer([corpus], 600, tok)
    return corpus, tok


@pytest.fixture
def make_params(corpus_and_tokenizer, tmp_path):
    corpus, tok = corpus_and_tokenizer

    def make(name="run", **overrides):
        values = {**SMALL, "data.corpus": [str(corpus)], "train.tokenizer": str(tok), "train.out_dir": str(tmp_path / name)}
        values.update({k.replace("__", "."): v for k, v in overrides.items()})
        return get_params("tiny", values)

    return make


def weights(path):
    return load_model(path).state_dict()


def assert_same_weights(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        if atol:
            assert torch.allclose(a[k], b[k], atol=atol), k
        else:
            assert torch.equal(a[k], b[k]), k


def test_pretraining_learns(make_params):
    """A short run must learn the token distribution: well below the vocabulary-sized
    perplexity of the random model. (Beating the unigram model takes minutes: `make demo`.)"""
    params = make_params(train__steps=40, train__warmup_steps=4, train__lr=3e-3, train__eval_every=40)
    summary = train_model.train(params, show_progress=False)
    assert summary["step"] == 40 and summary["tokens_seen"] == 40 * 8 * 34
    assert summary["val_ppl"] < 0.7 * params.model.vocab_size, summary  # uniform guessing: = vocab size
    with open(os.path.join(params.train.out_dir, "log.csv")) as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == checkpoints.LOG_COLUMNS
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"]) - 0.3
    final = load_model(summary["final_model"])
    assert final.cfg == params.model


def test_run_k_steps_then_resume_equals_one_run(make_params):
    straight = make_params("straight", model__dropout=0.1)
    train_model.train(straight, show_progress=False)
    split = make_params("split", model__dropout=0.1)
    first = train_model.train(split, stop_at=5, show_progress=False)
    assert first["step"] == 5 and "final_model" not in first
    train_model.train(split, resume=True, show_progress=False)
    assert_same_weights(weights(f"{straight.train.out_dir}/final"), weights(f"{split.train.out_dir}/final"))
    logs = [open(f"{p.train.out_dir}/log.csv").read().splitlines() for p in (straight, split)]
    strip = lambda rows: [r.split(",")[:5] for r in rows]  # elapsed time differs, the rest must not
    assert strip(logs[0]) == strip(logs[1])


def assert_setting_resumes_exactly_and_changes_training(make_params, name, **setting):
    """A run with `setting`, stopped after 5 steps and resumed, ends with the weights of one straight
    run with it, and those differ from a run without it: the setting is resumed and has an effect."""
    straight = make_params(name, **setting)
    train_model.train(straight, show_progress=False)
    split = make_params(f"{name}-split", **setting)
    train_model.train(split, stop_at=5, show_progress=False)
    train_model.train(split, resume=True, show_progress=False)
    assert_same_weights(weights(f"{straight.train.out_dir}/final"), weights(f"{split.train.out_dir}/final"))
    plain = make_params(f"{name}-without")
    train_model.train(plain, show_progress=False)
    a, b = weights(f"{straight.train.out_dir}/final"), weights(f"{plain.train.out_dir}/final")
    assert not torch.equal(a["encoder.tok_emb.weight"], b["encoder.tok_emb.weight"])


def test_whole_word_masking_run_resumes_exactly_and_masks_other_positions(make_params):
    assert_setting_resumes_exactly_and_changes_training(make_params, "wwm", train__whole_word_mask=True)


def test_gradient_accumulation_matches_one_big_micro_batch(make_params):
    one = make_params("one", train__steps=4)
    two = make_params("two", train__steps=4, train__micro_batch=4)
    assert two.train.accumulation_steps() == 2
    for p in (one, two):
        train_model.train(p, show_progress=False)
    assert_same_weights(weights(f"{one.train.out_dir}/final"), weights(f"{two.train.out_dir}/final"), atol=1e-5)


def test_batch_must_divide_into_micro_batches():
    with pytest.raises(ValueError, match="not a multiple.*set train.micro_batch=6"):
        get_params("tiny", {"train.batch_size": 30, "train.micro_batch": 8})


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    checkpoints.save_checkpoint(path, {"step": 1, "w": torch.ones(3)})

    def torn_save(obj, fh):
        fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoints.save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    state = torch.load(path, weights_only=True)
    assert state["step"] == 1, "the previous checkpoint was damaged"


def test_truncated_checkpoint_gets_a_clear_error(make_params):
    params = make_params(train__steps=2, train__warmup_steps=1)
    train_model.train(params, show_progress=False)
    ckpt = os.path.join(params.train.out_dir, "checkpoint.pt")
    data = open(ckpt, "rb").read()
    open(ckpt, "wb").write(data[: len(data) // 2])
    with pytest.raises(ValueError, match="checkpoint.pt is corrupt or truncated"):
        train_model.train(params, resume=True, show_progress=False)


def test_checkpoint_from_another_config_is_refused(make_params):
    params = make_params(train__steps=2, train__warmup_steps=1)
    train_model.train(params, show_progress=False)
    other = make_params(train__steps=4, model__d_model=32)
    with pytest.raises(ValueError, match=r"another model config.*d_model': \(64, 32\)"):
        train_model.train(other, resume=True, show_progress=False)


def test_resume_without_checkpoint_names_the_file(make_params):
    with pytest.raises(FileNotFoundError, match="checkpoint.pt does not exist"):
        train_model.train(make_params("fresh"), resume=True, show_progress=False)


def test_tokenizer_larger_than_the_model_vocabulary_is_refused_before_training(make_params):
    params = make_params("small-vocab", model__vocab_size=300)  # the tokenizer has 600 tokens
    with pytest.raises(ValueError, match=r"tokenizer .*tokenizer.json has 600 tokens but model.vocab_size is 300"):
        train_model.train(params, show_progress=False)
    assert not (Path(params.train.out_dir) / "checkpoint.pt").exists()


def test_command_line_reports_a_missing_corpus(tmp_path, capsys, corpus_and_tokenizer):
    _, tok = corpus_and_tokenizer
    code = train_model.main(["--corpus", str(tmp_path / "nope.txt"), "--tokenizer", str(tok), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "corpus file" in err and "nope.txt does not exist" in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_mixed_precision_step_on_cuda(make_params):
    params = make_params("cuda", train__device="cuda", train__steps=3)
    summary = train_model.train(params, show_progress=False)
    assert summary["step"] == 3 and summary["val_ppl"] == summary["val_ppl"]  # finite, not NaN
    dtype = autocast_dtype("auto", torch.device("cuda"))
    assert dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
