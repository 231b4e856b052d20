"""Encoding, batching, DitBERT's heads and the fine-tuning loop: output schema, learning, seeds,
precision, MNLI-init head swaps, the environment table, and the Hugging Face path on the packaged MiniLM."""

import dataclasses
import json
import random
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import glue_heads
import glue_submission
import glue_models
import glue_utils
import params
import runtime
from glue_heads import HeadConfig
from glue_tasks import GLUE_TASKS, TASKS
from model_defs import load_model, pool_hidden
from params import DOC_ID, END_ID, PAD_ID, START_ID, FinetuneConfig
from test_aggregate import assert_every_run_rescores, sklearn_scipy_scores
from tokenization import load_tokenizer


def tiny_ft(out_dir, **kw) -> FinetuneConfig:
    base = dict(lr=1e-3, warmup_epochs=0.5, epochs=2, batch_size=8, seeds=[1], output_dir=str(out_dir))
    return FinetuneConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def ditbert(tiny_model_dir, tiny_tokenizer):
    return glue_models.ditbert_source(str(tiny_model_dir), str(tiny_tokenizer), label="ditbert-test")


# The test files of the original GLUE download: a header (CoLA's too), the example's index, its texts.
TEST_HEADERS = {
    "CoLA": "index\tsentence", "SST-2": "index\tsentence", "MRPC": "index\t#1 ID\t#2 ID\t#1 String\t#2 String",
    "STS-B": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2",
    "QQP": "id\tquestion1\tquestion2", "QNLI": "index\tquestion\tsentence", "RTE": "index\tsentence1\tsentence2",
    "WNLI": "index\tsentence1\tsentence2",
    "MNLI": "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
            "sentence2_parse\tsentence1\tsentence2",
}


def write_test_files(root, rows=None, seed=0):
    """Add test files in the original layout to a GLUE folder: `rows` maps folder -> row count
    (default 9 for each task); MNLI gets test_matched.tsv and test_mismatched.tsv."""
    rng = random.Random(seed)
    words = "the cat ran past an old house where we saw small red boats".split()
    for folder, n in (rows or {name: 9 for name in TEST_HEADERS}).items():
        header = TEST_HEADERS[folder].split("\t")
        lines = [TEST_HEADERS[folder]]
        for i in range(n):
            fields = [str(i)] + [" ".join(rng.choices(words, k=rng.randint(3, 8))) for _ in header[1:]]
            lines.append("\t".join(fields))
        names = ("test_matched.tsv", "test_mismatched.tsv") if folder == "MNLI" else ("test.tsv",)
        for name in names:
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def glue_with_tests(glue_layout, tmp_path_factory):
    """The GLUE folder with a test file for every task."""
    root = tmp_path_factory.mktemp("glue_with_tests")
    shutil.copytree(glue_layout, root, dirs_exist_ok=True)
    return write_test_files(root)


# --------------------------------------------------------------------------- encoding and batching


def test_ditbert_pair_encoding_truncates_the_longer_text_first(ditbert, tmp_path, tiny_tokenizer):
    loaded = glue_models.load_for_task(ditbert, TASKS["rte"], tiny_ft(tmp_path, max_len=16), seed=1)
    long_a = "the river ran through the old city and past the house " * 5
    short_b = "a good story"
    ids = loaded.encode([long_a], [short_b])["input_ids"][0]
    tok = load_tokenizer(tiny_tokenizer)
    b_ids = tok.encode(short_b, add_special_tokens=False).ids
    assert len(ids) == 16 and ids[0] == START_ID and ids[-1] == END_ID
    assert ids.count(DOC_ID) == 1 and ids[-1 - len(b_ids) : -1] == b_ids  # the short side is untouched
    single = loaded.encode(["a good story"])["input_ids"][0]
    assert single == [START_ID] + b_ids + [END_ID]


def test_truncate_pair_cuts_the_longer_text_first():
    a, b = list(range(10)), list(range(100, 103))
    assert glue_models.truncate_pair(a, b, 20) == (a, b)  # fits: untouched
    assert glue_models.truncate_pair(a, b, 8) == (a[:5], b)  # the short text is kept whole
    assert glue_models.truncate_pair(b, a, 8) == (b, a[:5])
    long_a, long_b = list(range(50)), list(range(100, 140))
    cut_a, cut_b = glue_models.truncate_pair(long_a, long_b, 11)
    assert (cut_a, cut_b) == (long_a[:6], long_b[:5])  # both long: about half each, from the ends


def test_a_very_long_pair_is_encoded_to_max_len(ditbert, tmp_path):
    loaded = glue_models.load_for_task(ditbert, TASKS["rte"], tiny_ft(tmp_path, max_len=40), seed=1)
    ids = loaded.encode(["premise " * 20000], ["hypothesis " * 3000])["input_ids"][0]
    assert len(ids) == 40 and ids.index(DOC_ID) in (19, 20)


def test_max_len_is_capped_at_the_model_positions(ditbert, tmp_path):
    loaded = glue_models.load_for_task(ditbert, TASKS["sst2"], tiny_ft(tmp_path, max_len=130), seed=1)
    ids = loaded.encode(["word " * 500])["input_ids"][0]
    assert len(ids) == loaded.info["max_len"] == 64  # tiny model: seq_len 62 + [START] + [END]


def test_train_batches_cover_every_example_once_with_little_padding():
    rng_lengths = np.random.default_rng(0).integers(3, 120, size=1000)
    batches = glue_utils.train_batches(rng_lengths, 16, np.random.default_rng(1), bucket=20)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000)) and max(len(b) for b in batches) == 16
    padded = sum(len(b) * rng_lengths[b].max() for b in batches)
    shuffled = np.random.default_rng(2).permutation(1000)
    padded_random = sum(16 * rng_lengths[shuffled[i : i + 16]].max() for i in range(0, 1000, 16))
    assert padded < 0.75 * padded_random
    again = glue_utils.train_batches(rng_lengths, 16, np.random.default_rng(1), bucket=20)
    assert all((a == b).all() for a, b in zip(batches, again))  # the seed fixes the order
    rng = np.random.default_rng(1)
    epoch1, epoch2 = glue_utils.train_batches(rng_lengths, 16, rng), glue_utils.train_batches(rng_lengths, 16, rng)
    assert not np.array_equal(np.concatenate(epoch1), np.concatenate(epoch2))  # a new order each epoch


