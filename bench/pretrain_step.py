"""One pretraining step of DitBERT against Hugging Face's RoBERTa and BERT of the same size.

    python bench/pretrain_step.py --preset tiny --device cpu
    python bench/pretrain_step.py --preset base --device cpu --micro-batch 4
    python bench/pretrain_step.py --preset base --device cuda          # bf16 autocast, MFU

A step is what train_model.py does per micro-batch: host -> device copy, forward under
autocast, backward, gradient clipping, AdamW step. Every model gets the same sizes (layers,
width, heads, FFN, vocabulary, positions), the same masked batches, the same dtype and the
same optimizer (runtime.adamw with the same settings); Hugging Face models use
attn_implementation="sdpa" and no dropout, as DitBERT pretrains. The models take turns in one
process (see common.interleave); the first rounds are warm-up and not timed.

Then one ablation per speed switch: DitBERT with that one switch flipped, interleaved with
default DitBERT, so each row says what the switch buys. Some switches are settings in params.py;
the others (fused AdamW, TF32, pinned copies) are always on in training and are turned off here only. At ``tiny`` also what the recipe's own
choices cost per step (the vocabulary, the masking rate): these change the model and what it
learns, so they are not speed switches, but the step time is the price of each.

Model FLOPs utilisation (CUDA): the FLOPs the masked-LM step needs, divided by step time and by
the GPU's dense bf16 peak. Per step, with L layers, width d, FFN width f, vocabulary V,
B sequences of T tokens and M masked tokens:
    6 * B*T * L * (4*d*d + 2*d*f)   linear layers, forward + backward
  + 12 * B*T * L * T * d            attention scores and weighted sum, forward + backward
  + 6 * M * (d*d + d*V)             MLM head at the masked positions
The same count is used for every model, so a model that projects every position onto the
vocabulary does that extra work without credit for it.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import common  # noqa: E402
from model_defs import DitBertForMLM  # noqa: E402
from params import END_ID, PAD_ID, SPECIAL_TOKENS, START_ID, Params, get_params  # noqa: E402
from pretrain_data import mask_tokens  # noqa: E402
from runtime import adamw, autocast_dtype  # noqa: E402
from train_model import to_device  # noqa: E402

# Dense bf16 tensor-core peak, TFLOP/s, from the vendors' data sheets (without sparsity).
GPU_BF16_PEAK_TFLOPS = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.4,  # SXM / HBM3
    "H200": 989.4,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "RTX 4090": 165.2,
}

# One switch flipped per row: (label, settings override, step override, devices where it applies).
# The step overrides turn off what training always does: StepOptions.
ABLATIONS = [
    ("attention: plain matmul-softmax instead of SDPA", {"model.attention": "math"}, {}, ("cpu", "cuda")),
    ("vocabulary projection at every position", {"model.mlm_masked_only": False}, {}, ("cpu", "cuda")),
    ("AdamW not fused (loop over tensors)", {}, {"fused_adamw": False}, ("cpu", "cuda")),
    ("torch.compile on", {"train.compile": True}, {}, ("cpu", "cuda")),
    ("TF32 off", {}, {"tf32": False}, ("cuda",)),
    ("fp32 instead of bf16 autocast", {"train.dtype": "fp32"}, {}, ("cuda",)),
    ("bf16 autocast instead of fp32", {"train.dtype": "bf16"}, {}, ("cpu",)),
    ("pageable memory, blocking copies", {}, {"pin_memory": False}, ("cuda",)),
]

# tiny only: recipe choices that change what is learned, priced by their step time
RECIPE_CHOICES = [
    ("vocabulary 8192 instead of 4096", {"model.vocab_size": 8192}),
    ("15 % masking instead of 40 %", {"train.mask_prob": 0.15}),
    ("vocabulary 8192 and 15 % masking", {"model.vocab_size": 8192, "train.mask_prob": 0.15}),
]


@dataclass(frozen=True)
class StepOptions:
    """What the training loop always does on a step, each of which an ablation can turn off."""

    fused_adamw: bool = True  # one fused AdamW kernel instead of a loop over tensors
    tf32: bool = True  # CUDA: TF32 tensor cores for the fp32 matmuls
    pin_memory: bool = True  # CUDA: copy batches from page-locked memory, without blocking


def gpu_peak_tflops(device: torch.device, override: float) -> float | None:
    if override:
        return override
    name = torch.cuda.get_device_name(device)
    for key, tflops in GPU_BF16_PEAK_TFLOPS.items():  # the more specific names come first
        if key in name:
            return tflops
    return None


def model_flops(p: Params, batch: int, n_masked: float) -> float:
    """FLOPs of one masked-LM training step (forward + backward); formula in the module docstring."""
    m = p.model
    tokens = batch * m.max_positions
    linear = 6 * tokens * m.n_layers * (4 * m.d_model**2 + 2 * m.d_model * m.d_ff)
    attention = 12 * tokens * m.n_layers * m.max_positions * m.d_model
    head = 6 * n_masked * (m.d_model**2 + m.d_model * m.vocab_size)
    return linear + attention + head


def masked_batches(p: Params, micro_batch: int, count: int, seed: int = 0):
    """`count` masked batches of random token ids ([START] ... [END], no padding, as the loader
    serves them). A step's speed does not depend on which ids it sees."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        ids = torch.randint(len(SPECIAL_TOKENS), p.model.vocab_size, (micro_batch, p.model.max_positions), generator=gen)
        ids[:, 0], ids[:, -1] = START_ID, END_ID
        out.append(mask_tokens(ids, p.model.vocab_size, p.train.mask_prob, gen))
    return out


