"""The exported model as one graph: its forward has no Python branch on the values of a tensor, so
torch.compile captures it whole (fullgraph=True) and the dynamo ONNX exporter, traced with one pair
and no padding, writes a graph that gives the same outputs on a padded batch of another size. Checked
on the shipped code, in a process that cannot import this repository."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

import hf_export
from conftest import clean_environment
from corpus import embedded_corpus_file
from model_defs import DitBertForMLM, save_model
from params import ModelConfig
from tokenization import train_tokenizer

GRAPH = textwrap.dedent(
    """
    import json, sys
    import torch
    try:
        import model_defs
    except ImportError:
        repo_importable = False
    else:
        repo_importable = True
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer

    folder, onnx_path = sys.argv[1:]
    R = dict(trust_remote_code=True)
    tok = AutoTokenizer.from_pretrained(folder, **R)
    first = ["The river flows into the sea.", "A town.", "It was built in 1850 by the people of the town."]
    second = ["It was built in 1850.", "The sea is cold and the river is long.", "A hill."]
    example = tok(first[1:2], second[1:2], return_tensors="pt")  # traced with one pair: no padding
    batch = tok(first, second, padding=True, return_tensors="pt")  # checked on these: more rows, longer, padded
    assert batch["input_ids"].shape[1] > example["input_ids"].shape[1] and not batch["attention_mask"].all()

    class Scores(torch.nn.Module):
        def __init__(self, model, output):
            super().__init__()
            self.model, self.output = model, output
        def forward(self, input_ids, attention_mask):
            return getattr(self.model(input_ids=input_ids, attention_mask=attention_mask), self.output)

    models = {"masked_lm": Scores(AutoModelForMaskedLM.from_pretrained(folder, **R), "logits")}
    for task, extra in (("rte", {}), ("mrpc", {}), ("stsb", {"similarity_head": True})):
        config = AutoConfig.from_pretrained(folder, num_labels=1 if task == "stsb" else 2, finetuning_task=task,
                                            **extra, **R)
        models[task] = Scores(AutoModelForSequenceClassification.from_pretrained(folder, config=config, **R), "logits")
    report = {"repo_importable": repo_importable, "compiled": {}, "heads": {}}
    for name, model in models.items():
        model.eval()
        head = getattr(model.model, "classifier", None)
        if head is not None:
            report["heads"][name] = [type(head).__name__, head.config.pair_encoding]
        compiled = torch.compile(model, fullgraph=True, backend="eager")
        with torch.no_grad():
            eager = model(batch["input_ids"], batch["attention_mask"])
            graph = compiled(batch["input_ids"], batch["attention_mask"])
        report["compiled"][name] = (graph - eager).abs().max().item()

    # the ONNX graph of the classifier that encodes the two texts of a pair apart (mrpc: separate)
    try:
        import onnxruntime, onnxscript  # requirements.txt
    except ImportError as err:
        report["onnx"] = f"{err}: install requirements.txt (make setup)"
    else:
        model = models["mrpc"]
        rows, width = torch.export.Dim("rows", min=1, max=64), torch.export.Dim("width", min=4, max=32)
        shapes = {"input_ids": {0: rows, 1: width}, "attention_mask": {0: rows, 1: width}}
        program = torch.onnx.export(model, (example["input_ids"], example["attention_mask"]), dynamo=True,
                                    dynamic_shapes=shapes, verbose=False)
        program.save(onnx_path)
        session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        feed = {"input_ids": batch["input_ids"].numpy(), "attention_mask": batch["attention_mask"].numpy()}
        from_onnx = torch.from_numpy(session.run(None, feed)[0])
        with torch.no_grad():
            eager = model(batch["input_ids"], batch["attention_mask"])
        report["onnx"] = [list(from_onnx.shape), (from_onnx - eager).abs().max().item()]
    print(json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    lines = embedded_corpus_file(tmp_path_factory.mktemp("data")).read_text(encoding="utf-8").splitlines()[:300]
    (folder / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    train_tokenizer([str(folder / "corpus.txt")], 600, folder / "tokenizer.json")
    return folder / "tokenizer.json"


@pytest.fixture(scope="module", params=["alibi", "learned"])
def graph_report(request, tokenizer_path, tmp_path_factory) -> dict:
    """What the clean process reports for a tiny model of each position scheme, exported."""
    tmp = tmp_path_factory.mktemp(f"graph-{request.param}")
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=600, seq_len=30, n_layers=2, d_model=32, n_heads=2, d_ff=64, position=request.param)
    save_model(DitBertForMLM(cfg), tmp / "final", {"preset": "tiny"})  # the tiny recipe: mean pooling, pairs by task
    folder = hf_export.export(tmp / "final", tokenizer_path, tmp / "hf")
    env, cwd = clean_environment(tmp, TORCHINDUCTOR_CACHE_DIR=str(tmp / "inductor"))
    result = subprocess.run([sys.executable, "-c", GRAPH, str(folder), str(tmp / "model.onnx")],
                            cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["repo_importable"] is False
    return report


def test_exported_model_compiles_as_one_graph(graph_report):
    assert graph_report["heads"] == {"rte": ["LinearHead", "joint"], "mrpc": ["LinearHead", "separate"],
                                     "stsb": ["SimilarityHead", "separate"]}
    assert set(graph_report["compiled"]) == {"masked_lm", "rte", "mrpc", "stsb"}
    assert all(diff < 1e-5 for diff in graph_report["compiled"].values()), graph_report["compiled"]


def test_exported_classifier_exports_to_onnx(graph_report):
    assert isinstance(graph_report["onnx"], list), graph_report["onnx"]
    shape, diff = graph_report["onnx"]
    assert shape == [3, 2] and diff < 1e-5, graph_report["onnx"]
