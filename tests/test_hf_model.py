"""An exported DitBERT as a transformers user meets it: the standard forward arguments, the fine-tuning
recipe in its config, inputs longer than pretraining, the task heads, the tokenizer after a special
token, the model card and the files' modes -- each checked in a process that cannot import this
repository, and the `Trainer` fine-tuning the export for a few steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

import hf_export  # importing it imports hf_ditbert, which registers the Auto classes
from conftest import clean_environment
from corpus import embedded_corpus_file
from glue_heads import DitBertClassifier, HeadConfig
from model_defs import DitBertForMLM, save_model
from params import END_ID, MASK_ID, START_ID, ModelConfig, get_params
from tokenization import load_tokenizer, train_tokenizer

VOCAB = 600
SEQ_LEN = 30  # 32 positions with [START] and [END]
VAL_PPL = 161.18895569810510


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    """A small tokenizer learned by the project's own trainer from 300 Wikipedia lead sections."""
    folder = tmp_path_factory.mktemp("tok")
    lines = embedded_corpus_file(tmp_path_factory.mktemp("data")).read_text(encoding="utf-8").splitlines()[:300]
    (folder / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    train_tokenizer([str(folder / "corpus.txt")], VOCAB, folder / "tokenizer.json")
    return folder / "tokenizer.json"


@pytest.fixture(scope="module")
def old_tokenizer_path(tokenizer_path, tmp_path_factory):
    """The same tokenizer as the project wrote it before: a space before every piece of a text."""
    spec = json.loads(tokenizer_path.read_text(encoding="utf-8"))
    spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        {"type": "Digits", "individual_digits": True}]}
    path = tmp_path_factory.mktemp("old-tok") / "tokenizer.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


