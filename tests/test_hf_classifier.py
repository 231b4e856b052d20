"""A classifier the repository's loop fine-tuned, exported: the transformers class that an export ships
scores a pair as the loop's classifier does, the similarity head's fitted scale and bias included, in a
process that cannot import this repository. The real GLUE files under $GLUE_DIR are used when present,
else the small GLUE folder of conftest."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

import glue_heads
import glue_models
import glue_utils
import hf_export
from conftest import TINY_VOCAB, clean_environment
from glue_tasks import TASKS, load_task, subsample
from model_defs import DitBertForMLM, save_model
from params import PAD_ID, ModelConfig, get_params

TASK_FOLDERS = {"stsb": "STS-B", "mrpc": "MRPC"}


@pytest.fixture(scope="module")
def glue_dir(glue_layout) -> Path:
    """$GLUE_DIR when it holds STS-B and MRPC, else the small GLUE folder the tests write."""
    real = Path(os.environ.get("GLUE_DIR") or "/nonexistent")
    if all((real / folder / "train.tsv").is_file() and (real / folder / "dev.tsv").is_file()
           for folder in TASK_FOLDERS.values()):
        return real
    return glue_layout


@pytest.fixture(scope="module", params=["learned", "alibi"])
def pretrained(request, tiny_model_dir, tmp_path_factory) -> Path:
    """The conftest model (learned positions), or one of the same size with ALiBi (the `tiny` preset's)."""
    if request.param == "learned":
        return tiny_model_dir
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=TINY_VOCAB, n_layers=1, d_model=32, n_heads=2, d_ff=64, seq_len=62, position="alibi")
    out = tmp_path_factory.mktemp("alibi") / "final"
    save_model(DitBertForMLM(cfg), out, extra={"tokens_seen": 999})
    return out


@pytest.fixture(scope="module")
def finetuned(pretrained, tiny_tokenizer, glue_dir, tmp_path_factory):
    """(fine-tuning settings, run folder): the loop's run on STS-B and MRPC with the `tiny` recipe (mean
    pooling, pair features, the similarity head, pairs by task), on a few examples."""
    out = tmp_path_factory.mktemp("glue-outputs")
    ft = dataclasses.replace(get_params("tiny").finetune, epochs=2, batch_size=16, lr=1e-3, seeds=[1],
                             max_train_examples=64, max_eval_examples=48, output_dir=str(out))
    source = glue_models.ditbert_source(str(pretrained), str(tiny_tokenizer), label="ditbert")
    [run] = glue_utils.run_glue(source, "stsb,mrpc", ft, glue_dir=glue_dir)
    return ft, source, run


def loop_outputs(ft, source, task_name: str, best: Path, glue_dir: Path):
    """(texts a, texts b, the loop's encoding of the evaluated pairs, the best model's outputs on them)."""
    task = TASKS[task_name]
    splits, _ = load_task(task, glue_dir, ft.max_bad_fraction)
    dev = subsample(splits["validation"], ft.max_eval_examples)
    loaded = glue_models.load_for_task(source.resolved(1), task, ft, seed=1)
    loaded.model = glue_heads.load_classifier(best)
    enc = glue_utils.encode_split(loaded, dev)
    outputs = glue_utils.predict(loaded, enc, ft.batch_size * 2, task.is_regression)
    cols = dev.to_dict()
    return cols["text_a"], cols["text_b"], enc, outputs


RELOAD = textwrap.dedent(
    """
    import json, sys
    import torch
    from safetensors.torch import load_file, save_file
    try:
        import glue_heads
    except ImportError:
        repo_importable = False
    else:
        repo_importable = True
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder, inputs, out = sys.argv[1:]
    texts = json.loads(open(inputs + ".json").read())
    given = load_file(inputs)
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    own = tok(texts["a"], texts["b"], truncation=True, max_length=texts["max_len"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=given["ids"], attention_mask=given["mask"]).logits
        own_logits = model(**own).logits
    head = model.classifier
    save_file({"logits": logits, "own_logits": own_logits, "own_ids": own["input_ids"]}, out)
    print(json.dumps({
        "repo_importable": repo_importable,
        "module": type(model).__module__,
        "head": type(head).__name__,
        "scale_bias": [head.scale.item(), head.bias.item()] if hasattr(head, "scale") else None,
        "pair_encoding": head.config.pair_encoding,
        "id2label": model.config.id2label,
        "task": model.config.finetuning_task,
    }))
    """
)


def padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([r + [PAD_ID] * (width - len(r)) for r in rows])
    return ids, ids.ne(PAD_ID).long()