def hf_model(kind: str, p: Params):
    """RoBERTa or BERT for masked LM with DitBERT's sizes, SDPA attention and no dropout."""
    from transformers import BertConfig, BertForMaskedLM, RobertaConfig, RobertaForMaskedLM

    m = p.model
    common_kw = dict(
        vocab_size=m.vocab_size, hidden_size=m.d_model, num_hidden_layers=m.n_layers, num_attention_heads=m.n_heads,
        intermediate_size=m.d_ff, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        layer_norm_eps=m.layer_norm_eps, pad_token_id=PAD_ID, tie_word_embeddings=m.tie_lm_head,
        attn_implementation="sdpa",
    )
    if kind == "roberta":  # RoBERTa numbers positions from pad_token_id + 1
        config = RobertaConfig(max_position_embeddings=m.max_positions + PAD_ID + 1, type_vocab_size=1, **common_kw)
        model = RobertaForMaskedLM(config)
    else:
        config = BertConfig(max_position_embeddings=m.max_positions, **common_kw)
        model = BertForMaskedLM(config)
    if model.config._attn_implementation != "sdpa":
        raise RuntimeError(f"{kind}: transformers chose {model.config._attn_implementation!r} attention, not sdpa")
    return model


class Contender:
    """A model, its optimizer and a step function that trains it on the shared batches."""

    def __init__(self, name: str, model: torch.nn.Module, p: Params, device: torch.device, batches, hf: bool,
                 options: StepOptions = StepOptions()):
        self.name, self.p, self.device, self.options = name, p, device, options
        self.model = model.to(device).train()
        tc = p.train
        self.optimizer = adamw(self.model, tc.lr, tc.weight_decay, tc.betas, tc.eps, fused=options.fused_adamw)
        self.dtype = autocast_dtype(p.train.dtype, device)
        self.runner = torch.compile(self.model) if p.train.compile else self.model
        self.hf = hf
        self.batches = itertools.cycle(batches)
        self.sync = common.synchronizer(device)

    def step(self) -> None:
        tc, device, options = self.p.train, self.device, self.options
        if device.type == "cuda":  # the process-wide setting, so each contender runs with its own
            torch.backends.cuda.matmul.allow_tf32 = options.tf32
            torch.backends.cudnn.allow_tf32 = options.tf32
        inputs, labels = next(self.batches)
        copy = to_device if options.pin_memory else lambda batch, dev: batch.to(dev)
        inputs, labels = copy(inputs, device), copy(labels, device)
        with torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            loss = self.runner(input_ids=inputs, labels=labels).loss if self.hf else self.runner(inputs, labels)[0]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def ditbert(name: str, p: Params, device, batches, options: StepOptions = StepOptions()) -> Contender:
    torch.manual_seed(0)
    return Contender(name, DitBertForMLM(p.model), p, device, batches, hf=False, options=options)