def make_core(position: str, seed: int = 0) -> DitBertForMLM:
    """A 2 x 32 model with random values everywhere (LayerNorms and biases too)."""
    cfg = ModelConfig(vocab_size=VOCAB, seq_len=SEQ_LEN, n_layers=2, d_model=32, n_heads=2, d_ff=64, position=position)
    model = DitBertForMLM(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            centre = 1.0 if ".ln" in f".{name}" and name.endswith("weight") else 0.0
            p.copy_(centre + 0.3 * torch.randn(p.shape, generator=g))
    return model.eval()


def training_record(core: DitBertForMLM) -> dict:
    """What pretraining saves beside a `tiny` model: its settings, steps, tokens and perplexities."""
    run = get_params("tiny")
    run.model = core.cfg
    return {"preset": "tiny", "steps": 40, "tokens_seen": 166_400, "val_ppl": VAL_PPL, "unigram_ppl": 910.6091,
            "params": run.to_dict()}


def write_log(folder, steps: int = 40) -> None:
    rows = ["step,loss,perplexity,lr,tokens_seen,elapsed_s,val_perplexity"]
    rows += [f"{s},5.0,150.0,0.001,{s * 4160},{s * 1.5},{'' if s % 20 else 1000.0 / s}" for s in range(10, steps + 1, 10)]
    (folder / "log.csv").write_text("\n".join(rows) + "\n")


def export_run(position: str, tokenizer, tmp_path_factory):
    """(core model, export folder), exported under umask 022 from a run folder holding the training log,
    with the working directory's results table beside it (which the card must not take)."""
    core = make_core(position)
    root = tmp_path_factory.mktemp(f"run-{position}")
    save_model(core, root / "final", training_record(core))
    write_log(root)
    (root / "GLUE-aggregated-results.csv").write_text("model,cola_final_mean\nsomeone-else,55.0\n")
    cwd, mask = os.getcwd(), os.umask(0o022)
    try:
        os.chdir(root)
        out = hf_export.export(root / "final", tokenizer, root / "hf")
    finally:
        os.chdir(cwd)
        os.umask(mask)
    return core, out


@pytest.fixture(scope="module", params=["alibi", "learned"])
def exported(request, old_tokenizer_path, tmp_path_factory):
    """A model of each position scheme, exported with a tokenizer as the project wrote them before."""
    return export_run(request.param, old_tokenizer_path, tmp_path_factory)


@pytest.fixture(scope="module")
def alibi_export(tokenizer_path, tmp_path_factory):
    """A model as `tiny` trains it (ALiBi), exported with the project's tokenizer."""
    return export_run("alibi", tokenizer_path, tmp_path_factory)


# --------------------------------------------------------------------------- a clean process

PROBE = textwrap.dedent(
    """
    import json, os, stat, sys
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file
    try:
        import model_defs
    except ImportError:
        repo_importable = False
    else:
        repo_importable = True
    from transformers import (AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForMultipleChoice,
                              AutoModelForQuestionAnswering, AutoModelForSequenceClassification,
                              AutoModelForTokenClassification, AutoTokenizer, pipeline)

    folder, out_path = sys.argv[1:]
    R = dict(trust_remote_code=True)
    report, tensors = {"repo_importable": repo_importable}, {}
    tok = AutoTokenizer.from_pretrained(folder, **R)
    batch = tok(["The river flows into the sea.", "It was built in 1850 by the town."], padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    tensors["ids"], tensors["mask"] = ids, mask

    # standard forward arguments
    sdpa_calls = [0]
    original_sdpa = F.scaled_dot_product_attention
    def counting_sdpa(*args, **kwargs):
        sdpa_calls[0] += 1
        return original_sdpa(*args, **kwargs)
    F.scaled_dot_product_attention = counting_sdpa
    def sdpa_calls_of(model, **kwargs):
        sdpa_calls[0] = 0
        with torch.no_grad():
            out = model(ids, mask, **kwargs)
        return sdpa_calls[0], out

    bare = AutoModel.from_pretrained(folder, **R).eval()
    report["default_attn"] = bare.config._attn_implementation
    report["sdpa_calls_plain"], plain = sdpa_calls_of(bare)
    report["sdpa_calls_with_attentions"], out = sdpa_calls_of(bare, output_hidden_states=True, output_attentions=True)
    tensors["last"] = plain.last_hidden_state
    tensors.update({f"hidden{i}": h for i, h in enumerate(out.hidden_states)})
    tensors.update({f"attention{i}": a for i, a in enumerate(out.attentions)})
    with torch.no_grad():
        embeds = bare.get_input_embeddings()(ids)
        tensors["from_embeds"] = bare(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        as_tuple = bare(ids, mask, return_dict=False)
    report["tuple_type"] = type(as_tuple).__name__
    by_config = AutoModel.from_pretrained(folder, output_hidden_states=True, **R).eval()
    with torch.no_grad():
        report["config_hidden_states"] = len(by_config(ids, mask).hidden_states or ())
    eager = AutoModel.from_pretrained(folder, attn_implementation="eager", **R).eval()
    report["eager_attn"] = eager.config._attn_implementation
    report["sdpa_calls_eager"], eager_out = sdpa_calls_of(eager)
    tensors["eager_last"] = eager_out.last_hidden_state
    named_sdpa = AutoModel.from_pretrained(folder, attn_implementation="sdpa", **R)
    report["named_sdpa_attn"] = named_sdpa.config._attn_implementation
    mlm = AutoModelForMaskedLM.from_pretrained(folder, **R).eval()
    with torch.no_grad():
        mlm_out = mlm(ids, mask, output_hidden_states=True, output_attentions=True)
    report["mlm_outputs"] = [len(mlm_out.hidden_states), len(mlm_out.attentions)]
    F.scaled_dot_product_attention = original_sdpa

    # gradient checkpointing: the same gradients, each block run again in the backward pass
    def gradients(checkpointing):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2, finetune_dropout=0.0,
                                                                   classifier_dropout=0.0, **R)
        runs = [0]
        model.ditbert.encoder.blocks[0].register_forward_pre_hook(lambda *a: runs.__setitem__(0, runs[0] + 1))
        if checkpointing:
            model.gradient_checkpointing_enable()
        model.train()
        model(ids, mask, labels=torch.tensor([0, 1])).loss.backward()
        return runs[0], model.ditbert.encoder.blocks[0].attn.qkv.weight.grad
    (plain_runs, tensors["grad_plain"]), (checkpointed_runs, tensors["grad_checkpointed"]) = gradients(False), gradients(True)
    report["block_runs"] = [plain_runs, checkpointed_runs]

    # the recipe in the config
    fresh = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2, **R)
    report["fresh"] = {
        "pooling": fresh.config.pooling,
        "encoder_dropouts": sorted({m.p for m in fresh.ditbert.modules() if isinstance(m, torch.nn.Dropout)}),
        "attention_dropout": fresh.ditbert.encoder.blocks[0].attn.dropout,
        "head_dropout": fresh.classifier.dropout.p,
        "classifier_in": fresh.classifier.in_features,
    }
    fresh.eval()
    with torch.no_grad():
        tensors["fresh_logits"] = fresh(ids, mask).logits
    tensors["fresh_weight"], tensors["fresh_bias"] = fresh.classifier.weight, fresh.classifier.bias
    pairs = tok(["The river flows into the sea.", "A town."], ["It was built in 1850.", "The sea."], padding=True,
                return_tensors="pt")
    tensors["pair_ids"], tensors["pair_mask"] = pairs["input_ids"], pairs["attention_mask"]
    report["by_task"] = {}
    for task in ("mrpc", "rte", "sst2"):
        config = AutoConfig.from_pretrained(folder, num_labels=2, finetuning_task=task, **R)
        clf = AutoModelForSequenceClassification.from_pretrained(folder, config=config, **R).eval()
        report["by_task"][task] = [clf.classifier.in_features, clf.classifier.config.pair_encoding]
        with torch.no_grad():
            tensors[f"{task}_logits"] = clf(**pairs).logits
        tensors[f"{task}_weight"], tensors[f"{task}_bias"] = clf.classifier.weight, clf.classifier.bias
    own = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2, text_pairs=True, **R)
    report["text_pairs_in"] = own.classifier.in_features

    # transformers' run_glue.py: AutoConfig.from_pretrained(config_name or model, num_labels=...,
    # finetuning_task=task_name), where task_name is None with --train_file / --validation_file
    def run_glue_head(config_folder, task_name, num_labels=2):
        config = AutoConfig.from_pretrained(config_folder, num_labels=num_labels, finetuning_task=task_name, **R)
        clf = AutoModelForSequenceClassification.from_pretrained(folder, config=config, **R)
        return [type(clf.classifier).__name__, clf.classifier.in_features, clf.classifier.config.pair_encoding]
    import shutil
    pairs_folder = os.path.join(os.path.dirname(out_path), "text-pairs")  # config.json saying "text_pairs": true
    shutil.copytree(folder, pairs_folder)
    with open(os.path.join(pairs_folder, "config.json"), encoding="utf-8") as fh:
        config_json = json.load(fh)
    with open(os.path.join(pairs_folder, "config.json"), "w", encoding="utf-8") as fh:
        json.dump({**config_json, "text_pairs": True}, fh)
    report["run_glue"] = {"task_name": run_glue_head(folder, "mrpc"), "stsb": run_glue_head(folder, "stsb", 1),
                          "local_files": run_glue_head(folder, None),
                          "local_files_text_pairs": run_glue_head(pairs_folder, None)}

    # length
    long_text = " ".join(["the river"] * 40)
    report["model_max_length"] = tok.model_max_length
    long_ids = tok(long_text, return_tensors="pt")["input_ids"]
    report["long_tokens"] = long_ids.shape[1]
    try:
        with torch.no_grad():
            report["long_output"] = list(bare(long_ids).last_hidden_state.shape)
    except ValueError as err:
        report["long_error"] = str(err)
    report["truncated_tokens"] = len(tok(long_text, truncation=True)["input_ids"])
    ner = pipeline("token-classification", model=folder, **R)
    report["pipeline_tokens"] = len(ner(long_text))

    # the task heads
    heads = {}
    token_model = AutoModelForTokenClassification.from_pretrained(folder, num_labels=5, **R)
    labels = torch.where(mask.bool(), ids % 5, torch.full_like(ids, -100))
    out = token_model(ids, mask, labels=labels)
    out.loss.backward()
    heads["token"] = [type(token_model).__name__, list(out.logits.shape), bool(torch.isfinite(out.loss)),
                      bool(token_model.ditbert.encoder.tok_emb.weight.grad.abs().sum() > 0)]
    qa_model = AutoModelForQuestionAnswering.from_pretrained(folder, **R)
    out = qa_model(ids, mask, start_positions=torch.tensor([1, 2]), end_positions=torch.tensor([3, 500]))
    out.loss.backward()
    heads["qa"] = [type(qa_model).__name__, list(out.start_logits.shape), list(out.end_logits.shape),
                   bool(torch.isfinite(out.loss))]
    choice_model = AutoModelForMultipleChoice.from_pretrained(folder, **R)
    choices = tok(["The river flows."] * 3, ["into the sea", "into a town", "up a hill"], padding=True, return_tensors="pt")
    out = choice_model(choices["input_ids"][None], choices["attention_mask"][None], labels=torch.tensor([0]))
    heads["choice"] = [type(choice_model).__name__, list(out.logits.shape), bool(torch.isfinite(out.loss))]
    report["heads"] = heads

    # the tokenizer after a special token
    def tokens(text):
        return tok.convert_ids_to_tokens(tok(text)["input_ids"])
    report["tokens"] = {text: tokens(text) for text in ("It is [MASK].", "It is good.", "[MASK] is here.",
                                                         "It flows [MASK] the sea.", "a river [DOC] the sea")}
    report["pair_tokens"] = tok.convert_ids_to_tokens(tok("a river", "the sea")["input_ids"])
    report["plain_ids"] = {text: tok(text)["input_ids"] for text in ("The river flows into the sea.", " a leading space")}

    # the card, the generated code, the modes
    report["card"] = open(os.path.join(folder, "README.md"), encoding="utf-8").read()
    report["modeling_doc"] = open(os.path.join(folder, "modeling_ditbert.py"), encoding="utf-8").read().split('\"\"\"')[1]
    report["modes"] = {name: stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode)
                       for name in [".", *sorted(os.listdir(folder))]}

    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, out_path)
    print(json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def probe(exported, tmp_path_factory):
    """(core, export folder, the clean process's report, its tensors)."""
    core, folder = exported
    tmp = tmp_path_factory.mktemp("probe")
    env, cwd = clean_environment(tmp)
    result = subprocess.run([sys.executable, "-c", PROBE, str(folder), str(tmp / "out.safetensors")], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["repo_importable"] is False, "the clean process could import the project"
    return core, folder, report, load_file(tmp / "out.safetensors")


def position(core) -> str:
    return core.cfg.position


# --------------------------------------------------------------------------- 1. the model card


def test_card_is_built_from_the_models_own_record(probe):
    core, _, report, _ = probe
    card = report["card"]
    assert "English Wikipedia lead sections" in card and "IMDB movie reviews" in card, "the corpus is Wikipedia + IMDB"
    assert "| validation perplexity | 161.2 (unigram baseline 910.6) |" in card, "perplexity rounded"
    assert "161.18" not in card
    assert card.count("tiny") == 1, "the preset is named once"
    assert "| training time | 1.0 minutes |" in card, "the training log's time (40 steps x 1.5 s)"
    assert "50 at 20, 25 at 40" in card, "the validation curve of the log"
    assert "## GLUE" not in card and "someone-else" not in card, "the working directory's results were copied"
    assert "| pooling | mean |" in card


def test_card_and_modeling_code_name_the_position_scheme(probe):
    core, _, report, _ = probe
    card, doc = report["card"], report["modeling_doc"]
    if position(core) == "alibi":
        assert "learned position" not in card and "learned position" not in doc
        assert "ALiBi" in card and "ALiBi" in doc
        assert "| positions | ALiBi: no position table; pretrained on sequences of 32 tokens, accepts longer ones |" in card
    else:
        assert "ALiBi" not in card and "ALiBi" not in doc
        assert "token + learned position embeddings" in card and "learned position embeddings" in doc
        assert "At most 32 tokens per sequence" in card


def test_card_shows_glue_results_only_from_the_file_it_is_given(tmp_path, tokenizer_path):
    core = make_core("alibi")
    save_model(core, tmp_path / "final", training_record(core))
    results = tmp_path / "mine.csv"
    results.write_text("model,mrpc_final_mean,demo_final_mean\nditbert-tiny,75.43,72.3\n")
    hf_export.main(["--model", str(tmp_path / "final"), "--tokenizer", str(tokenizer_path),
                     "--out", str(tmp_path / "hf"), "--glue-results", str(results)])
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "## GLUE" in card and "`mine.csv`" in card
    assert "| model | mrpc | demo |" in card and "| ditbert-tiny | 75.43 | 72.3 |" in card
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        hf_export.export(tmp_path / "final", tokenizer_path, tmp_path / "hf2", tmp_path / "missing.csv")
    assert not (tmp_path / "hf2").exists()


def test_card_ignores_a_log_of_another_run(tmp_path, tokenizer_path):
    core = make_core("alibi")
    save_model(core, tmp_path / "final", training_record(core))
    write_log(tmp_path, steps=30)  # the folder's log stops at step 30; the model has 40
    card = (hf_export.export(tmp_path / "final", tokenizer_path, tmp_path / "hf") / "README.md").read_text()
    assert "training time" not in card and "by step" not in card
    assert "| validation perplexity | 161.2 (unigram baseline 910.6) |" in card, "the config's record is still shown"


def test_every_embedded_corpus_has_a_name_in_the_card():
    from corpus import EMBEDDED_CORPORA

    assert set(hf_export.EMBEDDED_CORPUS_NAMES) == set(EMBEDDED_CORPORA)
    described = hf_export.corpus_description({"corpus": [], "embedded": ["wiki", "wiki", "imdb"]})
    assert described.startswith("English Wikipedia lead sections") and "(x2)" in described and "IMDB" in described
    assert hf_export.corpus_description({"corpus": ["/data/own/texts.txt"]}) == "`texts.txt`"


def test_shipped_code_uses_no_name_it_does_not_define(probe):
    """Every name the generated modeling file reads is defined in it, imported or built in: a helper
    of this repository that a shipped class calls would fail only when that path runs."""
    import ast
    import builtins

    _, folder, _, _ = probe
    tree = ast.parse((folder / "modeling_ditbert.py").read_text(encoding="utf-8"))
    defined = set(dir(builtins)) | {"__class__"}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
        elif isinstance(node, ast.alias):
            defined.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            defined.add(node.id)
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
    assert used <= defined, f"undefined in the shipped code: {sorted(used - defined)}"


# --------------------------------------------------------------------------- 2. the standard arguments


def test_hidden_states_and_attentions_are_returned_on_request(probe):
    core, _, report, t = probe
    ids, mask = t["ids"], t["mask"]
    hidden = [t[f"hidden{i}"] for i in range(core.cfg.n_layers + 1)]
    assert f"hidden{core.cfg.n_layers + 1}" not in t
    with torch.no_grad():
        torch.testing.assert_close(hidden[0], core.encoder.embed(ids), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(hidden[-1], core.encoder(ids, mask), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(t["last"], hidden[-1], rtol=1e-5, atol=1e-5)
    attention = t["attention0"]
    assert attention.shape == (2, core.cfg.n_heads, ids.shape[1], ids.shape[1])
    torch.testing.assert_close(attention.sum(-1), torch.ones(attention.shape[:-1]))
    assert attention[0, :, :, ~mask[0].bool()].abs().max() == 0, "padding was attended to"
    block = core.encoder.blocks[0]
    with torch.no_grad():  # the first block's weights, written out here from the core model's parameters
        q, k, _ = block.attn.qkv(block.ln_attn(hidden[0])).view(2, -1, 3, 2, 16).permute(2, 0, 3, 1, 4)
        expected = block.attn.attention_weights(q, k, core.encoder.attention_bias(mask, hidden[0]))
    torch.testing.assert_close(attention, expected, rtol=1e-5, atol=1e-6)
    assert report["mlm_outputs"] == [core.cfg.n_layers + 1, core.cfg.n_layers]
    assert report["config_hidden_states"] == core.cfg.n_layers + 1, "config.output_hidden_states was ignored"
    assert report["tuple_type"] == "tuple"


def test_inputs_embeds_give_the_states_of_the_ids(probe):
    _, _, _, t = probe
    torch.testing.assert_close(t["from_embeds"], t["last"], rtol=1e-5, atol=1e-5)


def test_attention_implementations_are_what_they_say(probe):
    _, _, report, t = probe
    assert report["default_attn"] == "sdpa" and report["named_sdpa_attn"] == "sdpa" and report["eager_attn"] == "eager"
    assert report["sdpa_calls_plain"] > 0, "sdpa did not run SDPA"
    assert report["sdpa_calls_eager"] == 0, "eager ran SDPA"
    assert report["sdpa_calls_with_attentions"] == 0, "the weights were not computed on the written-out path"
    torch.testing.assert_close(t["eager_last"], t["last"], rtol=1e-5, atol=1e-5)


def test_gradient_checkpointing_recomputes_blocks_with_the_same_gradients(probe):
    _, _, report, t = probe
    assert report["block_runs"] == [1, 2], "the first block was not run again in the backward pass"
    torch.testing.assert_close(t["grad_checkpointed"], t["grad_plain"], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- 3. the recipe in the config


def test_exported_config_carries_the_fine_tuning_recipe(probe):
    core, folder, report, _ = probe
    config = json.loads((folder / "config.json").read_text())
    ft = get_params("tiny").finetune
    assert (config["pooling"], config["finetune_dropout"], config["classifier_dropout"]) == ("mean", ft.dropout, ft.dropout)
    assert (config["pair_features"], config["pair_encoding"]) == (True, "by_task")
    assert config["dropout"] == 0.0, "pretraining's dropout stays the MLM's"
    assert report["fresh"] == {"pooling": "mean", "encoder_dropouts": [ft.dropout], "attention_dropout": ft.dropout,
                               "head_dropout": ft.dropout, "classifier_in": core.cfg.d_model}


def test_fresh_classifier_pools_by_the_mean(probe):
    core, _, _, t = probe
    with torch.no_grad():
        hidden = core.encoder(t["ids"], t["mask"])
        pooled = (hidden * t["mask"][..., None]).sum(1) / t["mask"].sum(1, keepdim=True)
        expected = pooled @ t["fresh_weight"].T + t["fresh_bias"]
    torch.testing.assert_close(t["fresh_logits"], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("task, encoding", [("mrpc", "separate"), ("rte", "joint"), ("sst2", None)])
def test_classifier_for_a_task_is_the_projects_loop_classifier(probe, task, encoding):
    """The head the repository's loop builds for the task (glue_heads.DitBertClassifier), given the
    exported classifier's weights, scores the pairs as the exported one does."""
    core, _, report, t = probe
    width = 4 * core.cfg.d_model if encoding else core.cfg.d_model
    assert report["by_task"][task] == [width, encoding or "joint"]
    head = HeadConfig(num_labels=2, pooling="mean", pair_features=encoding is not None, pair_encoding=encoding or "joint")
    project = DitBertClassifier(core.encoder, head).eval()
    with torch.no_grad():
        project.head.weight.copy_(t[f"{task}_weight"])
        project.head.bias.copy_(t[f"{task}_bias"])
        expected = project(t["pair_ids"], t["pair_mask"])
    torch.testing.assert_close(t[f"{task}_logits"], expected, rtol=1e-5, atol=1e-5)
    assert report["text_pairs_in"] == 4 * core.cfg.d_model, "text_pairs=True did not give the pair head"


def test_run_glue_uses_the_pair_head_where_the_card_says(probe):
    """run_glue.py names the task only with --task_name: with local files the classifier pools the joint
    input into one vector, unless config.json says text_pairs (which run_glue.py does not pass)."""
    core, _, report, _ = probe
    d = core.cfg.d_model
    assert report["run_glue"] == {"task_name": ["LinearHead", 4 * d, "separate"],
                                  "stsb": ["LinearHead", 4 * d, "separate"],  # the pair head, not the similarity head
                                  "local_files": ["LinearHead", d, "joint"],
                                  "local_files_text_pairs": ["LinearHead", 4 * d, "joint"]}
    card = " ".join(report["card"].split())
    assert "`--task_name mrpc` gets the pair head" in card
    assert "it passes `finetuning_task=None`, and the classifier pools `[START] a [DOC] b [END]` into one vector" in card
    assert "unless this folder's `config.json` says `\"text_pairs\": true`" in card
    assert "This config leaves it off (`similarity_head: false`)" in card


# --------------------------------------------------------------------------- 4. length


def test_alibi_takes_longer_inputs_and_learned_positions_truncate(probe):
    core, _, report, _ = probe
    assert report["long_tokens"] > core.cfg.max_positions
    assert report["pipeline_tokens"] > 0
    if position(core) == "alibi":
        assert report["long_output"] == [1, report["long_tokens"], core.cfg.d_model]
        assert report["model_max_length"] > 10**6 and report["truncated_tokens"] == report["long_tokens"]
    else:
        assert "truncation=True" in report["long_error"] and "32 positions" in report["long_error"]
        assert report["model_max_length"] == core.cfg.max_positions
        assert report["truncated_tokens"] == core.cfg.max_positions


def test_core_encoder_limits_only_a_learned_table():
    alibi = make_core("alibi").encoder
    ids = torch.randint(5, VOCAB, (1, 3 * alibi.cfg.max_positions))
    assert alibi(ids).shape == (1, ids.shape[1], 32)
    with pytest.raises(ValueError, match="longer than the model's 32 positions"):
        make_core("learned").encoder(ids)


# --------------------------------------------------------------------------- 5. the task heads


def test_token_classification_question_answering_and_multiple_choice_heads(probe):
    _, folder, report, _ = probe
    heads = report["heads"]
    assert heads["token"][0] == "DitBertForTokenClassification" and heads["token"][2:] == [True, True]
    assert heads["token"][1][0] == 2 and heads["token"][1][2] == 5
    assert heads["qa"][0] == "DitBertForQuestionAnswering" and heads["qa"][1] == heads["qa"][2] and heads["qa"][3]
    assert heads["choice"] == ["DitBertForMultipleChoice", [1, 3], True]
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    for auto in ("AutoModelForTokenClassification", "AutoModelForQuestionAnswering", "AutoModelForMultipleChoice"):
        assert auto_map[auto].startswith("modeling_ditbert.DitBertFor")


# --------------------------------------------------------------------------- 6. the tokenizer


def test_text_after_a_special_token_is_encoded_as_elsewhere(probe):
    _, _, report, _ = probe
    tokens = report["tokens"]
    masked, plain = tokens["It is [MASK]."], tokens["It is good."]
    assert masked[-2] == plain[-2] == ".", (masked, plain)
    assert masked[masked.index("[MASK]") - 1] == "Ġis", "the mask takes the space before it"
    assert tokens["[MASK] is here."][:3] == ["[START]", "[MASK]", "Ġis"]
    after = tokens["It flows [MASK] the sea."]
    assert after[after.index("[MASK]") + 1] == "Ġthe", "a word after the mask keeps its space"
    assert tokens["a river [DOC] the sea"] == report["pair_tokens"], "a written [DOC] is not the pair template"


def test_exported_tokenizer_encodes_plain_text_as_the_project_tokenizer(probe, old_tokenizer_path, tokenizer_path):
    _, _, report, _ = probe
    for raw_path in (old_tokenizer_path, tokenizer_path):
        raw = load_tokenizer(raw_path)
        for text, ids in report["plain_ids"].items():
            assert ids == [START_ID, *raw.encode(text, add_special_tokens=False).ids, END_ID], (raw_path, text)


def test_project_tokenizer_encodes_text_after_a_special_token_as_elsewhere(tokenizer_path):
    tok = load_tokenizer(tokenizer_path)
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken("[MASK]", lstrip=True, special=True)])
    masked = tok.encode("It is [MASK].", add_special_tokens=False)
    plain = tok.encode("It is good.", add_special_tokens=False)
    assert masked.ids[-1] == plain.ids[-1] and tok.id_to_token(plain.ids[-1]) == "."
    assert masked.ids[-2] == MASK_ID
    assert tok.encode("It is good.").ids[0] == START_ID
    assert tok.encode("It").tokens == ["[START]", "ĠIt", "[END]"], "a text's first word keeps its space"


# --------------------------------------------------------------------------- 7. modes


def test_export_has_the_modes_of_the_umask(probe):
    _, _, report, _ = probe
    modes = report["modes"]
    assert modes.pop(".") == 0o755
    assert modes and all(mode == 0o644 for mode in modes.values()), {k: oct(v) for k, v in modes.items()}


# --------------------------------------------------------------------------- the Trainer

TRAINER = textwrap.dedent(
    """
    import json, sys
    import torch
    try:
        import hf_ditbert
    except ImportError:
        repo_importable = False
    else:
        repo_importable = True
    from datasets import Dataset
    from transformers import (AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              Trainer, TrainingArguments)

    folder, out_dir = sys.argv[1:]
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    config = AutoConfig.from_pretrained(folder, num_labels=2, finetuning_task="mrpc", trust_remote_code=True)
    model = AutoModelForSequenceClassification.from_pretrained(folder, config=config, trust_remote_code=True)
    first = ["The river flows into the sea.", "A town in the north.", "It was built in 1850.", "The sea is cold."] * 4
    second = ["The sea takes the river.", "It rained all day.", "Built in 1850, it stands.", "A hill."] * 4
    data = Dataset.from_dict({"a": first, "b": second, "label": [1, 0, 1, 0] * 4})
    data = data.map(lambda b: tok(b["a"], b["b"], truncation=True, max_length=64), batched=True, remove_columns=["a", "b"])
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    args = TrainingArguments(output_dir=out_dir, max_steps=6, per_device_train_batch_size=4, learning_rate=3e-3,
                             weight_decay=0.1, warmup_steps=1, logging_steps=1, save_strategy="no", report_to="none",
                             disable_tqdm=True, seed=1)
    trainer = Trainer(model=model, args=args, train_dataset=data, eval_dataset=data, processing_class=tok,
                      data_collator=DataCollatorWithPadding(tok))
    result = trainer.train()
    metrics = trainer.evaluate()
    trainer.save_model(out_dir + "/saved")
    again = AutoModelForSequenceClassification.from_pretrained(out_dir + "/saved", trust_remote_code=True)
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    print(json.dumps({
        "repo_importable": repo_importable,
        "steps": result.global_step,
        "losses": losses,
        "eval_loss": metrics["eval_loss"],
        "changed": [k for k, v in model.named_parameters() if not torch.equal(before[k], v.detach())],
        "pair_head": [model.classifier.in_features, model.classifier.config.pair_encoding],
        "reloaded_head": [again.classifier.in_features, again.classifier.config.pair_encoding, again.config.finetuning_task],
        "same_weights": all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items()),
    }))
    """
)


def test_trainer_fine_tunes_the_exported_classifier(alibi_export, tmp_path):
    core, folder = alibi_export
    env, cwd = clean_environment(tmp_path)
    result = subprocess.run([sys.executable, "-c", TRAINER, str(folder), str(tmp_path / "trainer")], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["repo_importable"] is False
    assert report["steps"] == 6 and len(report["losses"]) == 6
    assert all(loss == loss and loss < 10 for loss in report["losses"]) and report["eval_loss"] == report["eval_loss"]
    assert {"classifier.weight", "ditbert.encoder.blocks.0.attn.qkv.weight", "ditbert.encoder.tok_emb.weight"} <= set(
        report["changed"])
    assert report["pair_head"] == [4 * core.cfg.d_model, "separate"]
    assert report["reloaded_head"] == [4 * core.cfg.d_model, "separate", "mrpc"] and report["same_weights"]