@pytest.mark.parametrize("task_name", ["stsb", "mrpc"])
def test_exported_finetuned_classifier_gives_the_loops_predictions(finetuned, task_name, glue_dir, tmp_path):
    ft, source, run = finetuned
    best = run / f"best_{task_name}"
    a, b, enc, expected = loop_outputs(ft, source, task_name, best, glue_dir)
    written = pd.read_csv(run / "predictions" / f"{task_name}_validation_best.tsv", sep="\t", keep_default_na=False)
    predicted = glue_utils._predictions(TASKS[task_name], expected)
    if task_name == "stsb":  # what the loop wrote is what the reloaded best model predicts
        assert written["prediction"].tolist() == pytest.approx(predicted.tolist(), abs=1e-5)
    else:
        assert written["prediction"].tolist() == [TASKS[task_name].label_names[int(p)] for p in predicted]

    out = hf_export.export(best, None, tmp_path / "hf")  # the folder's own tokenizer.json
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["DitBertForSequenceClassification"] and config["tokenizer_class"]
    card = (out / "README.md").read_text()
    assert f"fine-tuned on {task_name}" in card and "pipeline_tag: text-classification" in card

    ids, mask = padded(enc["input_ids"])
    save_file({"ids": ids, "mask": mask}, str(tmp_path / "inputs.safetensors"))
    max_len = glue_models.load_for_task(source.resolved(1), TASKS[task_name], ft, seed=1).info["max_len"]
    (tmp_path / "inputs.safetensors.json").write_text(json.dumps({"a": a, "b": b, "max_len": max_len}))
    env, cwd = clean_environment(tmp_path)
    result = subprocess.run([sys.executable, "-c", RELOAD, str(out), str(tmp_path / "inputs.safetensors"),
                             str(tmp_path / "out.safetensors")], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["repo_importable"] is False and report["module"].startswith("transformers_modules")
    assert report["task"] == task_name
    got = load_file(str(tmp_path / "out.safetensors"))

    # the loop's encoded pairs: the same scores
    assert (got["logits"] - expected).abs().max() < 1e-5
    # the pairs as the exported tokenizer writes them, truncated to max_len: the loop's ids, the same scores
    own_rows = [row[row.ne(PAD_ID)].tolist() for row in got["own_ids"]]
    assert own_rows == enc["input_ids"]
    assert (got["own_logits"] - expected).abs().max() < 1e-5

    loop_head = glue_heads.load_classifier(best).head
    if task_name == "stsb":
        assert report["head"] == "SimilarityHead" and report["pair_encoding"] == "separate"
        assert report["scale_bias"] == [loop_head.scale.item(), loop_head.bias.item()]
        assert report["scale_bias"] != [1.0, 0.0], "the fitted and trained scale and bias were not exported"
    else:
        assert report["head"] == "LinearHead" and report["pair_encoding"] == "separate"
        assert report["id2label"] == {"0": "not_equivalent", "1": "equivalent"}


def test_export_needs_a_tokenizer_where_the_folder_has_none(tiny_model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no tokenizer.json"):
        hf_export.export(tiny_model_dir, None, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_loops_hugging_face_path_fits_the_similarity_head_of_an_export(tiny_model_dir, tiny_tokenizer, glue_layout,
                                                                       tmp_path):
    """HF_MODELS=<export>: the loop builds the transformers classifier with finetune.similarity_head, finds its
    similarity head as it finds its own classifier's, and fits the scale and bias before fine-tuning."""
    folder = hf_export.export(tiny_model_dir, tiny_tokenizer, tmp_path / "hf")
    ft = dataclasses.replace(get_params("tiny").finetune, epochs=1, batch_size=16, seeds=[1], max_train_examples=24,
                             max_eval_examples=12, output_dir=str(tmp_path / "out"), save_best=False)
    loaded = glue_models.load_for_task(glue_models.hf_source(str(folder)), TASKS["stsb"], ft, seed=1)
    assert isinstance(loaded.model.classifier, glue_heads.SimilarityHead)
    assert glue_utils.uses_similarity_head(loaded.model)
    splits, _ = load_task(TASKS["stsb"], glue_layout, ft.max_bad_fraction)
    enc = glue_utils.encode_split(loaded, splits["train"])
    scale, bias = glue_utils.fit_similarity(loaded, enc, 8)
    assert (loaded.model.classifier.scale.item(), loaded.model.classifier.bias.item()) == pytest.approx((scale, bias))
    assert (scale, bias) != (1.0, 0.0)
    plain = glue_models.load_for_task(glue_models.hf_source(str(folder)), TASKS["stsb"],
                                      dataclasses.replace(ft, similarity_head=False), seed=1)
    assert isinstance(plain.model.classifier, glue_heads.LinearHead) and not glue_utils.uses_similarity_head(plain.model)


def test_a_model_fine_tuned_from_an_export_ships_its_modeling_files(tiny_model_dir, tiny_tokenizer, glue_layout,
                                                                    tmp_path):
    """HF_MODELS=<export> with save_best: the best epoch's folder holds the export's modeling code beside the
    auto_map of its config, so it loads with trust_remote_code=True where this repository cannot be imported."""
    folder = hf_export.export(tiny_model_dir, tiny_tokenizer, tmp_path / "hf")
    ft = dataclasses.replace(get_params("tiny").finetune, epochs=1, batch_size=16, seeds=[1], max_train_examples=24,
                             max_eval_examples=12, output_dir=str(tmp_path / "out"), save_best=True)
    [run] = glue_utils.run_glue(glue_models.hf_source(f"exported={folder}"), "rte", ft, glue_dir=glue_layout)
    best = run / "best_rte"
    for name in ("modeling_ditbert.py", "configuration_ditbert.py"):
        assert (best / name).read_bytes() == (folder / name).read_bytes(), name
    env, cwd = clean_environment(tmp_path)
    script = ("import sys\nfrom transformers import AutoModelForSequenceClassification as Auto\n"
              "model = Auto.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
              "print(type(model).__module__, model.config.finetuning_task)")
    result = subprocess.run([sys.executable, "-c", script, str(best)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    module, task = result.stdout.split()[-2:]
    assert module.startswith("transformers_modules") and task == "rte"