def test_collate_pads_per_batch_and_masks_the_padding():
    enc = {"input_ids": [[1, 7, 2], [1, 7, 8, 9, 2], [1, 2]], "token_type_ids": [[0, 0, 0], [0, 0, 1, 1, 1], [0, 0]],
           "labels": [0, 1, 1]}
    batch = glue_utils.collate(enc, [0, 2], pad_id=PAD_ID, regression=False)
    assert batch["input_ids"].tolist() == [[1, 7, 2], [1, 2, PAD_ID]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["token_type_ids"].shape == (2, 3) and batch["labels"].tolist() == [0, 1]
    assert glue_utils.collate(enc, [1], 5, regression=True)["labels"].dtype == torch.float32


# --------------------------------------------------------------------------- the loop


def test_run_writes_the_results_schema_run_info_and_a_safetensors_model(ditbert, glue_with_tests, tmp_path):
    ft = tiny_ft(tmp_path, seeds=[1, 2])
    runs = glue_utils.run_glue(ditbert, "cola,mnli,stsb", ft, glue_dir=glue_with_tests)
    assert [r.name for r in runs] == ["ditbert-test-seed1", "ditbert-test-seed2"]
    run = runs[0]
    assert list(pd.read_csv(run / "results_cola.csv").columns) == ["epoch", "train_mcc", "validation_mcc"]
    assert list(pd.read_csv(run / "results_stsb.csv").columns) == [
        "epoch", "train_pearson", "train_spearman", "validation_pearson", "validation_spearman"]
    mnli = pd.read_csv(run / "results_mnli.csv")
    assert list(mnli.columns) == ["epoch", "train_accuracy", "validation_matched_accuracy",
                                  "validation_mismatched_accuracy"]
    assert mnli["epoch"].tolist() == [1, 2] and mnli.iloc[:, 1:].apply(lambda c: c.between(0, 1)).all().all()
    info = json.loads((run / "run_info.json").read_text())
    assert info["model"] == "ditbert-test" and info["seed"] == 1 and info["init"] == "pretrained"
    assert info["pretrain_tokens_seen"] == 12345 and info["model_source"] == ditbert.path
    assert info["tasks"]["cola"]["finetune"]["epochs"] == 2 and info["tasks"]["cola"]["finetune"]["lr"] == 1e-3
    assert (info["device"], info["dtype"]) == ("cpu", "float32")  # "auto" on a CPU
    assert set(info["tasks"]) == {"cola", "mnli", "stsb"} and info["tasks"]["mnli"]["validation_matched_examples"] == 12
    assert {entry["status"] for entry in info["tasks"].values()} == {"complete"}
    assert info["tasks"]["stsb"]["recipe"]["name"] == "preset" and info["tasks"]["mnli"]["epochs_done"] == 2
    best = run / "best_cola"
    assert sorted(p.name for p in best.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert not list(tmp_path.rglob("*.bin")) and not list(tmp_path.rglob("*.pt"))
    predictions = sorted(p.name for p in (run / "predictions").iterdir())
    expected = [f"{name}_{which}.tsv" for name in ("ax_test", "cola_test", "cola_validation", "mnli_test_matched",
                "mnli_test_mismatched", "mnli_validation_matched", "mnli_validation_mismatched", "stsb_test",
                "stsb_validation") for which in ("best", "final")]
    assert predictions == expected
    assert sorted(info["tasks"]["mnli"]["predictions"]) == [f"predictions/{n}" for n in expected if n.startswith(("mnli", "ax"))]
    ax = pd.read_csv(run / "predictions" / "ax_test_final.tsv", sep="\t", keep_default_na=False)
    assert list(ax.columns) == ["index", "prediction", "label"] and len(ax) == 12 and set(ax["label"]) == {""}
    assert set(ax["prediction"]) <= set(TASKS["mnli"].label_names)
    summary = glue_utils.summarize(runs)
    assert set(summary["metric"]) == {"validation_mcc", "validation_matched_accuracy",
                                      "validation_mismatched_accuracy", "validation_pearson", "validation_spearman"}


def test_saved_best_model_reloads_to_the_same_predictions(ditbert, glue_layout, tmp_path):
    ft = tiny_ft(tmp_path, epochs=1)
    glue_utils.run_glue(ditbert, "rte", ft, glue_dir=glue_layout)
    best = tmp_path / "ditbert-test-seed1" / "best_rte"
    model = glue_heads.load_classifier(best).eval()
    state = load_file(str(best / "model.safetensors"))
    assert torch.equal(model.head.weight, state["head.weight"]) and model.head_config.num_labels == 2
    again = glue_heads.load_classifier(best).eval()
    ids = torch.tensor([[START_ID, 10, 11, DOC_ID, 12, END_ID]])
    assert torch.equal(model(ids), again(ids))


def test_same_seed_same_results_other_seed_other_results(ditbert, glue_layout, tmp_path):
    for out in ("a", "b"):
        glue_utils.run_glue(ditbert, "sst2", tiny_ft(tmp_path / out, seeds=[3, 4], save_best=False), glue_dir=glue_layout)
    a3, b3 = (pd.read_csv(tmp_path / d / "ditbert-test-seed3" / "results_sst2.csv") for d in ("a", "b"))
    pd.testing.assert_frame_equal(a3, b3)
    assert not list((tmp_path / "a" / "ditbert-test-seed3").glob("best_*"))
    logits = {}
    for seed in (3, 4):
        loaded = glue_models.load_for_task(ditbert, TASKS["sst2"], tiny_ft(tmp_path), seed)
        logits[seed] = loaded.model.head.weight.detach().clone()
    assert not torch.equal(logits[3], logits[4])  # the head's initial weights follow the seed


def test_the_loop_learns_a_learnable_task(ditbert, tmp_path):
    """A custom task whose label is whether 'good' or 'bad' appears: fine-tuning must get it."""
    rng = random.Random(0)
    filler = "the a film story plot actor scene music long short old new".split()
    rows = []
    for i in range(240):
        word = ("bad", "good")[i % 2]
        words = [rng.choice(filler) for _ in range(3)]
        words.insert(rng.randrange(4), word)
        rows.append((" ".join(words), i % 2))
    folder = tmp_path / "goodbad"
    folder.mkdir()
    pd.DataFrame(rows[:200], columns=["sentence", "label"]).to_csv(folder / "train.csv", index=False)
    pd.DataFrame(rows[200:], columns=["sentence", "label"]).to_csv(folder / "dev.csv", index=False)
    ft = tiny_ft(tmp_path / "out", epochs=8, batch_size=16, lr=5e-3, warmup_epochs=0.5, dropout=0.0, save_best=False)
    glue_utils.run_glue(ditbert, str(folder), ft)
    results = pd.read_csv(tmp_path / "out" / "ditbert-test-seed1" / "results_goodbad.csv")
    assert results["validation_accuracy"].max() >= 0.9, results


def test_random_init_control_keeps_the_config_but_not_the_weights(tiny_model_dir, tiny_tokenizer, tmp_path):
    control = glue_models.ditbert_source(str(tiny_model_dir), str(tiny_tokenizer), "ditbert-test", random_init=True)
    assert control.label == "ditbert-test-random-init" and control.init == "random"
    loaded = glue_models.load_for_task(control, TASKS["rte"], tiny_ft(tmp_path), seed=1)
    pretrained = load_model(tiny_model_dir)
    assert loaded.model.cfg == pretrained.cfg and loaded.info["pretrain_tokens_seen"] == 0
    assert not torch.equal(loaded.model.encoder.tok_emb.weight, pretrained.encoder.tok_emb.weight)
    warm = glue_models.load_for_task(glue_models.ditbert_source(str(tiny_model_dir), str(tiny_tokenizer), "x"),
                                    TASKS["rte"], tiny_ft(tmp_path), seed=1)
    assert torch.equal(warm.model.encoder.tok_emb.weight, pretrained.encoder.tok_emb.weight)
    assert torch.equal(warm.model.head.weight, loaded.model.head.weight)  # only the encoder differs


def test_mnli_init_reuses_the_encoder_and_swaps_the_head_where_labels_differ(ditbert, glue_layout, tmp_path):
    ft = tiny_ft(tmp_path, epochs=1)
    glue_utils.run_glue(ditbert, "mnli", ft, glue_dir=glue_layout)
    mnli_dir = tmp_path / "ditbert-test-seed1" / "best_mnli"
    mnli_state = load_file(str(mnli_dir / "model.safetensors"))
    source = glue_models.from_mnli_source(ditbert, ft.output_dir)
    assert source.label == "ditbert-test-from-mnli" and source.init == "mnli"
    for name, n_labels in (("rte", 2), ("stsb", 1), ("mnli", 3)):
        model = glue_models.load_for_task(source.resolved(1), TASKS[name], ft, seed=1).model
        encoder = {k.removeprefix("encoder."): v for k, v in mnli_state.items() if k.startswith("encoder.")}
        assert all(torch.equal(v, encoder[k]) for k, v in model.encoder.state_dict().items())
        assert model.head.weight.shape == (n_labels, 32)
        assert torch.equal(model.head.weight, mnli_state["head.weight"]) == (n_labels == 3)
    glue_utils.run_glue(source, "rte", ft, glue_dir=glue_layout)
    info = json.loads((tmp_path / "ditbert-test-from-mnli-seed1" / "run_info.json").read_text())
    assert info["init"] == "mnli" and info["model_source"] == str(mnli_dir) and info["pretrain_tokens_seen"] == 12345


def test_mnli_init_without_an_mnli_model_is_a_clear_error(ditbert, glue_layout, tmp_path):
    source = glue_models.from_mnli_source(ditbert, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"best_mnli is not a fine-tuned DitBERT model"):
        glue_utils.run_glue(source, "rte", tiny_ft(tmp_path), glue_dir=glue_layout)


def test_bad_settings_are_caught_before_training(ditbert, glue_layout, tmp_path):
    with pytest.raises(KeyError, match="unknown task 'rtee'"):
        glue_utils.run_glue(ditbert, "rte,rtee", tiny_ft(tmp_path), glue_dir=glue_layout)
    assert not (tmp_path / "ditbert-test-seed1").exists()  # nothing ran
    with pytest.raises(ValueError, match="no labels to train on"):
        glue_utils.run_glue(ditbert, "ax", tiny_ft(tmp_path), glue_dir=glue_layout)
    with pytest.raises(ValueError, match="pooling must be 'cls' or 'mean', got 'max'"):
        glue_utils.run_glue(ditbert, "rte", tiny_ft(tmp_path, pooling="max"), glue_dir=glue_layout)
    with pytest.raises(ValueError, match="finetune.epochs=0 must be at least 1; finetune.lr=0.0 must be positive"):
        glue_utils.run_glue(ditbert, "rte", tiny_ft(tmp_path, epochs=0, lr=0.0), glue_dir=glue_layout)
    assert not (tmp_path / "ditbert-test-seed1").exists()  # nothing ran


def test_mean_pooling_ignores_padding(tiny_model_dir):
    model = glue_heads.DitBertClassifier(load_model(tiny_model_dir).encoder, HeadConfig(2, pooling="mean", dropout=0.0)).eval()
    ids = torch.tensor([[START_ID, 10, 11, END_ID]])
    padded = torch.tensor([[START_ID, 10, 11, END_ID, PAD_ID, PAD_ID]])
    out = model(ids, torch.ones_like(ids))
    out_padded = model(padded, (padded != PAD_ID).long())
    assert torch.allclose(out, out_padded, atol=1e-5)


def test_pool_texts_pools_each_text_of_a_pair_on_its_own():
    ids = torch.tensor([[START_ID, 10, 11, DOC_ID, 12, 13, 14, END_ID, PAD_ID]])
    mask = ids.ne(PAD_ID).long()
    h = torch.arange(9, dtype=torch.float).view(1, 9, 1).expand(1, 9, 2)  # each position's state is its index
    u, v = glue_heads.pool_texts(h, ids, mask, "mean")
    assert u.tolist() == [[1.0, 1.0]]  # [START] a a: positions 0-2
    assert v.tolist() == [[5.5, 5.5]]  # b b b [END]: positions 4-7; neither [DOC] nor padding
    u, v = glue_heads.pool_texts(h, ids, mask, "cls")
    assert u.tolist() == [[0.0, 0.0]] and v.tolist() == [[3.0, 3.0]]  # the [START] and [DOC] states


def test_pair_features_head_on_pair_tasks_only_and_saved_with_the_model(ditbert, glue_layout, tmp_path):
    ft = tiny_ft(tmp_path, epochs=1, pooling="mean", pair_features=True)
    assert glue_models.load_for_task(ditbert, TASKS["sst2"], ft, seed=1).model.head.in_features == 32
    model = glue_models.load_for_task(ditbert, TASKS["rte"], ft, seed=1).model.eval()
    assert model.head_config.pair_features and model.head.in_features == 4 * 32
    pair = torch.tensor([[START_ID, 10, 11, DOC_ID, 12, END_ID]])
    swapped = torch.tensor([[START_ID, 12, DOC_ID, 10, 11, END_ID]])
    u, v = glue_heads.pool_texts(model.encoder(pair, pair.ne(PAD_ID)), pair, pair.ne(PAD_ID), "mean")
    u, v = (torch.nn.functional.normalize(x, dim=-1) * 32**0.5 for x in (u, v))  # length sqrt(d_model)
    features = torch.cat([u, v, (u - v).abs(), u * v], dim=-1)
    assert torch.allclose(model(pair), model.head.scores(features), atol=1e-6)  # the head reads the four parts
    assert not torch.allclose(model(pair), model(swapped))
    glue_utils.run_glue(ditbert, "rte", ft, glue_dir=glue_layout)
    best = tmp_path / "ditbert-test-seed1" / "best_rte"
    assert json.loads((best / "config.json").read_text())["head"]["pair_features"] is True
    reloaded = glue_heads.load_classifier(best).eval()
    assert reloaded.head_config.pair_features and reloaded.head.in_features == 4 * 32
    source = glue_models.from_mnli_source(ditbert, ft.output_dir, mnli_dir=str(best))
    plain = glue_models.load_for_task(source.resolved(1), TASKS["mrpc"], tiny_ft(tmp_path), seed=1).model
    assert not plain.head_config.pair_features and plain.head.in_features == 32  # the setting wins: a fresh head
    kept = glue_models.load_for_task(source.resolved(1), TASKS["mrpc"], ft, seed=1).model
    assert torch.equal(kept.head.weight, reloaded.head.weight)  # same labels, same features: head kept


def test_stacked_texts_frame_each_text_as_a_text_of_its_own():
    ids = torch.tensor([[START_ID, 10, 11, 12, DOC_ID, 20, 21, END_ID, PAD_ID],
                        [START_ID, 13, DOC_ID, 22, 23, 24, 25, 26, END_ID],
                        [START_ID, 14, 15, END_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID]])  # no [DOC]: b is empty
    rows, mask = glue_heads.stacked_texts(ids, ids.ne(PAD_ID))
    assert rows.tolist() == [[START_ID, 10, 11, 12, END_ID, PAD_ID, PAD_ID],  # first texts, as wide as the longest text
                             [START_ID, 13, END_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID],
                             [START_ID, 14, 15, END_ID, PAD_ID, PAD_ID, PAD_ID],
                             [START_ID, 20, 21, END_ID, PAD_ID, PAD_ID, PAD_ID],  # then second texts
                             [START_ID, 22, 23, 24, 25, 26, END_ID],
                             [START_ID, END_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID]]
    assert torch.equal(mask.bool(), rows.ne(PAD_ID))
    a, a_len, b, b_len = glue_heads.pair_rows(ids, ids.ne(PAD_ID))  # the input's width: what a traced graph reads
    assert a.shape == b.shape == ids.shape and a_len.tolist() == [5, 3, 4] and b_len.tolist() == [4, 7, 2]
    assert torch.equal(torch.cat([a, b])[:, :7], rows) and (torch.cat([a, b])[:, 7:] == PAD_ID).all()


def test_separate_pair_encoding_reads_each_text_encoded_alone(ditbert, glue_layout, tmp_path):
    """With pair_encoding=separate the pair head and the similarity head read [START] a [END] and
    [START] b [END] encoded one by one, so neither text sees the other; joint encoding differs."""
    ft = tiny_ft(tmp_path, epochs=1, pooling="mean", pair_features=True, pair_encoding="separate")
    model = glue_models.load_for_task(ditbert, TASKS["rte"], ft, seed=1).model.eval()
    pair = torch.tensor([[START_ID, 10, 11, DOC_ID, 12, 13, 14, END_ID]])
    alone = [torch.tensor([[START_ID, *text, END_ID]]) for text in ([10, 11], [12, 13, 14])]
    pooled = [pool_hidden(model.encoder(x, x.ne(PAD_ID)), x.ne(PAD_ID), "mean") for x in alone]
    u, v = (torch.nn.functional.normalize(x, dim=-1) * 32**0.5 for x in pooled)
    assert torch.allclose(model(pair), model.head.scores(torch.cat([u, v, (u - v).abs(), u * v], dim=-1)), atol=1e-6)
    model.head_config = dataclasses.replace(model.head_config, pair_encoding="joint")
    assert not torch.allclose(model(pair), model.head.scores(torch.cat([u, v, (u - v).abs(), u * v], dim=-1)), atol=1e-4)

    sim = glue_models.load_for_task(ditbert, TASKS["stsb"], similarity_ft(tmp_path, pair_encoding="separate"), seed=1).model.eval()
    cosine = sum(torch.nn.functional.cosine_similarity(*(pool_hidden(layer(x), x.ne(PAD_ID), "mean") for x in alone))
                 for layer in (lambda x: sim.encoder(x, x.ne(PAD_ID)), sim.encoder.embed)) / 2
    assert torch.allclose(sim.features(pair, pair.ne(PAD_ID)), cosine, atol=1e-6)

    glue_utils.run_glue(ditbert, "rte", ft, glue_dir=glue_layout)
    assert glue_heads.load_classifier(tmp_path / "ditbert-test-seed1" / "best_rte").head_config.pair_encoding == "separate"
    with pytest.raises(ValueError, match="pair_encoding"):
        glue_utils.check_finetune_settings(dataclasses.replace(ft, pair_encoding="crossed"))


def test_pair_encoding_by_task_reads_similarity_pairs_apart_and_inference_pairs_together(ditbert, tmp_path):
    """by_task: MRPC, QQP and STS-B ask how alike two texts are and are encoded separately; MNLI, QNLI,
    RTE and WNLI ask whether one follows from the other and are encoded jointly."""
    separate = {name for name in GLUE_TASKS if glue_heads.task_pair_encoding("by_task", TASKS[name]) == "separate"}
    assert separate == {"mrpc", "qqp", "stsb"}
    assert glue_heads.task_pair_encoding("separate", TASKS["rte"]) == "separate"
    assert glue_heads.task_pair_encoding("joint", TASKS["stsb"]) == "joint"
    ft = tiny_ft(tmp_path, epochs=1, pooling="mean", pair_features=True, pair_encoding="by_task")
    glue_utils.check_finetune_settings(ft)
    rte = glue_models.load_for_task(ditbert, TASKS["rte"], ft, seed=1).model
    assert rte.head_config.pair_encoding == "joint"
    assert glue_models.load_for_task(ditbert, TASKS["mrpc"], ft, seed=1).model.head_config.pair_encoding == "separate"
    with pytest.raises(ValueError, match="'joint' or 'separate', got 'by_task'"):  # a classifier needs the task's choice
        HeadConfig(2, "mean", pair_encoding="by_task")
    assert params.get_params("tiny").finetune.pair_encoding == "by_task"  # the measured recipe


def similarity_ft(out_dir, **kw) -> FinetuneConfig:
    return tiny_ft(out_dir, pooling="mean", pair_features=True, similarity_head=True, **kw)


def test_encoder_embed_is_the_embedding_layer_the_blocks_read(tiny_model_dir):
    encoder = load_model(tiny_model_dir).encoder.eval()
    ids = torch.tensor([[START_ID, 10, 11, DOC_ID, 12, END_ID]])
    seen = []
    hook = encoder.ln_emb.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        encoder(ids)
    finally:
        hook.remove()
    assert torch.equal(encoder.embed(ids), seen[0])


def test_similarity_head_scores_the_mean_of_final_and_embedding_cosines(ditbert, tmp_path):
    ft = similarity_ft(tmp_path)
    assert isinstance(glue_models.load_for_task(ditbert, TASKS["rte"], ft, seed=1).model.head, torch.nn.Linear)
    assert glue_models.load_for_task(ditbert, TASKS["sst2"], ft, seed=1).model.head.in_features == 32
    model = glue_models.load_for_task(ditbert, TASKS["stsb"], ft, seed=1).model.eval()
    assert model.head_config.similarity_head and isinstance(model.head, glue_heads.SimilarityHead)
    with torch.no_grad():
        model.head.scale.fill_(2.0)
        model.head.bias.fill_(0.5)
    pair = torch.tensor([[START_ID, 10, 11, DOC_ID, 12, 13, END_ID], [START_ID, 14, DOC_ID, 14, 15, END_ID, PAD_ID]])
    mask = pair.ne(PAD_ID)
    cosines = [torch.nn.functional.cosine_similarity(*glue_heads.pool_texts(h, pair, mask, "mean"), dim=-1)
               for h in (model.encoder(pair, mask), model.encoder.embed(pair))]
    expected = 2.0 * (cosines[0] + cosines[1]) / 2 + 0.5
    assert not torch.allclose(cosines[0], cosines[1])  # two layers, two different cosines
    assert torch.allclose(model(pair, mask).squeeze(-1), expected, atol=1e-6)
    with pytest.raises(ValueError, match="regression"):
        model.new_head(dataclasses.replace(model.head_config, num_labels=3))
    model.head_config = dataclasses.replace(model.head_config, pooling="cls")  # final states at [START] and [DOC]; embeddings by the mean
    final = torch.nn.functional.cosine_similarity(*glue_heads.pool_texts(model.encoder(pair, mask), pair, mask, "cls"), dim=-1)
    assert torch.allclose(model(pair, mask).squeeze(-1), 2.0 * (final + cosines[1]) / 2 + 0.5, atol=1e-6)


def test_fit_similarity_head_finds_the_least_squares_line(ditbert, tmp_path):
    loaded = glue_models.load_for_task(ditbert, TASKS["stsb"], similarity_ft(tmp_path), seed=1)
    words = "the river ran past an old house where we found small red boats".split()
    rng = random.Random(0)
    texts = [" ".join(rng.choices(words, k=5)) for _ in range(40)]
    enc = loaded.encode(texts[:20], texts[20:])
    enc["labels"] = [0.0] * 20
    cosine = glue_utils.predict(loaded, enc, 8, True).squeeze(-1)  # a fresh head: scale 1, bias 0
    assert cosine.std() > 0.01
    enc["labels"] = (3.0 * cosine + 1.0).tolist()
    with torch.no_grad():
        loaded.model.head.scale.fill_(7.0)  # whatever the head held before is replaced
        loaded.model.head.bias.fill_(-2.0)
    scale, bias = glue_utils.fit_similarity(loaded, enc, 8)
    assert (scale, bias) == (pytest.approx(3.0, abs=1e-4), pytest.approx(1.0, abs=1e-4))
    assert loaded.model.head.scale.item() == pytest.approx(3.0, abs=1e-4)
    enc["labels"] = (5.0 - 2.0 * cosine).tolist()  # a falling line: the fit follows it
    assert glue_utils.fit_similarity(loaded, enc, 8) == (pytest.approx(-2.0, abs=1e-4), pytest.approx(5.0, abs=1e-4))


def test_similarity_head_fine_tuned_saved_and_reloaded(ditbert, glue_layout, tmp_path, capsys):
    ft = similarity_ft(tmp_path, epochs=1)
    glue_utils.run_glue(ditbert, "stsb,rte", ft, glue_dir=glue_layout)
    assert "similarity head fitted: score = " in capsys.readouterr().out
    best = tmp_path / "ditbert-test-seed1" / "best_stsb"
    assert json.loads((best / "config.json").read_text())["head"]["similarity_head"] is True
    saved = load_file(str(best / "model.safetensors"))
    reloaded = glue_heads.load_classifier(best)
    assert isinstance(reloaded.head, glue_heads.SimilarityHead)
    assert reloaded.head.scale.item() == saved["head.scale"].item() != 1.0  # fitted, then fine-tuned
    source = glue_models.from_mnli_source(ditbert, ft.output_dir, mnli_dir=str(tmp_path / "ditbert-test-seed1" / "best_rte"))
    model = glue_models.load_for_task(source.resolved(1), TASKS["stsb"], ft, seed=1).model
    assert isinstance(model.head, glue_heads.SimilarityHead)  # a two-label model starting STS-B gets the similarity head
    linear = glue_models.load_for_task(source.resolved(1), TASKS["stsb"], dataclasses.replace(ft, similarity_head=False), 1)
    assert linear.model.head.out_features == 1


# --------------------------------------------------------------------------- Hugging Face models


@pytest.mark.slow
def test_hf_path_on_the_packaged_minilm_and_its_mnli_head_swap(glue_layout, tmp_path):
    minilm = glue_models.hf_source("minilm-l6")
    assert minilm.label == "minilm-l6" and (glue_models.packaged_model_dir() / "config.json").is_file()
    ft = tiny_ft(tmp_path, epochs=1, lr=5e-5, max_train_examples=16, max_eval_examples=8)
    glue_utils.run_glue(minilm, "mnli", ft, glue_dir=glue_layout)
    run = tmp_path / "minilm-l6-seed1"
    assert list(pd.read_csv(run / "results_mnli.csv").columns) == TASKS["mnli"].column_names()
    info = json.loads((run / "run_info.json").read_text())
    assert info["kind"] == "hf" and info["model"] == "minilm-l6" and info["tasks"]["mnli"]["train_examples"] == 16
    assert info["tasks"]["mnli"]["validation_mismatched_examples"] == 8
    assert (run / "best_mnli" / "model.safetensors").is_file() and (run / "best_mnli" / "tokenizer.json").is_file()
    private = [p.name for p in (run / "best_mnli").iterdir() if not p.stat().st_mode & 0o044]
    assert not private, f"save_pretrained's files left readable by their owner alone: {private}"
    pair = glue_models.load_for_task(minilm, TASKS["rte"], ft, 1).encode(["a cat"], ["a dog"])
    assert pair["token_type_ids"][0] == [0, 0, 0, 0, 1, 1, 1]  # [CLS] a cat [SEP] a dog [SEP]

    source = glue_models.from_mnli_source(minilm, ft.output_dir).resolved(1)
    mnli_state = load_file(str(run / "best_mnli" / "model.safetensors"))
    model = glue_models.load_for_task(source, TASKS["stsb"], ft, seed=1).model
    assert model.classifier.out_features == 1
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(model.state_dict()[key], mnli_state[key])
    model3 = glue_models.load_for_task(source, TASKS["mnli"], ft, seed=1).model
    assert torch.equal(model3.classifier.weight, mnli_state["classifier.weight"])


def test_hf_path_fine_tunes_at_finetune_dropout_whatever_the_checkpoint_config_says(tmp_path):
    minilm = glue_models.hf_source("minilm-l6")
    for p in (0.0, 0.25):
        model = glue_models.load_for_task(minilm, TASKS["rte"], tiny_ft(tmp_path, dropout=p), seed=1).model
        rates = {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
        assert rates == {p}, rates  # embeddings, attention, feed-forward and the classifier


def test_hf_source_spec_forms(tmp_path):
    assert glue_models.hf_source("bert-base-uncased") == glue_models.ModelSource("hf", "bert-base-uncased", "bert-base-uncased")
    assert glue_models.hf_source("roberta=roberta-base").label == "roberta"
    assert glue_models.hf_source(f"mine={tmp_path}").path == str(tmp_path)
    assert glue_models.hf_source(str(tmp_path)).label == tmp_path.name
    assert glue_models.hf_source("minilm-l6").path == str(glue_models.packaged_model_dir())


def test_environment_table_maps_notebook_variables_onto_settings(monkeypatch):
    """GLUE_SEEDS and GLUE_OUTPUT_DIR set finetune.seeds and finetune.output_dir, after $DITBERT_SET and
    unless empty; the notebooks' own inputs are read through the table, which must name them."""
    monkeypatch.setenv("DITBERT_SET", "finetune.epochs=5;finetune.seeds=7")
    monkeypatch.setenv("GLUE_SEEDS", "1,2,3")
    monkeypatch.setenv("GLUE_OUTPUT_DIR", "elsewhere")
    settings = params.params_from_env()
    assert settings.finetune.seeds == [1, 2, 3] and settings.finetune.output_dir == "elsewhere"
    assert settings.finetune.epochs == 5
    monkeypatch.setenv("GLUE_SEEDS", "")
    assert params.params_from_env().finetune.seeds == [7]  # empty: the setting stays
    mapped = [setting.split(".") for setting, _, _ in params.ENVIRONMENT.values() if setting]
    assert mapped and all(hasattr(getattr(params.Params(), section), name) for section, name in mapped)
    monkeypatch.setenv("GLUE_TASKS", "rte")
    assert params.notebook_input("GLUE_TASKS", "all") == "rte"
    monkeypatch.delenv("GLUE_TASKS")
    assert params.notebook_input("GLUE_TASKS", "all") == "all"
    for name in ("GLUE_SEEDS", "NOT_IN_THE_TABLE"):  # a setting's variable, or one the table lacks
        with pytest.raises(KeyError, match=name):
            params.notebook_input(name)


def test_fine_tuning_runs_in_the_precision_it_is_given(ditbert, glue_layout, tmp_path):
    """The loop trains and evaluates under the given autocast dtype (bf16 on the CPU here) and
    records it; the notebooks pass runtime.Precision.choose(train.device, train.dtype)."""
    bf16 = runtime.Precision.choose("cpu", "bf16")
    glue_utils.run_glue(ditbert, "rte", tiny_ft(tmp_path, epochs=1, save_best=False), glue_dir=glue_layout,
                        precision=bf16)
    info = json.loads((tmp_path / "ditbert-test-seed1" / "run_info.json").read_text())
    assert (info["device"], info["dtype"]) == ("cpu", "bfloat16")
    loaded = glue_models.load_for_task(ditbert, TASKS["rte"], tiny_ft(tmp_path), seed=1)
    enc = loaded.encode(["a good story"] * 3, ["the river"] * 3)
    enc["labels"] = [0, 1, 0]
    fp32, half = (glue_utils.predict(loaded, enc, 2, False, p) for p in (glue_utils.CPU_FP32, bf16))
    assert fp32.dtype == half.dtype == torch.float32 and not torch.equal(fp32, half)  # bf16 matmuls round


def test_updates_train_every_weight_at_one_rate_with_warmup_then_decay(tiny_model_dir):
    """runtime.adamw and runtime.warmup_decay, as pretraining uses them: one learning rate for the
    whole model, weight decay on weight matrices only, linear warmup over warmup_epochs, then
    linear decay to 0 at the end of the last epoch."""
    model = glue_heads.DitBertClassifier(load_model(tiny_model_dir).encoder, HeadConfig(2))
    ft = FinetuneConfig(lr=1e-3, epochs=2, warmup_epochs=0.5)
    updates = glue_utils.Updates.build(model, ft, steps_per_epoch=10, precision=glue_utils.CPU_FP32)
    rate = {id(p): (g["initial_lr"], g["weight_decay"]) for g in updates.optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert rate[id(named["head.weight"])] == (1e-3, ft.weight_decay)
    assert rate[id(named["encoder.blocks.0.ffn.fc_in.weight"])] == (1e-3, ft.weight_decay)
    assert rate[id(named["encoder.blocks.0.ffn.fc_in.bias"])] == rate[id(named["encoder.ln_final.weight"])] == (1e-3, 0.0)
    assert len(rate) == len(named) and not updates.scaler.is_enabled()
    lrs = []
    for _ in range(20):
        lrs.append(updates.optimizer.param_groups[0]["lr"])
        updates.optimizer.step()
        updates.schedule.step()
    assert lrs[0] == pytest.approx(1e-3 / 5) and lrs[4] == pytest.approx(1e-3)  # 5 warmup steps
    assert lrs[5] == pytest.approx(1e-3) and lrs[19] == pytest.approx(1e-3 / 15)  # then 15 down to 0


def test_head_config_round_trips_through_save_and_load(tiny_model_dir, tiny_tokenizer, tmp_path):
    """Every head setting is stored in the saved classifier's config.json and rebuilt from it alone."""
    encoder = load_model(tiny_model_dir).encoder
    pair = torch.tensor([[START_ID, 10, 11, DOC_ID, 12, 13, END_ID]])
    for head in (HeadConfig(num_labels=1, pooling="mean", pair_features=True, similarity_head=True,
                            pair_encoding="separate", dropout=0.3),
                 HeadConfig(num_labels=3, pooling="cls", pair_features=False, pair_encoding="joint", dropout=0.0)):
        model = glue_heads.DitBertClassifier(encoder, head).eval()
        with torch.no_grad():
            next(model.head.parameters()).add_(0.5)  # not what a fresh head holds
        out = tmp_path / f"clf{head.num_labels}"
        glue_heads.save_classifier(model, out, tiny_tokenizer, {"task": "x"})
        config = json.loads((out / "config.json").read_text())
        assert config["head"] == dataclasses.asdict(head) and config["task"] == "x"
        again = glue_heads.load_classifier(out).eval()
        assert again.head_config == head and again.cfg == model.cfg
        assert torch.equal(again(pair), model(pair))
    with pytest.raises(ValueError, match="no head settings"):  # a pretrained model, not a classifier
        glue_heads.load_classifier(tiny_model_dir)


# --------------------------------------------------------------------------- predictions, run info, recipes


def test_dev_and_test_predictions_of_the_final_and_best_epochs_rescore_to_the_results(ditbert, glue_with_tests,
                                                                                     tmp_path):
    """Every validation score in results_<task>.csv, at the final and at the best epoch, is what
    scikit-learn and scipy compute from the prediction files; the test predictions carry the test
    file's index and come from the final model and from the best epoch's saved model."""
    ft = tiny_ft(tmp_path / "out", epochs=3, lr=3e-3)
    (run,) = glue_utils.run_glue(ditbert, "cola,mrpc,stsb,mnli", ft, glue_dir=glue_with_tests)
    info = json.loads((run / "run_info.json").read_text())
    compared = 0
    for name in ("cola", "mrpc", "stsb", "mnli"):
        task, results = TASKS[name], pd.read_csv(run / f"results_{name}.csv").set_index("epoch")
        for which, epoch in (("final", 3), ("best", info["tasks"][name]["best_epoch"])):
            for split in task.eval_splits:
                frame = pd.read_csv(run / "predictions" / f"{name}_{split}_{which}.tsv", sep="\t", keep_default_na=False)
                assert list(frame.columns) == ["index", "prediction", "label"] and frame["index"].tolist() == list(range(12))
                for metric, value in sklearn_scipy_scores(task, frame).items():
                    assert results.loc[epoch, f"{split}_{metric}"] == pytest.approx(value, abs=1e-6, nan_ok=True)
                    compared += 1
    assert compared == 2 * (1 + 2 + 2 + 2)
    import glue_results

    rescored = glue_results.rescore_run(run)
    assert len(rescored) == compared and (rescored["recorded"] - rescored["recomputed"]).abs().max() < 1e-6
    reviews = tmp_path / "reviews"  # a custom task, rescored from what run_info.json records of it
    reviews.mkdir()
    rows = [(f"a {('dull', 'fine', 'great')[i % 3]} film number {i}", ("bad", "good", "great")[i % 3]) for i in range(60)]
    pd.DataFrame(rows[:45], columns=["sentence", "label"]).to_csv(reviews / "train.csv", index=False)
    pd.DataFrame(rows[45:], columns=["sentence", "label"]).to_csv(reviews / "dev.csv", index=False)
    glue_utils.run_glue(ditbert, str(reviews), ft)
    glue_utils.run_glue(dataclasses.replace(ditbert, init="random", label="ditbert-test-random-init"), "stsb", ft,
                        glue_dir=glue_with_tests)
    assert_every_run_rescores(tmp_path / "out")  # what the test of the committed GLUE-Outputs checks

    test = pd.read_csv(glue_with_tests / "RTE" / "test.tsv", sep="\t")
    for name, split in (("stsb", "test"), ("mnli", "test_mismatched"), ("ax", "test")):
        final = pd.read_csv(run / "predictions" / f"{name}_{split}_final.tsv", sep="\t", keep_default_na=False)
        assert final["index"].tolist() == list(range(len(final))) and set(final["label"]) == {""}
    assert len(test) == 9
    best_dir = run / "best_mrpc"
    best_model = glue_models.from_mnli_source(ditbert, ft.output_dir, mnli_dir=str(best_dir)).resolved(1)
    loaded = glue_models.load_for_task(best_model, TASKS["mrpc"], ft, seed=1)
    tests = glue_utils.load_test_sets(TASKS["mrpc"], glue_with_tests, 0.01)
    again = glue_utils.predict_test_sets(loaded, tests, ft, glue_utils.CPU_FP32)[("mrpc", "test")][1]
    best = pd.read_csv(run / "predictions" / "mrpc_test_best.tsv", sep="\t", keep_default_na=False)
    assert best["prediction"].tolist() == again["prediction"].tolist()  # the best epoch's model


def test_run_info_keeps_each_tasks_settings(ditbert, glue_layout, tmp_path):
    """Tasks fine-tuned one by one into one run folder each keep their own settings."""
    glue_utils.run_glue(ditbert, "rte", tiny_ft(tmp_path, epochs=1, lr=1e-3, save_best=False), glue_dir=glue_layout)
    glue_utils.run_glue(ditbert, "wnli", tiny_ft(tmp_path, epochs=1, lr=2e-3, save_best=False), glue_dir=glue_layout)
    info = json.loads((tmp_path / "ditbert-test-seed1" / "run_info.json").read_text())
    assert info["tasks"]["rte"]["finetune"]["lr"] == 1e-3 and info["tasks"]["wnli"]["finetune"]["lr"] == 2e-3
    assert "finetune" not in info  # no folder-wide block that the last task overwrites


def test_recipes_apply_the_authors_settings_unless_set_explicitly(tmp_path):
    ft = FinetuneConfig(lr=3e-4, weight_decay=0.1, epochs=3, warmup_epochs=0.2, batch_size=16)
    bert, record = glue_models.apply_recipe(ft, "bert")
    assert (bert.lr, bert.weight_decay, bert.epochs, bert.warmup_epochs, bert.batch_size) == (5e-5, 0.01, 3, 0.3, 16)
    assert record["name"] == record["label"] == "bert" and record["set_explicitly"] == []
    roberta, record = glue_models.apply_recipe(ft, "roberta", explicit=["finetune.lr", "finetune.epochs"])
    assert (roberta.lr, roberta.weight_decay, roberta.epochs, roberta.warmup_epochs) == (3e-4, 0.1, 3, 0.18)
    assert record["label"] == "roberta (finetune.lr, finetune.epochs set)"
    assert glue_models.apply_recipe(ft, "preset") == (ft, {"name": "preset", "label": "preset"})
    with pytest.raises(ValueError, match="unknown fine-tuning recipe 'xlnet'"):
        glue_models.apply_recipe(ft, "xlnet")
    for model_type, recipe in (("roberta", "roberta"), ("bert", "bert"), ("electra", "bert"), ("ditbert", "preset")):
        folder = tmp_path / model_type
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
        assert glue_models.recipe_for(glue_models.hf_source(str(folder))) == recipe
    assert glue_models.recipe_for(glue_models.ModelSource("ditbert", "x", "x")) == "preset"


@pytest.mark.slow
def test_a_baseline_is_fine_tuned_at_its_recipe_and_records_it(glue_layout, tmp_path):
    minilm = glue_models.hf_source("minilm-l6")
    ft = tiny_ft(tmp_path, epochs=1, lr=1e-3, weight_decay=0.3, max_train_examples=16, max_eval_examples=8,
                 save_best=False)
    glue_utils.run_glue(minilm, "rte", ft, glue_dir=glue_layout, recipe="auto", explicit=["finetune.epochs"])
    entry = json.loads((tmp_path / "minilm-l6-seed1" / "run_info.json").read_text())["tasks"]["rte"]
    assert entry["recipe"]["label"] == "bert (finetune.epochs set)"
    assert (entry["finetune"]["lr"], entry["finetune"]["weight_decay"], entry["finetune"]["epochs"]) == (5e-5, 0.01, 1)
    assert entry["finetune"]["warmup_epochs"] == pytest.approx(0.1)


def test_fine_tuning_writes_the_files_a_glue_submission_needs(ditbert, glue_layout, tmp_path):
    """WNLI with a test file of the official size: the run's test predictions become WNLI.tsv of
    the submission zip, with the official row count and the server's labels."""
    root = tmp_path / "glue"
    shutil.copytree(glue_layout / "WNLI", root / "WNLI")
    write_test_files(root, {"WNLI": glue_submission.BY_NAME["WNLI.tsv"].rows})
    glue_utils.run_glue(ditbert, "wnli", tiny_ft(tmp_path / "out", epochs=1, save_best=False), glue_dir=root)
    out = tmp_path / "submission.zip"
    assert glue_submission.main(["--model", "ditbert-test", "--outputs", str(tmp_path / "out"), "--out", str(out)]) == 0
    tables = glue_submission.read_zip(out)
    assert list(tables) == ["WNLI.tsv"] and len(tables["WNLI.tsv"]) == 146
    assert set(tables["WNLI.tsv"]["prediction"]) <= {0, 1} and glue_submission.check_tables(tables) == []
