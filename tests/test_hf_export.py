"""The Hugging Face export: same function as the core model, loadable without this repository."""

import json
import subprocess
import sys
import textwrap
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import load_file

import hf_ditbert
import hf_export
from conftest import clean_environment
from corpus import embedded_corpus_file
from model_defs import DitBertForMLM, pool_hidden, save_model
from params import DOC_ID, END_ID, MASK_ID, PAD_ID, START_ID, ModelConfig
from tokenization import load_tokenizer, train_tokenizer
from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer, pipeline

VOCAB = 600
SENTENCES = ["The river flows into the sea.", "A small town in the north of England.", "It was built in 1850."]


def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Random values everywhere, LayerNorms and biases included, so a dropped or misplaced
    parameter changes the output instead of hiding behind a unit weight or a zero bias."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            centre = 1.0 if ".ln" in f".{name}" and name.endswith("weight") else 0.0  # LayerNorm gains near 1
            p.copy_(centre + 0.3 * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    """A small tokenizer learned from the first articles of the embedded Wikipedia corpus."""
    folder = tmp_path_factory.mktemp("tok")
    corpus = embedded_corpus_file(tmp_path_factory.mktemp("data"))
    lines = corpus.read_text(encoding="utf-8").splitlines()[:300]
    small = folder / "corpus.txt"
    small.write_text("\n".join(lines) + "\n", encoding="utf-8")
    train_tokenizer([str(small)], VOCAB, folder / "tokenizer.json")
    return folder / "tokenizer.json"


def make_core(tie: bool = True, seed: int = 0, vocab: int = VOCAB, position: str = "learned") -> DitBertForMLM:
    cfg = ModelConfig(vocab_size=vocab, seq_len=30, n_layers=2, d_model=32, n_heads=2, d_ff=64, tie_lm_head=tie,
                      position=position)
    model = DitBertForMLM(cfg)
    randomize(model, seed)
    return model.eval()


@pytest.fixture(scope="module", params=["learned", "alibi"])
def core(request):
    """The exported model, with each position scheme (ALiBi has no table and its own code)."""
    return make_core(position=request.param)


@pytest.fixture(scope="module")
def export_dir(core, tokenizer_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    save_model(core, root / "final", {"steps": 500, "tokens_seen": 2_080_000})
    glue = root / "GLUE-aggregated-results.csv"
    glue.write_text("model,cola_best,cola_final_mean,sst2_final_mean\nditbert,41.5,40.12,\nbert-base,55.1,54.3,92.7\n")
    return hf_export.export(root / "final", tokenizer_path, root / "hf", glue)


def batch_ids(tokenizer_path) -> tuple[torch.Tensor, torch.Tensor]:
    """A right-padded batch of real sentences (ids, attention mask) from the raw tokenizer."""
    tok = load_tokenizer(tokenizer_path)
    rows = [enc.ids for enc in tok.encode_batch(SENTENCES)]
    width = max(map(len, rows))
    ids = torch.tensor([r + [PAD_ID] * (width - len(r)) for r in rows])
    return ids, ids.ne(PAD_ID).long()


def core_logits(core: DitBertForMLM, ids, mask) -> torch.Tensor:
    with torch.no_grad():
        return core.head(core.encoder(ids, mask))


# --------------------------------------------------------------------------- the exported directory


def test_export_writes_a_complete_directory(export_dir):
    names = {p.name for p in export_dir.iterdir()}
    expected = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                "modeling_ditbert.py", "configuration_ditbert.py", "README.md"}
    assert expected <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names), "weights must be safetensors only"
    config = json.loads((export_dir / "config.json").read_text())
    assert config["model_type"] == "ditbert"
    auto_map = config["auto_map"]
    assert auto_map["AutoModelForMaskedLM"] == "modeling_ditbert.DitBertForMaskedLM"
    assert auto_map["AutoModelForSequenceClassification"] == "modeling_ditbert.DitBertForSequenceClassification"
    assert (config["n_layers"], config["d_model"], config["vocab_size"]) == (2, 32, VOCAB)
    assert not list(export_dir.parent.glob(".hf.*")), "the staging directory was left behind"
    tok_config = json.loads((export_dir / "tokenizer_config.json").read_text())
    assert tok_config["tokenizer_class"] == "PreTrainedTokenizerFast", "transformers 4.x cannot load other names"
    assert tok_config["additional_special_tokens"] == ["[DOC]"]


