"""Prompt-based fine-tuning (finetune.prompt): a classification task asked as a cloze and scored by
the MLM head at its label words. The tiny test tokenizer has 600 tokens, so the tests give the
tasks templates whose words are single tokens there."""

import dataclasses
import json

import pytest
import torch

import glue_utils
from glue_utils import TASKS, Prompt
from model_defs import DitBertForMLM, load_model, load_tokenizer, save_model
from params import END_ID, MASK_ID, PAD_ID, START_ID, FinetuneConfig

SINGLE = Prompt(("{a}", " It was", "[MASK]", "."), (" the", " of"))
PAIR = Prompt(("{a}", "?", "[MASK]", ",", "{b}"), (" the", " of"))
THREE = Prompt(("{a}", "?", "[MASK]", ",", "{b}"), (" the", " of", " and"))


def prompt_ft(out_dir, **kw) -> FinetuneConfig:
    base = dict(lr=1e-3, warmup_epochs=0.5, epochs=1, batch_size=8, seeds=[1], output_dir=str(out_dir),
                pooling="mean", pair_features=True, similarity_head=True, prompt=True)
    return FinetuneConfig(**{**base, **kw})


@pytest.fixture
def test_prompts(monkeypatch):
    for name, prompt in (("sst2", SINGLE), ("rte", PAIR), ("mnli", THREE)):
        monkeypatch.setitem(glue_utils.PROMPTS, name, prompt)


@pytest.fixture(scope="module")
def ditbert(tiny_model_dir, tiny_tokenizer):
    return glue_utils.ditbert_source(str(tiny_model_dir), str(tiny_tokenizer), label="prompt-test")


def word_ids(tokenizer_path, prompt: Prompt) -> list[int]:
    tok = load_tokenizer(tokenizer_path)
    return [tok.encode(w, add_special_tokens=False).ids[0] for w in prompt.words]


