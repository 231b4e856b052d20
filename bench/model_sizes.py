"""Parameter counts and the work of one masked-LM step, derived from the presets: no timing, no training.

    python bench/model_sizes.py        # writes bench/results/model_sizes.csv

For each configuration below (the presets as they are, and `tiny` as it was when the first benchmark
files were measured), the models are built and their parameters counted: DitBERT, and the
`RobertaForMaskedLM` / `BertForMaskedLM` of the same sizes that bench/pretrain_step.py times against
it (tied weights counted once). The packaged all-MiniLM-L6-v2 (the `make demo` baseline) is counted
from its weights file.

The FLOPs of one training step on one sequence of T = seq_len + 2 tokens with M = mask_prob x (T - 2)
masked tokens (the special tokens are never masked), forward + backward, for L layers, width d, FFN
width f and vocabulary V:

* every position through every block and the vocabulary projection (what `RobertaForMaskedLM` does):
  6*T*L*(4*d^2 + 2*d*f) + 12*L*T^2*d + 6*T*(d^2 + d*V)
* DitBERT with `model.mlm_masked_only`: in the last block every position still gives a key and a value,
  but only the M masked positions are queries and go on through the output projection, the FFN and the
  MLM head:
  6*T*(L-1)*(4*d^2 + 2*d*f) + 6*T*2*d^2 + 6*M*(2*d^2 + 2*d*f) + 12*(L-1)*T^2*d + 12*M*T*d + 6*M*(d^2 + d*V)

`flops_ratio` is the second over the first: the share of the full step's work DitBERT does, and its
inverse the speed-up if step time followed FLOPs.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

OUT = ROOT / "bench" / "results" / "model_sizes.csv"

# name -> (preset, overrides): `tiny-4x256-learned` is `tiny` as the files pretrain_step_tiny_cpu.4x256-learned,
# .run1, data_tiny*, finetune_tiny_* and scaling_tiny_cpu* measured it
CONFIGS = {
    "tiny": ("tiny", {}),
    "tiny-4x256-learned": ("tiny", {"model.n_layers": 4, "model.d_ff": 1024, "model.vocab_size": 8192,
                                    "model.position": "learned", "tokenizer.vocab_size": 8192, "train.mask_prob": 0.15}),
    "base": ("base", {}),
}

COLUMNS = ["config", "model", "n_layers", "d_model", "d_ff", "vocab_size", "position", "mask_prob", "params",
           "step_flops_full", "step_flops_masked_only", "flops_ratio"]


def step_flops(m, mask_prob: float) -> tuple[float, float]:
    """FLOPs of one sequence's training step: every position through everything, and DitBERT's masked-only
    last block and head (formulas in the module docstring)."""
    T, L, d, f, V = m.max_positions, m.n_layers, m.d_model, m.d_ff, m.vocab_size
    M = mask_prob * (T - 2)
    full = 6 * T * L * (4 * d * d + 2 * d * f) + 12 * L * T * T * d + 6 * T * (d * d + d * V)
    masked_only = (6 * T * (L - 1) * (4 * d * d + 2 * d * f) + 6 * T * 2 * d * d + 6 * M * (2 * d * d + 2 * d * f)
                   + 12 * (L - 1) * T * T * d + 12 * M * T * d + 6 * M * (d * d + d * V))
    return round(full), round(masked_only)


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once


def minilm_row() -> dict | None:
    """The packaged MiniLM: its shape from config.json, its parameter count from the shapes in its safetensors
    header (None where the package is not installed)."""
    import glue_models

    try:
        folder = glue_models.packaged_model_dir()
    except (FileNotFoundError, ModuleNotFoundError, ValueError):
        return None
    weights = folder / "model.safetensors"
    if not weights.is_file():
        return None
    config = json.loads((folder / "config.json").read_text())
    with open(weights, "rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(size))
    total = 0
    for name, entry in header.items():
        if name != "__metadata__":
            n = 1
            for dim in entry["shape"]:
                n *= dim
            total += n
    return {"config": "minilm-l6", "model": "all-MiniLM-L6-v2 (packaged)", "n_layers": config["num_hidden_layers"],
            "d_model": config["hidden_size"], "d_ff": config["intermediate_size"], "vocab_size": config["vocab_size"],
            "position": config.get("position_embedding_type", "absolute"), "mask_prob": "", "params": total,
            "step_flops_full": "", "step_flops_masked_only": "", "flops_ratio": ""}


def rows() -> list[dict]:
    import torch

    from model_defs import DitBertForMLM
    from params import get_params
    from pretrain_step import hf_model

    out = []
    for name, (preset, overrides) in CONFIGS.items():
        p = get_params(preset, overrides)
        m = p.model
        full, masked_only = step_flops(m, p.train.mask_prob)
        shape = {"config": name, "n_layers": m.n_layers, "d_model": m.d_model, "d_ff": m.d_ff,
                 "vocab_size": m.vocab_size, "position": m.position, "mask_prob": p.train.mask_prob}
        torch.manual_seed(0)
        out.append({**shape, "model": "DitBERT", "params": count(DitBertForMLM(m)), "step_flops_full": full,
                    "step_flops_masked_only": masked_only, "flops_ratio": round(masked_only / full, 4)})
        for kind, label in (("roberta", "RobertaForMaskedLM"), ("bert", "BertForMaskedLM")):
            # the Hugging Face models have no ALiBi: a position table of max_positions rows whatever DitBERT's scheme
            out.append({**shape, "model": label, "position": "learned", "params": count(hf_model(kind, p)),
                        "step_flops_full": full, "step_flops_masked_only": "", "flops_ratio": ""})
    minilm = minilm_row()
    if minilm is not None:
        out.append(minilm)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(OUT), help="the CSV to write (default %(default)s)")
    args = ap.parse_args(argv)
    table = rows()
    with open(args.out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(table)
    for row in table:
        ratio = f", FLOPs {row['flops_ratio']} of the full step" if row["flops_ratio"] != "" else ""
        print(f"{row['config']:>20} {row['model']:<28} {row['params']:>12,} parameters{ratio}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