def test_exported_weights_are_the_core_weights(core, export_dir):
    state = load_file(export_dir / "model.safetensors")
    assert torch.equal(state["ditbert.encoder.tok_emb.weight"], core.encoder.tok_emb.weight)
    assert torch.equal(state["ditbert.encoder.blocks.1.ffn.fc_out.bias"], core.encoder.blocks[1].ffn.fc_out.bias)
    assert torch.equal(state["head.ln.weight"], core.head.ln.weight)


def test_model_card_reports_training_and_glue(export_dir):
    card = (export_dir / "README.md").read_text()
    assert "| optimizer steps | 500 |" in card
    assert "| tokens seen | 2,080,000 |" in card
    assert "| model | cola | sst2 |" in card, "GLUE table should show the final-mean columns"
    assert "| ditbert | 40.12 | – |" in card
    assert "trust_remote_code=True" in card


# --------------------------------------------------------------------------- parity with the core model


def test_masked_lm_logits_equal_the_core_model(core, export_dir, tokenizer_path):
    model = AutoModelForMaskedLM.from_pretrained(export_dir)
    assert isinstance(model, hf_ditbert.DitBertForMaskedLM)
    assert model.head.decoder.weight is model.ditbert.encoder.tok_emb.weight, "tied head came back untied"
    ids, mask = batch_ids(tokenizer_path)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    assert logits.shape == (len(SENTENCES), ids.shape[1], VOCAB)
    torch.testing.assert_close(logits, core_logits(core, ids, mask), rtol=1e-5, atol=1e-5)


def test_untied_head_survives_the_export(tokenizer_path, tmp_path):
    core = make_core(tie=False, seed=3)
    assert not torch.equal(core.head.decoder.weight, core.encoder.tok_emb.weight)
    save_model(core, tmp_path / "final")
    out = hf_export.export(tmp_path / "final", tokenizer_path, tmp_path / "hf")
    model = AutoModelForMaskedLM.from_pretrained(out)
    assert model.head.decoder.weight is not model.ditbert.encoder.tok_emb.weight
    ids, mask = batch_ids(tokenizer_path)
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask).logits, core_logits(core, ids, mask), rtol=1e-5, atol=1e-5)


def test_export_from_a_training_checkpoint_via_the_command_line(tokenizer_path, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a folder without GLUE-aggregated-results.csv
    core = make_core(seed=5)
    params = {"preset": "tiny", "model": asdict(core.cfg), "data": {"corpus": []}}
    state = {f"_orig_mod.{k}": v for k, v in core.state_dict().items()}  # as a compiled model saves it
    torch.save({"model": state, "params": params, "step": 300, "tokens_seen": 1_248_000}, tmp_path / "checkpoint.pt")
    hf_export.main(["--model", str(tmp_path / "checkpoint.pt"), "--tokenizer", str(tokenizer_path),
                     "--out", str(tmp_path / "hf")])
    assert "exported to" in capsys.readouterr().out
    model = AutoModelForMaskedLM.from_pretrained(tmp_path / "hf")
    ids, mask = batch_ids(tokenizer_path)
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask).logits, core_logits(core, ids, mask), rtol=1e-5, atol=1e-5)
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "| optimizer steps | 300 |" in card and "| tokens seen | 1,248,000 |" in card
    assert "English Wikipedia" in card
    assert "## GLUE" not in card, "no GLUE table without a results file"


