"""The pretraining-value experiment: probe, diagnostics and the one-command run, on toy sizes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import pretraining_value as pv
from conftest import ROOT, TINY_SEQ_LEN, TINY_VOCAB, execute_notebook, printed
import model_defs
from model_defs import DitBertForMLM
from params import END_ID, MASK_ID, START_ID, get_params
from tokenization import load_tokenizer


def test_probe_separates_separable_features_and_not_noise():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 600)
    x = rng.normal(size=(600, 16))
    x[:, 3] += 3.0 * (2 * y - 1)  # one informative direction
    good = pv.probe_accuracy(x[:400], y[:400], x[400:], y[400:])
    noise = pv.probe_accuracy(rng.normal(size=(400, 16)), y[:400], rng.normal(size=(200, 16)), y[400:])
    assert good["accuracy"] > 0.95
    assert noise["accuracy"] < 0.65
    assert good["l2"] in pv.PROBE_L2


def test_representation_stats_tell_collapse_from_spread():
    rng = np.random.default_rng(0)
    spread = rng.normal(size=(1000, 64))
    collapsed = np.ones((1000, 64)) * 5.0 + 0.01 * rng.normal(size=(1000, 64))
    s, c = pv.representation_stats(spread), pv.representation_stats(collapsed)
    assert abs(s["mean_cosine"]) < 0.05
    assert c["mean_cosine"] > 0.99
    assert c["dim_std"] < 0.05 < s["dim_std"]
    assert s["norm_mean"] == pytest.approx(8.0, rel=0.05)  # sqrt(64) for unit Gaussians


def test_update_ratios_per_layer():
    before = {"encoder.blocks.0.ffn.fc_in.weight": torch.ones(4, 4), "head.weight": torch.ones(2, 4),
              "encoder.tok_emb.weight": torch.ones(3, 4)}
    after = {k: v.clone() for k, v in before.items()}
    after["head.weight"] += 1.0
    ratios = pv.update_ratios(before, after)
    assert ratios == {"block0": 0.0, "head": 1.0, "embeddings": 0.0}


def test_zero_shot_similarity_ranks_repeated_sentences_above_unrelated_ones(tiny_model_dir, tiny_tokenizer, tmp_path):
    """STS-B dev pairs that are one sentence twice or two unrelated sentences: the cosine of the
    frozen encoder's two pooled texts must tell them apart, and the score follow the labels' sign."""
    rng = np.random.default_rng(0)
    words = "the river ran past an old house where we found small red boats and green fields".split()
    rows = []
    for i in range(40):
        a, b = (" ".join(rng.choice(words, size=6)) + "." for _ in range(2))
        same = i % 2 == 0
        rows.append([str(i), "main-news", "headlines", "2015", f"{i:04d}", "none", "none", a, a if same else b,
                     "5.000" if same else "0.000"])
    folder = tmp_path / "glue" / "STS-B"
    folder.mkdir(parents=True)
    head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    for name in ("train.tsv", "dev.tsv"):
        (folder / name).write_text("\n".join([head] + ["\t".join(r) for r in rows]) + "\n")
    params = get_params("tiny")
    score = pv.zero_shot_similarity(tiny_model_dir, tiny_tokenizer, params, tmp_path / "glue")
    assert score > 50
    flipped = [r[:-1] + ["5.000" if r[-1] == "0.000" else "0.000"] for r in rows]
    (folder / "dev.tsv").write_text("\n".join([head] + ["\t".join(r) for r in flipped]) + "\n")
    assert pv.zero_shot_similarity(tiny_model_dir, tiny_tokenizer, params, tmp_path / "glue") == pytest.approx(-score)


def test_parse_steps():
    assert pv.parse_steps("300, 0,100,100") == [0, 100, 300]
    with pytest.raises(ValueError):
        pv.parse_steps("-1,5")


def test_hidden_states_has_one_entry_per_layer_and_ends_with_the_encoder_output():
    from conftest import tiny_model_config

    model = DitBertForMLM(tiny_model_config()).eval()
    ids = torch.randint(5, TINY_VOCAB, (2, 7))
    states = pv.hidden_states(model.encoder, ids, torch.ones_like(ids))
    assert len(states) == len(pv.layer_names(1)) == 3
    assert torch.allclose(states[-1], model.encoder(ids))


def toy_demo_task(root) -> None:
    """A 40-row demo task under ``<root>/data`` whose label a bag of words tells."""
    data = root / "data" / "demo-movie-reviews"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    words = {0: "bad dull awful boring", 1: "good great fine lovely"}
    for split, n in (("train", 40), ("dev", 16)):
        labels = rng.integers(0, 2, n)
        texts = [" ".join(rng.choice(words[y].split(), 4)) + " film" for y in labels]
        pd.DataFrame({"sentence": texts, "label": labels}).to_csv(data / f"{split}.csv", index=False)
    (data / "task.json").write_text('{"text_columns": ["sentence"], "label_column": "label", "num_labels": 2}')


def toy_overrides(tiny_corpus, tiny_tokenizer, tmp_path) -> dict:
    """A one-layer model pretrained for 2 steps of 4 sequences, fine-tuned for one epoch."""
    return {
        "tokenizer.vocab_size": TINY_VOCAB, "model.n_layers": 1, "model.d_model": 32, "model.n_heads": 2,
        "model.d_ff": 64, "model.seq_len": TINY_SEQ_LEN, "data.corpus": [str(tiny_corpus)], "data.cache_dir": str(tmp_path),
        "train.tokenizer": str(tiny_tokenizer), "train.steps": 2, "train.warmup_steps": 1, "train.batch_size": 4,
        "train.micro_batch": 4, "train.threads": 1, "finetune.epochs": 1, "finetune.seeds": [1, 2],
        "finetune.output_dir": str(tmp_path / "GLUE-Outputs"), "finetune.save_best": False,
    }


def test_experiment_writes_results_with_expected_columns(tiny_corpus, tiny_tokenizer, tmp_path, monkeypatch):
    """Two snapshots (the control and 2 steps) of a one-layer model on a 40-row demo task."""
    monkeypatch.chdir(tmp_path)
    toy_demo_task(tmp_path)
    params = get_params("tiny", toy_overrides(tiny_corpus, tiny_tokenizer, tmp_path))
    exp = pv.Experiment(name="t", steps=[0, 2], out_dir=str(tmp_path / "value"), data_dir=str(tmp_path / "data"))
    results = pv.run_experiment(params, exp)
    on_disk = pd.read_csv(tmp_path / "value" / "results.csv")
    assert list(on_disk.columns) == pv.RESULT_COLUMNS
    assert len(on_disk) == len(results)
    finetuned = on_disk[on_disk["method"] == "finetune"]
    assert sorted(set(finetuned["init"])) == ["pretrained", "random"]
    assert len(finetuned) == 4  # 2 snapshots x 2 seeds
    assert set(on_disk["step"]) == {0, 2}
    assert on_disk.loc[on_disk["step"] == 2, "tokens_seen"].iloc[0] == 2 * 4 * (TINY_SEQ_LEN + 2)
    assert on_disk["score"].between(0, 100).all()
    summary = pd.read_csv(tmp_path / "value" / "summary.csv")
    assert {"mean", "std", "n"} <= set(summary.columns)
    diagnostics = pd.read_csv(tmp_path / "value" / "diagnostics.csv")
    assert set(diagnostics["layer"]) == set(pv.layer_names(1))
    assert (tmp_path / "value" / "curve.png").stat().st_size > 0

    def no_training(*args, **kwargs):
        raise AssertionError("finished fine-tuning runs must be reused")

    run_glue = pv.glue_utils.run_glue
    monkeypatch.setattr(pv.glue_utils, "run_glue", no_training)
    again = pv.run_experiment(params, exp)
    assert again.loc[again["method"] == "finetune", "score"].tolist() == finetuned["score"].tolist()

    # A fine-tuning setting tried on the same snapshots: nothing pretrained, its own folder and runs.
    def no_pretraining(*args, **kwargs):
        raise AssertionError("the snapshots of the first experiment must be reused")

    monkeypatch.setattr(pv.glue_utils, "run_glue", run_glue)
    monkeypatch.setattr(pv.train_model, "train", no_pretraining)
    params.finetune.lr = 1e-3
    lever = pv.Experiment(name="lever", steps=[0, 2], out_dir=str(tmp_path / "lever"), data_dir=str(tmp_path / "data"),
                          snapshots_from=str(tmp_path / "value"))
    trial = pv.run_experiment(params, lever)
    assert len(trial[trial["method"] == "finetune"]) == 4
    assert sorted((tmp_path / "GLUE-Outputs").glob("lever-step2-seed*")) != []
    assert sorted((tmp_path / "GLUE-Outputs").glob("lever-random-init-seed*")) != []
    assert pd.read_csv(tmp_path / "value" / "results.csv").equals(on_disk)  # the first experiment's results stay
    assert not (tmp_path / "lever" / "pretrain").exists()
    with pytest.raises(FileNotFoundError, match="no snapshot of step 5"):
        pv.run_experiment(params, pv.Experiment(name="x", steps=[5], out_dir=str(tmp_path / "x"),
                                                data_dir=str(tmp_path / "data"), snapshots_from=str(tmp_path / "value")))
    params.model.d_ff = 128
    with pytest.raises(ValueError, match=r"other settings \(model.d_ff\)"):
        pv.run_experiment(params, lever)
    params.train.tokenizer = str(tmp_path / "gone.json")
    with pytest.raises(FileNotFoundError, match="gone.json does not exist"):
        pv.run_experiment(params, lever)
    assert not (tmp_path / "gone.json").exists()  # no new tokenizer trained in its place


def test_snapshots_of_another_config_and_corrupt_checkpoints_are_refused_by_name(tiny_corpus, tiny_tokenizer, tmp_path):
    """Running an experiment again under its name with other model settings must not put the old
    snapshots' scores beside the new settings, and a damaged checkpoint is named, not trained over."""
    params = get_params("tiny", toy_overrides(tiny_corpus, tiny_tokenizer, tmp_path))
    out = tmp_path / "value"
    pv.pretrain_snapshots(params, [0], out)
    weights = pv.snapshot_dir(out, 0) / "model.safetensors"
    written = weights.stat().st_mtime_ns
    assert pv.pretrain_snapshots(params, [0], out)[0]["step"] == 0  # same settings: reused
    respelled = get_params("tiny", {**toy_overrides(tiny_corpus, tiny_tokenizer, tmp_path),
                                    "train.tokenizer": "./" + str(Path(tiny_tokenizer).relative_to(tmp_path.anchor))})
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path.anchor)  # the same tokenizer file, spelled another way: reused
        assert pv.pretrain_snapshots(respelled, [0], out)[0]["step"] == 0
    assert weights.stat().st_mtime_ns == written  # neither call wrote the snapshot again
    wider = get_params("tiny", {**toy_overrides(tiny_corpus, tiny_tokenizer, tmp_path), "model.d_ff": 128})
    with pytest.raises(ValueError, match=r"step-000000 was made with other settings \(model.d_ff\)"):
        pv.pretrain_snapshots(wider, [0], out)

    checkpoint = out / "pretrain" / "checkpoint.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="checkpoint.pt is corrupt or truncated"):
        pv.pretrain_snapshots(params, [0, 2], out)
    assert checkpoint.read_bytes() == b"not a checkpoint"  # left as it was for the user to look at
    assert not pv.snapshot_dir(out, 2).exists()


