"""A pretraining run is never lost or silently changed.

* Its output folder: a folder that holds a run is continued (--resume) or replaced (--overwrite),
  anything else is an error before any work.
* Resuming: the checkpoint holds every setting, the corpus and the tokenizer's fingerprint;
  --resume takes them from it, refuses a changed setting outside the short list that may change,
  names a missing or changed corpus, and leaves a finished run's files alone.
* Settings: each section is validated before any work, the error naming the setting.
* The `base` recipe: its batch arithmetic on 1 to 16 GPUs, two optimizer steps of the full model on
  the CPU, and the mixed-precision step a GPU takes (bf16 autocast; fp16 with the gradient scaler),
  run on the CPU.

Most runs call `train_model.main` in this process with a model of two 32-wide layers.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest
import torch

import corpus
import fileio
import pretrain_data
import runtime
import train_model
from model_defs import DitBertForMLM
from tokenization import tokenizer_fingerprint, train_tokenizer
from params import get_params, params_from_dict
from conftest import PRETRAIN_BATCH, PRETRAIN_TINY, pretrain_argv as argv, pretrain_params as params_for

BATCH, TINY = PRETRAIN_BATCH, PRETRAIN_TINY


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def data(pretrain_files, tmp_path):
    """(corpus, tokenizer, cache folder): a copy of the corpus this test may move or change."""
    corpus, tok, _ = pretrain_files
    own = tmp_path / "corpus" / "corpus.txt"
    own.parent.mkdir()
    own.write_bytes(corpus.read_bytes())
    return own, tok, tmp_path / "cache"


@pytest.fixture
def no_embedded_corpus(monkeypatch):
    """Fail the test if anything reaches for the embedded corpus (which a resumed run must not tokenise)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the embedded corpus was read")

    monkeypatch.setattr(corpus, "EMBEDDED_CORPORA", {"wiki": refuse, "imdb": refuse})


