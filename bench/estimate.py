"""`train_model.py --estimate` against the run it projects, on this machine.

    python bench/estimate.py --preset tiny                     # bench/results/estimate_tiny_cpu.csv
    python bench/estimate.py --preset tiny --tag tiny_cpu_accumulation --set train.micro_batch=4 train.threads=1
    python bench/estimate.py --preset base --set train.micro_batch=1 train.batch_size=8 data.val_sequences=16

Each round runs the estimate of a 50-step run (train_model.estimate: 30 timed steps after 5 untimed
ones, its projection of the training time and of the wall time with validation and checkpoints), and
the 50-step run itself with the same settings (train_model.train into a fresh folder; its training
time and wall time from its checkpoint). The two take turns, the order reversed from one round to the
next (E R, R E, ...), so that a slow spell of a shared machine falls on both. Per round: projected /
actual, for the training time and for the wall time. Goal: within 20 %.

The data is prepared once before the rounds (the token file is cached), and neither figure counts it.
The preset's tokenizer (runs/<preset>/tokenizer.json, Train-Tokenizer.py) unless --set train.tokenizer
names another: the timing does not depend on which token ids the model sees, so a smaller tokenizer
than the model's vocabulary times the same steps.
RESULT estimate_<preset>_<device>_ratio: the mean projected / actual training time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import common  # noqa: E402
import train_model  # noqa: E402
from params import get_params, parse_overrides  # noqa: E402
from pretrain_data import prepare_data  # noqa: E402


def actual_run(params) -> dict:
    """Train `params` into a fresh folder; its training time and wall time (seconds), from the checkpoint."""
    summary = train_model.train(params, show_progress=False)
    state = torch.load(Path(params.train.out_dir) / "checkpoint.pt", weights_only=True, map_location="cpu")
    return {"train_s": state["train_s"], "wall_s": state["elapsed_s"], "steps": summary["step"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", choices=["tiny", "base"])
    ap.add_argument("--steps", type=int, default=50, help="the run's optimizer steps (default 50)")
    ap.add_argument("--estimate-steps", type=int, default=30, help="steps the estimate times (default 30)")
    ap.add_argument("--estimate-warmup", type=int, default=5, help="untimed steps before them (default 5)")
    ap.add_argument("--rounds", type=int, default=2, help="estimate + run pairs, order alternating (default 2)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--tag", help="the results' name: bench/results/estimate_<tag>.csv (default <preset>_<device>)")
    ap.add_argument("--set", nargs="*", default=[], metavar="SECTION.NAME=VALUE", help="other settings of params.py")
    args = ap.parse_args(argv)

    device = common.resolve_device(args.device)
    overrides = {"train.steps": args.steps, "train.warmup_steps": min(5, args.steps - 1), "train.device": args.device,
                 **parse_overrides(args.set)}
    params = get_params(args.preset, overrides)
    prepare_data(params)  # the token file, once, before anything is timed
    rows = []
    with tempfile.TemporaryDirectory(prefix="ditbert-bench-estimate-") as scratch:
        for r in range(args.rounds):
            figures = {}
            for what in (("estimate", "run") if r % 2 == 0 else ("run", "estimate")):
                if what == "estimate":
                    figures["estimate"] = train_model.estimate(params, args.estimate_steps, args.estimate_warmup,
                                                               show=r == 0)
                else:
                    run_params = get_params(args.preset, {**overrides, "train.out_dir": f"{scratch}/run{r}"})
                    figures["run"] = actual_run(run_params)
            est, run = figures["estimate"], figures["run"]
            rows.append({"round": r, "order": "estimate, run" if r % 2 == 0 else "run, estimate",
                         "steps": run["steps"], "micro_batch": est["micro_batch"], "accumulation": est["accumulation"],
                         "timed_micro_batches": "+".join(map(str, est["micro_batches_per_timed_step"])),
                         "projected_train_s": est["train_s"], "actual_train_s": run["train_s"],
                         "train_ratio": est["train_s"] / run["train_s"], "projected_wall_s": est["wall_s"],
                         "actual_wall_s": run["wall_s"], "wall_ratio": est["wall_s"] / run["wall_s"],
                         "tokens_per_s_estimated": est["tokens_per_s"],
                         "tokens_per_s_actual": run["steps"] * params.train.batch_size * params.model.max_positions
                                                / run["train_s"]})
            print(f"round {r}: training time projected {est['train_s']:.1f} s, took {run['train_s']:.1f} s "
                  f"(ratio {rows[-1]['train_ratio']:.3f}); wall time projected {est['wall_s']:.1f} s, took "
                  f"{run['wall_s']:.1f} s (ratio {rows[-1]['wall_ratio']:.3f})", flush=True)
    tag = args.tag or f"{args.preset}_{args.device}"
    meta = common.machine_info(device) | {"preset": args.preset, "command": " ".join(sys.argv), "settings": overrides}
    common.report(f"estimate_{tag}", rows, meta,
                  ["round", "order", "steps", "micro_batch", "accumulation", "projected_train_s", "actual_train_s",
                   "train_ratio", "projected_wall_s", "actual_wall_s", "wall_ratio"])
    mean = lambda key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    print(common.result_line(f"estimate_{tag}_ratio", mean("train_ratio")))
    print(common.result_line(f"estimate_{tag}_wall_ratio", mean("wall_ratio")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