@pytest.mark.slow
def test_pretraining_value_notebook_runs_every_cell(tiny_corpus, tiny_tokenizer, jupyter_path, tmp_path, monkeypatch):
    """The notebook, converted with jupytext and executed in a fresh kernel on the toy task,
    writes the curve, the summary and the diagnostics of both snapshots."""
    toy_demo_task(tmp_path)
    overrides = toy_overrides(tiny_corpus, tiny_tokenizer, tmp_path)
    overrides["data.corpus"] = str(tiny_corpus)
    overrides.pop("finetune.seeds")
    env = {"JUPYTER_PATH": str(jupyter_path), "PYTHONPATH": str(ROOT),
           "DITBERT_PRESET": "tiny", "DITBERT_SET": ";".join(f"{k}={v}" for k, v in overrides.items()),
           "VALUE_STEPS": "0,2", "VALUE_SEEDS": "1", "VALUE_NAME": "nb"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    nb = execute_notebook("Pretraining-Value.py", tmp_path, cwd=tmp_path)
    folder = tmp_path / "runs" / "value" / "nb"
    results = pd.read_csv(folder / "results.csv")
    assert set(results["step"]) == {0, 2}
    assert len(results[results["method"] == "finetune"]) == 2  # control and snapshot, one seed
    assert (folder / "curve.png").stat().st_size > 0
    assert set(pd.read_csv(folder / "diagnostics.csv")["layer"]) == set(pv.layer_names(1))
    assert "grad norm, step 2" in printed(nb) and "moved, step 2" in printed(nb)


def test_snapshot_from_a_checkpoint_at_its_step_is_not_pretrained_again(tiny_corpus, tiny_tokenizer, tmp_path,
                                                                       monkeypatch):
    """A run that stopped after its last checkpoint but before the snapshot folder was written: the
    snapshot is made from the checkpoint, the very model the run reached, with no pretraining."""
    params = get_params("tiny", toy_overrides(tiny_corpus, tiny_tokenizer, tmp_path))
    out = tmp_path / "value"
    first = pv.pretrain_snapshots(params, [0, 2], out)
    checkpoint = pv.checkpoints.load_checkpoint(out / "pretrain" / "checkpoint.pt", params)
    from_checkpoint = pv.model_from_state(checkpoint, params).state_dict()
    made = pv.model_defs.load_model(first[1]["model_dir"]).state_dict()
    assert all(torch.equal(made[k], from_checkpoint[k]) for k in made)
    assert json.loads((Path(first[1]["model_dir"]) / "config.json").read_text())["steps"] == 2

    shutil.rmtree(first[1]["model_dir"])
    monkeypatch.setattr(pv.train_model, "train", lambda *a, **k: pytest.fail("pretrained again"))
    again = pv.pretrain_snapshots(params, [0, 2], out)
    remade = pv.model_defs.load_model(again[1]["model_dir"]).state_dict()
    assert all(torch.equal(remade[k], made[k]) for k in made)


def test_zero_shot_prompt_is_the_mlm_heads_answer_to_the_cloze(tiny_model_dir, tiny_tokenizer, tmp_path, monkeypatch):
    """The demo task asked as "<text> It was [MASK]." and answered by the saved model's own MLM head:
    the accuracy of comparing the two label words' logits, computed here by hand, with no training."""
    toy_demo_task(tmp_path)
    data_dir = tmp_path / "data"
    params = get_params("tiny", {"finetune.max_len": 64})
    tok = load_tokenizer(tiny_tokenizer)
    assert any(len(tok.encode(w, add_special_tokens=False).ids) > 1 for w in pv.LABEL_WORDS["demo"])
    assert pv.zero_shot_prompt(tiny_model_dir, tiny_tokenizer, "demo", params, data_dir=data_dir) is None
    monkeypatch.setitem(pv.LABEL_WORDS, "demo", (" the", " of"))
    score = pv.zero_shot_prompt(tiny_model_dir, tiny_tokenizer, "demo", params, data_dir=data_dir)
    model = model_defs.load_model(tiny_model_dir).eval()
    ids = lambda text: tok.encode(text, add_special_tokens=False).ids  # noqa: E731
    words = [ids(w)[0] for w in (" the", " of")]
    dev = pd.read_csv(data_dir / "demo-movie-reviews" / "dev.csv")
    right = 0
    for text, label in zip(dev["sentence"], dev["label"]):
        x = torch.tensor([[START_ID, *ids(" " + text), *ids(" It was"), MASK_ID, tok.token_to_id("."), END_ID]])
        logits = model.mlm_logits(x, x.eq(MASK_ID))[0, words]
        right += int(logits.argmax()) == label
    assert score == pytest.approx(100 * right / len(dev))
