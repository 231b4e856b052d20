"""The memory model (memory_model.py) against the peaks real training steps reach on the CPU.

    python bench/memory_accuracy.py --preset base --micro-batches 1,2,4    # bench/results/memory_model_base_cpu.csv
    python bench/memory_accuracy.py --preset tiny --micro-batches 1,2,4,8
    python bench/memory_accuracy.py --measure --preset tiny --micro-batch 2     # one measurement, as JSON

For each micro-batch B, side by side:

* predicted: memory_model.build (weights, gradients and AdamW state from the parameter count, the
  activations' timeline probed at micro-batches 1 and 2 and extrapolated to B);
* measured: the peak bytes of live tensors (memory_model.TensorMemory) over real pretraining steps,
  train_model.optimizer_step on the loader's masked batches, with fused AdamW and the preset's
  autocast dtype on the CPU: two optimizer steps of `--accumulation` micro-batches each (the first
  step allocates AdamW's state, the second is a step as every later one), in a fresh subprocess per B,
  from before the model is built;
* rss_growth: that subprocess's resident memory high-water mark above its resident memory before the
  model was built (the mark reset first, /proc/self/clear_refs): shown for comparison, not the
  figure tested, since it also holds what malloc keeps for reuse and the math libraries' buffers.

The measured figure is what torch.cuda.max_memory_allocated reports on a GPU, for the CPU: the bytes
of tensors alive at the worst moment. It is exact and the same on every run (no allocator caching,
no other process, no page that was reserved but never touched), which the resident memory is not.
The prediction at B = 1 and 2 shares its activation probe with the measurement's kind of count, but
not its weights, gradients, optimizer state or the moment of the peak (those are computed); B = 4
and above are extrapolations. Goal: within 15 % at every B. RESULT memory_model_<preset>_cpu_max_error.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import common  # noqa: E402
import memory_model  # noqa: E402
from params import Params, get_params, parse_overrides  # noqa: E402


def measure(params: Params, steps: int = 2) -> dict:
    """Peak live tensor bytes over `steps` pretraining steps of `params` on the CPU, counted from before
    the model is built; and the resident memory growth of the process over the same steps."""
    import train_model
    from model_defs import DitBertForMLM
    from pretrain_data import SequenceLoader, next_step_batches
    from runtime import Precision

    tc = params.train
    precision = Precision.choose("cpu", tc.dtype)
    rng = np.random.default_rng(tc.seed)
    tokens = rng.integers(5, params.model.vocab_size, size=params.model.seq_len * 4 * tc.batch_size * (steps + 1),
                          dtype=np.uint32)
    accum = tc.accumulation_steps()
    memory_model.reset_high_water_mark()
    rss_before = memory_model.resident_bytes("VmRSS")
    tracker = memory_model.TensorMemory()
    with tracker:
        ddp = train_model.Distributed("cpu")
        torch.manual_seed(tc.seed)
        model = DitBertForMLM(params.model)
        loader = SequenceLoader(tokens, params.model.seq_len, seed=tc.seed)
        run = train_model.Run.start(model, loader, params, precision)
        run.runner = model
        losses = []
        for _ in range(steps):
            batches = next_step_batches(loader, params, accum)
            losses.append(train_model.optimizer_step(run, batches, params, ddp, precision))
    return {"peak_bytes": tracker.peak, "rss_growth_bytes": memory_model.resident_bytes("VmHWM") - rss_before,
            "losses": losses, "micro_batch": tc.micro_batch, "accumulation": accum, "steps": steps}


def measure_in_subprocess(preset: str, sets: list[str], timeout: int = 1800) -> dict:
    """`measure` in a fresh interpreter (nothing else allocated in it), its JSON result."""
    command = [sys.executable, str(Path(__file__).resolve()), "--measure", "--preset", preset, "--set", *sets]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=HERE.parent,
                          env=os.environ | {"PYTHONPATH": str(HERE.parent)})
    if done.returncode:
        raise RuntimeError(f"measurement failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="base", choices=["tiny", "base"])
    ap.add_argument("--micro-batches", default="1,2,4", help="comma-separated (default 1,2,4)")
    ap.add_argument("--micro-batch", type=int, default=1, help="with --measure: the one micro-batch measured")
    ap.add_argument("--accumulation", type=int, default=2, help="micro-batches per optimizer step (default 2)")
    ap.add_argument("--dtype", default="fp32", help="train.dtype on the CPU (default fp32, the CPU's auto)")
    ap.add_argument("--measure", action="store_true", help="measure one micro-batch in this process, print JSON")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--set", nargs="*", default=[], metavar="SECTION.NAME=VALUE", help="other settings of params.py")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.measure:
        params = get_params(args.preset, parse_overrides(args.set))
        print(json.dumps(measure(params)))
        return 0

    rows = []
    for micro in (int(x) for x in args.micro_batches.split(",") if x.strip()):
        sets = [f"train.micro_batch={micro}", f"train.batch_size={micro * args.accumulation}",
                f"train.dtype={args.dtype}", "train.device=cpu", *args.set]
        params = get_params(args.preset, parse_overrides(sets))
        if not rows:
            model = memory_model.build(params, "cpu", args.dtype)
        parts = model.parts(micro, args.accumulation)
        measured = measure_in_subprocess(args.preset, sets)
        rows.append({"micro_batch": micro, "accumulation": args.accumulation, "dtype": args.dtype,
                     "predicted_mib": parts["peak"] / 2**20, "measured_mib": measured["peak_bytes"] / 2**20,
                     "ratio": parts["peak"] / measured["peak_bytes"], "rss_growth_mib": measured["rss_growth_bytes"] / 2**20,
                     "predicted_peak_at": parts["peak_at"], "params_m": model.n_params / 1e6})
        print(f"micro-batch {micro}: predicted {rows[-1]['predicted_mib']:.1f} MiB, measured {rows[-1]['measured_mib']:.1f} "
              f"MiB (ratio {rows[-1]['ratio']:.3f}); resident memory grew {rows[-1]['rss_growth_mib']:.1f} MiB", flush=True)
    meta = common.machine_info(torch.device("cpu")) | {"preset": args.preset, "command": " ".join(sys.argv),
                                                        "measured": "peak live tensor bytes (memory_model.TensorMemory)"}
    tag = f"{args.preset}_cpu" + ("" if args.dtype == "fp32" else f"_{args.dtype}")
    common.report(f"memory_model_{tag}", rows, meta)
    worst = max(abs(r["ratio"] - 1) for r in rows)
    print(common.result_line(f"memory_model_{tag}_max_error", worst))
    return 0


if __name__ == "__main__":
    sys.exit(main())
