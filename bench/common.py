"""What every benchmark script shares: interleaved timing, memory figures, tables and result files.

Timing rule: the contenders of one comparison live in one process and take turns
(A B, B A, A B, ...), warm-up rounds are thrown away, and each figure is the median over
the timed rounds, so a slow spell on a shared machine hits every contender alike.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the scripts run as `python bench/<name>.py` from the repository root
    sys.path.insert(0, str(ROOT))

RESULTS_DIR = ROOT / "bench" / "results"


# --------------------------------------------------------------------------- timing


def synchronizer(device: torch.device) -> Callable[[], None]:
    """A function that waits for queued GPU work, so a timer measures the work and not its launch."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def interleave(contenders: dict[str, Callable[[], None]], rounds: int, warmup: int = 1,
               sync: Callable[[], None] = lambda: None) -> dict[str, list[float]]:
    """Seconds per call of each contender over `rounds` timed rounds, after `warmup` untimed ones.

    Each round calls every contender once; the order reverses from one round to the next
    (A B, B A, ...) so neither contender always runs first after the other's cache effects.
    """
    names = list(contenders)
    times = {name: [] for name in names}
    for r in range(warmup + rounds):
        for name in names if r % 2 == 0 else reversed(names):
            sync()
            t0 = time.perf_counter()
            contenders[name]()
            sync()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> float:
    """Half the distance between the quartiles, relative to the median: the run-to-run noise."""
    if len(xs) < 4:
        return (max(xs) - min(xs)) / 2 / statistics.median(xs)
    q1, _, q3 = statistics.quantiles(xs, n=4)
    return (q3 - q1) / 2 / statistics.median(xs)


# --------------------------------------------------------------------------- memory


@contextmanager
def saved_tensor_bytes(model: torch.nn.Module | None = None):
    """Count the bytes autograd keeps for the backward pass (each storage once) while the block runs.

    On the CPU there is no allocator that reports a peak per model, so this is the memory
    figure there: the activations are what grows with batch and sequence length. The weights of
    `model` (saved too, e.g. by every linear layer) are not counted. Yields a dict whose
    ``bytes`` is filled when the block ends."""
    seen: dict[int, int] = {}
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()} if model is not None else set()

    def pack(t):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    out = {"bytes": 0}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield out
    out["bytes"] = sum(n for ptr, n in seen.items() if ptr not in weights)


def param_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())  # tied weights once


def optimizer_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(v.numel() * v.element_size() for state in optimizer.state.values()
               for v in state.values() if torch.is_tensor(v) and v.dim() > 0)


def step_memory(step: Callable[[], None], model: torch.nn.Module, optimizer, device: torch.device) -> tuple[float, str]:
    """(MB, what it is) for one call of `step`, after warm-up (so the optimizer state exists).

    CUDA: the step's peak allocation above what was allocated before it (other models in the
    process stay constant during the step), plus this model's weights and optimizer state.
    CPU: weights + gradients + optimizer state + tensors saved for backward.
    """
    static = param_bytes(model) + optimizer_bytes(optimizer)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before + static
        return peak / 2**20, "peak allocated (torch.cuda.max_memory_allocated)"
    with saved_tensor_bytes(model) as saved:
        step()
    return (static + param_bytes(model) + saved["bytes"]) / 2**20, "weights+grads+AdamW state+saved activations"


# --------------------------------------------------------------------------- the machine


def machine_info(device: torch.device) -> dict:
    """What a figure depends on: hardware, thread count and library versions."""
    import transformers

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(device),
        "cpu": _cpu_name(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "git_commit": _git_commit(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU is visible to torch")
    return torch.device(name)


# --------------------------------------------------------------------------- output


def report(name: str, rows: list[dict], meta: dict, columns: list[str] | None = None) -> None:
    """Print `rows` as a table and write them to bench/results/<name>.csv and .json (with `meta`)."""
    import pandas as pd
    from tabulate import tabulate

    frame = pd.DataFrame(rows)
    shown = frame[columns] if columns else frame
    print(tabulate(shown, headers="keys", showindex=False, floatfmt=".4g"))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    frame.to_csv(RESULTS_DIR / f"{name}.csv", index=False)
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str))
    print(f"wrote {RESULTS_DIR.relative_to(ROOT)}/{name}.csv and .json")


def result_line(metric: str, value: float) -> str:
    """The machine-readable line a run is tracked by: ``RESULT <metric> <value>``."""
    return f"RESULT {metric} {value:.4g}"
