"""Time and memory of a DitBERT pretraining step as sequence length and batch grow.

    python bench/scaling.py                               # tiny, CPU
    python bench/scaling.py --preset base --device cuda --batches 8 32

Every (sequence length, batch) point is a model with seq_len set to fit, and all points take
turns in one process. Per token, a step costs a + b*T: the linear layers give the constant a
(6 (4 d^2 + 2 d f) FLOPs per token and layer, forward + backward), attention's scores and
weighted sum the b*T (12 T d); each step also has a fixed cost c (optimizer, embedding gradients).
Fitting c, a and b to the measured step times gives T* = a / b, the length
from which the quadratic part costs more than everything else; below it a step costs
about linearly in the tokens it holds. Rows with the plain matmul-softmax attention
(model.attention=math) show the (B, heads, T, T) score tensors that SDPA avoids storing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import common  # noqa: E402
import pretrain_step  # noqa: E402
from params import get_params  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", choices=["tiny", "base"])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256, 512], help="tokens per sequence")
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 32], help="sequences per step")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args(argv)

    device = common.resolve_device(args.device)
    points = {}
    for attention in ("sdpa", "math"):
        for batch in args.batches if attention == "sdpa" else args.batches[:1]:
            for T in args.lengths:
                p = get_params(args.preset, {"model.seq_len": T - 2, "model.attention": attention, "train.device": args.device,
                                             "train.micro_batch": batch, "train.batch_size": batch})
                points[(attention, batch, T)] = pretrain_step.ditbert(f"{attention} B={batch} T={T}", p, device,
                                                                    pretrain_step.masked_batches(p, batch, 2))
    times = common.interleave({c.name: c.step for c in points.values()}, args.rounds, args.warmup,
                              common.synchronizer(device))
    rows = []
    for (attention, batch, T), c in points.items():
        ms = common.median(times[c.name]) * 1e3
        mem, what = common.step_memory(c.step, c.model, c.optimizer, device)
        rows.append({"attention": attention, "batch": batch, "seq_len": T, "ms_per_step": ms,
                     "spread": common.spread(times[c.name]), "us_per_token": ms * 1e3 / (batch * T), "memory_mb": mem})

    # step time = c + a * tokens + b * tokens * T (fixed cost, linear layers, attention), least squares
    sel = [r for r in rows if r["attention"] == "sdpa"]
    X = np.array([[1.0, r["batch"] * r["seq_len"], r["batch"] * r["seq_len"] ** 2] for r in sel])
    c, a, b = np.linalg.lstsq(X, np.array([r["ms_per_step"] for r in sel]), rcond=None)[0]
    fit = {"fixed_ms": c, "ms_per_token": a, "ms_per_token_per_T": b, "quadratic_from_T": a / b if b > 0 else float("inf")}
    for r in sel:
        r["attention_share_of_time"] = b * r["seq_len"] / (a + b * r["seq_len"]) if b > 0 else 0.0
    m = get_params(args.preset).model
    flops_crossover = 2 * m.d_model + m.d_ff  # 6 (4 d^2 + 2 d f) = 12 T d
    meta = common.machine_info(device) | {"preset": args.preset, "rounds": args.rounds, "memory_is": what,
                                          "fit": fit, "flops_crossover_T": flops_crossover, "command": " ".join(sys.argv)}
    common.report(f"scaling_{args.preset}_{args.device}", rows, meta)
    print(f"step ms = {c:.1f} + {a * 1e3:.3f} us x tokens + {b * 1e6:.4f} ns x tokens x T: the part that grows with T "
          f"(quadratic per sequence) overtakes the linear part at T = {fit['quadratic_from_T']:.0f} tokens")
    print(f"by FLOPs alone attention equals the linear layers at T = {flops_crossover:.0f}; memory: {what}")
    print(common.result_line(f"scaling_{args.preset}_{args.device}_quadratic_from_T", fit["quadratic_from_T"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