def load_ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def log_steps(out: Path) -> list[int]:
    with open(out / "log.csv") as fh:
        return [int(r["step"]) for r in csv.DictReader(fh)]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` and its bytes (the lock file, which names its last holder, aside)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != fileio.LOCK_NAME}


def run_cli(capsys, args: list[str]) -> tuple[int, str, str]:
    code = train_model.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --------------------------------------------------------------------------- the output folder


def test_a_folder_holding_a_run_is_refused_without_resume_or_overwrite(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, argv(data, out, 2))[0] == 0
    before = snapshot(out)
    fresh_cache = tmp_path / "fresh-cache"
    code, stdout, err = run_cli(capsys, [*argv(data, out, 3), f"data.cache_dir={fresh_cache}"])
    assert code == 2
    assert f"output folder {out} holds a run (checkpoint.pt, log.csv, summary.json, final)" in err
    assert "--resume" in err and "--overwrite" in err
    assert snapshot(out) == before, "the earlier run's files changed"
    assert not fresh_cache.exists(), "the corpus was tokenised before the folder was checked"
    with pytest.raises(FileExistsError, match=f"output folder {out} holds a run"):
        train_model.train(params_for(data, out, 3), show_progress=False)


def test_overwrite_replaces_the_run_and_keeps_other_files(data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert run_cli(capsys, argv(data, out, 3))[0] == 0
    (out / "notes.txt").write_text("the user's own notes")
    code, stdout, _ = run_cli(capsys, argv(data, out, 2, "--overwrite"))
    assert code == 0
    assert f"replacing the run in {out} (--overwrite)" in stdout
    assert load_ckpt(out / "checkpoint.pt")["step"] == 2
    assert log_steps(out) == [1, 2], "the new log holds rows of the old run"
    assert json.loads((out / "summary.json").read_text())["step"] == 2
    assert (out / "notes.txt").read_text() == "the user's own notes"
    code, _, err = run_cli(capsys, argv(data, out, 2, "--overwrite", "--resume"))
    assert code == 2 and "give one of them" in err
    monkeypatch.setenv("DITBERT_OVERWRITE", "1")  # as the notebooks take it
    assert run_cli(capsys, argv(data, out, 3))[0] == 0
    assert log_steps(out) == [1, 2, 3] and (out / "notes.txt").is_file()


# --------------------------------------------------------------------------- resuming


def test_resume_takes_every_setting_and_the_corpus_from_the_checkpoint(data, tmp_path, capsys, no_embedded_corpus):
    """`--resume` with nothing else: the checkpoint's corpus, tokenizer, model and step count (not the
    preset's 2800), and no tokenising of the default corpus."""
    out = tmp_path / "run"
    assert run_cli(capsys, argv(data, out, 4, "--stop-at", "2"))[0] == 0
    code, stdout, err = run_cli(capsys, ["--out", str(out), "--resume"])
    assert code == 0, err
    assert "changed settings" not in stdout
    state = load_ckpt(out / "checkpoint.pt")
    assert state["step"] == 4 and state["params"]["train"]["steps"] == 4
    assert log_steps(out) == [1, 2, 3, 4]
    assert (out / "final" / "model.safetensors").is_file()


def test_resume_refuses_changed_settings_listing_them(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, argv(data, out, 4, "--stop-at", "2"))[0] == 0
    before = snapshot(out)
    code, _, err = run_cli(capsys, ["--out", str(out), "--resume", "--set", "train.lr=5e-3", "train.mask_prob=0.15"])
    assert code == 2
    assert f"checkpoint {out / 'checkpoint.pt'} was made with other settings" in err
    assert "train.lr: 0.003 in the checkpoint, 0.005 now" in err
    assert "train.mask_prob: 0.4 in the checkpoint, 0.15 now" in err
    assert "train.steps" in err.split("may change only")[1], "the settings that may change are listed"
    assert snapshot(out) == before
    # the same through the function pretraining_value.py calls
    with pytest.raises(ValueError, match=r"train.lr: 0.003 in the checkpoint, 0.005 now"):
        train_model.train(params_for(data, out, 4, "train.lr=5e-3"), resume=True, show_progress=False)


def test_resume_accepts_a_listed_change_and_prints_it(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, argv(data, out, 4, "--stop-at", "2"))[0] == 0
    code, stdout, err = run_cli(capsys, ["--out", str(out), "--resume", "--steps", "5", "--set", "train.log_every=2"])
    assert code == 0, err
    assert "with changed settings: train.steps 4 -> 5, train.log_every 1 -> 2" in stdout
    state = load_ckpt(out / "checkpoint.pt")
    assert state["step"] == 5 and state["params"]["train"]["log_every"] == 2


def test_steps_raised_on_resume_decay_to_the_new_end_from_the_next_step(data, tmp_path, capsys):
    """Run 2 of 4 steps, then resume with 6: the same weights and rates as a run planned for 6 (with one
    warmup step, the first two steps' rates agree), not the old schedule's rate for step 3."""
    planned, raised = tmp_path / "planned", tmp_path / "raised"
    assert run_cli(capsys, argv(data, planned, 6))[0] == 0
    assert run_cli(capsys, argv(data, raised, 4, "--stop-at", "2"))[0] == 0
    code, _, err = run_cli(capsys, ["--out", str(raised), "--resume", "--steps", "6"])
    assert code == 0, err
    rates = []
    for out in (planned, raised):
        with open(out / "log.csv") as fh:
            rates.append([float(r["lr"]) for r in csv.DictReader(fh)])
    assert rates[0][2:] == rates[1][2:]  # a row's rate is the next step's: step 2's row is the old plan's
    a, b = load_ckpt(planned / "checkpoint.pt")["model"], load_ckpt(raised / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_names_the_missing_corpus_before_any_tokenising(data, tmp_path, capsys, no_embedded_corpus):
    corpus, _, cache = data
    out = tmp_path / "run"
    assert run_cli(capsys, argv(data, out, 4, "--stop-at", "2"))[0] == 0
    moved = tmp_path / "elsewhere" / corpus.name
    moved.parent.mkdir()
    corpus.rename(moved)
    tokens_before = sorted(p.name for p in cache.iterdir())
    code, _, err = run_cli(capsys, ["--out", str(out), "--resume"])
    assert code == 2
    assert f"corpus file {corpus} does not exist" in err and str(corpus.resolve()) in err and "--corpus" in err
    # given its new place, the run goes on (the contents are the recorded ones)
    code, stdout, err = run_cli(capsys, ["--out", str(out), "--resume", "--corpus", str(moved)])
    assert code == 0, err
    assert f"data.corpus [{str(corpus)!r}] -> [{str(moved)!r}]" in stdout
    assert load_ckpt(out / "checkpoint.pt")["step"] == 4
    assert sorted(p.name for p in cache.iterdir()) == tokens_before, "the corpus was tokenised again"


def test_resume_refuses_a_changed_corpus_by_its_fingerprint(data, tmp_path, capsys):
    corpus, _, cache = data
    out = tmp_path / "run"
    assert run_cli(capsys, argv(data, out, 4, "--stop-at", "2"))[0] == 0
    recorded = load_ckpt(out / "checkpoint.pt")["corpus"]
    assert recorded["files"] == [str(corpus.resolve())]
    with open(corpus, "a", encoding="utf-8") as fh:
        fh.write("A line the run never saw.\n")
    tokens_before = sorted(p.name for p in cache.iterdir())
    code, _, err = run_cli(capsys, ["--out", str(out), "--resume"])
    assert code == 2
    assert f"the corpus {corpus} is not the one the run in {out} was trained on" in err
    assert recorded["fingerprint"] in err
    assert sorted(p.name for p in cache.iterdir()) == tokens_before, "the changed corpus was tokenised"


def test_resume_of_a_finished_run_says_so_and_leaves_its_files_alone(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, argv(data, out, 3))[0] == 0
    before = snapshot(out)
    val_ppl = json.loads((out / "summary.json").read_text())["val_ppl"]
    assert math.isfinite(val_ppl)
    code, stdout, _ = run_cli(capsys, ["--out", str(out), "--resume"])
    assert code == 0
    assert f"the run in {out} is finished: step 3 of 3" in stdout and "Raise train.steps (--steps)" in stdout
    assert snapshot(out) == before, "resuming a finished run changed its files"
    summary = train_model.train(params_for(data, out, 3), resume=True, show_progress=False)
    assert summary["val_ppl"] == val_ppl and "finished" in summary["already_done"]
    # raising train.steps continues it
    code, _, err = run_cli(capsys, ["--out", str(out), "--resume", "--steps", "5"])
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["step"] == 5
    code, _, err = run_cli(capsys, ["--out", str(out), "--resume", "--steps", "4"])
    assert code == 2 and "train.steps=4 is below step 5" in err


def test_a_resumed_run_keeps_the_last_validation_perplexity(data, tmp_path, capsys):
    """A resumed run that stops before its next evaluation reports the last one, not NaN."""
    out = tmp_path / "run"
    assert run_cli(capsys, argv(data, out, 6, "--stop-at", "2", sets=("train.eval_every=2",)))[0] == 0
    assert run_cli(capsys, ["--out", str(out), "--resume", "--stop-at", "3"])[0] == 0
    assert math.isfinite(json.loads((out / "summary.json").read_text())["val_ppl"])


# --------------------------------------------------------------------------- the tokenizer a model was trained with


@pytest.fixture
def other_tokenizer(data, tmp_path) -> Path:
    """A tokenizer of the same vocabulary size with other merges (learned from lower-cased text)."""
    corpus, _, _ = data
    lower = tmp_path / "lower.txt"
    lower.write_text(corpus.read_text(encoding="utf-8").lower(), encoding="utf-8")
    path = tmp_path / "other-tokenizer.json"
    train_tokenizer([lower], 512, path)
    return path


def test_every_trained_model_records_its_tokenizer(data, tmp_path, capsys, other_tokenizer):
    _, tok, _ = data
    out = tmp_path / "run"
    assert run_cli(capsys, argv(data, out, 2))[0] == 0
    fingerprint = tokenizer_fingerprint(tok)
    assert fingerprint != tokenizer_fingerprint(other_tokenizer)
    assert json.loads((out / "final" / "config.json").read_text())["tokenizer_fingerprint"] == fingerprint
    assert load_ckpt(out / "checkpoint.pt")["tokenizer_fingerprint"] == fingerprint

    import hf_export

    exported = hf_export.export(out / "final", tok, tmp_path / "hf")
    assert json.loads((exported / "config.json").read_text())["tokenizer_fingerprint"] == fingerprint
    assert tokenizer_fingerprint(exported / "tokenizer.json") == fingerprint
    with pytest.raises(ValueError, match=f"{other_tokenizer} is not the tokenizer {out / 'final'} was trained with"):
        hf_export.export(out / "final", other_tokenizer, tmp_path / "hf-other")


def test_resume_refuses_another_tokenizer_naming_both_files(data, tmp_path, capsys, other_tokenizer):
    out = tmp_path / "run"
    assert run_cli(capsys, argv(data, out, 4, "--stop-at", "2"))[0] == 0
    code, _, err = run_cli(capsys, ["--out", str(out), "--resume", "--tokenizer", str(other_tokenizer)])
    assert code == 2
    assert f"{other_tokenizer} is not the tokenizer {out / 'checkpoint.pt'} was trained with" in err


# --------------------------------------------------------------------------- settings checked before any work


@pytest.mark.parametrize("args, setting", [
    (["--steps", "-5"], "train.steps=-5"),
    (["--steps", "0"], "train.steps=0"),
    (["--steps", "150", "--set", *TINY, "train.warmup_steps=200"], "train.warmup_steps=200"),
    (["--steps", "2", "--set", *TINY, "train.mask_prob=1.5"], "train.mask_prob=1.5"),
    (["--steps", "2", "--set", *TINY, "model.n_layers=0"], "model.n_layers=0"),
], ids=["steps -5", "steps 0", "warmup past steps", "mask_prob 1.5", "no layers"])
def test_bad_settings_on_the_command_line_stop_before_any_work(data, tmp_path, capsys, args, setting):
    corpus, tok, _ = data
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, ["--corpus", str(corpus), "--tokenizer", str(tok), "--out", str(out),
                                    "--stop-at", "1", *args])
    assert code == 2
    assert f"setting {setting}" in err
    if "warmup" in setting:
        assert "train.steps=150" in err
    assert not out.exists(), "work started before the settings were checked"


@pytest.mark.parametrize("overrides, setting", [
    ({"model.n_heads": "3"}, "model.n_heads=3"),  # 256 does not split into 3 heads
    ({"model.dropout": "1"}, "model.dropout=1.0"),
    ({"model.vocab_size": 100}, "model.vocab_size=100"),
    ({"model.position": "rotary"}, "model.position='rotary'"),
    ({"tokenizer.vocab_size": 100}, "tokenizer.vocab_size=100"),
    ({"data.val_fraction": "0"}, "data.val_fraction=0.0"),
    ({"data.val_sequences": 0}, "data.val_sequences=0"),
    ({"train.lr": "0"}, "train.lr=0.0"),
    ({"train.lr": float("nan")}, "train.lr=nan"),
    ({"train.steps": "1.5"}, "train.steps=1.5"),
    ({"train.micro_batch": "0"}, "train.micro_batch=0"),
    ({"train.betas": "(0.9, 1.5)"}, "train.betas=(0.9, 1.5)"),
    ({"train.device": "tpu"}, "train.device='tpu'"),
    ({"train.dtype": "fp8"}, "train.dtype='fp8'"),
    ({"train.eval_every": 0}, "train.eval_every=0"),
    ({"finetune.lr": "0"}, "finetune.lr=0.0"),
    ({"finetune.epochs": 0}, "finetune.epochs=0"),
    ({"finetune.warmup_epochs": "5"}, "finetune.warmup_epochs=5.0"),
    ({"finetune.seeds": "[]"}, "finetune.seeds=[]"),
    ({"finetune.max_len": 3}, "finetune.max_len=3"),
    ({"finetune.pooling": "max"}, "finetune.pooling='max'"),
    ({"finetune.pair_encoding": "cross"}, "finetune.pair_encoding='cross'"),
    ({"finetune.dropout": "-0.1"}, "finetune.dropout=-0.1"),
])
def test_each_section_checks_its_values_naming_the_setting(overrides, setting):
    with pytest.raises(ValueError, match=re.escape(f"setting {setting}")):
        get_params("tiny", overrides)


def test_saved_settings_are_checked_and_the_presets_pass():
    for preset in ("tiny", "base"):
        params = get_params(preset)
        assert params_from_dict(params.to_dict()) == params
    saved = get_params("tiny").to_dict()
    saved["train"]["steps"] = 0
    with pytest.raises(ValueError, match=r"setting train.steps=0"):
        params_from_dict(saved)


# --------------------------------------------------------------------------- the base recipe


def test_base_batch_arithmetic_on_1_to_16_gpus():
    """Each world size either gives exactly 3200 sequences per step or an error naming a setting
    that works (a micro-batch, or a batch size the ranks can share)."""
    base = get_params("base").train
    assert (base.batch_size, base.micro_batch) == (3200, 32)
    for world in range(1, 17):
        try:
            accum = base.accumulation_steps(world)
        except ValueError as err:
            found = re.search(r"set train\.(micro_batch|batch_size)=(\d+)", str(err))
            assert found, f"{world} GPUs: the error names no working value: {err}"
            fixed = get_params("base", {f"train.{found[1]}": int(found[2])}).train
            assert fixed.accumulation_steps(world) * fixed.micro_batch * world == fixed.batch_size
            if found[1] == "micro_batch":
                assert fixed.batch_size == 3200
            else:
                assert 3200 % world, f"{world} GPUs could share 3200 sequences with another micro-batch"
        else:
            assert accum * base.micro_batch * world == 3200


def step_run(params, dtype: str = "fp32"):
    """A pretraining run ready for `train_model.optimizer_step`, on the CPU in `dtype`."""
    ddp = train_model.Distributed("cpu")
    precision = runtime.Precision.choose("cpu", dtype)
    torch.manual_seed(params.train.seed)
    model = DitBertForMLM(params.model)
    loader, _, _ = pretrain_data.prepare_data(params)
    run = train_model.Run.start(model, loader, params, precision)
    run.runner = model
    return run, ddp, precision


def take_steps(run, ddp, precision, params, n: int) -> list[float]:
    accum = params.train.accumulation_steps(ddp.world_size)
    losses = []
    for _ in range(n):
        batches = pretrain_data.next_step_batches(run.loader, params, accum)
        losses.append(train_model.optimizer_step(run, batches, params, ddp, precision))
    return losses


def test_base_recipe_takes_two_optimizer_steps_on_the_cpu_with_accumulation(pretrain_files):
    """The full 12 x 768 model, 32768-token vocabulary and 128-token sequences of `base`, its
    schedule and optimizer, at a batch of 2 sequences: micro-batches of 1, accumulated twice."""
    corpus, tok, cache = pretrain_files
    params = get_params("base", {"data.corpus": [str(corpus)], "train.tokenizer": str(tok),
                                 "data.cache_dir": str(cache), "train.batch_size": 2, "train.micro_batch": 1,
                                 "data.val_sequences": 2, "train.device": "cpu"})
    assert (params.model.n_layers, params.model.d_model, params.model.vocab_size, params.model.seq_len) == \
        (12, 768, 32768, 128)
    run, ddp, precision = step_run(params)
    assert params.train.accumulation_steps(ddp.world_size) == 2
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    losses = take_steps(run, ddp, precision, params, 2)
    assert all(loss is not None and math.isfinite(loss) for loss in losses), losses
    assert abs(losses[0] - math.log(32768)) < 1.5, "the initial loss is not near uniform guessing"
    assert run.step == 2 and run.tokens_seen == 2 * 2 * 130
    assert run.scheduler.get_last_lr()[0] == pytest.approx(1e-3 * 3 / 25_000)  # warmup over 25,000 steps
    moved = [k for k, v in run.model.state_dict().items() if not torch.equal(v, before[k])]
    assert "encoder.blocks.11.ffn.fc_out.weight" in moved and "encoder.tok_emb.weight" in moved


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_mixed_precision_pretraining_steps_on_the_cpu(data, tmp_path, dtype):
    """The step a GPU takes, run on the CPU: bf16 autocast, or fp16 autocast with the gradient scaler
    (scale, unscale before clipping, step): the losses stay finite and fall, the weights move."""
    params = params_for(data, tmp_path / "run", 100, f"train.dtype={dtype}", "train.lr=1e-2", "train.warmup_steps=2")
    run, ddp, precision = step_run(params, dtype)
    assert precision.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    assert run.scaler.is_enabled() == (dtype == "fp16")
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    losses = take_steps(run, ddp, precision, params, 12)
    assert all(loss is not None and math.isfinite(loss) for loss in losses), losses
    assert sum(losses[-3:]) / 3 < losses[0] - 0.3, losses
    assert run.step == 12
    assert all(not torch.equal(v, before[k]) for k, v in run.model.state_dict().items() if k.endswith("weight"))
    assert all(torch.isfinite(v).all() for v in run.model.state_dict().values())