def measure(contenders: list[Contender], rounds: int, warmup: int, tokens: int) -> list[dict]:
    """Interleave the contenders; one row each with the median step time, tokens/s and memory."""
    sync = common.synchronizer(contenders[0].device)
    times = common.interleave({c.name: c.step for c in contenders}, rounds, warmup, sync)
    rows = []
    for c in contenders:
        ms = common.median(times[c.name]) * 1e3
        if c.p.train.compile and c.device.type == "cpu":
            mem, what = float("nan"), "n/a (compiled graphs bypass the saved-tensor hooks)"
        else:
            mem, what = common.step_memory(c.step, c.model, c.optimizer, c.device)
        row = {"model": c.name, "ms_per_step": ms, "spread": common.spread(times[c.name]), "tokens_per_s": tokens / ms * 1e3,
               "memory_mb": mem, "memory_is": what, "params_m": sum(p.numel() for p in c.model.parameters()) / 1e6,
               "dtype": str(c.dtype).replace("torch.", ""), "rounds": rounds}
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", choices=["tiny", "base"])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--micro-batch", type=int, help="sequences per step (default: tiny 32; base 4 on CPU, 32 on CUDA)")
    ap.add_argument("--rounds", type=int, help="timed rounds (default: tiny 10, base CPU 5, CUDA 30)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--no-ablations", action="store_true", help="only DitBERT against the Hugging Face models")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile ablation (slow to compile on CPU)")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="GPU dense bf16 peak, if not in the built-in table")
    args = ap.parse_args(argv)

    device = common.resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = device.type == "cpu"
    micro = args.micro_batch or (32 if args.preset == "tiny" or not cpu else 4)
    rounds = args.rounds or (10 if args.preset == "tiny" else 5 if cpu else 30)
    base_overrides = {"train.micro_batch": micro, "train.batch_size": micro, "train.device": args.device}
    p = get_params(args.preset, base_overrides)
    batches = masked_batches(p, micro, count=4)
    tokens = micro * p.model.max_positions
    n_masked = sum(int(lab.ne(-100).sum()) for _, lab in batches) / len(batches)
    peak = gpu_peak_tflops(device, args.peak_tflops) if not cpu else None
    flops = model_flops(p, micro, n_masked) if peak else None
    tag = f"{args.preset}_{args.device}"
    print(f"{args.preset} on {device}: micro-batch {micro} x {p.model.max_positions} tokens, "
          f"{rounds} timed rounds after {args.warmup} warm-up, autocast {autocast_dtype(p.train.dtype, device)}")

    dit = ditbert("DitBERT", p, device, batches)
    contenders = [dit,
                  Contender("HF RobertaForMaskedLM", hf_model("roberta", p), p, device, batches, hf=True),
                  Contender("HF BertForMaskedLM", hf_model("bert", p), p, device, batches, hf=True)]
    rows = measure(contenders, rounds, args.warmup, tokens)
    for row in rows:
        row.update(default_ms_per_step=rows[0]["ms_per_step"], comparison="vs Hugging Face", speedup_of_ditbert=rows[0]["tokens_per_s"] / row["tokens_per_s"])
        if peak:
            row["mfu"] = flops / (row["ms_per_step"] / 1e3) / (peak * 1e12)
    del contenders[1:]

    if not args.no_ablations:
        variants = [("ablation", label, override, options) for label, override, options, devices in ABLATIONS
                    if args.device in devices and not (args.no_compile and "train.compile" in override)]
        if args.preset == "tiny":
            variants += [("recipe", label, override, {}) for label, override in RECIPE_CHOICES]
        for kind, label, override, options in variants:
            vp = get_params(args.preset, {**base_overrides, **override})
            variant = ditbert(f"DitBERT, {label}", vp, device, masked_batches(vp, micro, count=4), StepOptions(**options))
            pair = measure([dit, variant], rounds, args.warmup, tokens)
            del variant
            speedup = pair[1]["ms_per_step"] / pair[0]["ms_per_step"]
            for row in pair:
                row.update(comparison=f"{kind}: {label}", speedup_of_ditbert=speedup if row is pair[1] else 1.0)
                if peak:
                    row["mfu"] = flops / (row["ms_per_step"] / 1e3) / (peak * 1e12)
            rows.append(pair[1] | {"default_ms_per_step": pair[0]["ms_per_step"]})

    meta = common.machine_info(device) | {"preset": args.preset, "micro_batch": micro, "seq_tokens": p.model.max_positions,
                                          "rounds": rounds, "warmup": args.warmup, "command": " ".join(sys.argv),
                                          "mfu_formula": model_flops.__doc__, "gpu_bf16_peak_tflops": peak}
    columns = ["model", "ms_per_step", "spread", "tokens_per_s", "speedup_of_ditbert", "memory_mb", "default_ms_per_step"]
    columns += ["mfu"] if peak else []
    common.report(f"pretrain_step_{tag}", rows, meta, columns)
    print(f"speedup_of_ditbert: HF rows = DitBERT tokens/s / that model's; ablation and recipe rows = that variant's "
          f"ms/step / default DitBERT's (interleaved pair). memory: {rows[0]['memory_is']}")
    if peak:
        print(common.result_line(f"pretrain_{tag}_mfu", rows[0]["mfu"]))
        print(common.result_line(f"pretrain_{tag}_memory_ratio", rows[0]["memory_mb"] / rows[1]["memory_mb"]))
    print(common.result_line(f"pretrain_{tag}_tokens_per_s", rows[0]["tokens_per_s"]))
    print(common.result_line(f"pretrain_{tag}_speedup_vs_bert", rows[2]["speedup_of_ditbert"]))
    print(common.result_line(f"pretrain_{tag}_speedup", rows[1]["speedup_of_ditbert"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
