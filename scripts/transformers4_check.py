"""Check an export under another transformers release (docs/huggingface.md, "transformers 4.x").

Two halves, run by two interpreters:

    .venv/bin/python scripts/transformers4_check.py make DIR     # this repository's: exports and reference outputs
    /tmp/tf4/bin/python scripts/transformers4_check.py check DIR  # torch + transformers only: loads and compares

`make` writes into DIR a pretrained tiny model of each position scheme exported (``alibi/``, ``learned/``) and an
exported STS-B classifier with a fitted similarity head (``stsb/``), each with ``reference.safetensors``: the
repository's outputs for a padded batch. `check` loads each folder with ``trust_remote_code=True``, compares the
outputs, measures the new heads' weights and runs the fill-mask pipeline from the folder alone; it prints one
line per check and exits non-zero if any fails.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TEXTS = (["The river flows into the sea.", "A small town in the north."],
         ["It was built in 1850 by the town.", "The sea is cold."])


def make(root: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import torch
    from safetensors.torch import save_file

    import hf_export
    from corpus import embedded_corpus_file
    from glue_heads import DitBertClassifier, HeadConfig, save_classifier
    from model_defs import DitBertForMLM, save_model
    from params import ModelConfig, get_params
    from tokenization import train_tokenizer

    root.mkdir(parents=True, exist_ok=True)
    lines = embedded_corpus_file(root).read_text(encoding="utf-8").splitlines()[:300]
    (root / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tokenizer = root / "tokenizer.json"
    train_tokenizer([str(root / "corpus.txt")], 600, tokenizer)
    for position in ("alibi", "learned"):
        torch.manual_seed(0)
        cfg = ModelConfig(vocab_size=600, seq_len=30, n_layers=2, d_model=32, n_heads=2, d_ff=64, position=position)
        core = DitBertForMLM(cfg).eval()
        run = get_params("tiny")
        run.model = cfg
        save_model(core, root / f"{position}-final", {"preset": "tiny", "steps": 1, "params": run.to_dict()})
        out = hf_export.export(root / f"{position}-final", tokenizer, root / position)
        ids, mask = batch(out)
        with torch.no_grad():
            save_file({"ids": ids, "mask": mask, "logits": core.head(core.encoder(ids, mask)).contiguous()},
                      str(out / "reference.safetensors"))
    torch.manual_seed(1)
    encoder = DitBertForMLM(ModelConfig(vocab_size=600, seq_len=30, n_layers=2, d_model=32, n_heads=2, d_ff=64,
                                        position="alibi")).encoder
    head = HeadConfig(1, pooling="mean", pair_features=True, similarity_head=True, pair_encoding="separate")
    classifier = DitBertClassifier(encoder, head).eval()
    with torch.no_grad():
        classifier.head.scale.fill_(2.5)
        classifier.head.bias.fill_(1.25)
    save_classifier(classifier, root / "best_stsb", tokenizer, {"task": "stsb"})
    out = hf_export.export(root / "best_stsb", None, root / "stsb")
    ids, mask = pairs(out)
    with torch.no_grad():
        save_file({"ids": ids, "mask": mask, "logits": classifier(ids, mask)}, str(out / "reference.safetensors"))
    print(f"made {root}")


def batch(folder):
    from transformers import AutoTokenizer

    enc = AutoTokenizer.from_pretrained(folder)(TEXTS[0] + TEXTS[1], padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def pairs(folder):
    from transformers import AutoTokenizer

    enc = AutoTokenizer.from_pretrained(folder)(*TEXTS, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def check(root: Path) -> int:
    import torch
    import transformers
    from safetensors.torch import load_file
    from transformers import (AutoModelForMaskedLM, AutoModelForMultipleChoice, AutoModelForQuestionAnswering,
                              AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer, pipeline)

    R = {"trust_remote_code": True}
    failures = []

    def report(what, ok, detail):
        print(f"{'ok  ' if ok else 'FAIL'} {what}: {detail}")
        if not ok:
            failures.append(what)

    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    for position in ("alibi", "learned"):
        folder = str(root / position)
        ref = load_file(str(root / position / "reference.safetensors"))
        mlm = AutoModelForMaskedLM.from_pretrained(folder, **R).eval()
        with torch.no_grad():
            diff = (mlm(input_ids=ref["ids"], attention_mask=ref["mask"]).logits - ref["logits"]).abs().max().item()
        report(f"{position}: masked LM from {type(mlm).__module__}", diff < 1e-5, f"max |logits - repository's| = {diff:.2e}")
        tok = AutoTokenizer.from_pretrained(folder, **R)
        same = tok(TEXTS[0] + TEXTS[1], padding=True, return_tensors="pt")["input_ids"].equal(ref["ids"])
        report(f"{position}: tokenizer", same, f"{type(tok).__name__}, the same ids as under transformers 5")
        torch.manual_seed(0)
        heads = {"sequence classification": (AutoModelForSequenceClassification, {"num_labels": 3}, "classifier"),
                 "token classification": (AutoModelForTokenClassification, {"num_labels": 5}, "classifier"),
                 "question answering": (AutoModelForQuestionAnswering, {}, "qa_outputs"),
                 "multiple choice": (AutoModelForMultipleChoice, {}, "classifier")}
        for name, (auto, kwargs, attr) in heads.items():
            layer = getattr(auto.from_pretrained(folder, **kwargs, **R), attr)
            std, bias = layer.weight.std().item(), layer.bias.abs().max().item()
            report(f"{position}: new {name} head", 0.01 < std < 0.03 and bias == 0,
                   f"weight std {std:.4f} (BERT's init: 0.02), max |bias| {bias:g}")
        fill = pipeline("fill-mask", model=folder, **R)
        filled = fill("The river flows into the [MASK].", top_k=2)
        report(f"{position}: fill-mask pipeline from the folder alone", len(filled) == 2,
               ", ".join(repr(f["token_str"]) for f in filled))
    ref = load_file(str(root / "stsb" / "reference.safetensors"))
    clf = AutoModelForSequenceClassification.from_pretrained(str(root / "stsb"), **R).eval()
    with torch.no_grad():
        diff = (clf(input_ids=ref["ids"], attention_mask=ref["mask"]).logits - ref["logits"]).abs().max().item()
    scale, bias = clf.classifier.scale.item(), clf.classifier.bias.item()
    report("stsb: fine-tuned similarity head", diff < 1e-5 and (scale, bias) == (2.5, 1.25),
           f"{type(clf.classifier).__name__} {scale:g} * cosine + {bias:g}, max |scores - repository's| = {diff:.2e}")
    print(json.dumps({"failures": failures}))
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("make", "check"), help="make: this repository's half; check: the other release's")
    parser.add_argument("folder", type=Path, help="where `make` writes the exports and `check` reads them")
    args = parser.parse_args(argv)
    if args.mode == "make":
        make(args.folder)
        return 0
    return check(args.folder)


if __name__ == "__main__":
    sys.exit(main())