def test_export_refuses_a_tokenizer_larger_than_the_model(core, tokenizer_path, tmp_path):
    save_model(make_core(vocab=100), tmp_path / "final")  # trained with another, smaller vocabulary
    with pytest.raises(ValueError, match="not the tokenizer this model was trained with"):
        hf_export.export(tmp_path / "final", tokenizer_path, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_bare_model_returns_the_encoder_states(core, export_dir, tokenizer_path):
    model = AutoModel.from_pretrained(export_dir)
    assert isinstance(model, hf_ditbert.DitBertModel)
    ids, mask = batch_ids(tokenizer_path)
    with torch.no_grad():
        hidden = model(ids, mask).last_hidden_state
        torch.testing.assert_close(hidden, core.encoder(ids, mask), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- tokenizer


def test_tokenizer_maps_special_tokens_and_the_pair_template(core, export_dir, tokenizer_path):
    tok = AutoTokenizer.from_pretrained(export_dir)
    assert (tok.pad_token_id, tok.cls_token_id, tok.bos_token_id) == (PAD_ID, START_ID, START_ID)
    assert (tok.sep_token_id, tok.eos_token_id, tok.mask_token_id) == (END_ID, END_ID, MASK_ID)
    raw = load_tokenizer(tokenizer_path)
    a, b = SENTENCES[0], SENTENCES[1]
    a_ids = raw.encode(a, add_special_tokens=False).ids
    b_ids = raw.encode(b, add_special_tokens=False).ids
    assert tok(a, b)["input_ids"] == [START_ID, *a_ids, DOC_ID, *b_ids, END_ID]
    assert tok(a)["input_ids"] == [START_ID, *a_ids, END_ID]
    assert "token_type_ids" not in tok(a, b)
    assert DOC_ID in tok.all_special_ids
    assert tok.decode(tok(a, b)["input_ids"], skip_special_tokens=True) == f"{a} {b}"
    assert tok.model_max_length == 32 if core.cfg.position == "learned" else tok.model_max_length > 10**6


def test_mask_token_takes_the_space_before_it(export_dir):
    tok = AutoTokenizer.from_pretrained(export_dir)
    tokens = tok.convert_ids_to_tokens(tok("It was built in [MASK].")["input_ids"])
    assert tokens[tokens.index("[MASK]") - 1] == "Ġin", tokens


# --------------------------------------------------------------------------- pipeline and fine-tuning


def test_fill_mask_pipeline_fills_the_mask(core, export_dir):
    fill = pipeline("fill-mask", model=str(export_dir))
    text = "The river flows into the [MASK]."
    out = fill(text, top_k=3)
    assert len(out) == 3
    assert all(set(o) >= {"score", "token", "token_str", "sequence"} for o in out)
    assert all("[MASK]" not in o["sequence"] and o["sequence"].startswith("The river flows into the") for o in out)
    assert [o["score"] for o in out] == sorted((o["score"] for o in out), reverse=True)
    ids = fill.tokenizer(text, return_tensors="pt")["input_ids"]
    at_mask = core_logits(core, ids, None)[0, ids[0].tolist().index(MASK_ID)]
    assert out[0]["token"] == int(at_mask.argmax()), "the pipeline's best guess is not the core model's"


@pytest.mark.parametrize("num_labels", [3, 1])
def test_sequence_classification_through_the_auto_class(core, export_dir, num_labels, tmp_path):
    model = AutoModelForSequenceClassification.from_pretrained(export_dir, num_labels=num_labels)
    assert isinstance(model, hf_ditbert.DitBertForSequenceClassification)
    assert model.classifier.weight.shape == (num_labels, 32)
    assert torch.equal(model.ditbert.encoder.blocks[0].attn.qkv.weight, core.encoder.blocks[0].attn.qkv.weight)
    tok = AutoTokenizer.from_pretrained(export_dir)
    batch = tok(SENTENCES[:2], SENTENCES[1:], padding=True, truncation=True, max_length=32, return_tensors="pt")
    assert batch["input_ids"].shape[1] == 32, "pairs longer than the model should be truncated to fit"
    labels = torch.tensor([0, 2]) if num_labels == 3 else torch.tensor([0.5, 3.0])
    out = model(**batch, labels=labels)
    assert out.logits.shape == (2, num_labels)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert model.config.problem_type == ("single_label_classification" if num_labels == 3 else "regression")
    out.loss.backward()
    assert model.classifier.weight.grad.abs().sum() > 0
    assert model.ditbert.encoder.tok_emb.weight.grad.abs().sum() > 0

    model.eval()
    model.save_pretrained(tmp_path / "clf")
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "clf").eval()
    assert again.config.num_labels == num_labels
    saved, loaded = model.state_dict(), again.state_dict()
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved), "weights changed"
    with torch.no_grad():  # same weights; CPU kernels may order a sum differently from call to call
        torch.testing.assert_close(again(**batch).logits, model(**batch).logits, rtol=0, atol=1e-6)


def test_mean_pooling_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    pooled = pool_hidden(hidden, mask, "mean")
    assert torch.equal(pooled, torch.tensor([[2.0, 3.0]]))
    assert torch.equal(pool_hidden(hidden, mask, "cls"), torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="pooling"):
        hf_ditbert.DitBertConfig(pooling="max")


# --------------------------------------------------------------------------- without this repository