def cloze_batch(loaded, texts_b=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two short inputs in the task's cloze, collated: (input_ids, attention_mask)."""
    enc = loaded.encode(["the first text of the city", "another"], texts_b)
    batch = glue_utils.collate({**enc, "labels": [0, 1]}, [0, 1], PAD_ID, regression=False)
    return batch["input_ids"], batch["attention_mask"]


def test_every_classification_task_has_a_prompt_with_a_word_per_label():
    for name, task in TASKS.items():
        if name == "ax":
            continue
        prompt = glue_utils.task_prompt(task, FinetuneConfig(prompt=True))
        if task.is_regression:
            assert prompt is None  # STS-B keeps its head
        else:
            assert len(prompt.words) == task.num_labels and prompt.template.count("[MASK]") == 1
            assert ("{b}" in prompt.template) == (len(task.text_columns) == 2)
    assert glue_utils.task_prompt(TASKS["rte"], FinetuneConfig(prompt=False)) is None


def test_prompt_head_scores_are_the_pretrained_mlm_logits_of_the_label_words(ditbert, tiny_model_dir, tiny_tokenizer,
                                                                             tmp_path, test_prompts):
    mlm = load_model(tiny_model_dir).eval()
    mlm.cfg.mlm_masked_only = False
    for name, prompt in (("sst2", SINGLE), ("rte", PAIR)):
        loaded = glue_utils.load_for_task(ditbert, TASKS[name], prompt_ft(tmp_path), seed=1)
        model = loaded.model.eval()
        assert model.prompt_words == tuple(word_ids(tiny_tokenizer, prompt))
        ids, attention = cloze_batch(loaded, ["a short one", "and the last"] if name == "rte" else None)
        expected = mlm.mlm_logits(ids, ids.eq(MASK_ID), attention)[:, list(model.prompt_words)]
        assert torch.allclose(model(ids, attention), expected, atol=1e-5)


def test_an_untied_mlm_head_is_read_at_its_own_output_embedding(tiny_model_dir, tiny_tokenizer, tmp_path, test_prompts):
    torch.manual_seed(0)
    mlm = DitBertForMLM(dataclasses.replace(load_model(tiny_model_dir).cfg, tie_lm_head=False)).eval()
    assert not torch.equal(mlm.head.decoder.weight, mlm.encoder.tok_emb.weight)
    save_model(mlm, tmp_path / "untied")
    source = glue_utils.ditbert_source(str(tmp_path / "untied"), str(tiny_tokenizer), label="untied")
    loaded = glue_utils.load_for_task(source, TASKS["sst2"], prompt_ft(tmp_path), seed=1)
    model = loaded.model.eval()
    ids, attention = cloze_batch(loaded)
    mlm.cfg.mlm_masked_only = False
    expected = mlm.mlm_logits(ids, ids.eq(MASK_ID), attention)[:, list(model.prompt_words)]
    assert torch.allclose(model(ids, attention), expected, atol=1e-5)
    glue_utils.save_classifier(model, tmp_path / "saved", tiny_tokenizer)
    again = glue_utils.load_classifier(tmp_path / "saved").eval()
    assert torch.equal(again.head.output_embedding, mlm.head.decoder.weight)
    assert torch.equal(again(ids, attention), model(ids, attention))


def test_the_control_reads_its_own_fresh_mlm_head(ditbert, tiny_model_dir, tmp_path, test_prompts):
    ft = prompt_ft(tmp_path)
    pretrained = glue_utils.load_for_task(ditbert, TASKS["sst2"], ft, seed=1).model
    control_source = glue_utils.ditbert_source(ditbert.path, ditbert.tokenizer, "control", random_init=True)
    control = glue_utils.load_for_task(control_source, TASKS["sst2"], ft, seed=1).model
    torch.manual_seed(1)  # as load_for_task draws: the pretrained model is read, then the control made
    fresh = DitBertForMLM(load_model(tiny_model_dir).cfg)
    assert torch.equal(control.head.dense.weight, fresh.head.dense.weight)
    assert torch.equal(control.encoder.tok_emb.weight, fresh.encoder.tok_emb.weight)
    assert not torch.equal(pretrained.head.dense.weight, control.head.dense.weight)
    assert pretrained.prompt_words == control.prompt_words


def test_prompt_encoding_keeps_the_template_and_one_mask_within_max_len(ditbert, tiny_tokenizer, tmp_path,
                                                                      test_prompts):
    tok = load_tokenizer(tiny_tokenizer)
    piece = lambda text: tok.encode(text, add_special_tokens=False).ids  # noqa: E731
    single = glue_utils.load_for_task(ditbert, TASKS["sst2"], prompt_ft(tmp_path, max_len=20), seed=1)
    ids = single.encode(["the river " * 50])["input_ids"][0]
    tail = piece(" It was") + [MASK_ID] + [tok.token_to_id(".")] + [END_ID]  # "." straight after the answer
    assert len(ids) == 20 and ids[0] == START_ID and ids[-len(tail):] == tail
    short = single.encode(["the city"])["input_ids"][0]
    assert short == [START_ID, *piece("the city"), *tail]
    pair = glue_utils.load_for_task(ditbert, TASKS["rte"], prompt_ft(tmp_path, max_len=24), seed=1)
    ids = pair.encode(["the river " * 50], ["a city"])["input_ids"][0]
    b = piece("a city")
    assert len(ids) == 24 and ids.count(MASK_ID) == 1 and ids[-1 - len(b):-1] == b  # the short text is kept whole
    at = ids.index(MASK_ID)
    assert ids[at - 1:at + 2] == [tok.token_to_id("?"), MASK_ID, tok.token_to_id(",")]
    with pytest.raises(ValueError, match="leaves no room for text"):
        glue_utils.load_for_task(ditbert, TASKS["sst2"], prompt_ft(tmp_path, max_len=5), seed=1)


def test_literal_pieces_keep_their_spacing(tiny_tokenizer):
    tok = load_tokenizer(tiny_tokenizer)
    assert tok.encode(".", add_special_tokens=False).ids != [tok.token_to_id(".")]  # the tokenizer adds a space
    assert glue_utils.literal_ids(".", tok) == [tok.token_to_id(".")]
    assert glue_utils.literal_ids("?!", tok) == [tok.token_to_id("?"), tok.token_to_id("!")]
    assert glue_utils.literal_ids(" It was", tok) == tok.encode(" It was", add_special_tokens=False).ids
    with pytest.raises(ValueError, match="start it with a space"):
        glue_utils.literal_ids("It\u00e9", tok)


def test_a_label_word_of_several_tokens_is_an_error_naming_it(ditbert, tmp_path, monkeypatch):
    monkeypatch.setitem(glue_utils.PROMPTS, "sst2", Prompt(("{a}", "[MASK]"), (" the", " extraordinarily")))
    with pytest.raises(ValueError, match=r"' extraordinarily' is \d+ tokens in this tokenizer"):
        glue_utils.load_for_task(ditbert, TASKS["sst2"], prompt_ft(tmp_path), seed=1)


def test_an_input_without_its_mask_is_refused(ditbert, tmp_path, test_prompts):
    model = glue_utils.load_for_task(ditbert, TASKS["sst2"], prompt_ft(tmp_path), seed=1).model
    with pytest.raises(ValueError, match=r"exactly one \[MASK\]"):
        model(torch.tensor([[START_ID, 10, 11, END_ID]]))


def test_regression_and_other_model_kinds_keep_their_heads(ditbert, tmp_path, test_prompts):
    stsb = glue_utils.load_for_task(ditbert, TASKS["stsb"], prompt_ft(tmp_path), seed=1)
    assert stsb.model.similarity_head and not stsb.model.prompt_words and stsb.info["prompt"] is None
    off = glue_utils.load_for_task(ditbert, TASKS["sst2"], prompt_ft(tmp_path, prompt=False), seed=1)
    assert not off.model.prompt_words and MASK_ID not in off.encode(["the city"])["input_ids"][0]


def test_prompt_model_fine_tuned_saved_reloaded_and_its_mlm_head_carried_from_mnli(ditbert, glue_layout, tmp_path,
                                                                                  tiny_tokenizer, test_prompts):
    ft = prompt_ft(tmp_path, epochs=2)
    glue_utils.run_glue(ditbert, "rte,mnli", ft, glue_dir=glue_layout)
    run = tmp_path / "prompt-test-seed1"
    info = json.loads((run / "run_info.json").read_text())
    assert info["tasks"]["rte"]["prompt"] == {"template": list(PAIR.template), "words": list(PAIR.words)}
    best = run / "best_rte"
    assert json.loads((best / "config.json").read_text())["prompt_words"] == word_ids(tiny_tokenizer, PAIR)
    model, again = (glue_utils.load_classifier(best).eval() for _ in range(2))
    ids = torch.tensor([[START_ID, 10, 11, MASK_ID, 12, END_ID]])
    assert model.prompt_words == tuple(word_ids(tiny_tokenizer, PAIR)) and torch.equal(model(ids), again(ids))
    # from the MNLI model: RTE reads two of the words with the MNLI model's MLM head (dense, norm, bias)
    mnli = glue_utils.load_classifier(run / "best_mnli")
    source = glue_utils.from_mnli_source(ditbert, ft.output_dir).resolved(1)
    rte = glue_utils.load_for_task(source, TASKS["rte"], ft, seed=1).model
    assert rte.prompt_words == tuple(word_ids(tiny_tokenizer, PAIR)) and mnli.prompt_words != rte.prompt_words
    assert all(torch.equal(getattr(rte.head, p).weight, getattr(mnli.head, p).weight) for p in ("dense", "ln"))
    assert torch.equal(rte.head.bias, mnli.head.bias)
    plain = glue_utils.load_for_task(source, TASKS["rte"], prompt_ft(tmp_path, prompt=False), seed=1).model
    assert not plain.prompt_words and plain.head.in_features == 4 * 32  # the setting wins: a pair head