CLEAN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from safetensors.torch import save_file
    try:
        import model_defs
    except ImportError:
        repo_importable = False
    else:
        repo_importable = True
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer, pipeline

    export_dir, ids_json, out_path = sys.argv[1:]
    ids, mask = (torch.tensor(x) for x in json.loads(ids_json))
    mlm = AutoModelForMaskedLM.from_pretrained(export_dir, trust_remote_code=True).eval()
    with torch.no_grad():
        logits = mlm(input_ids=ids, attention_mask=mask).logits
    tok = AutoTokenizer.from_pretrained(export_dir, trust_remote_code=True)
    clf = AutoModelForSequenceClassification.from_pretrained(export_dir, num_labels=2, trust_remote_code=True)
    batch = tok(["a first text", "more"], ["the second one", "text"], padding=True, return_tensors="pt")
    loss = clf(**batch, labels=torch.tensor([0, 1])).loss
    fill = pipeline("fill-mask", model=export_dir, trust_remote_code=True)
    filled = fill("The river flows into the [MASK].", top_k=2)
    save_file({"logits": logits.contiguous()}, out_path)
    print(json.dumps({
        "repo_importable": repo_importable,
        "mlm_module": type(mlm).__module__,
        "pair_ids": tok("a first text", "the second one")["input_ids"],
        "single_ids": tok("a first text")["input_ids"],
        "clf_logits_shape": list(clf(**batch).logits.shape),
        "loss_finite": bool(torch.isfinite(loss)),
        "filled": [f["sequence"] for f in filled],
    }))
    """
)


def test_export_loads_without_the_repository(core, export_dir, tokenizer_path, tmp_path):
    ids, mask = batch_ids(tokenizer_path)
    env, workdir = clean_environment(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", CLEAN_SCRIPT, str(export_dir), json.dumps([ids.tolist(), mask.tolist()]),
         str(tmp_path / "logits.safetensors")],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["repo_importable"] is False, "the clean process could import the project"
    assert report["mlm_module"].startswith("transformers_modules"), "not loaded from the shipped code"
    torch.testing.assert_close(load_file(tmp_path / "logits.safetensors")["logits"], core_logits(core, ids, mask),
                               rtol=1e-5, atol=1e-5)
    raw = load_tokenizer(tokenizer_path)
    a_ids = raw.encode("a first text", add_special_tokens=False).ids
    b_ids = raw.encode("the second one", add_special_tokens=False).ids
    assert report["pair_ids"] == [START_ID, *a_ids, DOC_ID, *b_ids, END_ID]
    assert report["single_ids"] == [START_ID, *a_ids, END_ID]
    assert report["clf_logits_shape"] == [2, 2] and report["loss_finite"]
    assert len(report["filled"]) == 2 and all("[MASK]" not in s for s in report["filled"])


def test_shipped_code_is_generated_from_the_repository_source(export_dir):
    import inspect

    import model_defs

    shipped = (export_dir / "modeling_ditbert.py").read_text()
    for obj in (model_defs.DitBertEncoder, model_defs.Block, model_defs.MLMHead, hf_ditbert.DitBertForMaskedLM):
        assert inspect.getsource(obj) in shipped, f"{obj.__name__} differs from the repository's"
    assert "import model_defs" not in shipped and "from model_defs" not in shipped
    assert inspect.getsource(hf_ditbert.DitBertConfig) in (export_dir / "configuration_ditbert.py").read_text()


def test_glue_hf_path_takes_an_exported_ditbert(export_dir, core, tokenizer_path):
    """The Hugging Face GLUE notebooks accept the exported folder like any model directory,
    encoding pairs as DitBERT was pretrained, without running code from the folder."""
    import glue_tasks
    import glue_models
    from params import DOC_ID, END_ID, START_ID, get_params

    loaded = glue_models.load_for_task(glue_models.hf_source(str(export_dir)), glue_tasks.get_task("rte"),
                                      get_params("tiny").finetune, seed=1)
    ids = loaded.encode(["The river flows into the sea."], ["It was built in 1850."])["input_ids"][0]
    assert ids[0] == START_ID and ids[-1] == END_ID and ids.count(DOC_ID) == 1
    assert isinstance(loaded.model, hf_ditbert.DitBertForSequenceClassification)
    # the task reaches the config, where the recipe's pair head is decided (hf_ditbert.pair_recipe)
    assert (loaded.model.config.finetuning_task, loaded.model.config.text_pairs) == ("rte", True)
    single = glue_models.load_for_task(glue_models.hf_source(str(export_dir)), glue_tasks.get_task("sst2"),
                                       get_params("tiny").finetune, seed=1)
    assert (single.model.config.finetuning_task, single.model.config.text_pairs) == ("sst2", False)
    with torch.no_grad():
        hidden = loaded.model.ditbert(torch.tensor([ids])).last_hidden_state
        assert torch.allclose(hidden, core.encoder(torch.tensor([ids])), atol=1e-5), "the pretrained encoder was not loaded"
